"""What OCI content is: media types, descriptors, manifests and Flux's artifact format.

Nothing here talks to a registry (that is :mod:`fluxd.oci.client`); this module only
builds and reads the bytes:

* media types of the manifests fluxd reads (OCI image manifest and index, Docker v2
  manifest and manifest list) and of Flux's own artifacts (``fluxcd/pkg`` ``oci``);
* :class:`Descriptor` (``mediaType``, ``digest``, ``size``, ``annotations``) and digest
  helpers (``sha256``, ``sha384`` and ``sha512``);
* Flux's generic artifact, as ``flux push artifact`` writes it: an OCI image manifest with
  config media type ``application/vnd.cncf.flux.config.v1+json``, one layer (a reproducible
  ``tar.gz`` of a directory, ``…flux.content.v1.tar+gzip``, or a file as it is,
  ``…flux.content.v1[.<ext>]``) and the ``org.opencontainers.image.{created,source,
  revision}`` annotations (:class:`Metadata`);
* how source-controller reads one: revisions ``<tag>@<digest>`` (or just the digest),
  the layer chosen by ``layerSelector.mediaType`` (default: the first), and the image
  chosen from an index by platform (default ``linux/amd64``, as go-containerregistry).

:func:`build_layer` writes to disk and hashes: call it from a worker thread.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fluxd.artifacts.ignore import Matcher
from fluxd.artifacts.tarball import TYPE_DIR, TYPE_REG, GzipWriter, TarWriter

__all__ = [
    "ALL_MANIFEST_MEDIA_TYPES",
    "CREATED_ANNOTATION",
    "DEFAULT_PLATFORM",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "FLUX_CONFIG_MEDIA_TYPE",
    "FLUX_CONTENT_MEDIA_TYPE",
    "FLUX_MEDIA_TYPE_PREFIX",
    "HELM_CHART_CONTENT_MEDIA_TYPE",
    "HELM_CONFIG_MEDIA_TYPE",
    "IMAGE_MEDIA_TYPES",
    "INDEX_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "REVISION_ANNOTATION",
    "SOURCE_ANNOTATION",
    "ArtifactError",
    "BuiltLayer",
    "Descriptor",
    "LayerType",
    "Metadata",
    "Platform",
    "build_layer",
    "compute_digest",
    "config_blob",
    "digest_from_revision",
    "image_manifest",
    "layers_of",
    "parse_digest",
    "revision",
    "select_layer",
    "select_platform",
    "static_media_type",
]

# -- media types ---------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MEDIA_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: what the client sends as ``Accept`` for manifests, best first
ALL_MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)

FLUX_CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
FLUX_MEDIA_TYPE_PREFIX = "application/vnd.cncf.flux.content.v1"
FLUX_CONTENT_MEDIA_TYPE = FLUX_MEDIA_TYPE_PREFIX + ".tar+gzip"
HELM_CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_CONTENT_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

SOURCE_ANNOTATION = "org.opencontainers.image.source"
REVISION_ANNOTATION = "org.opencontainers.image.revision"
CREATED_ANNOTATION = "org.opencontainers.image.created"

# Flux's artifact tarball modes (``fluxcd/pkg`` ``artifact/storage/archive.go``)
_DIR_MODE = 0o750
_FILE_MODE = 0o600
_EXE_MODE = 0o700
_CHUNK = 1 << 20

_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


class ArtifactError(ValueError):
    """Content that does not have the expected shape (bad digest, no such layer, …)."""


# -- digests -------------------------------------------------------------------------------

def parse_digest(digest: str) -> tuple[str, str]:
    """``"sha256:<hex>"`` -> ``("sha256", "<hex>")``; only algorithms fluxd can verify."""
    algo, sep, hexpart = digest.partition(":")
    length = _DIGEST_HEX_LENGTH.get(algo)
    if not sep or length is None or len(hexpart) != length or not _HEX.fullmatch(hexpart):
        raise ArtifactError(f"invalid or unsupported digest {digest!r}")
    return algo, hexpart


def compute_digest(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def revision(tag: str | None, digest: str) -> str:
    """source-controller's revision: ``<tag>@<digest>`` for a tag, the digest alone else."""
    return f"{tag}@{digest}" if tag else digest


def digest_from_revision(rev: str) -> str:
    """The part after the last ``@`` (``digestFromRevision``)."""
    return rev.rsplit("@", 1)[-1]


# -- descriptors and manifests -------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""


