"""Post-build variable substitution over built objects, as Flux's ``kustomize_varsub.go``.

``collect_variables(sources, inline)`` gathers the variables of ``spec.postBuild``: the
``data`` of each ``substituteFrom`` ConfigMap or Secret in list order (Secret values
base64-decoded; ``stringData`` never comes back from the API, ``binaryData`` is ignored),
then the inline ``substitute`` map; later entries win and newlines are removed from values.
A missing source is skipped when ``optional``, otherwise it fails with upstream's message.

``substitute(objects, variables, strategy=..., strict=...)`` then expands every object not
opted out (label or annotation ``kustomize.toolkit.fluxcd.io/substitute: disabled``, exact
value) — only when there is at least one variable or the strategy is ``Always``. Variable
names must match ``^[_[:alpha:]][_[:alpha:][:digit:]]*$``. Each object is written as YAML,
expanded by ``envsubst.expand`` and read back with go-yaml v2's reading of plain scalars
(``replicas: ${n}`` with n="3" gives 3, "yes"/"y"/"on" give true, timestamps stay text),
then passed through JSON the way Flux does (an integral float becomes an int). Errors name
the object and carry Flux's wording, e.g. ``post build failed for
'Deployment.v1.apps/web': envsubst error: variable substitution failed: variable not set
(strict mode): "tag"``. The input objects are never modified.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import yaml

from fluxd.controllers.kustomize.envsubst import SubstitutionError, expand

__all__ = [
    "DISABLED_VALUE",
    "SUBSTITUTE_KEY",
    "VAR_NAME_PATTERN",
    "SubstituteSource",
    "SubstitutionError",
    "collect_variables",
    "substitute",
]

SUBSTITUTE_KEY: Final = "kustomize.toolkit.fluxcd.io/substitute"
DISABLED_VALUE: Final = "disabled"
#: upstream's rule, quoted in its error message; POSIX classes are ASCII-only in Go
VAR_NAME_PATTERN: Final = "^[_[:alpha:]][_[:alpha:][:digit:]]*$"
_VAR_NAME: Final = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")


@dataclass(frozen=True, slots=True)
class SubstituteSource:
    """One ``substituteFrom`` entry with the object fetched for it (None: not found)."""

    kind: str  # "ConfigMap" or "Secret"
    name: str
    optional: bool = False
    obj: Mapping[str, Any] | None = None


def collect_variables(sources: Sequence[SubstituteSource], inline: Mapping[str, str] | None,
                      *, namespace: str | None = None) -> dict[str, str]:
    """The variables of a Kustomization's ``postBuild``, in upstream's precedence.

    ``namespace`` is accepted for callers' convenience only: upstream's message for a
    missing source (``substitute from 'ConfigMap/<name>' error: configmaps "<name>" not
    found``) does not name it."""
    variables: dict[str, str] = {}
    for source in sources:
        if source.kind not in ("ConfigMap", "Secret"):
            continue  # upstream ignores other kinds (the CRD does not admit them)
        where = f"substitute from '{source.kind}/{source.name}' error"
        if source.obj is None:
            if source.optional:
                continue
            resource = "configmaps" if source.kind == "ConfigMap" else "secrets"
            raise SubstitutionError(f'{where}: {resource} "{source.name}" not found')
        for key, value in (source.obj.get("data") or {}).items():
            if source.kind == "Secret":
                try:
                    raw = base64.b64decode(str(value))
                except (binascii.Error, ValueError) as exc:
                    raise SubstitutionError(f"{where}: illegal base64 data: {exc}") from exc
                # undecodable bytes survive as surrogates, so using them fails like Go's
                # YAML reader does, while unused ones do no harm
                value = raw.decode("utf-8", "surrogateescape")
            variables[str(key)] = str(value).replace("\n", "")
    for key, value in (inline or {}).items():
        variables[str(key)] = str(value).replace("\n", "")
    return variables


def substitute(objects: list[dict[str, Any]], variables: Mapping[str, str], *,
               strategy: str | None = None, strict: bool = True) -> list[dict[str, Any]]:
    """``objects`` with their variables expanded (new dicts for substituted objects, the
    originals for skipped ones), or ``SubstitutionError`` naming the first failing object.
    ``strategy`` is ``spec.postBuild.substituteStrategy``: unset is Flux's
    ``WithVariables``."""
    if not variables and strategy != "Always":
        return list(objects)
    names_checked = False
    out: list[dict[str, Any]] = []
    for obj in objects:
        if _disabled(obj):
            out.append(obj)
            continue
        try:
            if not names_checked:  # upstream checks per substituted object
                _check_names(variables)
                names_checked = True
            out.append(_substitute_one(obj, variables, strict=strict))
        except SubstitutionError as exc:
            raise SubstitutionError(
                f"post build failed for '{_object_id(obj)}': envsubst error: {exc}") from exc
    return out


def _disabled(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    return (meta.get("labels") or {}).get(SUBSTITUTE_KEY) == DISABLED_VALUE or \
        (meta.get("annotations") or {}).get(SUBSTITUTE_KEY) == DISABLED_VALUE


def _check_names(variables: Mapping[str, str]) -> None:
    for name in variables:
        if not _VAR_NAME.fullmatch(name):
            raise SubstitutionError(
                f"'{name}' var name is invalid, must match '{VAR_NAME_PATTERN}'")


def _object_id(obj: Mapping[str, Any]) -> str:
    """``<Kind>.<version>.<group>/<name>``: kustomize's ``Gvk.String()`` as Flux prints it."""
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    name = (obj.get("metadata") or {}).get("name") or ""
    return f"{obj.get('kind') or '[noKind]'}.{version or '[noVer]'}.{group or '[noGrp]'}/{name}"


