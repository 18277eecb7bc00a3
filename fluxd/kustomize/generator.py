"""kustomize's ConfigMap and Secret generators and their content hash.

``generate(kind, args, global_options, read)`` makes the object one ``configMapGenerator``
or ``secretGenerator`` entry describes, as kustomize v5.7 makes it (``api/internal/
generators``, ``api/kv``): key/value pairs from ``envs`` (and the deprecated ``env``),
then ``literals``, then ``files`` (``key=path`` or the file's base name), each key checked
as a ConfigMap key, no key twice; ConfigMap values as strings, Secret values base64 in
lines of 70; ``options`` merged with the kustomization's ``generatorOptions`` (local
labels and annotations win, a global ``true`` wins); the generator's bookkeeping
annotations (``needsHashSuffix``, ``generatorBehavior``) set as kustomize sets them.

``absorb(objects, generated)`` adds a generated object to the accumulated ones as
kustomize's ``appendReplaceOrMerge`` does (``behavior`` create, merge or replace).
``add_hash_suffixes(objects)`` renames every object marked for it to ``name-<hash>``
(``api/hasher``: the first ten hex digits of a SHA-256 over kind, type and data, some
digits replaced by letters) and records the previous name.

Anything kustomize would refuse, or that is not reproduced here (binary file content,
env lines without ``=``, ``fileMerge``, ``immutable`` on the entry), raises
``Unsupported``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from typing import Any

from fluxd.kustomize import identity
from fluxd.kustomize.identity import (
    PREFIXES,
    PREVIOUS_KINDS,
    PREVIOUS_NAMES,
    PREVIOUS_NAMESPACES,
    SUFFIXES,
)
from fluxd.kustomize.kyaml import Unsupported, load_documents, string_list, string_map

Obj = dict[str, Any]

#: kustomize's internal (build) annotations, removed from the output (``resource.go``)
NEEDS_HASH = "internal.config.kubernetes.io/needsHashSuffix"
ORIGIN = "config.kubernetes.io/origin"
BEHAVIOR = "internal.config.kubernetes.io/generatorBehavior"
BUILD_ANNOTATIONS = (
    PREVIOUS_KINDS, PREVIOUS_NAMES, PREFIXES, SUFFIXES, PREVIOUS_NAMESPACES,
    "internal.config.kubernetes.io/allowNameChange",
    "internal.config.kubernetes.io/allowKindChange", "internal.config.kubernetes.io/refBy",
    BEHAVIOR, NEEDS_HASH, "internal.config.kubernetes.io/fileMergeMode",
    "internal.config.kubernetes.io/path", "internal.config.kubernetes.io/index",
    "internal.config.kubernetes.io/seqindent", "internal.config.kubernetes.io/id",
    "internal.config.kubernetes.io/annotations-migration-resource-id",
    "config.kubernetes.io/path", "config.kubernetes.io/index", "config.k8s.io/id",
    "kustomize.config.k8s.io/helm-generated",
)

_ARG_FIELDS = {"name", "namespace", "behavior", "literals", "files", "envs", "env",
               "options"}
_OPTION_FIELDS = {"labels", "annotations", "disableNameSuffixHash", "immutable"}
_BEHAVIORS = {"": "unspecified", "create": "create", "merge": "merge",
              "replace": "replace"}
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# a generated object's name: one kustomize writes back as the same plain string
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_MAX_LINE = 64 * 1024 - 1  # bufio.Scanner's token limit

Read = Callable[[str], bytes]


def _options(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - _OPTION_FIELDS:
        raise Unsupported("generator options kustomize may read otherwise")
    for flag in ("disableNameSuffixHash", "immutable"):
        if not isinstance(value.get(flag, False), bool):
            raise Unsupported(f"generator option {flag} that is not a boolean")
    return {"labels": None if value.get("labels") is None
            else string_map(value["labels"], "generator labels"),
            "annotations": None if value.get("annotations") is None
            else string_map(value["annotations"], "generator annotations"),
            "disableNameSuffixHash": value.get("disableNameSuffixHash", False),
            "immutable": value.get("immutable", False)}


def merge_options(local: Any, global_: Any) -> dict[str, Any] | None:
    """``MergeGlobalOptionsIntoLocal``: local labels/annotations win, a global true wins."""
    mine, theirs = _options(local), _options(global_)
    if theirs is None:
        return mine
    if mine is None:
        mine = {"labels": None, "annotations": None, "disableNameSuffixHash": False,
                "immutable": False}
    for field in ("labels", "annotations"):
        if theirs[field] is None:
            continue
        if mine[field] is None:
            mine[field] = dict(theirs[field])
        else:
            mine[field] = {**theirs[field], **mine[field]}
    for flag in ("disableNameSuffixHash", "immutable"):
        mine[flag] = bool(mine[flag] or theirs[flag])
    return mine


def _check_key(key: str) -> None:
    if (len(key) > 253 or not _CONFIGMAP_KEY.fullmatch(key) or key == "."
            or key.startswith("..")):
        raise Unsupported("a generator key kustomize refuses")


def _literal(source: str) -> tuple[str, str]:
    key, sep, value = source.partition("=")
    if not sep or not key:
        raise Unsupported("a literal kustomize refuses")
    if value and value[0] == value[-1] and value[0] in "\"'":
        if len(value) == 1:
            raise Unsupported("a literal of one quote")
        value = value[1:-1]
    return key, value


def _go_lstrip(line: str) -> str:
    # Go's unicode.IsSpace; Python also counts \x1c-\x1f as space
    index = 0
    while index < len(line) and line[index].isspace() and line[index] not in "\x1c\x1d\x1e\x1f":
        index += 1
    return line[index:]


def _env_pairs(data: bytes) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for number, raw in enumerate(lines):
        if len(raw) > _MAX_LINE:
            raise Unsupported("an env file line longer than kustomize reads")
        raw = raw.removesuffix(b"\r")
        if number == 0:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = _go_lstrip(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise Unsupported("an env file that is not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Unsupported("an env file line without '='")
        if not _ENV_NAME.fullmatch(key) or key == "." or key.startswith(".."):
            raise Unsupported("an env file key kustomize refuses")
        pairs.append((key, value))
    return pairs


def _file_pair(source: str, read: Read) -> tuple[str, str]:
    if source.count("=") > 1:
        raise Unsupported("a generator file source with several '='")
    key, sep, path = source.partition("=")
    if not sep:
        key, path = posixpath.basename(source), source
    if not key or not path:
        raise Unsupported("a generator file source kustomize refuses")
    try:
        return key, read(path).decode("utf-8")
    except UnicodeDecodeError:
        raise Unsupported("a generator file that is not UTF-8 (binaryData)") from None


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _check_literal_block(value: str) -> None:
    """kustomize refuses to write a generated value holding a control character, writes
    one with a line break as a YAML literal block (which fails when it starts with a
    tab) and reads a NEL as a line break: such values are left to it."""
    if _CONTROL.search(value) or ("\n" in value and value.startswith("\t")):
        raise Unsupported("a generated value kustomize writes otherwise")


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise Unsupported("a generator entry with a control character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def _base64_lines(value: str) -> str:
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    if len(encoded) < 70:
        return encoded
    return "".join(encoded[i:i + 70] + "\n" for i in range(0, len(encoded), 70))


def generate(kind: str, args: Any, global_options: Any, read: Read) -> Obj:
    """The ConfigMap or Secret one generator entry makes, with kustomize's bookkeeping
    annotations (see the module docstring)."""
    if not isinstance(args, dict):
        raise Unsupported("a generator entry that is not a map")
    allowed = _ARG_FIELDS | ({"type"} if kind == "Secret" else set())
    if set(args) - allowed:
        raise Unsupported(f"generator fields {sorted(set(args) - allowed)}")
    # kustomize hands the entry to its generator as YAML, which a control character
    # in any of its strings makes unreadable
    _check_text(args)
    _check_text(global_options)
    name, namespace = args.get("name"), args.get("namespace") or ""
    if not (isinstance(name, str) and _NAME.fullmatch(name)
            and load_documents(name.encode()) == [name]):
        raise Unsupported("a generator name kustomize may write otherwise")
    behavior = args.get("behavior") or ""
    if not isinstance(namespace, str) or behavior not in _BEHAVIORS:
        raise Unsupported("a generator namespace or behavior kustomize may read otherwise")
    envs = string_list(args.get("envs"), "generator envs")
    env = args.get("env")
    if env:
        if not isinstance(env, str):
            raise Unsupported("a generator env that is not a string")
        envs = [*envs, env]
    pairs: list[tuple[str, str]] = []
    for path in envs:
        pairs.extend(_env_pairs(read(path)))
    literals = string_list(args.get("literals"), "generator literals")
    pairs.extend(_literal(source) for source in literals)
    files = string_list(args.get("files"), "generator files")
    pairs.extend(_file_pair(source, read) for source in files)
    data: dict[str, str] = {}
    for key, value in pairs:
        _check_key(key)
        if key in data:
            raise Unsupported("a generator that repeats a key")
        data[key] = value
    options = merge_options(args.get("options"), global_options)

    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    if kind == "Secret":
        secret_type = args.get("type") or "Opaque"
        if not isinstance(secret_type, str):
            raise Unsupported("a Secret type that is not a string")
        obj["type"] = secret_type
        obj["data"] = {key: _base64_lines(value) for key, value in data.items()}
    elif data:
        for value in data.values():
            _check_literal_block(value)
        obj["data"] = data
    annotations: dict[str, str] = {}
    if options is not None:
        if options["labels"]:
            meta["labels"] = dict(options["labels"])
        annotations.update(options["annotations"] or {})
        for value in [*(options["labels"] or {}).values(), *annotations.values()]:
            _check_literal_block(value)
        if any(key.startswith(("config.kubernetes.io/", "internal.config.kubernetes.io/"))
               for key in annotations):
            raise Unsupported("a generated object with kustomize's own annotations")
        if options["immutable"]:
            obj["immutable"] = True
    if options is None or not options["disableNameSuffixHash"]:
        annotations[NEEDS_HASH] = "enabled"
    annotations[BEHAVIOR] = _BEHAVIORS[behavior]
    meta["annotations"] = annotations
    return obj


# --------------------------------------------------------------------------- absorbing


def _any_id_matches(obj: Obj, wanted: identity.ResId) -> bool:
    """Whether ``obj`` has or had the id ``wanted`` (``GetMatchingResourcesByAnyId``)."""
    return any(
        (candidate.group, candidate.version, candidate.kind, candidate.name,
         candidate.effective_namespace)
        == (wanted.group, wanted.version, wanted.kind, wanted.name,
            wanted.effective_namespace)
        for candidate in (identity.current_id(obj), *identity.previous_ids(obj)))


def _string_data(obj: Obj, field: str) -> dict[str, str]:
    value = obj.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Unsupported(f"{field} that is not a map of strings")
    return value


def _set_or_clear(mapping: Obj, field: str, value: dict[str, str]) -> None:
    # kyaml clears a field set to an empty map
    if value:
        mapping[field] = value
    else:
        mapping.pop(field, None)


def absorb(objects: list[Obj], generated: Obj) -> None:
    """Add ``generated`` to ``objects`` by its behavior (kustomize's
    ``appendReplaceOrMerge``): create needs no object of its id, merge and replace need
    exactly one (matched by any id it has had), whose place, name, namespace, labels
    and bookkeeping it takes; merge also keeps the data keys it does not set."""
    meta = generated["metadata"]
    kind, name = generated["kind"], meta["name"]
    behavior = meta["annotations"][BEHAVIOR]
    wanted = identity.current_id(generated)
    matches = [i for i, obj in enumerate(objects) if _any_id_matches(obj, wanted)]
    if not matches:
        if behavior in ("merge", "replace"):
            raise Unsupported(f"generator {behavior} without a {kind} to {behavior}")
        objects.append(generated)
        return
    if len(matches) > 1 or behavior not in ("merge", "replace"):
        raise Unsupported(f"generated {kind} {name} exists already")
    index = matches[0]
    old = objects[index]
    old_meta = old.get("metadata") or {}
    labels = {**_string_data(old_meta, "labels"), **_string_data(meta, "labels")}
    new_annotations = _string_data(meta, "annotations")
    old_annotations = _string_data(old_meta, "annotations")
    annotations = {**old_annotations, **new_annotations}
    for key in BUILD_ANNOTATIONS:
        if key in old_annotations:
            annotations[key] = old_annotations[key]
        else:
            annotations.pop(key, None)
    if NEEDS_HASH not in new_annotations:
        annotations.pop(NEEDS_HASH, None)
    if behavior == "merge" and ORIGIN in old_annotations:
        annotations[ORIGIN] = old_annotations[ORIGIN]  # the merged object's origin stays
    _set_or_clear(meta, "labels", labels)
    _set_or_clear(meta, "annotations", annotations)
    meta["name"] = old_meta.get("name")
    if old_meta.get("namespace"):
        meta["namespace"] = old_meta["namespace"]
    else:
        meta.pop("namespace", None)
    if behavior == "merge":
        _set_or_clear(generated, "data", {**_string_data(old, "data"),
                                          **_string_data(generated, "data")})
        if "binaryData" in old or "binaryData" in generated:
            _set_or_clear(generated, "binaryData",
                          {**_string_data(old, "binaryData"),
                           **_string_data(generated, "binaryData")})
    objects[index] = generated


# --------------------------------------------------------------------------- hashes


def _go_json(value: Any) -> str:
    """``json.Marshal``: sorted keys, no spaces, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _hash_field(obj: Obj, field: str) -> Any:
    value = obj.get(field, "")
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return value
    raise Unsupported(f"a hashed {field} kustomize may encode otherwise")


