"""A native build for the commonest Kustomization: a directory of plain manifests.

When ``spec.path`` holds no kustomization file anywhere below it and the spec asks for
no kustomize transformation (no ``targetNamespace``, ``namePrefix``/``nameSuffix``,
``patches``, ``images`` or ``components``), Flux generates a kustomization that lists
the files and kustomize merely collects and orders their objects. That is done here, in
memory, from the artifact's snapshot: no extraction, no kubectl process.

It returns None — the caller then runs the real kustomize — for anything it does not
reproduce exactly: a kustomization file in the tree, a transforming spec field, YAML
merge keys, a document that is not a named Kubernetes object (kustomize's error is the
one to show), ``…List`` kinds (kustomize unpacks them), two objects with one identity,
an undecodable file. ``tests/controllers/kustomize/test_native.py`` holds the output
equal to ``kubectl kustomize``'s over generated trees.

The order is kustomize's ``legacy`` sort (the default of ``kustomize build`` and
``kubectl kustomize``): kinds in its fixed first/last lists, every other kind between,
then by group, version and kind, namespace (unset last) and name.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import yaml

from fluxd.artifacts.snapshot import Snapshot
from fluxd.controllers.kustomize.build import KUSTOMIZATION_FILES

Obj = dict[str, Any]

#: spec fields that make Flux's generated kustomization transform the objects
TRANSFORMING_FIELDS = ("targetNamespace", "namePrefix", "nameSuffix", "patches", "images",
                       "components", "decryption")

# kustomize v5.7 api/resid/gvk.go
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


class _Unsupported(Exception):
    """A value whose reading by kustomize is not reproduced here."""


_YamlBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_YamlBase):  # type: ignore[valid-type, misc]
    """Plain scalars as kustomize reads them (go-yaml v3, then a JSON round trip): only
    ``true``/``false`` are booleans, ``yes``/``on``/``y`` and ``12:30`` are strings,
    ``0755``/``0o17``/``0x1F``/``0b101`` are integers, whole floats become integers.
    Anything rarer — timestamps (kustomize rewrites them), infinities, ``08``,
    underscores, explicit tags but ``!!str`` — raises ``_Unsupported``."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)|0[0-7]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+",
     "-+0123456789"),
    ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?", "-+0123456789."),
    ("fluxd:unsupported",
     r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9]+_[0-9_]*"
     # an octal-looking number with an 8 or 9: [0-7]* up to the first one, since
     # [0-9]*[89] backtracks quadratically over a long string of digits
     r"|[-+]?0[0-7]*[89][0-9]*|[-+]0[xXoObB].*|0[XOB].*"
     r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*|<<", "-+.0123456789<"),
):
    _Loader.add_implicit_resolver(
        _tag if _tag.startswith("fluxd:") else f"tag:yaml.org,2002:{_tag}",
        re.compile(f"^(?:{_pattern})$"), list(_first))

_INT64 = 1 << 63


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    if digits[:2] in ("0x", "0o", "0b"):
        value = int(digits, 0)
    elif len(digits) > 1 and digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    value *= sign
    if not -_INT64 <= value < _INT64:
        raise _Unsupported(text)
    return value


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float | int:
    value = float(str(loader.construct_scalar(node)))  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise _Unsupported(str(value))
    if value.is_integer() and abs(value) < 2 ** 53:
        return int(value)  # what JSON makes of it
    return value


def _refuse(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise _Unsupported(str(getattr(node, "tag", "")))


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    if any(not isinstance(key, str) for key in mapping):
        raise _Unsupported("a key that is not a string")
    return mapping


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.add_constructor("fluxd:unsupported", _refuse)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
for _tag in ("binary", "timestamp", "set", "omap", "pairs", "merge"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)
_Loader.add_constructor(None, _refuse)


def _documents(data: bytes) -> list[Any]:
    return [doc for doc in yaml.load_all(data, Loader=_Loader) if doc is not None]


def base_directory(path: str) -> str | None:
    """``spec.path`` as a snapshot directory ("" for the root); None when it would leave
    the artifact (the slow path reports that)."""
    joined = posixpath.normpath(posixpath.join("/", path or "."))
    if not joined.startswith("/"):
        return None
    return joined.lstrip("/")


def _gvk(obj: Obj) -> tuple[str, str, str]:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return group, version, str(obj["kind"])


def sort_key(obj: Obj) -> tuple[int, str, str, str]:
    group, version, kind = _gvk(obj)
    gvk = "_".join((group or "~G", version or "~V", kind or "~K"))
    meta = obj["metadata"]
    # kustomize writes an unset namespace as "~X", which sorts after every name
    return (_TYPE_ORDER.get(kind, 0), gvk, str(meta.get("namespace") or "~X"),
            str(meta["name"]))


def _manifests(data: bytes) -> list[Obj] | None:
    try:
        documents = _documents(data)
    except (yaml.YAMLError, ValueError, _Unsupported):
        return None
    found: list[Obj] = []
    for doc in documents:
        if isinstance(doc, dict | list) and not doc:
            continue
        if not isinstance(doc, dict):
            return None
        api_version, kind, meta = doc.get("apiVersion"), doc.get("kind"), doc.get("metadata")
        if not (isinstance(api_version, str) and api_version and isinstance(kind, str)
                and kind and not kind.endswith("List") and isinstance(meta, dict)):
            return None
        name, namespace = meta.get("name"), meta.get("namespace")
        if not (isinstance(name, str) and name) or not (
                namespace is None or isinstance(namespace, str)):
            return None
        found.append(doc)
    return found


def build_native(snapshot: Snapshot, path: str, spec: Mapping[str, Any]) -> list[Obj] | None:
    """The objects kustomize would build for ``spec`` from the snapshot, or None when
    the real kustomize must do it (see the module docstring)."""
    if any(spec.get(name) for name in TRANSFORMING_FIELDS):
        return None
    base = base_directory(path)
    if base is None or not snapshot.is_dir(base):
        return None
    objects: list[Obj] = []
    pending = [base]
    while pending:
        directory = pending.pop()
        dirs, files = snapshot.listdir(directory)
        if any(name in KUSTOMIZATION_FILES for name in files):
            return None
        prefix = f"{directory}/" if directory else ""
        pending.extend(prefix + d for d in dirs)
        for name in files:
            dot = name.rfind(".")
            if dot < 0 or name[dot:] not in (".yaml", ".yml"):
                continue
            found = _manifests(snapshot.files[prefix + name])
            if found is None:
                return None
            objects.extend(found)
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        group, _, kind = _gvk(obj)
        meta = obj["metadata"]
        identity = (group, kind, str(meta.get("namespace") or ""), str(meta["name"]))
        if identity in seen:
            return None
        seen.add(identity)
    objects.sort(key=sort_key)
    return objects