def _substitute_one(obj: Mapping[str, Any], variables: Mapping[str, str], *,
                    strict: bool) -> dict[str, Any]:
    if not _has_dollar(obj):
        # expansion would return the text unchanged: skip the YAML round trip
        return _jsonable_mapping(obj)
    text = _to_yaml(obj)
    try:
        expanded = expand(text, variables, strict=strict)
    except SubstitutionError as exc:
        raise SubstitutionError(f"variable substitution failed: {exc}") from exc
    try:
        loaded = _from_yaml(expanded)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise SubstitutionError(f"YAMLToJSON: yaml: {line}{exc.problem}") from exc
    except (yaml.YAMLError, UnicodeError, RecursionError) as exc:
        raise SubstitutionError(f"YAMLToJSON: yaml: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SubstitutionError("UnmarshalJSON: the substituted object is not a mapping")
    return _jsonable_mapping(loaded)


def _has_dollar(value: object) -> bool:
    if isinstance(value, str):
        return "$" in value
    if isinstance(value, Mapping):
        return any(_has_dollar(k) or _has_dollar(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_dollar(v) for v in value)
    return False


# --- JSON, as Go's encoding/json writes what go-yaml read --------------------------------

def _jsonable_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {_json_key(k): _jsonable(v) for k, v in value.items()}


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return _jsonable_mapping(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
            raise SubstitutionError(f"YAMLToJSON: json: unsupported value: {shown}")
        if value.is_integer() and abs(value) < 1e21:
            return int(value)  # Go writes 3.0 as 3, which then reads back as an int
    return value


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return _go_float32_text(key)
    raise SubstitutionError(f"YAMLToJSON: unsupported map key of type: {type(key).__name__}")


def _go_float32_text(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 32)`` with go-yaml's names for specials."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    single = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):  # the shortest form that reads back as the same float32
        text = f"{single:.{digits - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            break
    mantissa, exponent_text = text.split("e")
    exponent = int(exponent_text)
    mantissa_digits = mantissa.replace(".", "").lstrip("-")
    if exponent < -4 or exponent >= 6:
        sign = "-" if exponent < 0 else "+"
        return f"{mantissa}e{sign}{abs(exponent):02d}"
    sign = "-" if single < 0 else ""
    if exponent >= 0:
        whole = mantissa_digits.ljust(exponent + 1, "0")
        point = exponent + 1
        fraction = whole[point:].rstrip("0")
        return f"{sign}{whole[:point]}" + (f".{fraction}" if fraction else "")
    return f"{sign}0.{'0' * (-exponent - 1)}{mantissa_digits}".rstrip("0").rstrip(".")


# --- YAML with go-yaml v2's plain scalars ------------------------------------------------

_NO_FOLDING: Final = 1 << 30  # long lines stay whole, so "${...}" is never split
_STR: Final = "tag:yaml.org,2002:str"
_NULL: Final = "tag:yaml.org,2002:null"
_BOOL: Final = "tag:yaml.org,2002:bool"
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"
_MERGE: Final = "tag:yaml.org,2002:merge"
_SEQ: Final = "tag:yaml.org,2002:seq"
_MAP: Final = "tag:yaml.org,2002:map"
_PLAIN_TAGS: Final = frozenset({_NULL, _BOOL, _INT, _FLOAT})

_WORDS: Final[dict[str, tuple[str, object]]] = {
    **{w: (_NULL, None) for w in ("", "~", "null", "Null", "NULL")},
    **{w: (_BOOL, True) for w in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE",
                                   "on", "On", "ON")},
    **{w: (_BOOL, False) for w in ("n", "N", "no", "No", "NO", "false", "False", "FALSE",
                                    "off", "Off", "OFF")},
    **{w: (_FLOAT, math.nan) for w in (".nan", ".NaN", ".NAN")},
    **{w: (_FLOAT, math.inf) for w in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{w: (_FLOAT, -math.inf) for w in ("-.inf", "-.Inf", "-.INF")},
    "<<": (_MERGE, "<<"),
}
# strconv.ParseInt/ParseUint with base 0 (after go-yaml drops "_"), and go-yaml's float form
_GO_INT: Final = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_LEADING_DOT_FLOAT: Final = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")


def _go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``, else ``strconv.ParseUint(text, 0, 64)``."""
    if not _GO_INT.fullmatch(text):
        return None
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        value = int(digits, 8)  # a bare leading 0 means octal
    else:
        value = int(digits, 0)
    if text[0] == "-":
        value = -value
    if -(1 << 63) <= value < (1 << 63):
        return value
    # ParseUint takes what is too large for an int64, but no sign
    return value if text[0] not in "+-" and value < (1 << 64) else None


def _go_float(text: str) -> float | None:
    value = float(text)
    return None if math.isinf(value) else value  # out of range: ParseFloat fails


def _plain_scalar(text: str) -> tuple[str, object]:
    """The tag and value go-yaml v2 gives an unquoted scalar."""
    if not text:
        return _NULL, None
    first = text[0]
    if first in "yYnNtTfFoO~<":
        return _WORDS.get(text, (_STR, text))
    if first == ".":
        if text in _WORDS:
            return _WORDS[text]
        if _LEADING_DOT_FLOAT.fullmatch(text) and (number := _go_float(text)) is not None:
            return _FLOAT, number
        return _STR, text
    if first in "+-0123456789":
        if text in _WORDS:
            return _WORDS[text]
        plain = text.replace("_", "")
        integer = _go_int(plain)
        if integer is not None:
            return _INT, integer
        if _GO_FLOAT.fullmatch(plain) and (number := _go_float(plain)) is not None:
            return _FLOAT, number
    return _STR, text


def _resolve(kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
    # the whole of our YAML's typing: no path resolvers, no YAML 1.1 timestamps or "="
    if kind is yaml.ScalarNode:
        return _plain_scalar(value)[0] if implicit[0] else _STR
    return _SEQ if kind is yaml.SequenceNode else _MAP


if TYPE_CHECKING:
    _LoaderBase = yaml.SafeLoader
    _DumperBase = yaml.SafeDumper
else:  # libyaml when PyYAML was built with it
    _LoaderBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    _DumperBase = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_LoaderBase):
    """A safe loader reading plain scalars as go-yaml v2 does."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        return _resolve(kind, value, implicit)


class _Dumper(_DumperBase):
    """A safe dumper that quotes exactly the strings ``_Loader`` would not read back as
    strings, and writes multi-line strings as literal blocks, as go-yaml does."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        return _resolve(kind, value, implicit)


def _construct_plain(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    assert isinstance(node, yaml.ScalarNode)
    return _plain_scalar(str(node.value))[1]


for _tag in (_NULL, _BOOL, _INT, _FLOAT, _MERGE):
    _Loader.add_constructor(_tag, _construct_plain)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(_STR, data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


# PyYAML's representer and constructor are generic and slow; JSON-like data needs neither,
# so objects become nodes (and nodes objects) here, and libyaml does the text.

def _to_node(value: object) -> yaml.Node:
    if isinstance(value, str):
        return yaml.ScalarNode(_STR, value, style="|" if "\n" in value else None)
    if isinstance(value, Mapping):
        return yaml.MappingNode(_MAP, [(_to_node(str(k)), _to_node(v))
                                       for k, v in value.items()], flow_style=False)
    if isinstance(value, list | tuple):
        return yaml.SequenceNode(_SEQ, [_to_node(v) for v in value], flow_style=False)
    if value is None:
        return yaml.ScalarNode(_NULL, "null")
    if isinstance(value, bool):
        return yaml.ScalarNode(_BOOL, "true" if value else "false")
    if isinstance(value, int):
        return yaml.ScalarNode(_INT, str(value))
    if isinstance(value, float):
        if math.isnan(value):
            return yaml.ScalarNode(_FLOAT, ".nan")
        if math.isinf(value):
            return yaml.ScalarNode(_FLOAT, ".inf" if value > 0 else "-.inf")
        return yaml.ScalarNode(_FLOAT, repr(value))
    raise SubstitutionError(f"cannot write a {type(value).__name__} as YAML")


def _to_yaml(obj: Mapping[str, Any]) -> str:
    return yaml.serialize(_to_node(obj), Dumper=_Dumper, allow_unicode=True,
                          width=_NO_FOLDING)


class _Unusual(Exception):
    """A document the node reader leaves to PyYAML's constructor (merge keys, tags)."""


def _from_node(node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR:
            return node.value
        if node.tag in _PLAIN_TAGS:
            return _plain_scalar(node.value)[1]
        raise _Unusual
    if isinstance(node, yaml.SequenceNode):
        return [_from_node(n) for n in node.value]
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                raise _Unusual
            out[_from_node(key_node)] = _from_node(value_node)
        return out
    raise _Unusual


def _from_yaml(text: str) -> object:
    node = yaml.compose(text, Loader=_Loader)
    if node is None:
        return None
    try:
        return _from_node(node)
    except _Unusual:
        return yaml.load(text, Loader=_Loader)
