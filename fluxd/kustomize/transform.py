"""kustomize's value transformers: labels, annotations, images and replicas (v5.7.1).

Each function changes the objects in place, as kustomize's builtin transformer of the same
kustomization field does with its default field specs, and returns nothing. Arguments are
checked before any object is touched; an object kustomize would refuse (a field spec that
meets a value of the wrong kind, say) raises ``Unsupported`` half way, and the caller then
discards the objects and leaves the build to the real kustomize.

- ``add_labels`` is ``commonLabels`` (``include_selectors=True``) and each ``labels`` entry.
- ``add_annotations`` is ``commonAnnotations``.
- ``set_images`` is ``images``: every ``containers``/``initContainers`` list anywhere in an
  object, then the image field specs (pod specs, pod templates, image volumes).
- ``set_replicas`` is ``replicas``: matched by current or any previous name.

A field spec walks its path as kustomize's does: a list met on the way is walked element
by element, a missing or null field ends the walk unless the spec creates it (a ``name[]``
part never creates, and turns a null into an empty list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fluxd import regex
from fluxd.kustomize.fieldspec import (
    MAX_DEPTH,
    FieldSpec,
    SetValue,
    apply_field_spec,
    gvk_of,
)
from fluxd.kustomize.identity import previous_ids
from fluxd.kustomize.kyaml import Unsupported

__all__ = ["add_annotations", "add_labels", "set_images", "set_replicas"]

Obj = dict[str, Any]

def _specs(*rows: tuple[str, bool, str, str, str]) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(path, create, group, version, kind)
                 for path, create, group, version, kind in rows)


_TEMPLATE = "spec/template/metadata/"
_POD_SELECTORS = tuple(
    f"spec/template/spec/affinity/{affinity}/{term}/labelSelector/matchLabels"
    for affinity in ("podAffinity", "podAntiAffinity")
    for term in ("preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm",
                 "requiredDuringSchedulingIgnoredDuringExecution")
) + ("spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",)

#: where ``labels`` with ``includeTemplates`` write: metadata and pod (and claim) templates
TEMPLATE_LABELS = _specs(
    ("metadata/labels", True, "", "", ""),
    (_TEMPLATE + "labels", True, "", "v1", "ReplicationController"),
    (_TEMPLATE + "labels", True, "", "", "Deployment"),
    (_TEMPLATE + "labels", True, "", "", "ReplicaSet"),
    (_TEMPLATE + "labels", True, "", "", "DaemonSet"),
    (_TEMPLATE + "labels", True, "apps", "", "StatefulSet"),
    ("spec/volumeClaimTemplates[]/metadata/labels", True, "apps", "", "StatefulSet"),
    (_TEMPLATE + "labels", True, "batch", "", "Job"),
    ("spec/jobTemplate/metadata/labels", True, "batch", "", "CronJob"),
    ("spec/jobTemplate/spec/template/metadata/labels", True, "batch", "", "CronJob"),
)

#: where ``commonLabels`` (and ``labels`` with ``includeSelectors``) write: the template
#: labels plus selectors
COMMON_LABELS = _specs(
    ("spec/selector", True, "", "v1", "Service"),
    ("spec/selector", True, "", "v1", "ReplicationController"),
    ("spec/selector/matchLabels", True, "", "", "Deployment"),
    *((path, False, "apps", "", "Deployment") for path in _POD_SELECTORS),
    ("spec/selector/matchLabels", True, "", "", "ReplicaSet"),
    ("spec/selector/matchLabels", True, "", "", "DaemonSet"),
    ("spec/selector/matchLabels", True, "apps", "", "StatefulSet"),
    *((path, False, "apps", "", "StatefulSet") for path in _POD_SELECTORS),
    ("spec/selector/matchLabels", False, "batch", "", "Job"),
    ("spec/jobTemplate/spec/selector/matchLabels", False, "batch", "", "CronJob"),
    ("spec/selector/matchLabels", False, "policy", "", "PodDisruptionBudget"),
    ("spec/podSelector/matchLabels", False, "networking.k8s.io", "", "NetworkPolicy"),
    ("spec/ingress/from/podSelector/matchLabels", False, "networking.k8s.io", "",
     "NetworkPolicy"),
    ("spec/egress/to/podSelector/matchLabels", False, "networking.k8s.io", "",
     "NetworkPolicy"),
) + TEMPLATE_LABELS

#: where ``labels`` entries without selectors or templates write
METADATA_LABELS = FieldSpec("metadata/labels", True)

COMMON_ANNOTATIONS = _specs(
    ("metadata/annotations", True, "", "", ""),
    (_TEMPLATE + "annotations", True, "", "v1", "ReplicationController"),
    (_TEMPLATE + "annotations", True, "", "", "Deployment"),
    (_TEMPLATE + "annotations", True, "", "", "ReplicaSet"),
    (_TEMPLATE + "annotations", True, "", "", "DaemonSet"),
    (_TEMPLATE + "annotations", True, "", "", "StatefulSet"),
    (_TEMPLATE + "annotations", True, "batch", "", "Job"),
    ("spec/jobTemplate/metadata/annotations", True, "batch", "", "CronJob"),
    ("spec/jobTemplate/spec/template/metadata/annotations", True, "batch", "", "CronJob"),
)

#: ``create`` is set but images are never created: the image transformer names no kind
#: of node to create
IMAGES = _specs(*(
    (f"{pod}{field}", True, "", "", "")
    for pod in ("spec/", "spec/template/spec/")
    for field in ("containers[]/image", "initContainers[]/image", "volumes[]/image/reference")
))

REPLICAS = _specs(*(("spec/replicas", True, "", "", kind) for kind in (
    "Deployment", "ReplicationController", "ReplicaSet", "StatefulSet")))

_IMAGE_KEYS = frozenset({"name", "newName", "newTag", "digest", "tagSuffix"})
#: what follows an image's name in a reference kustomize matches (Go regexp syntax)
_IMAGE_REST = "(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?$"
#: texts a null image may have had in its file, which kustomize matches as they are
_NULL_TEXTS = ("", "null", "Null", "NULL", "~")


# --- labels and annotations -----------------------------------------------------------------

def add_labels(objects: Iterable[Obj], labels: Mapping[str, str], *,
               include_selectors: bool, include_templates: bool,
               fields: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Set ``labels`` on every object: ``commonLabels`` is ``include_selectors=True``
    with no ``fields``; a ``labels`` entry passes its ``includeSelectors``,
    ``includeTemplates`` and ``fields`` (merged ahead of the defaults, as kustomize
    merges them: a default whose path a custom spec of a narrower kind already names is
    dropped, and a differing ``create`` is kustomize's "conflicting fieldspecs" error)."""
    specs = [FieldSpec.parse(field) for field in fields or ()]
    if include_selectors:
        specs = _merge(specs, COMMON_LABELS)
    else:
        if include_templates:
            specs = _merge(specs, TEMPLATE_LABELS)
        specs = _merge(specs, (METADATA_LABELS,))
    _set_entries(objects, labels, specs, "labels")


