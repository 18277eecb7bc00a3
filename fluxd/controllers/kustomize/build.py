"""Building a Kustomization's manifests as Flux's kustomize-controller does: the
kustomization file generated or merged (``fluxcd/pkg`` ``kustomize.Generator``), then the
real kustomize engine (``kubectl kustomize``) run on it.

Contract:

- ``generate(root, path, spec)`` resolves ``spec.path`` inside the extracted artifact at
  ``root`` (``..`` and symlinks cannot leave it; a missing directory is ``PathNotFound``,
  ``kustomization path not found: …``), then writes the kustomization file there. An
  existing ``kustomization.yaml``/``.yml``/``Kustomization`` is kept (``"unchanged"``);
  one without ``resources`` gets ``buildMetadata: [originAnnotations]`` so kustomize does
  not call it empty. Otherwise one is made from a walk of the directory (``"created"``):
  every ``*.yaml``/``*.yml`` file, which must be Kubernetes YAML, and every
  sub-directory holding a kustomization file (not entered); nothing found gives
  ``namespace: _placeholder``. The spec is merged in last: ``targetNamespace``,
  ``namePrefix``, ``nameSuffix``, ``patches``, ``components`` (local relative paths only;
  missing ones dropped with ``ignoreMissingComponents``), ``images`` (an entry of the
  same name is replaced whole) and ``buildMetadata``. The file is written back as Flux's
  typed round trip leaves it: top-level fields kustomize does not know are dropped.
- ``build(root, path, spec, kubectl=…, clock=…, timeout=…)`` refuses ``spec.decryption`` (fluxd
  does not decrypt SOPS), generates in a worker thread, refuses local kustomizations
  that name files outside ``root`` (Flux's secure file system does; kubectl would read
  them), runs ``kubectl kustomize --load-restrictor=LoadRestrictionsNone`` (plugins and
  Helm off, a private empty home, no kubeconfig) within ``timeout`` seconds on
  ``clock`` (the process group is killed when it runs out), parses the output in a
  worker thread, checks every object has an apiVersion, kind and name, sets
  ``commonMetadata`` over the objects' own labels and annotations, and refuses
  SOPS-encrypted Secrets.
- ``build_snapshot(snapshot, directory, path, spec, …)`` is ``build`` from an artifact
  in memory: only the files the build reads (``closure``: the kustomizations reachable
  from ``spec.path`` and every local file and directory they name) are written to a
  private temporary directory at their relative paths, so a build's cost does not grow
  with the repository; when that set cannot be told safely (see ``closure``) the whole
  artifact is written, as before.
- ``ManifestCache`` keeps built and substituted manifests by ``build_key`` /
  ``substitution_key``, bounded by entries and bytes; every read is a private copy.
- Every failure is ``BuildError`` (the caller's ``BuildFailed``), except a missing
  ``spec.path``: ``PathNotFound`` (``ArtifactFailed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pickle
import posixpath
import shutil
import signal
import stat
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fluxd.artifacts.snapshot import Snapshot
from fluxd.clock import Clock
from fluxd.kustomize.engine import KUSTOMIZATION_FILES
from fluxd.kustomize.kyaml import use_go_yaml_v2_scalars
from fluxd.lru import LRU
from fluxd.tools import find_tool

Obj = dict[str, Any]

CREATED = "created"
UNCHANGED = "unchanged"

KUSTOMIZATION_API_VERSION = "kustomize.config.k8s.io/v1beta1"

#: the top-level fields of kustomize's ``types.Kustomization`` (v5.7): Flux reads the
#: file into that struct and writes it back, so any other field disappears on the way
KUSTOMIZATION_FIELDS = (
    "apiVersion", "kind", "metadata", "openapi", "namePrefix", "nameSuffix", "namespace",
    "commonLabels", "labels", "commonAnnotations", "patchesStrategicMerge",
    "patchesJson6902", "patches", "images", "imageTags", "replacements", "replicas",
    "vars", "sortOptions", "resources", "components", "crds", "bases",
    "configMapGenerator", "secretGenerator", "helmGlobals", "helmCharts",
    "helmChartInflationGenerator", "generatorOptions", "configurations", "generators",
    "transformers", "validators", "buildMetadata",
)
_FIELD_BY_FOLDED = {name.lower(): name for name in KUSTOMIZATION_FIELDS}

DECRYPT_ANNOTATION = "kustomize.toolkit.fluxcd.io/decrypt"

_SELECTOR_FIELDS = ("group", "version", "kind", "name", "namespace", "labelSelector",
                    "annotationSelector")
_IMAGE_FIELDS = ("name", "newName", "newTag", "digest")
# what kustomize takes for a remote location (its ``repospec.go``), ``file://`` aside
_REMOTE_PREFIXES = ("git::", "gh:", "ssh://", "https://", "http://", "git@", "github.com:",
                    "github.com/")
_MAX_SYMLINKS = 255


class BuildError(Exception):
    """The manifests could not be built (Flux's ``BuildFailed``)."""


class PathNotFound(BuildError):
    """``spec.path`` names nothing inside the artifact (Flux's ``ArtifactFailed``)."""


# --------------------------------------------------------------------------- YAML


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type, misc]
    """Safe loading that reads plain scalars as go-yaml v2 does (Flux turns manifests into
    JSON with it): ``y``/``n`` are booleans, dates, ``=`` and ``1:30`` stay strings,
    ``1e3`` is a float; unknown tags are read as untagged."""