#: what go-containerregistry picks from an index unless told otherwise
DEFAULT_PLATFORM = Platform()


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    """A content descriptor, as it appears in manifests and indexes."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    @classmethod
    def from_json(cls, value: Any) -> Descriptor:
        if not isinstance(value, Mapping):
            raise ArtifactError("descriptor is not an object")
        digest, size = value.get("digest"), value.get("size")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise ArtifactError("descriptor lacks a digest or a size")
        parse_digest(digest)
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise ArtifactError("descriptor annotations are not an object")
        platform = None
        raw_platform = value.get("platform")
        if isinstance(raw_platform, Mapping):
            platform = Platform(os=str(raw_platform.get("os", "")),
                                architecture=str(raw_platform.get("architecture", "")),
                                variant=str(raw_platform.get("variant", "")))
        return cls(media_type=str(value.get("mediaType", "")), digest=digest, size=size,
                   annotations={str(k): str(v) for k, v in annotations.items()},
                   platform=platform)

    def to_json(self) -> dict[str, Any]:
        # go-containerregistry's field order: mediaType, size, digest, annotations
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size,
                               "digest": self.digest}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = {"architecture": self.platform.architecture,
                               "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        return out


def image_manifest(config: Descriptor, layers: list[Descriptor], *,
                   annotations: Mapping[str, str] | None = None,
                   media_type: str = OCI_MANIFEST) -> bytes:
    """The canonical (compact) bytes of an image manifest; its digest names it."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "config": config.to_json(),
                           "layers": [layer.to_json() for layer in layers]}
    if annotations:
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, separators=(",", ":")).encode()


def layers_of(manifest: Mapping[str, Any]) -> list[Descriptor]:
    raw = manifest.get("layers")
    if not isinstance(raw, list):
        raise ArtifactError("manifest has no layers list")
    return [Descriptor.from_json(item) for item in raw]


def select_layer(manifest: Mapping[str, Any], media_type: str = "") -> Descriptor:
    """The layer source-controller uses: the first with ``media_type``, or the first."""
    layers = layers_of(manifest)
    if not layers:
        raise ArtifactError("no layers found in artifact")
    if not media_type:
        return layers[0]
    for layer in layers:
        if layer.media_type == media_type:
            return layer
    raise ArtifactError(f"failed to find layer with media type '{media_type}' in artifact")


def select_platform(index: Mapping[str, Any], platform: Platform = DEFAULT_PLATFORM) -> Descriptor:
    """The manifest of ``platform`` in an index (``variant`` matters only when given)."""
    raw = index.get("manifests")
    if not isinstance(raw, list):
        raise ArtifactError("index has no manifests list")
    for item in raw:
        desc = Descriptor.from_json(item)
        p = desc.platform
        if p is None or p.os != platform.os or p.architecture != platform.architecture:
            continue
        if platform.variant and p.variant != platform.variant:
            continue
        return desc
    wanted = f"{platform.os}/{platform.architecture}"
    if platform.variant:
        wanted += f"/{platform.variant}"
    raise ArtifactError(f"no manifest for platform {wanted} in index")


# -- Flux's artifact metadata --------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Metadata:
    """Where an artifact came from (``fluxcd/pkg`` ``oci.Metadata``)."""

    created: str = ""
    source: str = ""
    revision: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_annotations(self) -> dict[str, str]:
        # Flux always writes the three keys, empty or not; extra annotations win
        out = {CREATED_ANNOTATION: self.created, SOURCE_ANNOTATION: self.source,
               REVISION_ANNOTATION: self.revision}
        out.update(self.annotations)
        return out

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Metadata:
        return cls(created=annotations.get(CREATED_ANNOTATION, ""),
                   source=annotations.get(SOURCE_ANNOTATION, ""),
                   revision=annotations.get(REVISION_ANNOTATION, ""),
                   annotations=dict(annotations))


class LayerType(enum.Enum):
    """``oci.LayerType``: a gzipped tarball of a tree, or one file as it is."""

    TARBALL = "tarball"
    STATIC = "static"


def static_media_type(extension: str = "") -> str:
    """``application/vnd.cncf.flux.content.v1[.<extension>]`` for a static layer."""
    return f"{FLUX_MEDIA_TYPE_PREFIX}.{extension}" if extension else FLUX_MEDIA_TYPE_PREFIX


@dataclass(frozen=True)
class BuiltLayer:
    path: Path
    digest: str
    size: int
    #: digest of the uncompressed content (the config's ``rootfs.diff_ids`` entry)
    diff_id: str


class _HashingSink:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.out.write(data)
        self.hasher.update(data)
        self.size += len(data)


