"""kustomize's patches, in process: strategic merge and JSON 6902, with targets.

- ``apply_patches(objects, entries, read)``: a kustomization's ``patches:`` (kustomize's
  ``PatchTransformer``). An entry holds an inline ``patch:`` or a ``path:`` read through
  ``read``; text that reads as a list is a JSON 6902 patch, a stream of objects is a
  strategic merge patch (one or more documents). A strategic merge patch without
  ``target`` applies to the object whose id (apiVersion, kind, name, namespace) it names,
  current or any previous one; with ``target`` it applies to every object selected, its
  name, namespace and kind kept unless ``options`` allow a name or kind change. A JSON
  6902 patch needs a ``target``.
- ``apply_patches_strategic_merge`` / ``apply_patches_json6902``: the deprecated
  ``patchesStrategicMerge`` (file paths or inline documents) and ``patchesJson6902``.
- ``select(objects, selector)``: kustomize's target selection: group, version, kind, name
  and namespace are Go regular expressions matched whole (name and namespace against the
  object's original or current id), ``labelSelector``/``annotationSelector`` as the API
  server reads them.

The strategic merge is kyaml's ``merge2`` as kustomize runs it: maps merge key by key,
``null`` deletes (a null the patch does not mention stays), ``$patch: delete|replace|
merge`` on maps and ``$patch: delete`` on list items. A list merges by key only where
kustomize's built-in OpenAPI (Kubernetes 1.21) says so — containers, env, ports,
volumeMounts, volumes, … of the workload kinds, Service ports, metadata finalizers — with
the keys ``fluxd.schema`` knows; the patch's items come first, then the object's others
(by several keys, as Service ports with protocols: the new items first, then the
object's). Every list of a kind kustomize has no schema for (custom resources) is
replaced whole. A JSON 6902 patch written as YAML is read as sigs.k8s.io/yaml reads it
(YAML 1.1); the object's internal annotations survive it, and ``patches:`` records the
previous id first, as kustomize does. Not reproduced, so ``Unsupported``: the other SMP
directives, ``$patch: replace`` on a list item or a whole object, a non-string patched
over a string (kyaml keeps the string's quoting), merged lists with items that lack a key
or share one (kyaml mangles those), lists of other built-in kinds, YAML aliases, and
every input on which kustomize fails. The caller then runs the real kustomize.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from fluxd import regex, selector
from fluxd.jsonpatch import PatchError, json_patch
from fluxd.jsonvalue import clone
from fluxd.kustomize.identity import ResId, current_id, previous_ids, store_previous_id
from fluxd.kustomize.kyaml import Unsupported, load_documents, string_map
from fluxd.schema import POD_SPEC_PATHS, BuiltinSchema, ListType

__all__ = ["apply_patches", "apply_patches_json6902", "apply_patches_strategic_merge",
           "select"]

Obj = dict[str, Any]
Read = Callable[[str], bytes]

_INTERNAL_PREFIX = "internal.config.kubernetes.io/"
_LEGACY_INTERNAL = ("config.kubernetes.io/path", "config.kubernetes.io/index",
                    "config.k8s.io/id")

# Built-in kinds with no merged list outside metadata (and, for Service, spec.ports).
_PLAIN_KINDS = frozenset({
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    *(("rbac.authorization.k8s.io/v1", kind)
      for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")),
})
_BUILTIN_GROUPS = frozenset({"", "apps", "batch", "policy", "autoscaling", "extensions"})
_SMP_DIRECTIVES = ("$retainKeys", "$setElementOrder/", "$deleteFromPrimitiveList/")
_SELECTOR_FIELDS = frozenset({"group", "version", "kind", "name", "namespace",
                              "labelSelector", "annotationSelector"})
_PATCH_FIELDS = frozenset({"path", "patch", "target", "options"})
_MAX_DEPTH = 100
_Events: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- ids


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unsupported(f"{what} that is not a string")
    return value


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise Unsupported("metadata that is not a map")
    return meta


def _same_id(a: ResId, b: ResId) -> bool:
    """kyaml's ``ResId.Equals``: group, version, kind, name and effective namespace."""
    return (a.gvk, a.name, a.effective_namespace) == (b.gvk, b.name, b.effective_namespace)