use_go_yaml_v2_scalars(_Loader, ("tag:yaml.org,2002:merge", r"<<", "<"))


def _construct_untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor(None, _construct_untagged)


class _Dumper(yaml.SafeDumper):
    """Plain YAML without anchors; multi-line strings (inline patches) as blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load_documents(text: str | bytes) -> list[Any]:
    """The documents of a YAML stream, empty ones left out. Blocks."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"yaml: line {mark.line + 1}: {problem}" if mark is not None else f"yaml: {problem}"


# --------------------------------------------------------------------------- paths


def secure_join(root: Path, unsafe: str) -> Path:
    """``unsafe`` under ``root`` as ``securejoin.SecureJoin`` resolves it: each symlink on
    the way is followed as if ``root`` were ``/`` and ``..`` stops at ``root``, so the
    result never leaves it. Missing components are kept as written. Blocks."""
    pending = [part for part in reversed(unsafe.split("/")) if part not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise BuildError(f"securejoin {unsafe}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed(target.split("/")))
    return root.joinpath(*resolved)


def resolve_path(root: Path, path: str) -> Path:
    """The directory ``spec.path`` names in the artifact at ``root``; ``PathNotFound``
    when there is nothing there. Blocks."""
    directory = secure_join(root, path)
    try:
        os.stat(directory)
    except OSError as exc:
        raise PathNotFound(f"kustomization path not found: stat {directory}: "
                           f"{_go_strerror(exc)}") from None
    return directory


def _go_strerror(exc: OSError) -> str:
    """An OS error worded as Go's ``syscall.Errno`` words it."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _kustomization_file(root: Path, directory: Path) -> Path | None:
    """The kustomization file in ``directory``, if any; one leading outside ``root``
    does not count (Flux's secure file system does not see it)."""
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.exists() and not path.is_dir() and _outside(root, path) is None:
            return path
    return None


def _outside(root: Path, path: Path) -> str | None:
    """Why ``path`` is not in or below ``root`` once symlinks are followed (Flux's
    ``fsSecure`` check: an existing path by where it leads, a file by its directory),
    or None when it is inside."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        real = os.path.dirname(real)
    if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
        return None
    return f"path '{path}' is not in or below '{real_root}'"


def is_local_relative(path: str) -> bool:
    """Whether a component path is local and relative (``IsLocalRelativePath``)."""
    folded = path.lower()
    for prefix in _REMOTE_PREFIXES:
        if len(prefix) < len(path) and folded.startswith(prefix):
            return False
    return not (path.startswith("/") or folded.removeprefix("file://").startswith("/"))


# --------------------------------------------------------------------------- generate


def generate(root: Path, path: str, spec: Mapping[str, Any]) -> str:
    """Write the kustomization file for ``spec`` in the directory ``path`` names inside
    ``root``, as Flux's generator does; ``"created"`` or ``"unchanged"``. Blocks."""
    _, action = _generate(root, path, spec)
    return action


def _generate(root: Path, path: str, spec: Mapping[str, Any]) -> tuple[Path, str]:
    directory = resolve_path(root, path)
    if not directory.is_dir():
        raise BuildError(f"open {directory / KUSTOMIZATION_FILES[0]}: not a directory")
    existing = _kustomization_file(root, directory)
    try:
        if existing is None:
            kfile, action = directory / KUSTOMIZATION_FILES[0], CREATED
            kustomization = _kustomization_for(directory, _scan(root, directory))
        else:
            kfile, action = existing, UNCHANGED
            kustomization = _read_kustomization(existing)
            if not kustomization.get("resources"):
                # kustomize refuses an "empty" kustomization; this field makes it not so
                kustomization["buildMetadata"] = ["originAnnotations"]
        _merge_spec(kustomization, spec, directory)
        text = yaml.dump(kustomization, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                         default_flow_style=False)
        kfile.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"{exc.filename or directory}: {_go_strerror(exc)}") from None
    return directory, action


def _kustomization_for(directory: Path, found: list[Path]) -> Obj:
    return kustomization_listing([p.relative_to(directory).as_posix() for p in found])


def kustomization_listing(found: Sequence[str]) -> Obj:
    """Flux's generated kustomization listing ``found`` (POSIX paths relative to its
    directory, in walk order)."""
    kustomization: Obj = {"apiVersion": KUSTOMIZATION_API_VERSION, "kind": "Kustomization"}
    if found:
        kustomization["resources"] = ["./" + path for path in found]
    else:
        # kustomize refuses an empty kustomization; Flux gives it a namespace to set
        kustomization["namespace"] = "_placeholder"
    return kustomization


def _scan(root: Path, base: Path) -> list[Path]:
    """The manifests and kustomization directories under ``base``, in ``filepath.Walk``
    order (names sorted, depth first, symlinked directories not entered); an entry
    leading outside ``root`` fails the walk."""
    found: list[Path] = []

    def walk(directory: Path) -> None:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            path = Path(entry.path)
            escape = _outside(root, path)
            if escape is not None:
                raise BuildError(f"fs-security-constraint walk {path}: {escape}")
            if entry.is_dir(follow_symlinks=False):
                if _kustomization_file(root, path) is not None:
                    found.append(path)
                else:
                    walk(path)
                continue
            if not _manifest_name(entry.name):
                continue
            if not entry.is_file() and path.exists():
                # a FIFO or device would block the read, not fail it
                raise BuildError(f"failed to decode Kubernetes YAML from {path}: "
                                 f"not a regular file")
            try:
                check_manifests(path.read_bytes())
            except ValueError as exc:
                raise BuildError(f"failed to decode Kubernetes YAML from {path}: {exc}"
                                 ) from None
            found.append(path)

    walk(base)
    return found


def check_manifests(text: str | bytes) -> None:
    """``ValueError`` unless every document is a Kubernetes object as kustomize's
    resource factory takes it: a mapping with a kind, and a name unless the kind is a
    ``…List`` (whose items are checked in turn)."""
    try:
        documents = load_documents(text)
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_problem(exc)) from None
    while documents:
        doc = documents.pop(0)
        if isinstance(doc, dict | list) and not doc:
            continue
        if not isinstance(doc, dict):
            raise ValueError("missing Resource metadata")
        meta = _mapping(doc.get("metadata"))
        kind = _text(doc.get("kind"))
        if not kind:
            raise ValueError(f"missing kind in object {_go_meta(doc)}")
        if not kind.endswith("List") and not _text(meta.get("name")):
            raise ValueError(f"missing metadata.name in object {_go_meta(doc)}")
        if kind.endswith("List") and "items" in doc:
            items = doc["items"]
            if items is None:
                continue
            if not isinstance(items, list):
                raise ValueError(f"expected array in {kind}/items, but found "
                                 f"{type(items).__name__}")
            documents[:0] = items


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _go_meta(doc: Obj) -> str:
    """An object's type and name as kyaml prints its ``ResourceMeta`` in errors."""
    meta = _mapping(doc.get("metadata"))

    def go_map(value: Any) -> str:
        pairs = value.items() if isinstance(value, dict) else ()
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(pairs)) + "]"

    return (f"{{{{{_text(doc.get('apiVersion'))} {_text(doc.get('kind'))}}} "
            f"{{{{{_text(meta.get('name'))} {_text(meta.get('namespace'))}}} "
            f"{go_map(meta.get('labels'))} {go_map(meta.get('annotations'))}}}}}")


