"""Helm repository index files (``index.yaml``): validated as Flux loads them, streamed.

Contract (after source-controller's ``repository.IndexFromBytes`` over Helm's ``repo``
package):

- ``load_index(data)`` checks an index the way Flux does before storing it: not empty,
  one YAML (or JSON) mapping, a non-empty ``apiVersion``, ``entries`` a mapping of chart
  names to lists of chart versions. A chart version that fails Helm's metadata checks
  (name, version as SemVer, type, dependencies, maintainers) is dropped and counted, not
  an error. Chart versions default to ``apiVersion: v1``.
- The document is **streamed**: it is read as libyaml parser events (PyYAML's C parser),
  and only one chart version at a time becomes Python objects, except for the charts the
  caller asks to ``keep``, which come back newest version first (Helm's ``SortEntries``).
  A 20 MB index is never a 500 MB tree of dicts: building one holds the GIL through long
  garbage-collector passes and would stall the event loop even from a worker thread.
- ``select_version(index, name, version)`` picks a chart version as Flux's
  ``ChartRepository.GetChartVersion`` does: an exact version string first, else the
  highest version (Flux's ``ParseVersion``) satisfying the Masterminds constraint (``""``
  and ``*`` mean the latest stable), ties between versions differing only in build
  metadata going to the newer ``created``. Misses raise ``ChartNotFound``.
- Every function here blocks; controllers call ``load_index`` in a worker thread.
- Errors are ``InvalidIndex`` with Helm's wording where it has one (``empty index.yaml
  file``, ``no API version specified``).

YAML details follow ``sigs.k8s.io/yaml`` as Flux uses it: the first document only,
duplicate keys are errors, ``<<`` merge keys and anchors work, and a scalar read into a
string field keeps its text (``version: 1.10`` is ``"1.10"``). Unknown fields are not
rejected (Flux's strict decoding would refuse them).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from fluxd import semver

__all__ = ["ChartNotFound", "ChartVersion", "Index", "InvalidIndex", "load_index",
           "select_version", "validate_chart_version"]

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TRUE = frozenset({"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_ALIAS_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_CHART_TYPES = frozenset({"", "application", "library"})

ChartVersion = dict[str, Any]


class InvalidIndex(ValueError):
    """The bytes are not a Helm repository index Flux would load."""


class ChartNotFound(LookupError):
    """The index has no chart version answering the request (Helm's and Flux's words)."""


@dataclass
class Index:
    """What loading an index found."""

    api_version: str
    #: chart names in the index
    charts: int = 0
    #: valid chart versions, over all charts
    versions: int = 0
    #: chart versions dropped for failing Helm's metadata checks
    skipped: int = 0
    #: the chart versions of the charts asked for, newest first
    entries: dict[str, list[ChartVersion]] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation


class _NotText(InvalidIndex):
    """A mapping or list where Helm expects a string; the message starts with the key."""


def _text(value: Any, key: str = "") -> str:
    """A scalar as Go reads it into a string field."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise _NotText(f"{key}: cannot read {type(value).__name__} as a string")


def _sanitize(text: str) -> str:
    # Helm's sanitizeString: whitespace becomes a space, unprintable runes go
    return "".join(" " if c.isspace() else c for c in text if c.isspace() or c.isprintable())