def add_annotations(objects: Iterable[Obj], annotations: Mapping[str, str]) -> None:
    """Set ``annotations`` on every object and on its pod templates (``commonAnnotations``)."""
    _set_entries(objects, annotations, COMMON_ANNOTATIONS, "annotations")


def _merge(specs: list[FieldSpec], incoming: Iterable[FieldSpec]) -> list[FieldSpec]:
    merged = list(specs)
    for spec in incoming:
        # kustomize's primary key: the path, and a kind the incoming spec selects
        same = next((have for have in merged if have.path == spec.path
                     and spec.selects(have.group, have.version, have.kind)), None)
        if same is None:
            merged.append(spec)
        elif same.create != spec.create:
            raise Unsupported(f"conflicting field specs for {spec.path}")
    return merged


def _set_entries(objects: Iterable[Obj], entries: Mapping[str, str],
                 specs: Sequence[FieldSpec], what: str) -> None:
    if not all(isinstance(key, str) and isinstance(value, str)
               for key, value in entries.items()):
        raise Unsupported(f"{what} that are not strings")
    if not entries:
        return
    ordered = sorted(entries.items())

    def set_entries(holder: Any, key: Any) -> None:
        node = holder[key]
        if not isinstance(node, dict):
            raise Unsupported(f"{what} that are not a map")
        node.update(ordered)

    for obj in objects:
        for spec in specs:
            apply_field_spec(obj, spec, set_entries, "map")


# --- images ---------------------------------------------------------------------------------

def set_images(objects: Sequence[Obj], images: Sequence[Mapping[str, Any]]) -> None:
    """Apply a kustomization's ``images`` entries in order (``name`` — a Go regular
    expression, as kustomize reads it —, ``newName``, ``newTag``, ``digest``,
    ``tagSuffix``). Each entry rewrites the matching images of every ``containers`` or
    ``initContainers`` list anywhere in an object but a CustomResourceDefinition, then
    those at the image field specs: an image at both is rewritten twice, which only a
    ``tagSuffix`` shows (kustomize appends it twice)."""
    updaters = [_image_updater(image) for image in images]
    for update in updaters:
        for obj in objects:
            if gvk_of(obj)[2] != "CustomResourceDefinition":
                _walk_containers(obj, update)
        for obj in objects:
            for spec in IMAGES:
                apply_field_spec(obj, spec, update, None)