def _read_kustomization(path: Path) -> Obj:
    """An existing kustomization file as Flux's round trip through kustomize's types
    leaves it (``parse_kustomization``)."""
    return parse_kustomization(path.read_text(encoding="utf-8"))


def parse_kustomization(text: str | bytes) -> Obj:
    """A kustomization file's content as Flux's round trip through kustomize's types
    leaves it: unknown top-level fields gone, field names matched regardless of case."""
    try:
        loaded = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise BuildError(f"error converting YAML to JSON: {_yaml_problem(exc)}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise BuildError(f"error unmarshaling JSON: json: cannot unmarshal "
                         f"{type(loaded).__name__} into Go value of type "
                         f"types.Kustomization")
    kustomization: Obj = {"apiVersion": KUSTOMIZATION_API_VERSION, "kind": "Kustomization"}
    for key, value in loaded.items():
        field = _FIELD_BY_FOLDED.get(str(key).lower())
        if field is not None:
            kustomization[field] = value
    return kustomization


def _merge_spec(kustomization: Obj, spec: Mapping[str, Any], directory: Path, *,
                exists: Callable[[str], bool] | None = None) -> None:
    """The Kustomization's spec fields laid over the kustomization file; ``exists``
    says whether a component path is there (default: on disk under ``directory``)."""
    for field, key in (("targetNamespace", "namespace"), ("namePrefix", "namePrefix"),
                       ("nameSuffix", "nameSuffix")):
        if field in spec:
            kustomization[key] = _string(spec, field)

    patches = list(kustomization.get("patches") or [])
    for patch in spec.get("patches") or []:
        if not isinstance(patch, Mapping):
            raise BuildError("unable to get patches: a patch is not an object")
        patch_entry: Obj = {}
        if patch.get("patch"):
            patch_entry["patch"] = str(patch["patch"])
        target = patch.get("target")
        if isinstance(target, Mapping):
            patch_entry["target"] = {k: str(target[k]) for k in _SELECTOR_FIELDS
                                     if target.get(k)}
        patches.append(patch_entry)
    if patches:
        kustomization["patches"] = patches

    components = list(kustomization.get("components") or [])
    ignore_missing = spec.get("ignoreMissingComponents") is True
    for component in spec.get("components") or []:
        if not isinstance(component, str):
            raise BuildError("unable to get components: a component is not a string")
        if not is_local_relative(component):
            raise BuildError(f"component path '{component}' must be local and relative")
        if ignore_missing and not (exists(component) if exists is not None
                                   else _exists(directory / component)):
            continue
        components.append(component)
    if components:
        kustomization["components"] = components

    images = list(kustomization.get("images") or [])
    for image in spec.get("images") or []:
        if not isinstance(image, Mapping):
            raise BuildError("unable to get images: an image is not an object")
        entry: Obj = {k: str(image[k]) for k in _IMAGE_FIELDS if image.get(k)}
        name = str(image.get("name") or "")
        for index, current in enumerate(images):
            if isinstance(current, Mapping) and str(current.get("name") or "") == name:
                images[index] = entry
                break
        else:
            images.append(entry)
    if images:
        kustomization["images"] = images

    build_metadata = spec.get("buildMetadata")
    if build_metadata:
        kustomization["buildMetadata"] = [str(option) for option in build_metadata]


