"""``kustomize build`` of a kustomization in an in-memory snapshot.

``build(files, directory, kustomization)`` returns what kustomize v5.7 (``kubectl
kustomize --load-restrictor=LoadRestrictionsNone``, legacy order) builds from the root
``kustomization`` (a dict, as Flux generated or merged it) whose directory is
``directory`` in ``files``, or raises ``Unsupported(reason)``.

The build follows kustomize's ``KustTarget`` (``api/internal/target/kusttarget.go``):
each kustomization accumulates its ``resources`` (and ``bases``) in order — a file's
objects, or a directory's kustomization built on its own first —, runs its
``configMapGenerator`` then ``secretGenerator`` entries (``generator.absorb``), then its
``components`` (each built on top of what is accumulated so far), then its transformers
in kustomize's order: ``patchesStrategicMerge``, ``patches``, ``namespace``,
``namePrefix``/``nameSuffix``, ``labels`` then ``commonLabels``, ``commonAnnotations``,
``patchesJson6902``, ``replicas``, ``images``. At the root only: generated names get
their hash suffix, name references are fixed (``identity.fix_name_references``),
kustomize's bookkeeping annotations are removed, and the objects are sorted in legacy
order (``sort_key``; ``sortOptions: {order: fifo}`` keeps the order they were
accumulated in). With the root's ``buildMetadata: [originAnnotations]`` (Flux sets it
on a kustomization without ``resources``) every object gets kustomize's
``config.kubernetes.io/origin`` annotation: the file it was read from, or the
kustomization file and generator that made it, as paths from the root's directory.

Paths resolve inside the snapshot as kustomize resolves them with
``LoadRestrictionsNone``: relative to the kustomization's directory, ``..`` allowed,
never leaving the snapshot, never absolute or remote. A directory may not contain one
being built (kustomize's cycle check); depth, kustomizations and objects are bounded.
Anything kustomize would refuse, and every field or shape not reproduced (``replacements``,
``vars``, ``helmCharts``, plugins, ``openapi``, ``configurations``, ``crds``,
``buildMetadata`` but ``originAnnotations``, ``legacySortOptions``, unknown fields,
local-config objects, …) raises ``Unsupported``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fluxd.artifacts.snapshot import Snapshot
from fluxd.kustomize import generator, identity, patch, transform
from fluxd.kustomize.kyaml import (
    Unsupported,
    load_documents,
    load_kustomization,
    string_list,
    string_map,
)

Obj = dict[str, Any]

__all__ = ["KUSTOMIZATION_FILES", "build", "read_resources", "sort_key"]

#: the names kustomize recognises for a kustomization file
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_VERSION = "kustomize.config.k8s.io/v1beta1"
COMPONENT_VERSION = "kustomize.config.k8s.io/v1alpha1"

MAX_DEPTH = 32
MAX_KUSTOMIZATIONS = 1000
MAX_OBJECTS = 100_000

# kustomize v5.7 api/resid/gvk.go: the legacy order's first and last kinds
_ORDER_FIRST = (
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
    "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
    "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange",
    "PriorityClass", "PersistentVolume", "PersistentVolumeClaim", "Deployment",
    "StatefulSet", "CronJob", "PodDisruptionBudget",
)
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_TYPE_ORDER = {**{k: i - len(_ORDER_FIRST) for i, k in enumerate(_ORDER_FIRST)},
               **{k: i + 1 for i, k in enumerate(_ORDER_LAST)}}

#: kustomization fields built here; every other one (non-empty) is ``Unsupported``
_SUPPORTED = frozenset({
    "apiVersion", "kind", "metadata", "resources", "bases", "components", "namespace",
    "namePrefix", "nameSuffix", "commonLabels", "labels", "commonAnnotations", "images",
    "imageTags", "replicas", "patches", "patchesStrategicMerge", "patchesJson6902",
    "configMapGenerator", "secretGenerator", "generatorOptions", "sortOptions",
    "buildMetadata",
})
#: the fields of generators, components and transformers
_TRANSFORMING = ("configMapGenerator", "secretGenerator", "components",
                 "patchesStrategicMerge", "patches", "namespace", "namePrefix", "nameSuffix",
                 "labels", "commonLabels", "commonAnnotations", "patchesJson6902",
                 "replicas", "images", "imageTags")
#: annotations kustomize reads or strips: an input carrying one is left to it
_RESERVED_ANNOTATION_PREFIXES = (
    "internal.config.kubernetes.io/", "config.kubernetes.io/local-config",
    "config.kubernetes.io/path", "config.kubernetes.io/index",
    "config.kubernetes.io/origin", "config.k8s.io/id", "kustomize.config.k8s.io/",
    "alpha.config.kubernetes.io/transformations",
)
# what kustomize may take for a remote location rather than a local directory: a scheme,
# an scp-like address, or a first path segment that looks like a host
_REMOTE = re.compile(r"^(?:[a-zA-Z][-a-zA-Z0-9+.]*:|[^/]*@|(?!\.\.?(?:/|$))[^/]*[.:])")


def _gvk(obj: Obj) -> tuple[str, str, str]:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return group, version, str(obj["kind"])


def sort_key(obj: Obj) -> tuple[int, str, str, str]:
    """kustomize's ``legacy`` order: kinds in its first/last lists, every other kind
    between, then by group, version and kind, namespace (unset last) and name."""
    group, version, kind = _gvk(obj)
    gvk = "_".join((group or "~G", version or "~V", kind or "~K"))
    meta = obj["metadata"]
    # kustomize writes an unset namespace as "~X", which sorts after every name
    return (_TYPE_ORDER.get(kind, 0), gvk, str(meta.get("namespace") or "~X"),
            str(meta["name"]))


# --------------------------------------------------------------------------- reading


def read_resources(data: bytes) -> list[Obj]:
    """The objects of a resource file as kustomize's resource factory reads them: empty
    documents skipped, a ``…List`` with ``items`` replaced by its items (read after the
    file's other documents); ``Unsupported`` for what it would refuse or read otherwise
    (a document that is not a named object, annotations kustomize reads itself)."""
    found: list[Obj] = []
    documents = load_documents(data)
    if b"*" in data:
        # an alias is one shared value here, a copy in kustomize: unshare it, bounded
        # (a few aliases of aliases make a small file a huge tree)
        budget = [max(10 * len(data), 100_000)]
        documents = [_unshared(doc, budget) for doc in documents]
    index = 0
    while index < len(documents):
        doc = documents[index]
        index += 1
        if isinstance(doc, dict | list) and not doc:
            continue
        if not isinstance(doc, dict):
            raise Unsupported("a document that is not an object")
        api_version, kind, meta = doc.get("apiVersion"), doc.get("kind"), doc.get("metadata")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            items = doc["items"]
            if items is None:
                continue
            if not isinstance(items, list) or not all(
                    isinstance(item, dict) and item for item in items):
                raise Unsupported(f"{kind} items that are not objects")
            if len(documents) + len(items) > MAX_OBJECTS:
                raise Unsupported(f"more than {MAX_OBJECTS} objects")
            documents.extend(items)
            continue
        if not (isinstance(api_version, str) and api_version and isinstance(kind, str)
                and kind and isinstance(meta, dict)):
            raise Unsupported("a document without apiVersion, kind and metadata")
        name, namespace = meta.get("name"), meta.get("namespace")
        if not (isinstance(name, str) and name) or not (
                namespace is None or isinstance(namespace, str)):
            raise Unsupported("an object without a name")
        annotations = meta.get("annotations")
        if annotations:
            if not isinstance(annotations, dict):
                raise Unsupported("annotations that are not a map")
            for key in annotations:
                if key.startswith(_RESERVED_ANNOTATION_PREFIXES):
                    raise Unsupported(f"the annotation {key}")
        found.append(doc)
    return found


def _unshared(value: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise Unsupported("YAML aliases that expand too far")
    if isinstance(value, dict):
        return {key: _unshared(item, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item, budget) for item in value]
    return value


def _resolve(directory: str, reference: Any) -> str:
    """``reference`` from a kustomization in ``directory`` as a snapshot path."""
    if not isinstance(reference, str) or not reference:
        raise Unsupported("a path that is not a string")
    if reference.startswith("/"):
        raise Unsupported(f"the absolute path {reference}")
    if "\n" in reference or "?" in reference or "://" in reference:
        raise Unsupported(f"the remote or inline reference {reference[:80]}")
    joined = posixpath.normpath(posixpath.join(directory, reference))
    if joined == ".." or joined.startswith("../"):
        raise Unsupported(f"the path {reference} leaves the artifact")
    return "" if joined == "." else joined


@dataclass
class _Budget:
    kustomizations: int = 0
    objects: int = 0


class _Context:
    """One build: the snapshot and its bounds."""

    def __init__(self, files: Snapshot) -> None:
        self.files = files
        self.budget = _Budget()
        #: whether a generator or transformer ran (else the objects are as read)
        self.transformed = False

    def reader(self, directory: str) -> Callable[[str], bytes]:
        def read(reference: str) -> bytes:
            path = _resolve(directory, reference)
            data = self.files.files.get(path)
            if data is None:
                raise Unsupported(f"no file {reference}")
            return data
        return read

    def kustomization_in(self, directory: str) -> tuple[Obj, str]:
        """The kustomization in ``directory`` and its file's name."""
        _, names = self.files.listdir(directory)
        found = [name for name in KUSTOMIZATION_FILES if name in names]
        if len(found) != 1:
            raise Unsupported(f"{len(found)} kustomization files in {directory or '.'}")
        loaded = load_kustomization(self.files.files[posixpath.join(directory, found[0])])
        if not isinstance(loaded, dict):
            raise Unsupported("a kustomization file that is not a map")
        return loaded, found[0]


# --------------------------------------------------------------------------- checks


def _string(kustomization: Obj, field: str) -> str:
    value = kustomization.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unsupported(f"{field} that is not a string")
    return value


def _entries(kustomization: Obj, field: str) -> list[Any]:
    value = kustomization.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unsupported(f"{field} that is not a list")
    return value


def _check(kustomization: Obj, *, component: bool, root: bool) -> None:
    """``Unsupported`` unless kustomize would load ``kustomization`` and every field it
    sets is one built here."""
    for field, value in kustomization.items():
        if field not in _SUPPORTED and value not in (None, "", [], {}):
            raise Unsupported(f"the kustomization field {field}")
    kind = kustomization.get("kind") or "Kustomization"
    expected_kind = "Component" if component else "Kustomization"
    version = kustomization.get("apiVersion")
    expected_version = COMPONENT_VERSION if component else KUSTOMIZATION_VERSION
    if kind != expected_kind or version not in (None, "", expected_version):
        raise Unsupported(f"a {kind} of {version} where a {expected_kind} is read")
    if not isinstance(kustomization.get("metadata") or {}, dict):
        raise Unsupported("metadata that is not a map")
    if not root:
        # the root's options hold throughout
        string_list(kustomization.get("buildMetadata"), "buildMetadata")
    sort_options = kustomization.get("sortOptions")
    if sort_options is not None and (not root or sort_options not in (
            {"order": "legacy"}, {"order": "fifo"})):
        raise Unsupported("sortOptions")
    # kustomize refuses a kustomization that sets nothing (an empty map counts as set
    # there; here it is refused too)
    if all(value in (None, "", False, {}) for field, value in kustomization.items()
           if field not in ("apiVersion", "kind", "metadata")):
        raise Unsupported("an empty kustomization")


def _identity(obj: Obj) -> tuple[str, str, str, str, str]:
    """An object's id as kustomize compares ids (``ResId.Equals``): group, version and
    kind, the namespace (none is ``default``; ignored for a cluster-scoped kind), name."""
    group, version, kind = _gvk(obj)
    meta = obj["metadata"]
    scoped = identity.is_cluster_scoped(str(obj["apiVersion"]), kind)
    namespace = "" if scoped else str(meta.get("namespace") or "default")
    return group, version, kind, namespace, str(meta["name"])


def _append_all(objects: list[Obj], more: list[Obj], budget: _Budget,
                seen: set[tuple[str, str, str, str, str]] | None = None) -> None:
    """kustomize's ``AppendAll``: no object may take an id already there. ``seen``,
    when given, holds the ids of ``objects`` and is kept up to date."""
    budget.objects += len(more)
    if budget.objects > MAX_OBJECTS:
        raise Unsupported(f"more than {MAX_OBJECTS} objects")
    if seen is None:
        seen = {_identity(obj) for obj in objects}
    for obj in more:
        key = _identity(obj)
        if key in seen:
            raise Unsupported(f"two objects with the id {'/'.join(key)}")
        seen.add(key)
        objects.append(obj)


# --------------------------------------------------------------------------- build


def build(files: Snapshot, directory: str, kustomization: Obj) -> list[Obj]:
    """The objects ``kustomize build`` makes of ``kustomization`` in ``directory``
    (see the module docstring); ``Unsupported`` for anything not reproduced."""
    context = _Context(files)
    origin = _origin_option(kustomization.get("buildMetadata"))
    _, names = files.listdir(directory)
    # Flux writes the kustomization to the file already there, else kustomization.yaml
    kfile = next((name for name in KUSTOMIZATION_FILES if name in names),
                 KUSTOMIZATION_FILES[0])
    objects = _accumulate(context, directory, kustomization, [], (directory,),
                          origin=origin, kfile=kfile, component=False, root=True)
    if context.transformed:
        generator.add_hash_suffixes(objects)
        if any(_renamed(obj) for obj in objects):
            # only a renamed object is ever referred to by a new name
            identity.fix_name_references(objects)
        for obj in objects:
            _remove_build_annotations(obj, origin is not None)
        _check_unique(objects)
    if kustomization.get("sortOptions") != {"order": "fifo"}:
        objects.sort(key=sort_key)
    return objects


def _accumulate(context: _Context, directory: str, kustomization: Obj, objects: list[Obj],
                chain: tuple[str, ...], *, origin: str | None, kfile: str, component: bool,
                root: bool = False) -> list[Obj]:
    """kustomize's ``accumulateTarget``: ``objects`` are what a component builds on
    (empty for a kustomization); ``origin`` is the directory's path from the root's for
    origin annotations (None: none are made), ``kfile`` its kustomization file's name."""
    context.budget.kustomizations += 1
    if context.budget.kustomizations > MAX_KUSTOMIZATIONS or len(chain) > MAX_DEPTH:
        raise Unsupported("too many kustomizations")
    _check(kustomization, component=component, root=root)
    read = context.reader(directory)

    # ids stay as they are until a generator or transformer runs
    seen = {_identity(obj) for obj in objects}
    references = [*string_list(kustomization.get("resources"), "resources"),
                  *string_list(kustomization.get("bases"), "bases")]
    for reference in references:
        path = _resolve(directory, reference)
        data = context.files.files.get(path)
        if data is not None:
            found = read_resources(data)
            if origin is not None:
                text = _origin_text(("path", _origin_join(origin, reference)))
                for obj in found:
                    _annotate(obj, generator.ORIGIN, text)
            _append_all(objects, found, context.budget, seen)
            continue
        sub, sub_file = _load_directory(context, path, reference, chain, component=False)
        built = _accumulate(context, path, sub, [], (*chain, path), component=False,
                            origin=_sub_origin(origin, reference), kfile=sub_file)
        _append_all(objects, built, context.budget, seen)

    if not any(kustomization.get(field) for field in _TRANSFORMING):
        return objects
    context.transformed = True
    global_options = kustomization.get("generatorOptions")
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for args in _entries(kustomization, field):
            generated = generator.generate(kind, args, global_options, read)
            if origin is not None:
                _annotate(generated, generator.ORIGIN, _origin_text(
                    ("configuredIn", _origin_join(origin, kfile)),
                    ("configuredBy", f"\n  apiVersion: builtin\n  kind: {kind}Generator")))
            generator.absorb(objects, generated)

    for reference in string_list(kustomization.get("components"), "components"):
        path = _resolve(directory, reference)
        sub, sub_file = _load_directory(context, path, reference, chain, component=True)
        built = _accumulate(context, path, sub, objects, (*chain, path), component=True,
                            origin=_sub_origin(origin, reference), kfile=sub_file)
        objects = []
        _append_all(objects, built, context.budget)

    return _transform(objects, kustomization, read)


def _load_directory(context: _Context, path: str, reference: str, chain: tuple[str, ...],
                    *, component: bool) -> tuple[Obj, str]:
    if not context.files.is_dir(path) or _REMOTE.match(reference.removeprefix("./")):
        raise Unsupported(f"the resource {reference[:80]} is neither a file nor a directory")
    for visited in chain:
        if path == "" or visited == path or visited.startswith(path + "/"):
            raise Unsupported(f"a cycle through {reference}")
    kustomization, kfile = context.kustomization_in(path)
    if (kustomization.get("kind") == "Component") != component:
        raise Unsupported(f"{reference}: a Component where a Kustomization is read, or "
                          "the other way round")
    return kustomization, kfile


# --------------------------------------------------------------------------- origins


def _origin_option(build_metadata: Any) -> str | None:
    """The root's origin path ("") when its ``buildMetadata`` asks for origin
    annotations (as Flux's does for a kustomization without resources), None without
    ``buildMetadata``; other options are not reproduced."""
    if build_metadata is None or build_metadata == []:
        return None
    if isinstance(build_metadata, list) and all(
            option == "originAnnotations" for option in build_metadata):
        return ""
    raise Unsupported("buildMetadata other than originAnnotations")


def _origin_join(origin: str, reference: str) -> str:
    """``filepath.Join(origin, reference)``: joined and cleaned."""
    joined = posixpath.normpath(posixpath.join(origin, reference))
    return "" if joined == "." else joined


def _sub_origin(origin: str | None, reference: str) -> str | None:
    return None if origin is None else _origin_join(origin, reference)


_PLAIN = re.compile(r"[A-Za-z0-9_./][-A-Za-z0-9_./]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _origin_text(*fields: tuple[str, str]) -> str:
    """An origin annotation's value as kustomize writes it (YAML of its ``Origin``);
    a value YAML would quote is not reproduced."""
    lines = []
    for key, value in fields:
        if not value.startswith("\n"):
            if (not _PLAIN.fullmatch(value) or value.lower() in _YAML11_WORDS
                    or load_documents(value.encode()) != [value]):
                raise Unsupported(f"an origin path YAML quotes: {value[:80]}")
            value = " " + value
        lines.append(f"{key}:{value}\n")
    return "".join(lines)


def _annotate(obj: Obj, key: str, value: str) -> None:
    meta = obj["metadata"]
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = meta["annotations"] = {}
    elif not isinstance(annotations, dict):
        raise Unsupported("annotations that are not a map")
    annotations[key] = value


def _apply(objects: list[Obj], result: list[Obj] | None) -> list[Obj]:
    return objects if result is None else result


def _transform(objects: list[Obj], kustomization: Obj,
               read: Callable[[str], bytes]) -> list[Obj]:
    """One kustomization's builtin transformers, in kustomize's order."""
    strategic = _entries(kustomization, "patchesStrategicMerge")
    if strategic:
        objects = _apply(objects, patch.apply_patches_strategic_merge(objects, strategic,
                                                                      read))
    patches = _entries(kustomization, "patches")
    if patches:
        objects = _apply(objects, patch.apply_patches(objects, patches, read))
    namespace = _string(kustomization, "namespace")
    if namespace:
        identity.set_namespace(objects, namespace)
    prefix, suffix = _string(kustomization, "namePrefix"), _string(kustomization, "nameSuffix")
    if prefix or suffix:
        identity.add_prefix_suffix(objects, prefix, suffix)
    for entry in _entries(kustomization, "labels"):
        if not isinstance(entry, dict) or set(entry) - {
                "pairs", "includeSelectors", "includeTemplates", "fields"}:
            raise Unsupported("a labels entry kustomize may read otherwise")
        selectors = entry.get("includeSelectors", False)
        templates = entry.get("includeTemplates", False)
        if not isinstance(selectors, bool) or not isinstance(templates, bool):
            raise Unsupported("a labels option that is not a boolean")
        pairs = string_map(entry.get("pairs"), "pairs")
        if pairs:
            transform.add_labels(objects, pairs, include_selectors=selectors,
                                 include_templates=templates, fields=entry.get("fields"))
    common_labels = string_map(kustomization.get("commonLabels"), "commonLabels")
    if common_labels:
        transform.add_labels(objects, common_labels, include_selectors=True,
                             include_templates=False)
    common_annotations = string_map(kustomization.get("commonAnnotations"),
                                    "commonAnnotations")
    if common_annotations:
        transform.add_annotations(objects, common_annotations)
    json6902 = _entries(kustomization, "patchesJson6902")
    if json6902:
        objects = _apply(objects, patch.apply_patches_json6902(objects, json6902, read))
    replicas = _entries(kustomization, "replicas")
    if replicas:
        transform.set_replicas(objects, replicas)
    images = [*_entries(kustomization, "images"), *_entries(kustomization, "imageTags")]
    if images:
        transform.set_images(objects, images)
    return objects


# --------------------------------------------------------------------------- finishing


def _remove_build_annotations(obj: Obj, origins: bool) -> None:
    """kustomize's ``RemoveBuildAnnotations``: its bookkeeping goes, and an annotations
    map left empty goes with it; origin annotations stay when ``origins``."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict) or not annotations:
        return
    removed = False
    for key in generator.BUILD_ANNOTATIONS:
        if key in annotations:
            del annotations[key]
            removed = True
    for key in annotations:
        if key.startswith(_RESERVED_ANNOTATION_PREFIXES) and not (
                origins and key == generator.ORIGIN):
            raise Unsupported(f"the annotation {key}")
    if removed and not annotations:
        del meta["annotations"]


def _renamed(obj: Obj) -> bool:
    annotations = obj["metadata"].get("annotations")
    return isinstance(annotations, dict) and identity.PREVIOUS_NAMES in annotations


def _check_unique(objects: list[Obj]) -> None:
    seen: set[tuple[str, str, str, str, str]] = set()
    for obj in objects:
        key = _identity(obj)
        if key in seen:
            raise Unsupported(f"two objects with the id {'/'.join(key)}")
        seen.add(key)