# ----------------------------------------------------------------------- selection


def _anchored(field: str, pattern: str) -> regex.Regex | None:
    if not pattern:
        return None
    try:
        return regex.compile(f"^(?:{pattern})$")
    except regex.RegexError:
        raise Unsupported(f"invalid {field} regex in a target") from None


def _label_selector(text: str) -> selector.Selector | None:
    if not text:
        return None
    try:
        return selector.parse(text)
    except selector.SelectorError:
        raise Unsupported("invalid selector in a target") from None


def select(objects: Iterable[Obj], target: Mapping[str, Any]) -> list[Obj]:
    """The objects a kustomize target (``types.Selector``) selects, in their order."""
    if not isinstance(target, Mapping) or not set(target) <= _SELECTOR_FIELDS:
        raise Unsupported("a target with unknown fields")
    fields = {key: _text(target.get(key), f"target {key}") for key in _SELECTOR_FIELDS}
    group, version, kind, name, namespace = (
        _anchored(key, fields[key]) for key in ("group", "version", "kind", "name", "namespace"))
    labels = _label_selector(fields["labelSelector"])
    annotations = _label_selector(fields["annotationSelector"])
    selected = []
    for obj in objects:
        current = current_id(obj)
        previous = previous_ids(obj)
        original = previous[0] if previous else current
        if namespace and not (namespace.search(original.effective_namespace)
                              or namespace.search(current.effective_namespace)):
            continue
        if name and not (name.search(original.name) or name.search(current.name)):
            continue
        if group and not group.search(current.group):
            continue
        if version and not version.search(current.version):
            continue
        if kind and not kind.search(current.kind):
            continue
        meta = _meta(obj)
        if labels and not labels.matches(string_map(meta.get("labels"), "labels")):
            continue
        if annotations and not annotations.matches(
                string_map(meta.get("annotations"), "annotations")):
            continue
        selected.append(obj)
    return selected


def _find_by_id(objects: list[Obj], patch: Obj) -> int:
    """The index of the one object whose current or any previous id is the patch's."""
    wanted = current_id(patch)
    found = [i for i, obj in enumerate(objects)
             if any(_same_id(wanted, ident) for ident in (*previous_ids(obj), current_id(obj)))]
    if len(found) != 1:
        raise Unsupported("a patch whose target is not one object")
    return found[0]


def _ensure_unique_ids(objects: list[Obj]) -> None:
    ids = [(ident.gvk, ident.name, ident.effective_namespace)
           for ident in map(current_id, objects)]
    if len(set(ids)) != len(ids):
        raise Unsupported("a patch that makes two objects one id")


# ------------------------------------------------------------------- reading patches


def _yaml_1_1(text: str) -> Any:
    # sigs.k8s.io/yaml reads a JSON 6902 patch written as YAML with YAML 1.1's scalars
    # (yes/on are booleans, …); PyYAML's SafeLoader is YAML 1.1.
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        raise Unsupported("a JSON patch that YAML 1.1 cannot read") from None