def _string(spec: Mapping[str, Any], field: str) -> str:
    value = spec[field]
    if not isinstance(value, str):
        raise BuildError(f".spec.{field} accessor error: {value!r} is of the type "
                         f"{type(value).__name__}, expected string")
    return value


def _exists(path: Path) -> bool:
    """``os.Stat`` not failing with ``ErrNotExist`` (other errors count as present)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


# --------------------------------------------------------------------------- confinement


def check_references(root: Path, directory: Path) -> None:
    """``BuildError`` when a kustomization reachable from ``directory`` names a local
    file or directory outside ``root``. Flux runs kustomize on a file system that
    refuses such paths; ``kubectl kustomize`` would follow them, so they are looked for
    before it runs: the path fields of every local kustomization (``resources``,
    ``components``, ``bases``, patches, generators' files, …) and the ``files``,
    ``envs``, ``env`` and ``path`` of generator and transformer configuration files.
    Remote bases are not looked into. Blocks."""
    pending: list[tuple[Path, bool]] = [(directory, False)]
    seen: set[Path] = set()
    while pending:
        current, configs = pending.pop()
        kfile = _kustomization_file(root, current) if current not in seen else None
        seen.add(current)
        if kfile is None:
            continue
        try:
            kustomization = _read_kustomization(kfile)
        except BuildError:
            continue  # kustomize reports it
        for reference, role in _references(kustomization):
            target = _local_target(current, reference)
            if target is None:
                continue
            escape = _outside(root, target)
            if escape is not None:
                raise BuildError(f"kustomize build failed: {kfile}: {escape}")
            # a kustomization listed as generators or transformers yields configurations
            config = role == "config" or (configs and role == "base")
            if config and target.is_file():
                for inner in _config_references(target):
                    inner_target = _local_target(current, inner)
                    escape = _outside(root, inner_target) if inner_target else None
                    if escape is not None:
                        raise BuildError(f"kustomize build failed: {target}: {escape}")
            if role != "file" and target.is_dir():
                pending.append((target, config))


def _references(kustomization: Obj) -> list[tuple[str, str]]:
    """The paths a kustomization names, each with its role: ``base`` (a file or a
    kustomization directory), ``config`` (generator or transformer configuration) or
    ``file``."""
    found: list[tuple[str, str]] = []

    def add(values: Any, role: str) -> None:
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value:
                found.append((value, role))

    for field in ("resources", "components", "bases"):
        add(kustomization.get(field), "base")
    for field in ("generators", "transformers", "validators"):
        add(kustomization.get(field), "config")
    for field in ("crds", "configurations", "patchesStrategicMerge"):
        add(kustomization.get(field), "file")
    for field in ("patches", "patchesJson6902", "replacements"):
        for entry in kustomization.get(field) or []:
            if isinstance(entry, dict):
                add(entry.get("path"), "file")
    add(_mapping(kustomization.get("openapi")).get("path"), "file")
    for field in ("configMapGenerator", "secretGenerator"):
        for generator in kustomization.get(field) or []:
            for reference in _generator_files(generator):
                add(reference, "file")
    return found


def _generator_files(config: Any) -> list[str]:
    """The files a ConfigMap/Secret generator (or any plugin configuration) reads."""
    if not isinstance(config, dict):
        return []
    files = [f for f in config.get("files") or [] if isinstance(f, str)]
    # ``key=path`` names the key the file's content goes under
    paths = [f.split("=", 1)[1] if "=" in f else f for f in files]
    paths += [e for e in config.get("envs") or [] if isinstance(e, str)]
    paths += [config[k] for k in ("env", "path") if isinstance(config.get(k), str)]
    for replacement in config.get("replacements") or []:
        if isinstance(replacement, dict) and isinstance(replacement.get("path"), str):
            paths.append(replacement["path"])
    return paths


def _config_references(path: Path) -> list[str]:
    try:
        documents = load_documents(path.read_bytes())
    except (OSError, yaml.YAMLError):
        return []  # kustomize reports it
    return [ref for doc in documents for ref in _generator_files(doc)]


def _local_target(directory: Path, reference: str) -> Path | None:
    """Where a kustomization in ``directory`` finds ``reference`` on disk; None for a
    remote location or inline content."""
    local = _local_reference(reference)
    if local is None:
        return None
    return Path(os.path.normpath(directory / local))


def _local_reference(reference: str) -> str | None:
    """``reference`` as a local path; None for a remote location or inline content."""
    if _inline(reference):
        return None
    local = reference.removeprefix("file://")
    folded = local.lower()
    if "://" in local or folded.startswith(_REMOTE_PREFIXES) or "?ref=" in folded:
        return None
    return local


def _inline(reference: str) -> bool:
    """Whether a path field holds content (an inline patch or configuration) instead."""
    return "\n" in reference or reference.lstrip().startswith("{")


# --------------------------------------------------------------------------- closure

#: how much the closure walk takes from a (hostile) repository; past it the whole
#: artifact is written out instead
CLOSURE_MAX_FILES = 20_000
CLOSURE_MAX_DIRECTORIES = 5_000

#: the builtin plugins kustomize configures from a ``generators``/``transformers``/
#: ``validators`` file (``api/builtins``); ``_generator_files`` and ``paths`` name what
#: they read. Any other kind is an exec or Go plugin, which Flux's build does not run.
_BUILTIN_PLUGINS = frozenset({
    "AnnotationsTransformer", "ConfigMapGenerator", "HashTransformer", "IAMPolicyGenerator",
    "ImageTagTransformer", "LabelTransformer", "NamespaceTransformer",
    "PatchJson6902Transformer", "PatchStrategicMergeTransformer", "PatchTransformer",
    "PrefixSuffixTransformer", "PrefixTransformer", "ReplacementTransformer",
    "ReplicaCountTransformer", "SecretGenerator", "SortOrderTransformer",
    "SuffixTransformer", "ValueAddTransformer",
})
#: kustomization fields whose files are not followed here (Helm is off in Flux's build)
_UNFOLLOWED_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")


class ClosureUnknown(Exception):
    """What a build reads could not be told safely (the reason says why)."""


@dataclass(frozen=True)
class Closure:
    """The files and directories of a snapshot that a build reads."""

    files: frozenset[str]
    directories: frozenset[str]
    #: a kustomization names a remote base: the build reads more than the artifact
    remote: bool


def closure(snapshot: Snapshot, directory: str, spec: Mapping[str, Any]) -> Closure:
    """What building ``spec`` at ``directory`` (a snapshot path, "" for the root) reads:
    the directory's own files, or, when Flux generates its kustomization, the manifests
    its walk lists; then, for every kustomization reached, its own files and every local
    file and directory it names (resources, bases, components, patches, generator and
    plugin configuration files and what they name, …), recursively. A directory without
    a kustomization file brings its own files (kustomize reports it). ``ClosureUnknown``
    for what is not followed safely: a path leaving the artifact, a kustomization field
    or plugin kind not known here, inline plugin configuration, more than
    ``CLOSURE_MAX_FILES`` files or ``CLOSURE_MAX_DIRECTORIES`` directories. Blocks."""
    walk = _ClosureWalk(snapshot)
    try:
        walk.root(directory, spec)
    except (TypeError, AttributeError) as exc:  # a field of an unexpected type
        raise ClosureUnknown(f"unexpected kustomization content: {exc}") from None
    return Closure(frozenset(walk.files), frozenset(walk.directories), walk.remote)


class _ClosureWalk:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.files: set[str] = set()
        self.directories: set[str] = set()
        self.remote = False
        self.pending: list[str] = []
        self.visited: set[str] = set()
        self.top = ""

    def root(self, directory: str, spec: Mapping[str, Any]) -> None:
        snapshot = self.snapshot
        self.top = directory
        if directory in snapshot.files:
            self.add_file(directory)  # kustomize's "not a directory" needs only that
            return
        if not snapshot.is_dir(directory):
            return  # nothing there: the build reports the missing path
        if self.kustomization_file(directory) is None:
            self.generated(directory)
        else:
            self.pending.append(directory)
        for component in spec.get("components") or []:
            if isinstance(component, str) and is_local_relative(component):
                self.reference(directory, component, "base")
        while self.pending:
            current = self.pending.pop()
            if current not in self.visited:
                self.visited.add(current)
                self.kustomization(current)

    def generated(self, top: str) -> None:
        """What Flux's walk (``_scan``) lists: manifests below ``top``, and the
        directories with a kustomization file (not entered)."""
        stack = [top]
        while stack:
            current = stack.pop()
            self.add_directory(current)
            dirs, names = self.snapshot.listdir(current)
            for name in names:
                if _manifest_name(name):
                    self.add_file(_join(current, name))
            for name in dirs:
                path = _join(current, name)
                if self.kustomization_file(path) is None:
                    stack.append(path)
                else:
                    self.pending.append(path)

    def kustomization(self, directory: str) -> None:
        self.add_directory(directory)
        for name in self.snapshot.listdir(directory)[1]:
            self.add_file(_join(directory, name))
        kfile = self.kustomization_file(directory)
        if kfile is None:
            return  # kustomize reports it
        kustomization = self.read(kfile, flux=directory == self.top)
        for reference, role in _references(kustomization):
            self.reference(directory, reference, role)

    def reference(self, directory: str, reference: str, role: str) -> None:
        local = _local_reference(reference)
        if local is None:
            if _inline(reference):
                if role == "config":
                    raise ClosureUnknown("inline plugin configuration")
            else:
                self.remote = True
            return
        target = posixpath.normpath(posixpath.join(directory, local))
        if local.startswith("/") or target == ".." or target.startswith("../"):
            raise ClosureUnknown(f"{reference!r} leaves the artifact")
        target = "" if target == "." else target
        snapshot = self.snapshot
        if target in snapshot.files:
            self.add_file(target)
            if role == "config":
                # what a plugin configuration names is found from the kustomization
                for inner in self.plugin_references(target):
                    self.reference(directory, inner, "file")
        elif snapshot.is_dir(target):
            if role != "base":
                raise ClosureUnknown(f"{reference!r} names a directory")
            self.pending.append(target)

    def plugin_references(self, path: str) -> list[str]:
        try:
            documents = load_documents(self.snapshot.files[path])
        except (yaml.YAMLError, RecursionError):
            raise ClosureUnknown(f"{path} does not parse") from None
        found: list[str] = []
        for doc in documents:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in _BUILTIN_PLUGINS:
                raise ClosureUnknown(f"plugin configuration of kind {kind!r}")
            found += _generator_files(doc)
            found += [p for p in doc.get("paths") or [] if isinstance(p, str)]
        return found

    def read(self, path: str, *, flux: bool) -> Obj:
        """A kustomization file as kustomize gets it: through Flux's round trip for
        the root one (``flux``), as written for the others."""
        try:
            if flux:
                return self.followed(path, parse_kustomization(self.snapshot.files[path]))
            documents = load_documents(self.snapshot.files[path])
        except (yaml.YAMLError, RecursionError, BuildError):
            raise ClosureUnknown(f"{path} does not parse") from None
        if len(documents) != 1 or not isinstance(documents[0], dict):
            raise ClosureUnknown(f"{path} is not one mapping")
        kustomization: Obj = documents[0]
        for key in kustomization:
            if key not in KUSTOMIZATION_FIELDS:
                raise ClosureUnknown(f"{path}: field {key!r}")
        return self.followed(path, kustomization)

    @staticmethod
    def followed(path: str, kustomization: Obj) -> Obj:
        """``kustomization``, unless it names files in fields not followed here."""
        for key in _UNFOLLOWED_FIELDS:
            if kustomization.get(key):
                raise ClosureUnknown(f"{path}: {key}")
        return kustomization

    def kustomization_file(self, directory: str) -> str | None:
        names = self.snapshot.listdir(directory)[1]
        for name in KUSTOMIZATION_FILES:
            if name in names:
                return _join(directory, name)
        return None

    def add_file(self, path: str) -> None:
        self.files.add(path)
        if len(self.files) > CLOSURE_MAX_FILES:
            raise ClosureUnknown(f"more than {CLOSURE_MAX_FILES} files")

    def add_directory(self, path: str) -> None:
        self.directories.add(path)
        if len(self.directories) > CLOSURE_MAX_DIRECTORIES:
            raise ClosureUnknown(f"more than {CLOSURE_MAX_DIRECTORIES} directories")


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _manifest_name(name: str) -> bool:
    """Whether Flux's walk takes a file of this name for manifests."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:] in (".yaml", ".yml")


# --------------------------------------------------------------------------- build


async def build(root: Path, path: str, spec: Mapping[str, Any], *, kubectl: str,
                clock: Clock, timeout: float,  # noqa: ASYNC109 - the caller's deadline
                ) -> list[Obj]:
    """The objects of the Kustomization ``spec`` built from the artifact at ``root``;
    ``BuildError`` or ``PathNotFound`` otherwise. ``finish`` comes after substitution."""
    _refuse_decryption(spec)
    directory = await asyncio.to_thread(_prepare, root, path, spec)
    output = await kustomize(kubectl, directory, clock=clock, timeout=timeout)
    try:
        documents = await asyncio.to_thread(load_documents, output)
    except yaml.YAMLError as exc:
        raise BuildError(f"kustomize build failed: {_yaml_problem(exc)}") from None
    objects: list[Obj] = []
    for doc in documents:
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not (isinstance(doc, dict) and _text(doc.get("apiVersion"))
                and _text(doc.get("kind")) and _text(name)):
            shown = json.dumps(doc, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, default=str)
            raise BuildError(f"failed to decode Kubernetes apiVersion, kind and name from: "
                             f"{shown}")
        objects.append(doc)
    return objects


@dataclass(frozen=True)
class Built:
    """What ``build_snapshot`` made, and what it took."""

    objects: list[Obj]
    #: files written out for kustomize
    written: int
    #: why the whole artifact was written out; None when only what the build reads was
    whole: str | None
    #: a kustomization names a remote base, which may change under the same artifact
    remote: bool


async def build_snapshot(snapshot: Snapshot, directory: str, path: str,
                         spec: Mapping[str, Any], *, kubectl: str, clock: Clock,
                         timeout: float,  # noqa: ASYNC109 - the caller's deadline
                         ) -> Built:
    """``build`` from an artifact in memory: the files the build reads (``closure`` of
    ``directory``, ``spec.path`` as a snapshot path) written to a private temporary
    directory at their relative paths, or all of them when that cannot be told; the
    directory is always removed. ``OSError`` when the files cannot be written."""
    _refuse_decryption(spec)
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="fluxd-ks-"))
    try:
        written, whole, remote = await asyncio.to_thread(
            write_for_build, snapshot, directory, spec, root)
        objects = await build(root, path, spec, kubectl=kubectl, clock=clock,
                              timeout=timeout)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)
    return Built(objects, written, whole, remote)