def _go_base(path: str) -> str:
    """Go's ``filepath.Base`` on a slash-separated path."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def validate_chart_version(version: ChartVersion) -> str | None:
    """Why Helm's ``Metadata.Validate`` refuses ``version`` (None: it is valid).

    Fills in the defaults Flux applies first (``apiVersion: v1``) and sanitises the name
    and version in place. The duplicate dependency check is left out, as Flux skips it.
    """
    if not _text(version.get("apiVersion"), "apiVersion"):
        version["apiVersion"] = "v1"
    name = _sanitize(_text(version.get("name"), "name"))
    number = _sanitize(_text(version.get("version"), "version"))
    version["name"], version["version"] = name, number
    if not name:
        return "chart.metadata.name is required"
    if name != _go_base(name):
        return f"chart.metadata.name {name!r} is invalid"
    if not number:
        return "chart.metadata.version is required"
    try:
        semver.parse(number)
    except semver.SemverError:
        return f"chart.metadata.version {number!r} is invalid"
    if _text(version.get("type"), "type") not in _CHART_TYPES:
        return "chart.metadata.type must be application or library"
    for maintainer in version.get("maintainers") or ():
        if maintainer is None:
            return "maintainers must not contain empty or null nodes"
    for dependency in version.get("dependencies") or ():
        if not isinstance(dependency, dict):
            return "dependencies must not contain empty or null nodes"
        alias = _text(dependency.get("alias"), "dependencies.alias")
        if alias and not _ALIAS_NAME.match(alias):
            return (f"dependency {_text(dependency.get('name'), 'dependencies.name')!r} has "
                    "disallowed characters in the alias")
    return None


def _newest_first(versions: list[ChartVersion]) -> list[ChartVersion]:
    # Helm's SortEntries: SemVer precedence, highest first (all of them parse by now)
    return sorted(versions, key=lambda v: semver.parse(v["version"]), reverse=True)


# --------------------------------------------------------------------------- YAML events


class _Events:
    """libyaml parser events, and Python values built from them one node at a time."""

    def __init__(self, data: bytes) -> None:
        self._stream: Iterator[Event] = yaml.parse(data, Loader=yaml.CSafeLoader)
        # PyYAML's implicit tag resolution (null, bool, int, merge, …), untyped upstream
        self._resolve: Callable[..., str] = yaml.resolver.Resolver().resolve
        self._anchors: dict[str, Any] = {}

    def next(self) -> Event:
        try:
            return next(self._stream)
        except StopIteration:
            raise InvalidIndex("unexpected end of the YAML stream") from None

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def _tag(self, event: ScalarEvent) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolve(ScalarNode, event.value, event.implicit)
        return str(tag)

    def scalar(self, event: ScalarEvent) -> Any:
        tag = self._tag(event)
        if tag == _NULL_TAG:
            return None
        if tag == _BOOL_TAG:
            return event.value in _TRUE
        return event.value

    def is_merge_key(self, event: Event) -> bool:
        return isinstance(event, ScalarEvent) and self._tag(event) == _MERGE_TAG

    def value(self, event: Event) -> Any:
        """The value of the node ``event`` starts (reading up to its end)."""
        if isinstance(event, AliasEvent):
            try:
                return self._anchors[str(event.anchor)]
            except KeyError:
                raise InvalidIndex(f"unknown anchor '{event.anchor}' referenced") from None
        value: Any
        if isinstance(event, ScalarEvent):
            value = self.scalar(event)
        elif isinstance(event, SequenceStartEvent):
            value = []
            while not isinstance(item := self.next(), SequenceEndEvent):
                value.append(self.value(item))
        elif isinstance(event, MappingStartEvent):
            value = self.mapping()
        else:
            raise InvalidIndex(f"unexpected YAML event {type(event).__name__}")
        if event.anchor:
            self._anchors[str(event.anchor)] = value
        return value

    def key(self, event: Event) -> str:
        if isinstance(event, (SequenceStartEvent, MappingStartEvent)):
            raise InvalidIndex("mapping keys must be scalars")
        value = self.value(event)
        if isinstance(value, (dict, list)):
            raise InvalidIndex("mapping keys must be scalars")
        return "null" if value is None else _text(value, "key")

    def mapping(self) -> dict[str, Any]:
        """The rest of a mapping whose start was just read."""
        out: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        while not isinstance(event := self.next(), MappingEndEvent):
            if self.is_merge_key(event):
                merged.extend(_merge_sources(self.value(self.next())))
                continue
            key = self.key(event)
            if key in out:
                raise InvalidIndex(f'mapping key "{key}" already defined')
            out[key] = self.value(self.next())
        for source in merged:  # explicit keys win, then earlier merge sources
            for key, value in source.items():
                out.setdefault(key, value)
        return out


def _merge_sources(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return list(value)
    raise InvalidIndex("map merge requires map or sequence of maps as the value")


# --------------------------------------------------------------------------- loading


class _Loader:
    def __init__(self, events: _Events, keep: Collection[str]) -> None:
        self.events = events
        self.keep = keep
        self.index = Index(api_version="")

    def chart(self, name: str, versions: Iterator[Any]) -> None:
        """Check one chart's versions, keeping them only when asked to."""
        kept: list[ChartVersion] = []
        self.index.charts += 1
        for position, version in enumerate(versions):
            if version is None:
                continue
            if not isinstance(version, dict):
                raise InvalidIndex(f"entries.{name}[{position}] is not a chart version "
                                   "mapping")
            try:
                problem = validate_chart_version(version)
            except _NotText as exc:
                raise InvalidIndex(f"entries.{name}[{position}].{exc}") from None
            if problem is not None:
                self.index.skipped += 1
                continue
            self.index.versions += 1
            if name in self.keep:
                kept.append(version)
        if name in self.keep:
            self.index.entries[name] = _newest_first(kept)

    def chart_value(self, name: str, value: Any) -> None:
        if value is None:
            value = []
        if not isinstance(value, list):
            raise InvalidIndex(f"entries.{name} is not a list of chart versions")
        self.chart(name, iter(value))

    def entries_value(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise InvalidIndex("entries is not a mapping of chart names to chart versions")
        for name, versions in value.items():
            self.chart_value(name, versions)

    def streamed_versions(self) -> Iterator[Any]:
        """The items of a sequence whose start was just read, one value at a time."""
        while not isinstance(event := self.events.next(), SequenceEndEvent):
            yield self.events.value(event)

    def streamed_entries(self) -> None:
        """The rest of the ``entries`` mapping, one chart version at a time."""
        events = self.events
        seen: set[str] = set()
        while not isinstance(event := events.next(), MappingEndEvent):
            if events.is_merge_key(event):
                for source in _merge_sources(events.value(events.next())):
                    self.entries_value({k: v for k, v in source.items() if k not in seen})
                    seen.update(source)
                continue
            name = events.key(event)
            if name in seen:
                raise InvalidIndex(f'mapping key "{name}" already defined')
            seen.add(name)
            start = events.next()
            if isinstance(start, SequenceStartEvent) and not start.anchor:
                self.chart(name, self.streamed_versions())
            else:
                self.chart_value(name, events.value(start))

    def document(self, root: Event) -> Index:
        events = self.events
        fields: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        if isinstance(root, MappingStartEvent) and not root.anchor:
            streamed = False
            while not isinstance(event := events.next(), MappingEndEvent):
                if events.is_merge_key(event):
                    merged.extend(_merge_sources(events.value(events.next())))
                    continue
                key = events.key(event)
                if key in fields or (key == "entries" and streamed):
                    raise InvalidIndex(f'mapping key "{key}" already defined')
                start = events.next()
                if key == "entries" and isinstance(start, MappingStartEvent) \
                        and not start.anchor:
                    self.streamed_entries()
                    streamed = True
                    continue
                fields[key] = events.value(start)
            if streamed:
                fields.setdefault("entries", None)  # a merged "entries" does not apply
        else:
            value = events.value(root)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise InvalidIndex("the index is not a mapping")
            fields = value
        for source in merged:
            for key, value in source.items():
                fields.setdefault(key, value)
        self.entries_value(fields.get("entries"))
        self.index.api_version = _text(fields.get("apiVersion"), "apiVersion")
        if not self.index.api_version:
            raise InvalidIndex("no API version specified")
        return self.index


def load_index(data: bytes, *, keep: Collection[str] = ()) -> Index:
    """Check ``data`` as a Helm repository index (see the module docstring); the chart
    versions of the charts named in ``keep`` come back in ``Index.entries``. Blocks: run it
    in a worker thread."""
    if not data:
        raise InvalidIndex("empty index.yaml file")
    events = _Events(data)
    try:
        events.next()  # stream start
        start = events.next()
        if isinstance(start, StreamEndEvent):
            raise InvalidIndex("no API version specified")  # no document at all
        if not isinstance(start, DocumentStartEvent):
            raise InvalidIndex(f"unexpected YAML event {type(start).__name__}")
        # only the first document counts, as in Go's yaml.Unmarshal
        return _Loader(events, keep).document(events.next())
    except yaml.MarkedYAMLError as exc:
        raise InvalidIndex(f"error converting YAML to JSON: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise InvalidIndex(f"error converting YAML to JSON: yaml: {exc}") from None
    finally:
        events.close()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """One line, as Go's yaml package words it: ``yaml: line 3: <problem>``."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if mark is None:
        return f"yaml: {problem}"
    return f"yaml: line {mark.line + 1}: {problem}"


# --------------------------------------------------------------------------- selection

_NO_TIME = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _created(version: ChartVersion) -> datetime.datetime:
    """``created`` as a time (Go's zero time when absent or unreadable)."""
    text = version.get("created")
    if isinstance(text, datetime.datetime):
        return text if text.tzinfo else text.replace(tzinfo=datetime.UTC)
    if not isinstance(text, str) or not text:
        return _NO_TIME
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return _NO_TIME
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def select_version(index: Index, name: str, version: str) -> ChartVersion:
    """The chart version of ``name`` that ``version`` asks for (see the module docstring).
    ``index`` must have been loaded with ``keep`` naming the chart."""
    versions = index.entries.get(name)
    if versions is None:
        raise ChartNotFound("no chart name found")
    if not versions:
        raise ChartNotFound("no chart version found")
    if version:
        for candidate in versions:
            if candidate.get("version") == version:
                return candidate
    wanted = "*" if version in ("", "*") else version
    try:
        constraints = semver.parse_constraints(wanted)
    except semver.SemverError as exc:
        raise ChartNotFound(str(exc)) from None
    found = semver.latest(((str(v.get("version", "")), v) for v in versions), constraints,
                          key=lambda _, v: _created(v))
    if found is None:
        raise ChartNotFound(f"no '{name}' chart with version matching '{version}' found")
    return found[1]
