"""A HelmRelease's values, composed as Flux does, and their digest.

``compose(client, namespace, spec)`` is Flux's ``chartutil.ChartValuesFromReferences``
(``fluxcd/pkg/chartutil/values.go``): each ``valuesFrom`` entry in order — a ConfigMap's or
Secret's ``data[valuesKey]`` (default ``values.yaml``; ``binaryData`` is not read), fetched
once per object — is read as a YAML map and deep-merged over the result (maps merge key by
key, anything else replaces); then the inline ``spec.values`` are merged over everything.
An entry with ``targetPath`` instead first merges the inline values into the result, then
writes its value at the path with Helm's ``--set`` (a value wholly in single or double quotes
loses them and stays a string, as ``--set-string``; ``literal`` writes it verbatim). That
write goes into maps the inline values share, so it survives the final merge wherever the
path runs through a map that only the inline values had — upstream's "target paths win".
``optional`` tolerates a missing object or key, never bad data. Errors carry upstream's
message (``could not resolve Secret chart values reference 'ns/name' with key 'k': ...``);
the HelmRelease shows them on Ready=False with reason ``ValuesError`` (``VALUES_ERROR``).

Numbers are what Go holds after its JSON round trip (float64): integers beyond 2^53 become
the nearest float, whole floats within it become ints. Referent data over 1 MiB, YAML that
expands past a budget through aliases, and YAML nested too deep are refused.

``config_digest(values)`` is Flux's ``chartutil.DigestValues`` (``fluxcd/pkg/chartutil/
digest.go``): ``sha256:<hex>`` of the values written by go-yaml v2 with map keys sorted
(``Encode`` + ``SortMapSlice``), and of nothing for empty values — the value of
``status.lastAttemptedConfigDigest`` and ``history[].configDigest``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import math
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

import yaml

from fluxd.api.helm import HelmReleaseSpec
from fluxd.api.meta import ValuesReference
from fluxd.controllers.helm import strvals
from fluxd.helmchart import merge_maps
from fluxd.kube.errors import NotFound
from fluxd.kustomize.kyaml import use_go_yaml_v2_scalars

__all__ = [
    "MAX_VALUES_BYTES",
    "VALUES_ERROR",
    "ValuesClient",
    "ValuesError",
    "compose",
    "config_digest",
    "read_values",
    "set_path_value",
]

#: the Ready reason of a HelmRelease whose values cannot be composed
VALUES_ERROR: Final = "ValuesError"
#: the most bytes one referent's values may have (a ConfigMap's or Secret's own limit)
MAX_VALUES_BYTES: Final = 1 << 20
#: YAML parsed on the loop below this size; larger leaves it
_THREAD_THRESHOLD: Final = 32 << 10
_EXACT: Final = 1 << 53


class ValuesClient(Protocol):
    """What ``compose`` needs of ``fluxd.kube.KubeClient``."""

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any]: ...


class ValuesError(Exception):
    """Values that cannot be composed (upstream's message)."""


async def compose(client: ValuesClient, namespace: str,
                  spec: HelmReleaseSpec) -> dict[str, Any]:
    """The values Flux gives Helm for ``spec`` (a HelmRelease in ``namespace``)."""
    inline = _inline_values(spec.values)
    result: dict[str, Any] = {}
    fetched: dict[tuple[str, str], Mapping[str, Any] | None] = {}
    for ref in spec.values_from or []:
        where = _Where(ref, namespace)
        cache_key = (ref.kind, ref.name)
        if cache_key not in fetched:
            fetched[cache_key] = None  # one version of each object, also when missing
            try:
                fetched[cache_key] = await client.get("v1", ref.kind, ref.name, namespace)
            except NotFound as exc:
                if ref.optional:
                    continue
                raise ValuesError(where.message(f"{_resource(ref.kind)} "
                                                f"\"{ref.name}\" not found")) from exc
        obj = fetched[cache_key]
        if obj is None:
            if ref.optional:
                continue
            raise ValuesError(where.message("resource not found"))
        data = _referent_data(obj, ref, where)
        if data is None:
            if ref.optional:
                continue
            raise ValuesError(where.message("key not found"))
        if len(data) > MAX_VALUES_BYTES:
            raise ValuesError(where.message(
                f"values of {len(data)} bytes exceed the limit of {MAX_VALUES_BYTES} bytes"))
        if ref.target_path:
            result = merge_maps(result, inline)
            text = data.decode("utf-8", "replace")  # Go reads runes: bad bytes become U+FFFD
            try:
                set_path_value(result, ref.target_path, text, literal=bool(ref.literal))
            except strvals.StrvalsError as exc:
                raise ValuesError(where.message(str(exc))) from None
            continue
        try:
            if len(data) > _THREAD_THRESHOLD:
                values = await asyncio.to_thread(read_values, data)
            else:
                values = read_values(data)
        except ValuesError as exc:
            raise ValuesError(where.message(str(exc))) from None
        result = merge_maps(result, values)
    return merge_maps(result, inline)


def set_path_value(values: dict[str, Any], path: str, value: str, *, literal: bool) -> None:
    """Flux's ``ReplacePathValue`` (``ReplacePathLiteralValue`` with ``literal``): ``value``
    written at the ``--set`` path ``path``."""
    if literal:  # the path read as --set reads it, the value kept whole
        strvals.parse_into(f"{path}={strvals.escape(value)}", values, strings=True)
        return
    quoted = (value.startswith("'") and value.endswith("'")) or (
        value.startswith('"') and value.endswith('"'))
    if quoted:
        strvals.parse_into(f"{path}={value.strip(chr(39) + chr(34))}", values, strings=True)
        return
    strvals.parse_into(f"{path}={value}", values)


class _Where:
    """Names a values reference in errors, as upstream's ``ErrValuesReference`` does."""

    def __init__(self, ref: ValuesReference, namespace: str) -> None:
        optional = " optional" if ref.optional else ""
        self.prefix = (f"could not resolve{optional} {ref.kind} chart values reference "
                       f"'{namespace}/{ref.name}' with key '{ref.key}'")

    def message(self, reason: str) -> str:
        return f"{self.prefix}: {reason}"


def _resource(kind: str) -> str:
    return "configmaps" if kind == "ConfigMap" else "secrets"


def _referent_data(obj: Mapping[str, Any], ref: ValuesReference, where: _Where) -> bytes | None:
    """``data[key]`` of a ConfigMap (text) or Secret (base64), None when absent."""
    data = obj.get("data") or {}
    if not isinstance(data, Mapping) or ref.key not in data:
        return None
    raw = data[ref.key]
    if not isinstance(raw, str):
        raise ValuesError(where.message("data is not a string"))
    if ref.kind == "ConfigMap":
        return raw.encode()
    if len(raw) > MAX_VALUES_BYTES * 4 // 3 + 4:
        raise ValuesError(where.message(
            f"values exceed the limit of {MAX_VALUES_BYTES} bytes"))
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValuesError(where.message(f"illegal base64 data: {exc}")) from None


def _inline_values(values: Any) -> dict[str, Any]:
    """A fresh copy of ``spec.values`` as Go decodes it (``GetValues``)."""
    if not isinstance(values, Mapping) or not values:
        return {}
    try:
        converted = _GoJson(budget=None).value(values)
    except RecursionError:
        raise ValuesError("inline values are nested too deeply") from None
    assert isinstance(converted, dict)
    return converted


# --------------------------------------------------------------------------- reading


_YamlBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_YamlBase):  # type: ignore[valid-type, misc]
    """YAML typed as go-yaml v2 types it (``sigs.k8s.io/yaml``, which Helm's ``ReadValues``
    uses): ``yes``/``on`` are booleans, ``017`` octal, timestamps text; merge keys merge."""