def write_for_build(snapshot: Snapshot, directory: str, spec: Mapping[str, Any],
                    dest: Path) -> tuple[int, str | None, bool]:
    """Write under ``dest`` what building ``spec`` at ``directory`` reads; the files
    written, why the whole snapshot was (None when it was not), and whether a remote
    base is named. Blocks."""
    try:
        found = closure(snapshot, directory, spec)
    except ClosureUnknown as exc:
        return snapshot.write_to(dest), str(exc), False
    return (snapshot.write_to(dest, files=found.files, directories=found.directories),
            None, found.remote)


def _refuse_decryption(spec: Mapping[str, Any]) -> None:
    if spec.get("decryption"):
        raise BuildError("spec.decryption is set, but SOPS decryption is not supported "
                         "by fluxd")


def finish(objects: list[Obj], spec: Mapping[str, Any]) -> list[Obj]:
    """What Flux does to the built objects after post-build substitution, just before
    the apply: ``commonMetadata`` set on every object (so its values are not substituted
    and it cannot opt objects out of substitution), then the SOPS refusal."""
    common = spec.get("commonMetadata") or {}
    set_common_metadata(objects, common.get("labels"), common.get("annotations"))
    check_encrypted_secrets(objects)
    return objects


def _prepare(root: Path, path: str, spec: Mapping[str, Any]) -> Path:
    directory, _ = _generate(root, path, spec)
    check_references(root, directory)
    return directory


