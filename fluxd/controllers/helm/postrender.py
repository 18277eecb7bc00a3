"""HelmRelease post-rendering as helm-controller does it, for the real ``helm`` 4 binary.

``post_render(manifests, config)`` is helm-controller's post-renderer chain
(``internal/postrender``), pure and in process: each ``spec.postRenderers[].kustomize``
in order (its ``patches`` and ``images`` built by fluxd's kustomize engine, input order
kept, as Flux's in-memory kustomization does), then ``spec.commonMetadata`` (labels and
annotations on every object's ``metadata`` only), then the origin labels
``helm.toolkit.fluxcd.io/name`` and ``/namespace`` (last, so they win). The manifests are
hostile: at most ``MAX_MANIFEST_BYTES``, read with the engine's YAML reader (alias
expansion bounded), every document a named object; the result is multi-document YAML
whose strings are quoted unless no YAML reader (go-yaml v2/v3, YAML 1.1) could take
them for anything else.

helm 4 runs post-renderers only as plugins. ``install_plugin`` writes one (``type:
postrenderer/v1``, ``runtime: subprocess``): in the controller a few-line client handing
the manifests over a Unix socket to ``serve`` in the fluxd process (a plugin importing
fluxd would cost every install a quarter of a second of CPU), or, standalone, ``python -m
fluxd helm-post-render CONFIG``; ``post_renderer_argv`` names it and a config file written
with ``PostRenderConfig.write``. helm 4.1 hands the plugin every template, hooks included
(each document annotated ``postrenderer.helm.sh/postrender-filename``, which must
survive: helm splits the output back into files by it), and has no strategy flag, so
``spec.postRenderStrategy`` is applied here: ``nohooks`` passes documents carrying
``helm.sh/hook`` through untouched, ``separate`` renders them apart from the others.
helm drops a plugin's stderr; ``run_command`` therefore also leaves its error in
``error_path(config)`` for ``read_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

import yaml

from fluxd.artifacts.snapshot import Snapshot
from fluxd.kustomize import engine, transform
from fluxd.kustomize.fieldspec import FieldSpec, apply_field_spec
from fluxd.kustomize.kyaml import Unsupported

if TYPE_CHECKING:
    from fluxd.api.helm import HelmReleaseSpec
    from fluxd.clock import Clock

__all__ = [
    "HOOK_ANNOTATION", "MAX_MANIFEST_BYTES", "PLUGIN_NAME", "STRATEGIES", "PostRenderConfig",
    "PostRenderError", "common_metadata_digest", "dump_documents", "error_path",
    "install_plugin", "post_render", "post_renderer_argv", "post_renderers_digest",
    "read_error", "run_command", "serve",
]

Obj = dict[str, Any]

#: the most bytes of manifests read from helm (a chart's whole rendering)
MAX_MANIFEST_BYTES = 64 << 20
#: the most bytes of a config file
MAX_CONFIG_BYTES = 4 << 20
#: the plugin's name, as ``--post-renderer`` takes it
PLUGIN_NAME = "fluxd-post-render"
#: what helm 4 annotates each document with to split the output back into files
FILENAME_ANNOTATION = "postrenderer.helm.sh/postrender-filename"
#: the annotation that makes a document a hook (its presence, as helm's sorter reads it)
HOOK_ANNOTATION = "helm.sh/hook"
#: ``spec.postRenderStrategy`` values; unset is helm 4's and Flux's default, combined
STRATEGIES = ("combined", "separate", "nohooks")
_ORIGIN_GROUP = "helm.toolkit.fluxcd.io"
_INPUT_FILE = "helm-output.yaml"


class PostRenderError(ValueError):
    """Manifests or a configuration that cannot be post-rendered; the message says why."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PostRenderConfig:
    """What the post-renderer needs of a HelmRelease; one JSON file for the plugin."""

    name: str
    namespace: str
    #: ``spec.postRenderers`` as JSON (camelCase)
    post_renderers: list[dict[str, Any]] = field(default_factory=list)
    #: ``spec.commonMetadata`` as JSON, None when not set
    common_metadata: dict[str, Any] | None = None
    #: ``spec.postRenderStrategy``, ``combined`` when not set
    strategy: str = "combined"

    @classmethod
    def from_spec(cls, name: str, namespace: str, spec: HelmReleaseSpec) -> PostRenderConfig:
        """The configuration of the HelmRelease ``namespace/name`` with ``spec``."""
        renderers = [r.model_dump(mode="json", by_alias=True, exclude_none=True)
                     for r in spec.post_renderers or ()]
        common = (spec.common_metadata.model_dump(mode="json", by_alias=True,
                                                  exclude_none=True)
                  if spec.common_metadata is not None else None)
        return cls(name=name, namespace=namespace, post_renderers=renderers,
                   common_metadata=common, strategy=spec.post_render_strategy or "combined")

    def to_json(self) -> bytes:
        return json.dumps({
            "name": self.name, "namespace": self.namespace,
            "postRenderers": self.post_renderers, "commonMetadata": self.common_metadata,
            "postRenderStrategy": self.strategy,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PostRenderConfig:
        """The configuration in ``data``; ``PostRenderError`` for anything else."""
        if len(data) > MAX_CONFIG_BYTES:
            raise PostRenderError(f"configuration larger than {MAX_CONFIG_BYTES} bytes")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise PostRenderError(f"configuration is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise PostRenderError("configuration is not a JSON object")
        name, namespace = raw.get("name"), raw.get("namespace")
        renderers = raw.get("postRenderers")
        renderers = [] if renderers is None else renderers
        common = raw.get("commonMetadata")
        strategy = raw.get("postRenderStrategy") or "combined"
        if not (isinstance(name, str) and isinstance(namespace, str)):
            raise PostRenderError("configuration without name and namespace")
        if not (isinstance(renderers, list) and all(isinstance(r, dict) for r in renderers)):
            raise PostRenderError("postRenderers is not a list of objects")
        if common is not None and not isinstance(common, dict):
            raise PostRenderError("commonMetadata is not an object")
        if strategy not in STRATEGIES:
            raise PostRenderError(f"unknown postRenderStrategy {strategy!r}")
        return cls(name=name, namespace=namespace, post_renderers=renderers,
                   common_metadata=common, strategy=strategy)

    def write(self, path: Path) -> None:
        """Write the configuration to ``path``, readable by its owner only."""
        _write_private(path, self.to_json())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)


# --------------------------------------------------------------------------- rendering


def post_render(manifests: str, config: PostRenderConfig) -> str:
    """``manifests`` (a multi-document YAML stream) after helm-controller's post-renderers
    for ``config``, as multi-document YAML; ``PostRenderError`` says why it cannot be."""
    try:
        data = manifests.encode()
    except UnicodeEncodeError as exc:
        raise PostRenderError(f"manifests that are not Unicode text: {exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise PostRenderError(f"manifests larger than {MAX_MANIFEST_BYTES} bytes")
    if config.strategy not in STRATEGIES:
        raise PostRenderError(f"unknown postRenderStrategy {config.strategy!r}")

    try:
        objects = engine.read_resources(data)
    except Unsupported as exc:
        raise PostRenderError(f"cannot read the rendered manifests: {exc}") from None
    if config.strategy == "combined":
        return dump_documents(_render(objects, config))
    hooks = [_is_hook(obj) for obj in objects]
    rendered = _render([o for o, hook in zip(objects, hooks, strict=True) if not hook], config)
    hook_objects = [o for o, hook in zip(objects, hooks, strict=True) if hook]
    if config.strategy == "separate" and hook_objects:
        hook_objects = _render(hook_objects, config)
    # helm regroups the documents by file; the manifests first, then the hooks
    return dump_documents([*rendered, *hook_objects])


def _is_hook(obj: Obj) -> bool:
    annotations = obj["metadata"].get("annotations")
    return isinstance(annotations, dict) and HOOK_ANNOTATION in annotations


def _render(objects: list[Obj], config: PostRenderConfig) -> list[Obj]:

    if not objects:
        return objects
    for index, renderer in enumerate(config.post_renderers):
        kustomize = renderer.get("kustomize")
        if kustomize:
            objects = _kustomize(objects, kustomize, index)
    try:
        common = config.common_metadata or {}
        labels, annotations = common.get("labels"), common.get("annotations")
        if labels is not None:
            transform.add_labels(objects, _string_map(labels, "commonMetadata.labels"),
                                 include_selectors=False, include_templates=False)
        if annotations is not None:
            _add_metadata_annotations(
                objects, _string_map(annotations, "commonMetadata.annotations"))
        transform.add_labels(objects, {f"{_ORIGIN_GROUP}/name": config.name,
                                       f"{_ORIGIN_GROUP}/namespace": config.namespace},
                             include_selectors=False, include_templates=False)
    except Unsupported as exc:
        raise PostRenderError(f"cannot set the common metadata: {exc}") from None
    return objects


def _kustomize(objects: list[Obj], spec: Mapping[str, Any], index: int) -> list[Obj]:
    """One kustomize post-renderer: Flux's in-memory kustomization (the objects as its
    only resource, the patches and images) built by fluxd's engine, input order kept."""

    where = f"postRenderers[{index}].kustomize"
    if not isinstance(spec, Mapping):
        raise PostRenderError(f"{where} is not an object")
    kustomization: Obj = {
        "apiVersion": engine.KUSTOMIZATION_VERSION, "kind": "Kustomization",
        "resources": [_INPUT_FILE],
        # Flux's kustomizer is made without a reorder option: resources keep their order
        "sortOptions": {"order": "fifo"},
    }
    patches = [_patch(p, f"{where}.patches[{i}]")
               for i, p in enumerate(_list(spec.get("patches"), f"{where}.patches"))]
    images = [_image(i, f"{where}.images[{n}]")
              for n, i in enumerate(_list(spec.get("images"), f"{where}.images"))]
    if patches:
        kustomization["patches"] = patches
    if images:
        kustomization["images"] = images
    snapshot = Snapshot.of({_INPUT_FILE: dump_documents(objects).encode()}, set())
    try:
        return engine.build(snapshot, "", kustomization)
    except Unsupported as exc:
        raise PostRenderError(
            f"{where}: fluxd's kustomize engine refuses it: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError,
            RecursionError) as exc:
        raise PostRenderError(f"{where}: fluxd's kustomize engine failed: "
                              f"{type(exc).__name__}: {exc}") from None


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PostRenderError(f"{what} is not a list")
    return value


def _patch(value: Any, what: str) -> Obj:
    # Go's omitempty: empty strings and a missing target are left out
    if not isinstance(value, Mapping) or not isinstance(value.get("patch", ""), str):
        raise PostRenderError(f"{what} is not a patch")
    patch: Obj = {"patch": value.get("patch", "")}
    target = value.get("target")
    if target is not None:
        if not isinstance(target, Mapping) or not all(
                isinstance(v, str) for v in target.values() if v is not None):
            raise PostRenderError(f"{what}.target is not a selector")
        patch["target"] = {k: target[k] for k in _SELECTOR_FIELDS if target.get(k)}
    return patch


def _image(value: Any, what: str) -> Obj:
    if not isinstance(value, Mapping) or not all(
            isinstance(value.get(k, ""), str | None) for k in _IMAGE_FIELDS):
        raise PostRenderError(f"{what} is not an image")
    return {k: value[k] for k in _IMAGE_FIELDS if value.get(k) or k == "name"}


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PostRenderError(f"{what} is not a map of strings")
    return value


def _add_metadata_annotations(objects: Iterable[Obj], annotations: Mapping[str, str]) -> None:
    """Flux's annotation transformer: ``metadata/annotations`` only, created if missing
    (kustomize's ``commonAnnotations`` would also write pod templates)."""

    if not annotations:
        return
    entries = sorted(annotations.items())
    spec = FieldSpec("metadata/annotations", True)

    def update(holder: Any, key: Any) -> None:
        node = holder[key]
        if not isinstance(node, dict):
            raise Unsupported("annotations that are not a map")
        node.update(entries)

    for obj in objects:
        apply_field_spec(obj, spec, update, "map")


# --------------------------------------------------------------------------- YAML out

#: strings every YAML reader (go-yaml v2 and v3, YAML 1.1) reads back as these strings
_PLAIN = re.compile(r"[A-Za-z_][-A-Za-z0-9_./]*")
#: plain words some reader takes for a boolean or null
_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_STR_TAG = "tag:yaml.org,2002:str"
_NO_FOLDING = 1 << 30

_DumperBase: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_DumperBase):  # type: ignore[valid-type, misc]
    """Block YAML; a string is plain only when no YAML reader can take it for anything
    else, double-quoted (escapes for the unprintable) otherwise."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    plain = _PLAIN.fullmatch(value) is not None and value.lower() not in _WORDS
    return dumper.represent_scalar(_STR_TAG, value, style=None if plain else '"')


_Dumper.add_representer(str, _represent_str)


def dump_documents(objects: Sequence[Obj]) -> str:
    """``objects`` as a multi-document YAML stream ("" for none)."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=False,
                            default_flow_style=False, width=_NO_FOLDING)
        for obj in objects)