def _has_bare_letter(value: Any, depth: int) -> bool:
    # go-yaml v2 also reads y/Y/n/N as booleans, where PyYAML does not
    if depth > _MAX_DEPTH:
        raise Unsupported("a patch nested too deep")
    if isinstance(value, dict):
        return any(_has_bare_letter(k, depth + 1) or _has_bare_letter(v, depth + 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bare_letter(v, depth + 1) for v in value)
    return value in ("y", "Y", "n", "N")


def _refuse_constant(name: str) -> Any:
    raise Unsupported(f"{name} in a JSON patch")


def _json_operations(text: str) -> list[Any] | None:
    """The operations when ``text`` is a JSON 6902 patch (JSON, or YAML); else None."""
    if text.startswith("["):
        try:
            ops = json.loads(text, parse_constant=_refuse_constant)
        except ValueError:
            return None
    else:
        try:
            documents = load_documents(text.encode())
        except yaml.YAMLError:
            raise Unsupported("a patch that is not YAML") from None
        if not documents or not isinstance(documents[0], list):
            return None
        if len(documents) > 1:
            raise Unsupported("a JSON patch followed by more documents")
        ops = documents[0]
        if ops != _yaml_1_1(text) or _has_bare_letter(ops, 0):
            raise Unsupported("a JSON patch whose YAML reads differently in YAML 1.1")
    if not isinstance(ops, list) or not ops:
        raise Unsupported("an empty or malformed JSON patch")
    if not all(isinstance(op, dict) for op in ops):
        raise Unsupported("a JSON patch operation that is not an object")
    return ops


def _strategic_documents(text: str) -> list[Obj]:
    try:
        documents = load_documents(text.encode())
    except yaml.YAMLError:
        raise Unsupported("a patch that is not YAML") from None
    if not documents:
        raise Unsupported("an empty patch")
    for doc in documents:
        if not isinstance(doc, dict):
            raise Unsupported("a patch document that is not an object")
        meta = doc.get("metadata")
        if not (isinstance(doc.get("apiVersion"), str) and doc["apiVersion"]
                and isinstance(doc.get("kind"), str) and doc["kind"]
                and not doc["kind"].endswith("List") and isinstance(meta, dict)
                and isinstance(meta.get("name"), str) and meta["name"]
                and isinstance(meta.get("namespace", ""), str)):
            raise Unsupported("a strategic merge patch without apiVersion, kind or name")
        _check_directives(doc, 0)
    return documents


def _check_directives(value: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise Unsupported("a patch nested too deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith(_SMP_DIRECTIVES):
                raise Unsupported(f"patch with {key}")
            if key == "$patch" and item not in ("merge", "replace", "delete"):
                raise Unsupported("patch with an unknown $patch")
            _check_directives(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_directives(item, depth + 1)


def _patch_text(entry: Mapping[str, Any], read: Read) -> str:
    inline = _text(entry.get("patch"), "patch").strip()
    path = _text(entry.get("path"), "path")
    if bool(inline) == bool(path):
        raise Unsupported("a patch with both or neither of patch and path")
    if not inline:
        try:
            inline = read(path).decode()
        except UnicodeDecodeError:
            raise Unsupported("a patch file that is not UTF-8") from None
    _refuse_aliases(inline)
    return inline


def _refuse_aliases(text: str) -> None:
    # an alias shares a node: nested ones make a small text a huge value to walk
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=_Events)):
            raise Unsupported("a patch with YAML aliases")
    except yaml.YAMLError:
        raise Unsupported("a patch that is not YAML") from None


def _options(entry: Mapping[str, Any]) -> tuple[bool, bool]:
    options = entry.get("options") or {}
    if not isinstance(options, dict) or not all(
            isinstance(v, bool) for v in options.values()):
        raise Unsupported("patch options that are not booleans")
    return bool(options.get("allowNameChange")), bool(options.get("allowKindChange"))


# ------------------------------------------------------------------------- applying


def apply_patches(objects: list[Obj], entries: Any, read: Read) -> list[Obj]:
    """A kustomization's ``patches:``, in order (kustomize's ``PatchTransformer``)."""
    if not isinstance(entries, list):
        raise Unsupported("patches that are not a list")
    result = list(objects)
    for entry in entries:
        if not isinstance(entry, dict) or not set(entry) <= _PATCH_FIELDS:
            raise Unsupported("a patch entry with unknown fields")
        target = entry.get("target")
        if target is not None and not isinstance(target, dict):
            raise Unsupported("a patch target that is not a map")
        text = _patch_text(entry, read)
        allow_name, allow_kind = _options(entry)
        ops = _json_operations(text)
        if ops is not None:
            if target is None:
                raise Unsupported("a JSON patch without a target")
            result = _apply_json(result, ops, target, record_previous_id=True)
            continue
        for patch in _strategic_documents(text):
            if target is None:
                index = _find_by_id(result, patch)
                patched = _apply_strategic(result[index], patch, allow_name=allow_name,
                                           allow_kind=allow_kind)
                result = result[:index] + patched + result[index + 1:]
            else:
                chosen = {id(obj) for obj in select(result, target)}
                result = _apply_selected(result, chosen, patch, allow_name=allow_name,
                                         allow_kind=allow_kind)
    return result


def apply_patches_strategic_merge(objects: list[Obj], entries: Any, read: Read) -> list[Obj]:
    """The deprecated ``patchesStrategicMerge``: file paths, or inline documents."""
    if not isinstance(entries, list):
        raise Unsupported("patchesStrategicMerge that is not a list")
    if not entries:
        return list(objects)
    patches: list[Obj] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise Unsupported("a patchesStrategicMerge entry that is not a string")
        _refuse_aliases(entry)
        try:
            inline = load_documents(entry.encode())
        except yaml.YAMLError:
            inline = []
        if inline and all(isinstance(doc, dict) for doc in inline):
            patches.extend(_strategic_documents(entry))
        elif inline == [entry.strip()] and "\n" not in entry.strip():
            patches.extend(_strategic_documents(_patch_text({"path": entry.strip()}, read)))
        else:
            raise Unsupported("a patchesStrategicMerge entry that is neither path nor patch")
    if any(_same_id(current_id(a), current_id(b))
           for i, a in enumerate(patches) for b in patches[i + 1:]):
        # kustomize conflates patches of one object first and refuses conflicting ones
        raise Unsupported("two strategic merge patches of one object")
    result = list(objects)
    for patch in patches:
        index = _find_by_id(result, patch)
        result = _apply_selected(result, {id(result[index])}, patch, allow_name=False,
                                 allow_kind=False)
    return result


def apply_patches_json6902(objects: list[Obj], entries: Any, read: Read) -> list[Obj]:
    """The deprecated ``patchesJson6902``: each entry a ``target`` and a ``path``/``patch``."""
    if not isinstance(entries, list):
        raise Unsupported("patchesJson6902 that is not a list")
    result = list(objects)
    for entry in entries:
        if not isinstance(entry, dict) or not set(entry) <= _PATCH_FIELDS - {"options"}:
            raise Unsupported("a patchesJson6902 entry with unknown fields")
        target = entry.get("target")
        if not isinstance(target, dict) or not target.get("name"):
            raise Unsupported("a patchesJson6902 entry without a target name")
        ops = _json_operations(_patch_text(entry, read))
        if ops is None:
            raise Unsupported("a patchesJson6902 entry that is not a JSON patch")
        before = [current_id(obj) for obj in result]
        result = _apply_json(result, ops, target, record_previous_id=False)
        # whether this older transformer records a previous id is not reproduced
        if [current_id(obj) for obj in result] != before:
            raise Unsupported("a patchesJson6902 entry that renames an object")
    return result


def _apply_json(objects: list[Obj], ops: list[Any], target: Mapping[str, Any], *,
                record_previous_id: bool) -> list[Obj]:
    chosen = {id(obj) for obj in select(objects, target)}
    result = []
    for obj in objects:
        if id(obj) in chosen:
            obj = clone(obj)
            if record_previous_id:
                store_previous_id(obj)
            annotations = string_map(_meta(obj).get("annotations"), "annotations")
            internal = {k: v for k, v in annotations.items()
                        if k.startswith(_INTERNAL_PREFIX) or k in _LEGACY_INTERNAL}
            try:
                patched = json_patch(obj, ops)
            except PatchError as exc:
                raise Unsupported(f"a JSON patch that fails: {exc}") from None
            if not isinstance(patched, dict):
                raise Unsupported("a JSON patch that replaces the object")
            meta = patched.get("metadata")
            if meta is None:
                meta = patched["metadata"] = {}
            if not isinstance(meta, dict):
                raise Unsupported("a JSON patch that makes metadata not a map")
            merged = {**string_map(meta.get("annotations"), "annotations"), **internal}
            if merged:
                meta["annotations"] = merged
            else:
                meta.pop("annotations", None)
            obj = patched
        result.append(obj)
    return result


def _apply_selected(objects: list[Obj], chosen: set[int], patch: Obj, *, allow_name: bool,
                    allow_kind: bool) -> list[Obj]:
    """kustomize's ``ResMap.ApplySmPatch``: the patch, its apiVersion the object's, on each
    chosen object; deleted objects leave the list, ids must stay unique."""
    result = []
    for obj in objects:
        if id(obj) not in chosen:
            result.append(obj)
            continue
        copy = dict(patch)
        copy["apiVersion"] = obj.get("apiVersion")
        copy["metadata"] = _string_labels(patch["metadata"])
        result.extend(_apply_strategic(obj, copy, allow_name=allow_name,
                                       allow_kind=allow_kind))
    _ensure_unique_ids(result)
    return result


def _string_labels(meta: dict[str, Any]) -> dict[str, Any]:
    """The patch's metadata as kustomize re-sets it before a targeted merge: labels and
    annotations as string maps, an empty or null one dropped."""
    meta = dict(meta)
    for field in ("labels", "annotations"):
        if field not in meta:
            continue
        value = meta[field]
        if value is None or value == {}:
            del meta[field]
            continue
        if not isinstance(value, dict) or "$patch" in value:
            raise Unsupported(f"patch {field} that are not a map of strings")
        strings = {}
        for key, item in value.items():
            if isinstance(item, bool):
                strings[key] = "true" if item else "false"
            elif isinstance(item, int | str):
                strings[key] = str(item)
            else:
                raise Unsupported(f"patch {field} that are not a map of strings")
        meta[field] = strings
    return meta


def _apply_strategic(obj: Obj, patch: Obj, *, allow_name: bool,
                     allow_kind: bool) -> list[Obj]:
    """kustomize's ``Resource.ApplySmPatch``: the merged object, or none when deleted."""
    target = clone(obj)
    meta = _meta(target)
    name, namespace, kind = meta.get("name"), meta.get("namespace"), target.get("kind")
    if allow_name or allow_kind:
        if allow_kind and not patch.get("kind"):
            raise Unsupported("allowKindChange with a patch without kind")
        store_previous_id(target)
    gvk = (_text(target.get("apiVersion"), "apiVersion"), _text(kind, "kind"))
    merged = _Merge(gvk).walk(target, clone(patch), ())
    if merged is _CLEAR or merged == {}:
        return []
    if not isinstance(merged, dict):
        raise Unsupported("a patch that makes the object not a map")
    merged_meta = merged.setdefault("metadata", {})
    if not isinstance(merged_meta, dict):
        raise Unsupported("a patch that makes metadata not a map")
    if not allow_kind:
        merged["kind"] = kind
    if not allow_name:
        merged_meta["name"] = name
    if namespace:
        merged_meta["namespace"] = namespace
    else:
        merged_meta.pop("namespace", None)
    return [merged]


# ------------------------------------------------------------------ strategic merge

_CLEAR = object()  # walk's "remove this field"


class _Merge:
    """kyaml's ``merge2.Merge`` with ``ListIncreaseDirection: Prepend`` over JSON values:
    ``walk(dest, origin, path)`` returns the merged value (dest updated in place) or
    ``_CLEAR`` to remove the field. ``dest``/``origin`` are ``_MISSING`` when absent."""

    def __init__(self, gvk: tuple[str, str]) -> None:
        self.gvk = gvk

    def walk(self, dest: Any, origin: Any, path: tuple[str, ...]) -> Any:
        if len(path) > _MAX_DEPTH:
            raise Unsupported("a patch nested too deep")
        if origin is None:
            return _CLEAR  # null deletes
        if dest is None and origin is _MISSING:
            return None  # a null the patch does not mention stays
        kind = _kind(dest) or _kind(origin)
        for value in (dest, origin):
            if _kind(value) not in (None, kind):
                raise Unsupported("a patch that changes a field's type")
        if kind == "seq":
            return self._list(dest, origin, path)
        if kind == "scalar":
            if origin is _MISSING:
                return dest
            if isinstance(dest, str) and not isinstance(origin, str):
                # kyaml keeps the quoting the object's string was written with: a number
                # or boolean patched over "quoted" text becomes a string
                raise Unsupported("a patch that puts a non-string over a string")
            return origin
        return self._map(dest, origin, path)

    def _map(self, dest: Any, origin: Any, path: tuple[str, ...]) -> Any:
        directive = origin.pop("$patch", "merge") if isinstance(origin, dict) else "merge"
        if directive == "delete":
            return _CLEAR
        if dest is _MISSING or dest is None:
            dest = origin
        elif directive == "replace":
            if not path:
                raise Unsupported("$patch: replace of a whole object")
            dest = origin
        if dest is _MISSING:
            return _CLEAR
        fields = sorted(set(dest) | (set(origin) if isinstance(origin, dict) else set()))
        for key in fields:
            value = self.walk(dest.get(key, _MISSING),
                              origin.get(key, _MISSING) if isinstance(origin, dict)
                              else _MISSING, (*path, key))
            if value is _CLEAR:
                dest.pop(key, None)
            else:
                dest[key] = value
        return dest

    def _list_kind(self, path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """("replace" | "keys" | "values", merge keys) for the list at ``path``."""
        api_version, kind = self.gvk
        group = api_version.partition("/")[0] if "/" in api_version else ""
        if not (group in _BUILTIN_GROUPS or group.endswith(".k8s.io")):
            return "replace", ()  # no schema: kustomize replaces lists of custom kinds
        if self.gvk not in POD_SPEC_PATHS and self.gvk not in _PLAIN_KINDS:
            raise Unsupported(f"a list patch in {api_version} {kind}")
        if "status" in path[:1]:
            raise Unsupported("a patch of status lists")
        spec = BuiltinSchema(path).list_spec()
        if spec.type is ListType.ATOMIC:
            return "replace", ()
        if path not in _MERGED_LISTS[self.gvk]:
            raise Unsupported(f"a patch of {'.'.join(path)} in {kind}")
        if spec.type is ListType.MAP:
            return "keys", spec.keys
        return "values", ()

    def _list(self, dest: Any, origin: Any, path: tuple[str, ...]) -> Any:
        try:
            mode, keys = self._list_kind(path)
        except Unsupported:
            if origin is _MISSING:
                return dest  # a list the patch leaves alone
            raise
        if mode == "replace":
            if origin is not _MISSING:
                _check_no_directive(origin, 0)
                return origin
            return dest
        if dest is _MISSING or dest is None:
            dest = []
        elif origin is _MISSING:
            origin = []
        if mode == "values":
            return _merge_values(dest, origin)
        return self._merge_items(dest, origin, keys, path)

    def _merge_items(self, dest: list[Any], origin: list[Any], keys: tuple[str, ...],
                     path: tuple[str, ...]) -> list[Any]:
        present = [_item_keys(item, keys) for item in (*origin, *dest)]
        for index in range(len(keys)):
            if len({values[index] is None for values in present}) > 1:
                raise Unsupported(f"items of {path[-1]} with and without {keys[index]}")
        dest_by_key = _index(dest, keys, path)
        origin_by_key = _index(origin, keys, path)
        if sum(value is not None for value in present[0]) > 1 if present else False:
            # merged by several keys, kyaml puts the patch's new items first and keeps
            # the object's where they were
            order = [*(k for k in origin_by_key if k not in dest_by_key), *dest_by_key]
        else:
            # by one key: the patch's items first, then the object's others
            order = list(dict.fromkeys([*origin_by_key, *dest_by_key]))
        merged: list[Any] = []
        for key in order:
            base, patch = dest_by_key.get(key, _MISSING), origin_by_key.get(key, _MISSING)
            if isinstance(patch, dict) and patch.get("$patch") == "replace":
                raise Unsupported("$patch: replace on a list item")
            value = self.walk(base, patch, (*path, "[]"))
            if value is not _CLEAR and value != {}:
                merged.append(value)
        return merged


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _kind(value: Any) -> str | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "seq"
    return "scalar"


def _check_no_directive(value: Any, depth: int) -> None:
    # a replaced list is taken as written: kyaml would keep any "$patch" in it literally
    if depth > _MAX_DEPTH:
        raise Unsupported("a patch nested too deep")
    if isinstance(value, dict):
        if "$patch" in value:
            raise Unsupported("$patch in a list that is replaced")
        for item in value.values():
            _check_no_directive(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_no_directive(item, depth + 1)


def _merged_lists_of(gvk: tuple[str, str]) -> frozenset[tuple[str, ...]]:
    """The paths of the lists kustomize's schema merges (rather than replaces) in a
    built-in kind; ``fluxd.schema`` says by which keys."""
    paths: set[tuple[str, ...]] = {("metadata", "finalizers"), ("metadata", "ownerReferences")}
    pod_spec = POD_SPEC_PATHS.get(gvk)
    if pod_spec is not None:
        templates = {pod_spec[:-1]}
        if gvk[1] == "CronJob":
            templates.add(("spec", "jobTemplate"))
        for template in templates:
            paths |= {(*template, "metadata", "finalizers"),
                      (*template, "metadata", "ownerReferences")}
        for field in ("volumes", "imagePullSecrets", "hostAliases"):
            paths.add((*pod_spec, field))
        for containers in ("containers", "initContainers", "ephemeralContainers"):
            paths.add((*pod_spec, containers))
            for field in ("env", "ports", "volumeMounts", "volumeDevices"):
                paths.add((*pod_spec, containers, "[]", field))
    if gvk == ("v1", "Service"):
        paths.add(("spec", "ports"))
    return frozenset(paths)


_MERGED_LISTS = {gvk: _merged_lists_of(gvk) for gvk in (*POD_SPEC_PATHS, *_PLAIN_KINDS)}


def _key_text(value: Any) -> str | None:
    """A merge key's value as kyaml compares it: the scalar's text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    if value is None:
        return None
    raise Unsupported("a merge key that is not a string or an integer")


def _item_keys(item: Any, keys: tuple[str, ...]) -> tuple[str | None, ...]:
    if not isinstance(item, dict) or not item:
        raise Unsupported("a list item that is not an object")
    values = tuple(_key_text(item.get(key)) for key in keys)
    if values[0] is None:
        raise Unsupported(f"a list item without its merge key {keys[0]}")
    return values


def _index(items: list[Any], keys: tuple[str, ...],
           path: tuple[str, ...]) -> dict[tuple[str | None, ...], Any]:
    indexed: dict[tuple[str | None, ...], Any] = {}
    for item in items:
        key = _item_keys(item, keys)
        if key in indexed:
            raise Unsupported(f"two items of {path[-1]} with one key")
        indexed[key] = item
    return indexed


def _merge_values(dest: list[Any], origin: list[Any]) -> list[Any]:
    """A merged list of scalars (``finalizers``): the patch's values, then the others."""
    if not all(isinstance(v, str) for v in (*dest, *origin)):
        raise Unsupported("a merged list of values that are not strings")
    return list(dict.fromkeys([*origin, *dest]))