async def kustomize(kubectl: str, directory: Path, *, clock: Clock,
                    timeout: float) -> str:  # noqa: ASYNC109 - the process is killed at it
    """``kubectl kustomize`` on ``directory`` with Flux's build options: files may be
    loaded from outside the kustomization's own directory, plugins and Helm are off,
    remote bases are allowed. Nothing of the host's configuration takes part."""
    home = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="fluxd-kustomize-"))
    env = {key: value for key, value in os.environ.items()
           if key in ("PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                      "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(HOME=str(home), TMPDIR=str(home), KUBECONFIG=os.devnull,
               XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1")
    try:
        # its own process group, so git children of remote bases die with it
        proc = await asyncio.create_subprocess_exec(
            kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory),
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            async with clock.timeout(timeout):
                stdout, stderr = await proc.communicate()
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            if isinstance(exc, TimeoutError):
                raise BuildError(f"kustomize build failed: timeout after {timeout:g}s"
                                 ) from None
            raise
    except OSError as exc:
        raise BuildError(f"kustomize build failed: cannot run {kubectl}: "
                         f"{_go_strerror(exc)}") from None
    finally:
        await asyncio.to_thread(shutil.rmtree, home, True)
    if proc.returncode != 0:
        raise BuildError(f"kustomize build failed: {_kubectl_error(stderr)}")
    return stdout.decode("utf-8", errors="replace")


def _kubectl_error(stderr: bytes) -> str:
    """kubectl's error lines without its ``error: `` prefix or kustomize's warnings."""
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines()]
    kept = [line.removeprefix("error: ") for line in lines
            if line and not line.startswith(("# Warning", "Warning:"))]
    return "\n".join(kept) or "kubectl kustomize failed without a message"


def set_common_metadata(objects: list[Obj], labels: Mapping[str, Any] | None,
                        annotations: Mapping[str, Any] | None) -> None:
    """Add ``labels`` and ``annotations`` to every object, over keys already there
    (``ssautil.SetCommonMetadata``)."""
    for obj in objects:
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            continue
        for field, common in (("labels", labels), ("annotations", annotations)):
            merged = dict(meta.get(field) or {})
            merged.update({str(k): str(v) for k, v in (common or {}).items()})
            if merged:
                meta[field] = merged


def check_encrypted_secrets(objects: list[Obj]) -> None:
    """``BuildError`` for the first SOPS-encrypted Secret (a ``v1`` Secret with a
    top-level ``sops`` field) not annotated ``kustomize.toolkit.fluxcd.io/decrypt:
    disabled``; fluxd cannot decrypt it."""
    for obj in objects:
        if obj.get("apiVersion") != "v1" or obj.get("kind") != "Secret" or "sops" not in obj:
            continue
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if str(annotations.get(DECRYPT_ANNOTATION, "")).lower() == "disabled":
            continue
        raise BuildError(f"{format_object(obj)} is SOPS encrypted, configuring decryption "
                         f"is required for this secret to be reconciled")


def format_object(obj: Obj) -> str:
    """``Kind/namespace/name``, or ``Kind/name`` without a namespace
    (``ssautil.FmtUnstructured``)."""
    meta = obj.get("metadata") or {}
    namespace = _text(meta.get("namespace"))
    return "/".join([_text(obj.get("kind"))] + ([namespace] if namespace else [])
                    + [_text(meta.get("name"))])


# --------------------------------------------------------------------------- reuse

#: the spec fields a build reads (Flux's generator lays them over the kustomization)
BUILD_FIELDS = ("targetNamespace", "namePrefix", "nameSuffix", "patches", "images",
                "components", "ignoreMissingComponents", "buildMetadata", "decryption")

#: manifests smaller than this (pickled) are copied on the event loop, larger ones in a
#: worker thread
_COPY_ON_LOOP = 256 << 10
#: manifests of up to this many objects are pickled on the event loop, more in a thread
_PICKLE_ON_LOOP = 64


def build_key(digest: str, directory: str, spec: Mapping[str, Any]) -> str:
    """Everything the built manifests depend on, as one key: the artifact's digest, the
    directory built and ``BUILD_FIELDS``. Kustomizations with equal keys build the same
    objects, whatever their name."""
    return "build:" + _digest_of([digest, directory,
                                  {f: spec[f] for f in BUILD_FIELDS if f in spec}])


def substitution_key(built: str, variables: Mapping[str, str], strategy: str | None,
                     strict: bool) -> str:
    """The key of ``built``'s manifests after substitution with these inputs."""
    return "substitution:" + _digest_of([built, sorted(variables.items()), strategy,
                                         strict])


def _digest_of(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    # undecodable Secret bytes come as surrogates; they still make a key
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ManifestCache:
    """Manifests kept by the key of their inputs (``build_key``, ``substitution_key``),
    at most ``max_entries`` of them weighing at most ``max_bytes``; the least recently
    used go first, and a zero bound keeps nothing. Entries are kept pickled: every
    ``get`` returns a fresh copy the caller may change (a copy from pickle costs a
    quarter of a ``deepcopy``, and a pickle is much smaller than the dicts). Use it from
    one event loop."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self._entries: LRU[str, bytes] | None = (
            LRU(max_bytes, weigh=len) if max_entries > 0 and max_bytes > 0 else None)
        #: counters for tests and diagnostics
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> list[Obj] | None:
        """A copy of the manifests under ``key``, or None."""
        data = self._entries.get(key) if self._entries is not None else None
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        if len(data) < _COPY_ON_LOOP:
            return _thaw(data)
        return await asyncio.to_thread(_thaw, data)

    async def put(self, key: str, objects: list[Obj]) -> None:
        """Keep a copy of ``objects`` under ``key`` (later changes to them do not
        reach it)."""
        entries = self._entries
        if entries is None:
            return
        if len(objects) <= _PICKLE_ON_LOOP:
            # a few objects pickle in microseconds, less than a thread hop costs
            data = _freeze(objects)
        else:
            data = await asyncio.to_thread(_freeze, objects)
        entries.put(key, data)
        while len(entries) > self.max_entries:
            oldest = entries.oldest()
            assert oldest is not None
            entries.pop(oldest[0])

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    @property
    def weight(self) -> int:
        """The bytes kept."""
        return 0 if self._entries is None else self._entries.weight


def _freeze(objects: list[Obj]) -> bytes:
    # manifests repeat their keys and labels: compressed, an entry takes a quarter of
    # its pickle (a 4-object app: 457 bytes, not 2,044) for some 35 µs more to keep it
    return zlib.compress(pickle.dumps(objects, pickle.HIGHEST_PROTOCOL), 1)


def _thaw(data: bytes) -> list[Obj]:
    objects: list[Obj] = pickle.loads(zlib.decompress(data))  # only what put() froze
    return objects


def find_kubectl(configured: str | None) -> str | None:
    """The kubectl binary (``fluxd.tools.find_tool``); None when there is none."""
    return find_tool("kubectl", configured)
