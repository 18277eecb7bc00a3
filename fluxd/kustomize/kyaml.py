"""YAML read as kustomize reads it.

``load_documents(data)`` reads resources as kustomize does (go-yaml v3 into kyaml nodes,
then a JSON round trip): a stream's non-empty documents with plain scalars typed as
``_Loader`` says. ``load_kustomization(data)`` reads a kustomization file as kustomize
does (``sigs.k8s.io/yaml``: go-yaml v2 typing, then JSON into its types): one document
with plain scalars typed as ``_KustomizationLoader`` says. A value whose reading is not
reproduced here, a duplicate mapping key (both go-yaml versions refuse it) or a YAML
error raises ``Unsupported``: the caller then leaves the build to the real kustomize.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import yaml

__all__ = ["Unsupported", "load_documents", "load_kustomization", "string_list", "string_map"]


class Unsupported(Exception):
    """A value whose reading by kustomize is not reproduced here."""


_YamlBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_YamlBase):  # type: ignore[valid-type, misc]
    """Plain scalars as kustomize reads them (go-yaml v3, then a JSON round trip): only
    ``true``/``false`` are booleans, ``yes``/``on``/``y`` and ``12:30`` are strings,
    ``0755``/``0o17``/``0x1F``/``0b101`` are integers, whole floats become integers.
    Anything rarer — timestamps (kustomize rewrites them), infinities, ``08``,
    underscores, explicit tags but ``!!str`` — raises ``Unsupported``."""


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
        raise Unsupported(text)
    return value


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float | int:
    value = float(str(loader.construct_scalar(node)))  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise Unsupported(str(value))
    if value.is_integer() and abs(value) < 2 ** 53:
        return int(value)  # what JSON makes of it
    return value


def _refuse(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise Unsupported(str(getattr(node, "tag", "")))


_STR = "tag:yaml.org,2002:str"


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # string keys only, each once (go-yaml refuses a duplicate); merge keys never reach
    # here (their resolver refuses them), so PyYAML's flattening is not needed
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag != _STR or not isinstance(key_node, yaml.ScalarNode):
            raise Unsupported("a key that is not a string")
        key = key_node.value
        if key in mapping:
            raise Unsupported("a duplicate mapping key")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_strictly(loader: type[yaml.SafeLoader],
                        float_constructor: Callable[[yaml.SafeLoader, yaml.Node], Any]) -> None:
    """Integers, floats and string-keyed maps as kustomize reads them; every rarer tag
    (binary, timestamps, sets, merge keys, explicit tags) refused."""
    loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
    loader.add_constructor("tag:yaml.org,2002:float", float_constructor)
    loader.add_constructor("fluxd:unsupported", _refuse)
    loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
    for tag in ("binary", "timestamp", "set", "omap", "pairs", "merge"):
        loader.add_constructor(f"tag:yaml.org,2002:{tag}", _refuse)
    loader.add_constructor(None, _refuse)


_construct_strictly(_Loader, _construct_float)


def load_documents(data: bytes) -> list[Any]:
    """The non-empty documents of a resource file, typed as kustomize types them."""
    try:
        return [doc for doc in yaml.load_all(data, Loader=_Loader) if doc is not None]
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise Unsupported(f"YAML kustomize may read otherwise: {type(exc).__name__}") from None


class _KustomizationLoader(_YamlBase):  # type: ignore[valid-type, misc]
    """Plain scalars as go-yaml v2 types them (``y``/``yes``/``on`` are booleans, ``1e3``
    a float, ``0x1F`` an integer); the caller checks each field's type as Go's JSON
    decoding into kustomize's types would. Explicit tags but ``!!str``, merge keys,
    timestamps and other rarities raise ``Unsupported``."""


#: plain scalars as go-yaml v2 types them: (tag, pattern, first characters)
GO_YAML_V2_SCALARS = (
    ("tag:yaml.org,2002:bool", r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False"
                               r"|FALSE|on|On|ON|off|Off|OFF", "yYnNtTfFoO"),
    ("tag:yaml.org,2002:int", r"[-+]?(?:0b[01_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|0|[1-9][0-9_]*)",
     "-+0123456789"),
    ("tag:yaml.org,2002:float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
)


_GO_BOOLS = {"y": True, "yes": True, "true": True, "on": True,
             "n": False, "no": False, "false": False, "off": False}


def construct_go_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return _GO_BOOLS[str(loader.construct_scalar(node)).lower()]  # type: ignore[arg-type]


def use_go_yaml_v2_scalars(loader: type[yaml.SafeLoader],
                           *extra: tuple[str, str, Any]) -> None:
    """Make ``loader`` type plain scalars as go-yaml v2 does (booleans read with
    ``construct_go_bool``), plus the ``extra`` resolvers."""
    loader.yaml_implicit_resolvers = {}
    for tag, pattern, first in (*GO_YAML_V2_SCALARS, *extra):
        loader.add_implicit_resolver(tag, re.compile(f"^(?:{pattern})$"), list(first))
    loader.add_constructor("tag:yaml.org,2002:bool", construct_go_bool)


def _construct_number(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    # only ever compared against the types a field wants: a number is never a string
    return math.nan


use_go_yaml_v2_scalars(
    _KustomizationLoader, ("fluxd:unsupported", r"<<|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*",
                           "<0123456789"))

_construct_strictly(_KustomizationLoader, _construct_number)


def load_kustomization(data: bytes) -> Any:
    """A kustomization file's one document (None when empty), typed as go-yaml v2 types
    it; ``Unsupported`` for several documents or anything not reproduced."""
    try:
        documents = list(yaml.load_all(data, Loader=_KustomizationLoader))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise Unsupported(f"kustomization YAML: {type(exc).__name__}") from None
    if len(documents) > 1:
        raise Unsupported("a kustomization file with several documents")
    return documents[0] if documents else None


def string_list(value: Any, what: str) -> list[str]:
    """A read list of strings (None is empty); ``Unsupported`` naming ``what`` for any
    other value."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unsupported(f"{what} that is not a list of strings")
    return value


def string_map(value: Any, what: str) -> dict[str, str]:
    """A read map of strings to strings (None is empty); ``Unsupported`` naming ``what``
    for any other value."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Unsupported(f"{what} that is not a map of strings")
    return value