use_go_yaml_v2_scalars(_Loader, ("tag:yaml.org,2002:merge", r"<<", "<"))


def _construct_go_int(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    return _go_int(text.replace("_", ""), text)


def _construct_go_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)


def _go_int(plain: str, text: str) -> Any:
    """go-yaml v2's reading of an integer: int64, else uint64, else a float, else text."""
    digits = plain.lstrip("+-")
    try:
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            number = int(digits, 8)
        else:
            number = int(digits, 0)
    except ValueError:
        return text
    if plain.startswith("-"):
        number = -number
    if -(1 << 63) <= number < (1 << 64) and not (number >= 1 << 63 and plain[0] == "+"):
        return number
    if _YAML_FLOAT.fullmatch(plain):
        value = float(plain)
        return text if math.isinf(value) else value
    return text


_YAML_FLOAT: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")

_Loader.add_constructor("tag:yaml.org,2002:int", _construct_go_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_go_float)


def read_values(data: bytes) -> dict[str, Any]:
    """Helm's ``ReadValues``: the first YAML document of ``data`` as a map (empty when
    there is none); ``ValuesError`` with upstream's wording otherwise. Blocks."""
    if len(data) > MAX_VALUES_BYTES:
        raise ValuesError(f"values of {len(data)} bytes exceed the limit of "
                          f"{MAX_VALUES_BYTES} bytes")
    try:
        document = next(iter(yaml.load_all(data, Loader=_Loader)), None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ValuesError(f"error converting YAML to JSON: yaml: {line}"
                          f"{exc.problem or exc.context}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise ValuesError(f"error converting YAML to JSON: yaml: {exc}") from None
    except RecursionError:
        raise ValuesError("error converting YAML to JSON: yaml: exceeded max depth") from None
    try:
        converted = _GoJson(budget=max(400_000, 4 * len(data))).value(document)
    except RecursionError:
        raise ValuesError("error converting YAML to JSON: yaml: exceeded max depth") from None
    if converted is None:
        return {}
    if not isinstance(converted, dict):
        raise ValuesError("error unmarshaling JSON: while decoding JSON: json: cannot "
                          f"unmarshal {_json_kind(converted)} into Go value of type "
                          "common.Values")
    return converted


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


class _GoJson:
    """A value as Go holds it after ``sigs.k8s.io/yaml``'s YAML→JSON→Go round trip: keys as
    text, numbers as float64 would keep them, every alias its own copy (within a budget
    of values, against alias bombs)."""

    def __init__(self, *, budget: int | None) -> None:
        self.budget = budget

    def value(self, value: object) -> Any:
        if self.budget is not None:
            self.budget -= 1
            if self.budget < 0:
                raise ValuesError("error converting YAML to JSON: yaml: document contains "
                                  "excessive aliasing")
        if isinstance(value, Mapping):
            return {_go_key(key): self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            return value if -_EXACT <= value <= _EXACT else float(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
                raise ValuesError("error converting YAML to JSON: json: unsupported value: "
                                  f"{shown}")
            return int(value) if value.is_integer() and abs(value) <= _EXACT else value
        if isinstance(value, bytes):  # !!binary: Go decodes it into a string
            return value.decode("utf-8", "replace")
        if isinstance(value, datetime.date):
            return value.isoformat()
        raise ValuesError(f"error converting YAML to JSON: unsupported value of type "
                          f"{type(value).__name__}")


def _go_key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        if math.isnan(key):
            return ".nan"
        if math.isinf(key):
            return ".inf" if key > 0 else "-.inf"
        return _go_format_g(key, single=True)
    raise ValuesError("error converting YAML to JSON: unsupported map key of type: "
                      f"{'<nil>' if key is None else type(key).__name__}")


# --------------------------------------------------------------------------- digest


def config_digest(values: Mapping[str, Any]) -> str:
    """Flux's ``DigestValues(sha256, values)``."""
    digest = hashlib.sha256()
    if values:
        digest.update(_go_yaml(values))
    return f"sha256:{digest.hexdigest()}"


def _go_yaml(values: Mapping[str, Any]) -> bytes:
    """``values`` as go-yaml v2's encoder writes them after ``JSONObjectToYAMLObject`` and
    ``SortMapSlice``. go-yaml v2 is a port of libyaml, so libyaml's emitter (PyYAML's
    CEmitter) given the same events writes the same bytes; the events carry go-yaml's
    choices: keys sorted by bytes, whole floats as ints, ``strconv.FormatFloat(f, 'g', -1,
    64)`` for other floats, and strings plain only when go-yaml would read them back as
    strings, else double-quoted, or literal when multi-line."""
    events: list[yaml.Event] = [yaml.StreamStartEvent(), yaml.DocumentStartEvent(explicit=False)]
    events.extend(_events(values))
    events += [yaml.DocumentEndEvent(explicit=False), yaml.StreamEndEvent()]
    text = yaml.emit(events, Dumper=_Dumper, allow_unicode=True)
    assert isinstance(text, str)
    return text.encode()


_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _scalar(text: str, style: str | None = None) -> yaml.ScalarEvent:
    return yaml.ScalarEvent(None, None, (True, True), text, style=style)


def _events(value: object) -> Iterator[yaml.Event]:
    if isinstance(value, Mapping):
        yield yaml.MappingStartEvent(None, None, True, flow_style=False)
        # Go compares the UTF-8 bytes; code point order is the same order
        for key in sorted(value):
            yield _string(str(key))
            yield from _events(value[key])
        yield yaml.MappingEndEvent()
    elif isinstance(value, list | tuple):
        yield yaml.SequenceStartEvent(None, None, True, flow_style=False)
        for item in value:
            yield from _events(item)
        yield yaml.SequenceEndEvent()
    elif value is None:
        yield _scalar("null")
    elif isinstance(value, bool):
        yield _scalar("true" if value else "false")
    elif isinstance(value, int):
        yield _scalar(str(value))
    elif isinstance(value, float):
        yield _scalar(_go_float_text(value))
    elif isinstance(value, str):
        yield _string(value)
    else:
        raise ValuesError(f"cannot encode a value of type {type(value).__name__}")


def _string(text: str) -> yaml.ScalarEvent:
    """go-yaml v2's ``stringv``."""
    if "\n" in text:
        return _scalar(text, "|")
    if _reads_as_string(text) and not _BASE60_FLOAT.fullmatch(text):
        return _scalar(text)
    return _scalar(text, '"')


def _go_float_text(value: float) -> str:
    """A float64 as ``JSONObjectToYAMLObject`` and go-yaml v2 write it."""
    if value.is_integer() and -(1 << 63) <= value < (1 << 64):
        return str(int(value))  # down-cast to an int (or uint64) first
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return _go_format_g(value, single=False)


def _go_format_g(value: float, *, single: bool) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 32 or 64)`` of a finite value."""
    if single:
        value = _float32(value)
    for precision in range(1, 18):  # the shortest digits that read back as the value
        text = f"{value:.{precision - 1}e}"
        read = float(text)
        if (_float32(read) if single else read) == value:
            break
    mantissa, _, exponent_text = text.partition("e")
    digits = mantissa.replace(".", "").lstrip("-").rstrip("0") or "0"
    exponent = int(exponent_text)
    sign = "-" if math.copysign(1, value) < 0 else ""
    eprec = 6  # Go's choice between %e and %f for the shortest form
    if eprec > len(digits) >= exponent + 1:
        eprec = len(digits)
    if exponent < -4 or exponent >= eprec:
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent >= 0:
        whole = digits[:exponent + 1].ljust(exponent + 1, "0")
        fraction = digits[exponent + 1:]
    else:
        whole, fraction = "0", "0" * (-exponent - 1) + digits
    return f"{sign}{whole}" + (f".{fraction}" if fraction else "")


def _float32(value: float) -> float:
    single: float = struct.unpack("f", struct.pack("f", value))[0]
    return single


# go-yaml v2 (encode.go, resolve.go): a plain string must not read back as another type
_BASE60_FLOAT: Final = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_WORDS: Final = frozenset({
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    "", "~", "null", "Null", "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF",
    "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF"})
_GO_INT: Final = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")
_GO_DOT_FLOAT: Final = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_DATE: Final = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:(?:[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:\.[0-9]+)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2}))"
    r"|(?: ([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:\.[0-9]+)?))?")


def _reads_as_string(text: str) -> bool:
    """Whether go-yaml v2's ``resolve`` reads ``text``, unquoted, as a string."""
    if text in _WORDS:
        return False
    first = text[0]
    if first == ".":
        return not (_GO_DOT_FLOAT.fullmatch(text) and math.isfinite(float(text)))
    if first not in "+-0123456789":
        return True
    if _is_timestamp(text):
        return False
    plain = text.replace("_", "")
    if _GO_INT.fullmatch(plain) and _fits_go_int(plain):
        return False
    return not (_YAML_FLOAT.fullmatch(plain) and math.isfinite(float(plain)))


def _fits_go_int(plain: str) -> bool:
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        number = int(digits, 8)
    else:
        number = int(digits, 0)
    if plain.startswith("-"):
        return number <= 1 << 63
    return number < (1 << 63) or (plain[0] != "+" and number < (1 << 64))


def _is_timestamp(text: str) -> bool:
    """go-yaml v2's ``parseTimestamp`` (Go's ``time.Parse`` with its four layouts)."""
    found = _DATE.fullmatch(text)
    if found is None:
        return False
    year, month, day = (int(found.group(i)) for i in (1, 2, 3))
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    clock = found.group(4, 5, 6) if found.group(4) else found.group(7, 8, 9)
    if clock[0] is None:
        return True
    hour, minute, second = (int(part) for part in clock)
    return hour < 24 and minute < 60 and second < 60