# --------------------------------------------------------------------------- digests

_SELECTOR_FIELDS = ("group", "version", "kind", "namespace", "name", "annotationSelector",
                    "labelSelector")
_IMAGE_FIELDS = ("name", "newName", "newTag", "digest")
_SELECTOR_ATTRIBUTES = (("group", "group"), ("version", "version"), ("kind", "kind"),
                        ("namespace", "namespace"), ("name", "name"),
                        ("annotationSelector", "annotation_selector"),
                        ("labelSelector", "label_selector"))


def _go_json_digest(value: Any) -> str:
    """``sha256:<hex>`` of what Go's ``json.Encoder`` writes for ``value`` (structs given
    as dicts in field order, maps sorted): compact, HTML characters and U+2028/U+2029
    escaped, a newline at the end."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return "sha256:" + hashlib.sha256((text + "\n").encode("utf-8", "replace")).hexdigest()


def _omit_empty(pairs: Iterable[tuple[str, Any]]) -> Obj:
    return {key: value for key, value in pairs if value not in (None, "", [], {})}


def _sorted_map(value: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(sorted(value.items())) if value else None


def post_renderers_digest(spec: HelmReleaseSpec) -> str | None:
    """``status.observedPostRenderersDigest`` as helm-controller computes it
    (``postrender.Digest``: Go's JSON of ``spec.postRenderers``, sha256); None when the
    spec has no ``postRenderers`` (Flux leaves the field empty then)."""
    if spec.post_renderers is None:
        return None
    renderers: list[Obj] = []
    for renderer in spec.post_renderers:
        kustomize = renderer.kustomize
        if kustomize is None:
            renderers.append({})
            continue
        patches = []
        for p in kustomize.patches or ():
            patch = _omit_empty((("patch", p.patch),))
            if p.target is not None:
                # a set pointer: written even when every field is empty
                patch["target"] = _omit_empty(
                    (name, getattr(p.target, attr)) for name, attr in _SELECTOR_ATTRIBUTES)
            patches.append(patch)
        images = [{"name": i.name, **_omit_empty((
            ("newName", i.new_name), ("newTag", i.new_tag), ("digest", i.digest)))}
            for i in kustomize.images or ()]
        renderers.append({"kustomize": _omit_empty((("patches", patches),
                                                    ("images", images)))})
    return _go_json_digest(renderers)


def common_metadata_digest(spec: HelmReleaseSpec) -> str | None:
    """``status.observedCommonMetadataDigest``: Go's JSON of ``spec.commonMetadata``
    (annotations, then labels, each sorted), sha256, as for the post-renderers; None
    when the spec has no ``commonMetadata``."""
    common = spec.common_metadata
    if common is None:
        return None
    return _go_json_digest(_omit_empty((("annotations", _sorted_map(common.annotations)),
                                        ("labels", _sorted_map(common.labels)))))


# --------------------------------------------------------------------------- helm plugin

_PLUGIN_VERSION = "1.0.0"


#: the plugin's program when fluxd serves the post-rendering (``serve``): hand the
#: manifests and the configuration's path to the fluxd process over its socket and write
#: back what it answers. Standard library only, run with ``-I -S``: it starts in a few
#: milliseconds where a process importing fluxd takes a quarter of a second of CPU.
CLIENT = """\
import socket, sys
sock_path, config = sys.argv[1], sys.argv[2].encode()
data = sys.stdin.buffer.read()
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.settimeout(900)
conn.connect(sock_path)
conn.sendall(len(config).to_bytes(4, "big") + config + len(data).to_bytes(8, "big") + data)
chunks = []
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    chunks.append(chunk)
reply = b"".join(chunks)
if reply[:1] == b"0":
    sys.stdout.buffer.write(reply[1:])
    sys.exit(0)
sys.stderr.buffer.write(reply[1:] or b"fluxd's post-renderer did not answer")
sys.exit(1)
"""
_CLIENT_FILE = "client.py"


def install_plugin(plugins_dir: Path, *, python: str = sys.executable,
                   socket: Path | None = None) -> str:
    """Write (idempotently) the post-renderer plugin under ``plugins_dir`` (helm's
    ``HELM_PLUGINS``); its name. With ``socket`` (where ``serve`` listens) the plugin is
    ``CLIENT``; without, it runs ``python -m fluxd helm-post-render`` on its own.
    ``ValueError`` for a path helm would split or expand (a space or ``$``)."""
    directory = plugins_dir / PLUGIN_NAME
    if socket is None:
        args = ["-m", "fluxd", "helm-post-render"]
        paths = [python]
    else:
        args = ["-I", "-S", str(directory / _CLIENT_FILE), str(socket)]
        paths = [python, *args[2:]]
    for part in paths:
        if not os.path.isabs(part) or " " in part or "$" in part or "\n" in part:
            raise ValueError(f"helm cannot run {part!r} as a plugin command: it must be an "
                             "absolute path without spaces or '$'")
    text = (
        "apiVersion: v1\n"
        f"name: {PLUGIN_NAME}\n"
        f"version: {_PLUGIN_VERSION}\n"
        "type: postrenderer/v1\n"
        "runtime: subprocess\n"
        "runtimeConfig:\n"
        "  platformCommand:\n"
        f"    - command: {json.dumps(python)}\n"
        f"      args: {json.dumps(args)}\n"
    )
    path = directory / "plugin.yaml"
    try:
        if path.read_text() == text and (socket is None or
                                         (directory / _CLIENT_FILE).read_text() == CLIENT):
            return PLUGIN_NAME
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    directory.mkdir(parents=True, exist_ok=True)
    if socket is not None:
        _replace(directory / _CLIENT_FILE, CLIENT)
    _replace(path, text)
    return PLUGIN_NAME


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)


@contextlib.asynccontextmanager
async def serve(socket_path: Path, *, root: Path, clock: Clock,
                read_timeout: float = 60.0) -> AsyncIterator[Path]:
    """Post-render for the plugin's ``CLIENT`` on a Unix socket at ``socket_path`` (mode
    0600, in a directory only fluxd's user reaches) while the block runs. A request names
    a configuration file, which must lie under ``root`` (the helm runs' scratch
    directories: fluxd wrote it), and carries at most ``MAX_MANIFEST_BYTES`` of
    manifests, sent within ``read_timeout`` seconds; the answer is ``0`` and the manifests, or
    ``1`` and the error (also left in ``error_path(config)``, helm drops the plugin's
    stderr)."""
    root = _resolved(root)
    working = asyncio.Semaphore(4)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config_path: Path | None = None
        try:
            async with clock.timeout(read_timeout):
                size = int.from_bytes(await reader.readexactly(4), "big")
                if size > 4096:
                    raise PostRenderError("configuration path too long")
                config_path = Path((await reader.readexactly(size)).decode())
                size = int.from_bytes(await reader.readexactly(8), "big")
                if size > MAX_MANIFEST_BYTES:
                    raise PostRenderError(f"manifests larger than {MAX_MANIFEST_BYTES} "
                                          "bytes")
                data = await reader.readexactly(size)
            async with working:
                output = await asyncio.to_thread(_render_file, config_path, root, data)
            writer.write(b"0" + output.encode())
        except (PostRenderError, OSError, UnicodeDecodeError, ValueError,
                asyncio.IncompleteReadError, TimeoutError) as exc:
            message = f"post-render failed: {exc}"
            if config_path is not None:
                with contextlib.suppress(OSError):
                    _write_private(error_path(config_path), message.encode())
            writer.write(b"1" + message.encode())
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
                writer.close()

    _remove(socket_path)
    server = await asyncio.start_unix_server(handle, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    try:
        yield socket_path
    finally:
        server.close()
        await server.wait_closed()
        _remove(socket_path)


def _resolved(path: Path) -> Path:
    return path.resolve()


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _render_file(config_path: Path, root: Path, data: bytes) -> str:
    """The post-rendering of a request (in a worker thread): its configuration must be
    a file under ``root``."""
    resolved = config_path.resolve()
    if not resolved.is_relative_to(root) or not resolved.is_file():
        raise PostRenderError(f"{config_path} is not a configuration fluxd wrote")
    error_path(config_path).unlink(missing_ok=True)
    with config_path.open("rb") as file:
        config = PostRenderConfig.from_json(file.read(MAX_CONFIG_BYTES + 1))
    return post_render(data.decode("utf-8"), config)


def post_renderer_argv(plugin: str, config_path: Path) -> list[str]:
    """helm's arguments running ``plugin`` with the configuration at ``config_path``."""
    return ["--post-renderer", plugin, "--post-renderer-args", str(config_path)]


def error_path(config_path: Path) -> Path:
    """Where the plugin leaves its error for the configuration at ``config_path``."""
    return config_path.with_name(config_path.name + ".error")


def read_error(config_path: Path) -> str | None:
    """The plugin's last error for ``config_path`` (bounded), None when there is none."""
    try:
        with error_path(config_path).open("rb") as file:
            return file.read(64 << 10).decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def run_command(argv: Sequence[str], stdin: BinaryIO, stdout: TextIO, stderr: TextIO) -> int:
    """``fluxd helm-post-render CONFIG``: manifests on ``stdin``, the post-rendered ones
    on ``stdout``; an error on ``stderr`` (and in ``error_path(CONFIG)``), exit 1."""
    if len(argv) != 1:
        print("usage: fluxd helm-post-render CONFIG (manifests on stdin)", file=stderr)
        return 2
    config_path = Path(argv[0])
    try:
        error_path(config_path).unlink(missing_ok=True)
        with config_path.open("rb") as file:
            config = PostRenderConfig.from_json(file.read(MAX_CONFIG_BYTES + 1))
        data = stdin.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise PostRenderError(f"manifests larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            manifests = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PostRenderError(f"manifests are not UTF-8: {exc}") from None
        output = post_render(manifests, config)
    except (OSError, PostRenderError) as exc:
        message = f"post-render failed: {exc}"
        print(f"fluxd helm-post-render: {message}", file=stderr)
        with contextlib.suppress(OSError):
            _write_private(error_path(config_path), message.encode())
        return 1
    stdout.write(output)
    stdout.flush()
    return 0