def content_hash(obj: Obj) -> str:
    """kustomize's name suffix for a ConfigMap or Secret (``api/hasher``). Its lookup of
    ``metadata/name`` finds nothing, so the name hashes as ""."""
    kind = obj.get("kind")
    if kind == "ConfigMap":
        encoded: Obj = {"kind": "ConfigMap", "name": "", "data": _hash_field(obj, "data")}
        if isinstance(obj.get("binaryData"), dict):
            encoded["binaryData"] = _hash_field(obj, "binaryData")
    elif kind == "Secret":
        encoded = {"kind": "Secret", "type": _hash_field(obj, "type"), "name": "",
                   "data": _hash_field(obj, "data")}
        if isinstance(obj.get("stringData"), dict):
            encoded["stringData"] = _hash_field(obj, "stringData")
    else:
        raise Unsupported(f"a content hash for a {kind}")
    digest = hashlib.sha256(_go_json(encoded).encode("utf-8")).hexdigest()[:10]
    return digest.translate(_HASH_LETTERS)


_HASH_LETTERS = str.maketrans("013ae", "ghkmt")


def add_hash_suffixes(objects: list[Obj]) -> None:
    """Rename every object marked ``needsHashSuffix: enabled`` to ``name-<hash>`` and
    record its previous id (kustomize's ``HashTransformer``)."""
    for obj in objects:
        meta = obj["metadata"]
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict) or annotations.get(NEEDS_HASH) != "enabled":
            continue
        suffix = content_hash(obj)
        identity.store_previous_id(obj)
        meta["name"] = f"{meta['name']}-{suffix}"