def _image_updater(image: Mapping[str, Any]) -> SetValue:
    if not isinstance(image, Mapping) or set(image) - _IMAGE_KEYS or not all(
            isinstance(value, str) for value in image.values()):
        raise Unsupported(f"image {image!r}")
    name, new_name, new_tag, digest, suffix = (
        image.get(key, "") for key in ("name", "newName", "newTag", "digest", "tagSuffix"))
    try:
        pattern = regex.compile(f"^{name}{_IMAGE_REST}")
    except regex.RegexError:
        # kustomize matches with a nil pattern and panics
        raise Unsupported(f"image name {name!r}") from None

    def update(holder: Any, key: Any) -> None:
        value = holder[key]
        if value is None:
            if any(pattern.search(text) for text in _NULL_TEXTS):
                raise Unsupported("a null image")
            return
        if not isinstance(value, str):
            raise Unsupported(f"image {value!r}")
        if not pattern.search(value):
            return
        ref_name, tag, ref_digest = _split_image(value)
        ref_name = new_name or ref_name
        if new_tag:
            tag, ref_digest = new_tag, digest
        elif digest:
            tag, ref_digest = "", digest
        elif suffix:
            tag, ref_digest = tag + suffix, ""
        holder[key] = (ref_name + (f":{tag}" if tag else "")
                       + (f"@{ref_digest}" if ref_digest else ""))

    return update


def _split_image(reference: str) -> tuple[str, str, str]:
    """Name, tag and digest of an image reference: the tag starts at the first ``:``
    after the first ``/`` (a registry's port is part of the name), the digest at the
    first ``@`` there."""
    start = max(reference.find("/"), 0)
    at, colon = reference.find("@", start), reference.find(":", start)
    if at < 0 and colon < 0:
        return reference, "", ""
    if at >= 0 and (colon < 0 or at < colon):
        return reference[:at], "", reference[at + 1:]
    if at >= 0:
        return reference[:colon], reference[colon + 1:at], reference[at + 1:]
    return reference[:colon], reference[colon + 1:], ""


def _walk_containers(obj: Obj, update: SetValue) -> None:
    # kustomize's walk: a field's value is searched before the field itself is handled
    stack: list[tuple[Any, int, bool]] = [(obj, 0, False)]
    while stack:
        node, depth, handle = stack.pop()
        if handle:
            _update_containers(node, update)
        elif depth > MAX_DEPTH:
            raise Unsupported("an object nested too deeply")
        elif isinstance(node, dict):
            for key, value in reversed(node.items()):
                if key in ("containers", "initContainers"):
                    stack.append((value, depth, True))
                stack.append((value, depth + 1, False))
        elif isinstance(node, list):
            stack.extend((value, depth + 1, False) for value in reversed(node))


def _update_containers(containers: Any, update: SetValue) -> None:
    if not isinstance(containers, list):
        return
    for container in containers:
        if container is None:
            continue
        if not isinstance(container, dict):
            raise Unsupported("a container that is not a map")
        if "image" in container:
            update(container, "image")


# --- replicas -------------------------------------------------------------------------------

def set_replicas(objects: Sequence[Obj], replicas: Sequence[Mapping[str, Any]]) -> None:
    """Apply a kustomization's ``replicas`` entries (``name``, ``count``) in order: set
    ``spec.replicas`` of the Deployments, ReplicationControllers, ReplicaSets and
    StatefulSets whose current name or any previous name is ``name``. An entry that
    matches nothing is kustomize's error."""
    entries: list[tuple[str, int]] = []
    for entry in replicas:
        if not isinstance(entry, Mapping) or set(entry) - {"name", "count"}:
            raise Unsupported(f"replicas entry {entry!r}")
        name, count = entry.get("name", ""), entry.get("count", 0)
        if not isinstance(name, str) or not isinstance(count, int) or isinstance(
                count, bool) or not -(1 << 63) <= count < 1 << 63:
            raise Unsupported(f"replicas entry {entry!r}")
        entries.append((name, count))
    for name, count in entries:
        found = False
        for spec in REPLICAS:
            for obj in objects:
                if _named(obj, name, spec):
                    found = True
                    apply_field_spec(obj, spec, _setter(count), "scalar")
        if not found:
            raise Unsupported(f"replicas: no resource named {name!r} to scale")


def _setter(value: Any) -> SetValue:
    def set_value(holder: Any, key: Any) -> None:
        holder[key] = value
    return set_value


def _named(obj: Obj, name: str, spec: FieldSpec) -> bool:
    """Whether the object is, or was earlier in the build, ``name`` of a kind ``spec``
    selects."""
    group, version, kind = gvk_of(obj)
    ids = [(each.name, each.kind) for each in previous_ids(obj)]
    ids.append((obj["metadata"].get("name"), kind))
    return any(id_name == name and spec.selects(group, version, id_kind)
               for id_name, id_kind in ids)