def _walk(root: Path, ignore: Matcher | None) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Regular files and directories below ``root``, depth first, names sorted bytewise."""
    def visit(path: Path, parts: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
        with os.scandir(path) as it:
            names = sorted((e.name for e in it), key=os.fsencode)
        for name in names:
            child = path / name
            st = child.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)):
                continue  # symlinks and special files never go into an artifact
            child_parts = [*parts, name]
            if ignore is not None and ignore.match_parts(child_parts, is_dir):
                continue
            yield "/".join(child_parts), child, st
            if is_dir:
                yield from visit(child, child_parts)

    yield from visit(root, [])


def build_layer(source: Path | Mapping[str, bytes | str], dest: Path, *,
                layer_type: LayerType = LayerType.TARBALL,
                ignore: Matcher | None = None) -> BuiltLayer:
    """Write the layer blob for ``source`` to ``dest`` (blocking: run it in a thread).

    A tarball holds a directory's regular files and directories (a single file becomes
    the only entry; a mapping gives ``name -> content``) with names relative to the root,
    owner 0, zero times and Flux's modes; the gzip member carries no name or time, so the
    same tree always gives the same digest. A static layer is ``source`` (a file) as is.
    """
    raw = hashlib.sha256()
    if layer_type is LayerType.STATIC:
        if not isinstance(source, Path) or not source.is_file():
            raise ArtifactError(f"a static layer needs a regular file, not {source}")
        with source.open("rb") as src, dest.open("wb") as out:
            sink = _HashingSink(out)
            while chunk := src.read(_CHUNK):
                sink(chunk)
        digest = f"sha256:{sink.hasher.hexdigest()}"
        return BuiltLayer(dest, digest, sink.size, digest)

    with dest.open("wb") as out:
        sink = _HashingSink(out)
        gz = GzipWriter(sink)

        def write(data: bytes) -> None:
            raw.update(data)
            gz.write(data)

        tar = TarWriter(write)
        if isinstance(source, Mapping):
            _tar_mapping(tar, source)
        elif source.is_dir():
            for rel, path, st in _walk(source, ignore):
                if stat.S_ISDIR(st.st_mode):
                    tar.add_header(os.fsencode(rel), mode=_DIR_MODE, size=0, typeflag=TYPE_DIR)
                else:
                    _tar_file(tar, os.fsencode(rel), path, st)
        elif source.is_file():
            _tar_file(tar, os.fsencode(source.name), source, source.stat())
        else:
            raise ArtifactError(f"source path does not exist: {source}")
        tar.close()
        gz.close()
    return BuiltLayer(dest, f"sha256:{sink.hasher.hexdigest()}", sink.size,
                      f"sha256:{raw.hexdigest()}")


def _tar_file(tar: TarWriter, name: bytes, path: Path, st: os.stat_result) -> None:
    mode = _EXE_MODE if st.st_mode & 0o111 else _FILE_MODE
    tar.add_header(name, mode=mode, size=st.st_size, typeflag=TYPE_REG)
    remaining = st.st_size
    with path.open("rb") as src:
        while remaining > 0:
            chunk = src.read(min(_CHUNK, remaining))
            if not chunk:
                raise ArtifactError(f"{path} shrank while it was archived")
            tar.write(chunk)
            remaining -= len(chunk)


def _tar_mapping(tar: TarWriter, files: Mapping[str, bytes | str]) -> None:
    seen_dirs: set[str] = set()
    for name in sorted(files, key=lambda n: n.encode()):
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ArtifactError(f"invalid file name {name!r}")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in seen_dirs:
                seen_dirs.add(directory)
                tar.add_header(directory.encode(), mode=_DIR_MODE, size=0, typeflag=TYPE_DIR)
        value = files[name]
        data = value.encode() if isinstance(value, str) else value
        tar.add_header("/".join(parts).encode(), mode=_FILE_MODE, size=len(data),
                       typeflag=TYPE_REG)
        tar.write(data)


def config_blob(diff_ids: list[str]) -> bytes:
    """The image config go-containerregistry writes for an empty image plus layers.

    Flux's tools push this shape (``mutate.Append`` onto ``empty.Image``); readers only
    look at the config's media type, but tools that parse it as an image config still can.
    """
    zero = "0001-01-01T00:00:00Z"
    doc = {"architecture": "", "created": zero,
           "history": [{"created": zero} for _ in diff_ids], "os": "",
           "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}, "config": {}}
    return json.dumps(doc, separators=(",", ":")).encode()
