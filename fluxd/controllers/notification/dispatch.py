"""From events to notifications: rate limiting, Alert matching, Provider dispatch.

Events reach ``Dispatcher.submit`` from the in-process event bus and from the HTTP
intake (``events_server``). The contract, as Flux's notification-controller
(``internal/server/event_handlers.go``, ``event_server.go``):

- ``clean_metadata``: only keys prefixed ``event.toolkit.fluxcd.io/`` or the involved
  object's ``<group>/`` are kept; ``<group>/checksum`` and ``<group>/digest`` are dropped.
- Duplicates are dropped: one event per ``event_key`` (object, message, revisions,
  token) per ``window`` seconds (Flux's 5 minutes). ``submit`` says whether it took the
  event; the HTTP intake answers 429 for a duplicate.
- ``submit`` never blocks: events wait in a queue bounded in events (``queue_size``) and
  in bytes (``queue_bytes``, as ``event_size`` estimates them); beyond either the oldest
  are dropped, counted in ``fluxd_notification_events_dropped_total{reason}`` and
  warned about (throttled). An event stops counting once its last send has started.
  Trace events are never dispatched.
- Matching (``alert_matches``): not suspended; an event source of the event's kind and
  namespace (the Alert's by default), name equal or ``*``, labels when ``matchLabels``
  (read from the API); severity (``info`` takes all, ``error`` only errors); the
  inclusion list (when set, one must match) and the exclusion list (any match drops;
  it wins); with ``no_cross_namespace_refs``, events from another namespace are refused.
  The lists are Go regular expressions, matched with RE2 (``fluxd.regex``) in linear
  time, a long message in a worker thread; one Go would not compile matches nothing and
  is logged and warned about on the Alert (``InvalidConfig``) each time, as Flux does.
- Specs are read through the ``fluxd.api`` models (``AlertSpec``, ``ProviderSpec``), so
  their defaults are the models'. ``ParsedSpecs`` parses each version of a cached Alert
  and Provider once, as the informer stores it; the event-source index and the matching
  of every event read that. An Alert or Provider the model refuses (the API server
  checked it against the same schema, so it takes a looser or older server) is never
  matched: it is logged at error level and warned about on itself (``InvalidConfig``)
  once per version, when the next event is matched.
- Provider gates: suspended Providers get nothing; commit-status update events go only
  to Git and generic Providers; Git Providers get only events with a commit, a
  commit-status update or severity error; comment Providers need ``change_request``.
- Metadata merge (RFC 0008, lowest first): ``event.toolkit.fluxcd.io/*`` (prefix
  stripped), the Alert's ``eventMetadata``, its ``summary``, ``<group>/*`` (prefix
  stripped); the ``<group>/token`` key never leaves.
- Sending runs beside the matching. Each Provider has a lane: its sends wait there in
  order and at most ``provider_concurrency`` of them run at once; ``concurrency`` bounds
  the sends running in all, and lanes with work take turns at free room. A slow Provider
  thus delays its own notifications only (until ``concurrency /
  provider_concurrency`` Providers are all slow at once); the matching never waits for
  room. Each send is bounded by the Provider's timeout; retryable failures are tried
  again with doubling delays (1 s, 2 s, 4 s), then a Warning event
  ``NotificationDispatchFailed`` goes on the Alert. Nothing here waits on a reconcile,
  and no reconcile waits on a send.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
import yaml
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ValidationError

from fluxd import regex
from fluxd.api.notification import GIT_PROVIDER_TYPES, AlertSpec, ProviderSpec
from fluxd.clock import Clock
from fluxd.config import parse_duration
from fluxd.controllers.notification import providers
from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    ProviderSettings,
    SendError,
)
from fluxd.kube import KubeClient, KubeError, NotFound
from fluxd.logging import LogThrottle
from fluxd.runtime import cel
from fluxd.runtime.driver import validation_text
from fluxd.runtime.events import EVENT_GROUP, SEVERITY_ERROR, SEVERITY_TRACE, Event
from fluxd.runtime.informer import Informer, StoreKey, store_key
from fluxd.selector import SelectorError, from_label_selector
from fluxd.tokenbucket import TokenBuckets

log = logging.getLogger("fluxd.notification")

Obj = dict[str, Any]

COMMENT_PROVIDER_TYPES = ("githubpullrequestcomment", "gitlabmergerequestcomment",
                          "giteapullrequestcomment")
RETRY_DELAYS = (1.0, 2.0, 4.0)
EVENT_SOURCE_INDEX = "eventSource"


# --------------------------------------------------------------------------- events


def clean_metadata(event: Event) -> Event:
    """The event with only its emitter's and Flux's event keys, checksum and digest
    dropped (Flux's intake clean-up)."""
    group = event.involved_object.group
    kept: dict[str, str] = {}
    for key, value in event.metadata.items():
        if key.startswith(f"{EVENT_GROUP}/") or (group and key.startswith(f"{group}/") and \
                key not in (f"{group}/checksum", f"{group}/digest")):
            kept[key] = value
    if kept == event.metadata:
        return event
    return dataclasses.replace(event, metadata=kept)


def event_key(event: Event) -> str:
    """Flux's rate-limit key: the object, the message, and the revisions and token the
    emitter sent."""
    ref = event.involved_object
    group = ref.group
    parts = [f"event/name={ref.name}/namespace={ref.namespace}/kind={ref.kind}"
             f"/message={event.message}"]
    for name in ("originRevision", "revision", "token"):
        value = event.metadata.get(f"{group}/{name}")
        if value:
            parts.append(f"/{name}={value}")
    return hashlib.sha256("".join(parts).encode()).hexdigest()


class RateLimiter:
    """One event per key per ``window`` seconds (none when ``window`` is not positive);
    remembers at most ``size`` keys.

    A bucket of one token refilled every ``window`` seconds is this policy exactly: a key
    is admitted again once ``window`` seconds have passed since it last was."""

    def __init__(self, clock: Clock, window: float, size: int = 100_000) -> None:
        self.window = window
        self._seen: TokenBuckets[str] | None = None if window <= 0 else TokenBuckets(
            burst=1, every=window, monotonic=clock.monotonic, max_keys=size)

    def allow(self, key: str) -> bool:
        return self._seen is None or self._seen.take(key)


# --------------------------------------------------------------------------- specs


SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass(frozen=True)
class Refused:
    """A spec its model refused: why, in one line."""

    message: str


class ParsedSpecs(Generic[SpecT]):
    """The specs of one informer's objects, each stored version parsed once into ``model``.

    It follows the informer as one of its handlers: an entry is made when the informer
    stores a version (or when ``of`` meets it first, as the informer's index functions
    do before its handlers run), replaced by the next version and dropped with the
    object. So it holds one entry per cached object, nothing stale, and needs no bound of
    its own. An entry is found by the identity of the stored object (the informer stores
    a new one per version, and the entry holds it, so the identity is not reused): a
    lookup is one dict read, cheap enough for every Alert of every event. Refusals wait
    in ``unreported`` for ``take_unreported``; a newer version or a deletion withdraws
    one. The models are shared and must not be changed."""

    def __init__(self, model: type[SpecT]) -> None:
        self.model = model
        #: (object, spec) by the object's identity: those the model takes, and the others
        self._accepted: dict[int, tuple[Obj, SpecT]] = {}
        self._refused: dict[int, tuple[Obj, Refused]] = {}
        #: the identity of each object's entry
        self._keys: dict[StoreKey, int] = {}
        #: refusals not said yet, by object
        self.unreported: dict[StoreKey, tuple[Obj, Refused]] = {}

    def of(self, obj: Obj) -> SpecT | Refused:
        """``obj``'s spec as the model reads it, or why the model refuses it."""
        entry = self._accepted.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        refusal = self._refused.get(id(obj))
        if refusal is not None and refusal[0] is obj:
            return refusal[1]
        key = store_key(obj)
        self._forget(key)
        self._keys[key] = id(obj)
        try:
            spec = self.model.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            refused = Refused(f"invalid spec: {validation_text(exc)}")
            self._refused[id(obj)] = self.unreported[key] = (obj, refused)
            return refused
        self._accepted[id(obj)] = (obj, spec)
        return spec

    def accepted(self, objs: Sequence[Obj]) -> list[tuple[Obj, SpecT]]:
        """Those of ``objs`` the model takes, each with its spec (in one call: matching
        reads the Alerts of every event)."""
        get = self._accepted.get
        # the entries are the pairs; all are found unless one is refused or not parsed yet
        found = [entry for obj in objs if (entry := get(id(obj))) is not None
                 and entry[0] is obj]
        if len(found) == len(objs):
            return found
        return [(obj, spec) for obj in objs
                if not isinstance(spec := self.of(obj), Refused)]

    def take_unreported(self) -> list[tuple[Obj, Refused]]:
        """The objects refused since the last call (their current versions)."""
        taken = list(self.unreported.values())
        self.unreported.clear()
        return taken

    def __len__(self) -> int:
        return len(self._keys)

    def _forget(self, key: StoreKey) -> None:
        identity = self._keys.pop(key, None)
        if identity is not None:
            self._accepted.pop(identity, None)
            self._refused.pop(identity, None)
        self.unreported.pop(key, None)

    # --- the informer's handler ---------------------------------------------------------

    def on_add(self, obj: Obj, *, initial: bool) -> None:
        self.of(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        self.of(new)

    def on_delete(self, obj: Obj) -> None:
        self._forget(store_key(obj))


def alert_spec_of(alert: Mapping[str, Any]) -> AlertSpec:
    """An Alert's spec as the model reads it, for an object not in the informer;
    ``ValidationError`` when the model refuses it."""
    return AlertSpec.model_validate(alert.get("spec") or {})


def provider_spec_of(provider: Mapping[str, Any]) -> ProviderSpec:
    """A Provider's spec as the model reads it, for an object not in the informer;
    ``ValidationError`` when the model refuses it."""
    return ProviderSpec.model_validate(provider.get("spec") or {})


def provider_timeout(spec: ProviderSpec) -> float:
    """Seconds a send may take: ``spec.timeout``, 15 when not set (Flux's
    ``GetTimeout``; the CRD has no default)."""
    return parse_duration(spec.timeout) if spec.timeout else 15.0


# --------------------------------------------------------------------------- matching


#: messages longer than this are matched in a worker thread (RE2 lets go of the GIL), so a
#: slow pattern over a 3 MiB message costs a thread, never the event loop
INLINE_MATCH_LIMIT = 4096

InvalidPattern = Callable[[str], Awaitable[None]]


async def message_passes(spec: AlertSpec, message: str, *,
                         patterns: regex.RegexCache | None = None,
                         invalid: InvalidPattern | None = None) -> bool:
    """Whether an Alert's ``inclusionList`` and ``exclusionList`` let ``message`` through,
    as Flux decides: with an inclusion list one of its patterns must match, then no
    exclusion pattern may. A pattern Go would not compile matches nothing and is reported
    to ``invalid`` each time it is met (Flux logs it and warns on the Alert)."""
    cache = patterns if patterns is not None else regex.RegexCache()
    if spec.inclusion_list:
        inclusion = cache.any_of(spec.inclusion_list)
        if inclusion.refused:
            await _report(inclusion, "inclusion", invalid)
        if not await _search(inclusion, message):
            return False
    if not spec.exclusion_list:
        return True
    exclusion = cache.any_of(spec.exclusion_list)
    if exclusion.refused:
        await _report(exclusion, "exclusion", invalid)
    return not await _search(exclusion, message)


async def _report(patterns: regex.AnyOf, which: str, invalid: InvalidPattern | None) -> None:
    if invalid is not None:
        for text, error in patterns.refused:
            await invalid(f"failed to compile {which} regex: {text}: {error}")


async def _search(patterns: regex.AnyOf, message: str) -> bool:
    if len(message) <= INLINE_MATCH_LIMIT:
        return patterns.search(message)
    return await asyncio.to_thread(patterns.search, message)


def event_source_index(alert: Mapping[str, Any], spec: AlertSpec | Refused) -> list[str]:
    """Alerts by ``<namespace>/<kind>`` of each of their event sources: an event is
    matched only against the Alerts that can take it (a refused one takes none)."""
    if isinstance(spec, Refused):
        return []
    namespace = str((alert.get("metadata") or {}).get("namespace") or "")
    return sorted({f"{s.namespace or namespace}/{s.kind}" for s in spec.event_sources})


LabelReader = Callable[[Event], Awaitable[Mapping[str, str] | None]]


def _labels_match(match_labels: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """An event source's ``matchLabels`` over the object's labels, as Flux reads them (a
    label selector); one that is not a valid selector matches nothing."""
    try:
        return from_label_selector({"matchLabels": match_labels}).matches(labels)
    except SelectorError:
        return False


def sources_take(spec: AlertSpec, alert_namespace: str, event: Event, *,
                 no_cross_namespace_refs: bool = False) -> bool | None:
    """Whether an Alert's gates (suspension, namespaces, severity) and event sources take
    ``event``; None when only sources that select by labels could, so the object's labels
    must be read (``labelled_sources_take``). Not a coroutine: most Alerts of most events
    are decided here, at no more cost than a call."""
    if spec.suspend:
        return False
    ref = event.involved_object
    if no_cross_namespace_refs and ref.namespace != alert_namespace:
        return False
    if spec.event_severity == SEVERITY_ERROR and event.severity != SEVERITY_ERROR:
        return False
    labelled = False
    for source in spec.event_sources:
        if (source.namespace or alert_namespace) != ref.namespace or \
                source.kind != ref.kind or source.name not in ("*", ref.name):
            continue
        if not source.match_labels:
            return True
        labelled = True
    return None if labelled else False


async def labelled_sources_take(spec: AlertSpec, alert_namespace: str, event: Event, *,
                                labels: LabelReader) -> bool:
    """Whether a source that selects by labels takes ``event``, its object's labels read
    once (``sources_take`` said the other sources do not)."""
    ref = event.involved_object
    for source in spec.event_sources:
        if source.match_labels and (source.namespace or alert_namespace) == ref.namespace \
                and source.kind == ref.kind and source.name in ("*", ref.name):
            found = await labels(event)
            if found is not None and _labels_match(source.match_labels, found):
                return True
    return False


async def alert_matches(alert: Mapping[str, Any], event: Event, *, labels: LabelReader,
                        no_cross_namespace_refs: bool = False,
                        patterns: regex.RegexCache | None = None,
                        invalid: InvalidPattern | None = None,
                        spec: AlertSpec | None = None) -> bool:
    """Whether ``alert`` takes ``event`` (see the module docstring): ``sources_take``
    (``labelled_sources_take`` when it cannot tell), then ``message_passes``, with
    ``patterns`` and ``invalid``. ``spec``: the Alert's, parsed already (else it is
    parsed here, and a refused one raises ``ValidationError``). ``Dispatcher.matches``
    takes these steps inline, so most Alerts cost it no coroutine."""
    if spec is None:
        spec = alert_spec_of(alert)
    alert_ns = str((alert.get("metadata") or {}).get("namespace") or "")
    taken = sources_take(spec, alert_ns, event, no_cross_namespace_refs=no_cross_namespace_refs)
    if taken is None:
        taken = await labelled_sources_take(spec, alert_ns, event, labels=labels)
    if not taken:
        return False
    if not (spec.inclusion_list or spec.exclusion_list):
        return True
    return await message_passes(spec, event.message, patterns=patterns, invalid=invalid)


def merged_metadata(event: Event, alert: Mapping[str, Any], *,
                    spec: AlertSpec | None = None) -> tuple[dict[str, str], list[str]]:
    """The metadata an Alert sends (RFC 0008 precedence) and the keys whose values
    conflicted (the emitter's value is kept). ``spec`` as for ``alert_matches``."""
    if spec is None:
        spec = alert_spec_of(alert)
    group = event.involved_object.group
    merged: dict[str, str] = {}
    conflicts: list[str] = []

    def put(key: str, value: str) -> None:
        if key in merged and merged[key] != value:
            conflicts.append(key)
        merged[key] = value

    for key, value in event.metadata.items():
        if key.startswith(f"{EVENT_GROUP}/"):
            put(key[len(EVENT_GROUP) + 1:], value)
    for key, value in (spec.event_metadata or {}).items():
        put(key, value)
    if spec.summary:
        put("summary", spec.summary)
    for key, value in event.metadata.items():
        if group and key.startswith(f"{group}/") and key != f"{group}/token":
            put(key[len(group) + 1:], value)
    return merged, conflicts


def provider_takes(provider_type: str, event: Event, metadata: Mapping[str, str]) -> bool:
    """Flux's gates between an event and a Provider type (see the module docstring)."""
    group = event.involved_object.group
    status_update = event.metadata.get(f"{group}/commit_status") == "update"
    if provider_type in GIT_PROVIDER_TYPES:
        return ("commit" in metadata or f"{group}/commit" in event.metadata
                or status_update or event.severity == SEVERITY_ERROR)
    if provider_type in COMMENT_PROVIDER_TYPES:
        return "change_request" in metadata
    if status_update:
        return provider_type in ("generic", "generic-hmac")
    return True


# --------------------------------------------------------------------------- dispatch


def event_size(event: Event) -> int:
    """Roughly the bytes a queued event holds: its strings, and a fixed share for the
    objects around them. What the queue's byte budget counts."""
    ref = event.involved_object
    size = 512 + len(event.message) + len(event.reason) + len(event.reporting_controller)
    size += len(event.reporting_instance) + len(ref.kind) + len(ref.name)
    size += len(ref.namespace) + len(ref.uid) + len(ref.api_version)
    size += len(ref.resource_version)
    return size + sum(64 + len(k) + len(v) for k, v in event.metadata.items())


ProviderKey = tuple[str, str]


@dataclass(eq=False)
class _Queued:
    """One event in the queue: waiting to be matched, or matched with sends waiting."""

    number: int
    event: Event
    size: int
    #: its sends waiting in Provider lanes: (lane, send number)
    waiting: list[tuple[_Lane, int]] = field(default_factory=list)
    dropped: bool = False


#: an Alert that takes an event, its spec, its Provider and the Provider's spec (a plain
#: tuple: matching makes several for every event)
Match = tuple[Obj, AlertSpec, Obj, ProviderSpec]


@dataclass(eq=False)
class _Send:
    queued: _Queued
    match: Match


@dataclass(eq=False)
class _Lane:
    """One Provider's sends: those waiting, oldest first, and how many are in flight."""

    key: ProviderKey
    waiting: collections.OrderedDict[int, _Send] = field(
        default_factory=collections.OrderedDict)
    running: int = 0
    #: whether the lane is in the dispatcher's round of lanes ready to start a send
    in_turn: bool = False


@dataclass
class Dispatcher:
    """Events in, notifications out (see the module docstring).

    ``concurrency`` sends run at once in all, at most ``provider_concurrency`` of them for
    one Provider; ``queue_size`` events and ``queue_bytes`` (``event_size``) may wait, the
    oldest dropped beyond either, counted in ``fluxd_notification_events_dropped_total``
    on ``registry``.
    """

    client: KubeClient
    alerts: Informer
    provider_objects: Informer
    recorder: Any
    clock: Clock
    window: float = 300.0
    concurrency: int = 16
    provider_concurrency: int = 4
    queue_size: int = 10_000
    queue_bytes: int = 64 << 20
    no_cross_namespace_refs: bool = False
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    registry: CollectorRegistry | None = None
    #: every queued event by arrival number, oldest first: what the budget counts
    _queued: collections.OrderedDict[int, _Queued] = field(
        default_factory=collections.OrderedDict)
    #: the queued events not matched yet, oldest first
    _unmatched: collections.OrderedDict[int, _Queued] = field(
        default_factory=collections.OrderedDict)
    _queued_bytes: int = 0
    _arrivals: int = 0
    _lanes: dict[ProviderKey, _Lane] = field(default_factory=dict)
    #: lanes with a send waiting and room to start it, served in turn
    _turns: collections.deque[_Lane] = field(default_factory=collections.deque)
    _running: int = 0
    _send_numbers: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _limiter: RateLimiter | None = None
    _session: aiohttp.ClientSession | None = None
    _sends: asyncio.TaskGroup | None = None
    _patterns: regex.RegexCache = field(default_factory=regex.RegexCache)
    _dropped: Counter | None = None
    _drop_log: LogThrottle | None = None
    _alert_specs: ParsedSpecs[AlertSpec] = field(
        default_factory=lambda: ParsedSpecs(AlertSpec))
    _provider_specs: ParsedSpecs[ProviderSpec] = field(
        default_factory=lambda: ParsedSpecs(ProviderSpec))

    def __post_init__(self) -> None:
        self._limiter = RateLimiter(self.clock, self.window)
        self.alerts.add_index(EVENT_SOURCE_INDEX, self._event_sources)
        self.alerts.add_handler(self._alert_specs)
        self.provider_objects.add_handler(self._provider_specs)
        self._drop_log = LogThrottle(interval=10.0, burst=1, monotonic=self.clock.monotonic)
        if self.registry is not None:
            self._dropped = Counter(
                "fluxd_notification_events_dropped_total",
                "Events dropped before they were sent: the oldest, when the notification "
                "queue holds queue_size events (queue_full) or queue_bytes (queue_bytes).",
                ["reason"], registry=self.registry)
            for reason in ("queue_full", "queue_bytes"):
                self._dropped.labels(reason)

    # --- intake ----------------------------------------------------------------------

    def submit(self, event: Event) -> bool:
        """Queue ``event``; False when it is a duplicate within the window (nothing is
        queued then). Never blocks; over the queue's bounds the oldest events go."""
        if event.severity == SEVERITY_TRACE:
            return True
        event = clean_metadata(event)
        assert self._limiter is not None
        if not self._limiter.allow(event_key(event)):
            return False
        self._arrivals += 1
        queued = _Queued(self._arrivals, event, event_size(event))
        if queued.size > self.queue_bytes:
            # alone over the budget: it goes, not everything queued before it
            self._count_drop(queued, "queue_bytes")
            return True
        self._queued[queued.number] = self._unmatched[queued.number] = queued
        self._queued_bytes += queued.size
        while len(self._queued) > self.queue_size:
            self._drop_oldest("queue_full")
        while self._queued_bytes > self.queue_bytes:
            self._drop_oldest("queue_bytes")
        self._wake.set()
        return True

    @property
    def queued_bytes(self) -> int:
        """What the queued events count against ``queue_bytes``."""
        return self._queued_bytes

    def _drop_oldest(self, reason: str) -> None:
        queued = next(iter(self._queued.values()))
        self._forget(queued)
        self._unmatched.pop(queued.number, None)
        queued.dropped = True
        for lane, send in queued.waiting:
            lane.waiting.pop(send, None)
            self._tidy(lane)
        queued.waiting.clear()
        self._count_drop(queued, reason)

    def _count_drop(self, queued: _Queued, reason: str) -> None:
        if self._dropped is not None:
            self._dropped.labels(reason).inc()
        assert self._drop_log is not None
        held = self._drop_log.admit()
        if held is not None:
            ref = queued.event.involved_object
            log.warning("notification queue over its %s: dropped an event about %s/%s/%s "
                        "(and %d more since the last warning)",
                        "length" if reason == "queue_full" else "byte budget",
                        ref.kind, ref.namespace, ref.name, held)

    def _forget(self, queued: _Queued) -> None:
        """The event no longer counts against the queue's bounds."""
        if self._queued.pop(queued.number, None) is not None:
            self._queued_bytes -= queued.size

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Match and send until cancelled."""
        async with aiohttp.ClientSession(trust_env=False) as session, \
                asyncio.TaskGroup() as sends:
            self._session = session
            self._sends = sends
            try:
                # sends that waited through a restart start again
                self._turns.clear()
                for lane in list(self._lanes.values()):
                    lane.in_turn = False
                    self._offer_turn(lane)
                    self._tidy(lane)
                self._start_sends()
                await self._match_all()
            finally:
                # the group is winding down: the sends it cancels start no others
                self._sends = None

    async def _match_all(self) -> None:
        while True:
            if not self._unmatched:
                self._wake.clear()
                await self._wake.wait()
                continue
            # it stays queued while it is matched: counted, and matched again if this
            # task is cancelled meanwhile
            queued = next(iter(self._unmatched.values()))
            try:
                found = await self.matches(queued.event)
            except Exception:
                # a bug must not make one event end the loop over and over
                log.exception("matching an event against the Alerts failed; it is dropped")
                found = []
            if queued.dropped:  # over the budget while it was being matched
                continue
            del self._unmatched[queued.number]
            for match in found:
                _, _, provider, _ = match
                meta = provider.get("metadata") or {}
                key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = _Lane(key)
                self._send_numbers += 1
                lane.waiting[self._send_numbers] = _Send(queued, match)
                queued.waiting.append((lane, self._send_numbers))
                self._offer_turn(lane)
            if not queued.waiting:
                self._forget(queued)
            self._start_sends()

    def _offer_turn(self, lane: _Lane) -> None:
        if not lane.in_turn and lane.waiting and lane.running < self.provider_concurrency:
            lane.in_turn = True
            self._turns.append(lane)

    def _start_sends(self) -> None:
        """Start waiting sends while there is room, one lane after the other: a busy
        Provider's sends wait in its lane and hold no room the others could use."""
        while self._sends is not None and self._running < self.concurrency and self._turns:
            lane = self._turns.popleft()
            lane.in_turn = False
            if not lane.waiting or lane.running >= self.provider_concurrency:
                self._tidy(lane)
                continue
            number, send = lane.waiting.popitem(last=False)
            queued = send.queued
            queued.waiting.remove((lane, number))
            if not queued.waiting:
                self._forget(queued)
            lane.running += 1
            self._running += 1
            self._sends.create_task(self._send_in_lane(lane, send))
            self._offer_turn(lane)

    def _tidy(self, lane: _Lane) -> None:
        """An idle lane is dropped: lanes exist only for Providers with work (one still in
        the round is dropped when its turn comes, so it is never in the round twice)."""
        if not (lane.waiting or lane.running or lane.in_turn) \
                and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    async def _send_in_lane(self, lane: _Lane, send: _Send) -> None:
        try:
            await self.send(send.queued.event, send.match)
        except Exception:
            # a bug in a provider must not end the dispatcher
            log.exception("sending a notification failed unexpectedly")
        finally:
            lane.running -= 1
            self._running -= 1
            self._offer_turn(lane)
            self._tidy(lane)
            self._start_sends()

    def _event_sources(self, alert: Obj) -> list[str]:
        # the index parses each version of an Alert first; matching reads the same entry
        return event_source_index(alert, self._alert_specs.of(alert))

    async def matches(self, event: Event) -> list[Match]:
        """The Alerts that take ``event``, with their Providers."""
        if self._alert_specs.unreported or self._provider_specs.unreported:
            for obj, refused in (*self._alert_specs.take_unreported(),
                                 *self._provider_specs.take_unreported()):
                await self._refused(obj, refused)
        found: list[Match] = []
        labels: LabelReader | None = None
        source = event.involved_object
        alerts = self._alert_specs.accepted(
            self.alerts.by_index(EVENT_SOURCE_INDEX, f"{source.namespace}/{source.kind}"))
        provider_spec_of = self._provider_specs.of
        # an event's Alerts mostly share a few Providers: each is looked up once
        providers: dict[tuple[str, str], tuple[Obj, ProviderSpec | Refused] | None] = {}
        for alert, spec in alerts:
            meta = alert["metadata"]
            namespace = meta.get("namespace", "")
            # alert_matches' steps, inlined: a coroutine only for what must be read
            taken = sources_take(spec, namespace, event,
                                 no_cross_namespace_refs=self.no_cross_namespace_refs)
            if taken is None:
                labels = labels or self._label_reader()
                taken = await labelled_sources_take(spec, namespace, event, labels=labels)
            if not taken:
                continue
            if (spec.inclusion_list or spec.exclusion_list) and not await message_passes(
                    spec, event.message, patterns=self._patterns,
                    invalid=self._invalid_pattern(alert)):
                continue
            key = (namespace, spec.provider_ref.name)
            if key not in providers:
                provider = self.provider_objects.get(*key)
                providers[key] = None if provider is None else \
                    (provider, provider_spec_of(provider))
            target = providers[key]
            if target is None:
                log.info("Alert %s/%s: provider %r not found", namespace, meta.get("name"),
                         key[1])
                continue
            provider, provider_spec = target
            # a refused Provider was said once, above
            if not isinstance(provider_spec, Refused) and not provider_spec.suspend:
                found.append((alert, spec, provider, provider_spec))
        return found

    def _label_reader(self) -> LabelReader:
        """Reads the labels of an event's object once (for one event)."""
        read: list[Mapping[str, str] | None] = []

        async def labels(event: Event) -> Mapping[str, str] | None:
            if not read:
                read.append(await self._labels(event))
            return read[0]
        return labels

    def _invalid_pattern(self, alert: Obj) -> InvalidPattern:
        """What says that a pattern of ``alert`` does not compile."""
        async def invalid(message: str) -> None:
            log.error("Alert %s/%s: %s", alert["metadata"].get("namespace"),
                      alert["metadata"].get("name"), message)
            await self.recorder.event(alert, type="Warning", reason="InvalidConfig",
                                      message=message)
        return invalid

    async def _refused(self, obj: Obj, refused: Refused) -> None:
        """An Alert or Provider the model refuses, said on itself."""
        meta = obj.get("metadata") or {}
        log.error("%s %s/%s: %s; it is skipped", obj.get("kind") or "object",
                  meta.get("namespace"), meta.get("name"), refused.message)
        if self.recorder is not None:
            await self.recorder.event(obj, type="Warning", reason="InvalidConfig",
                                      message=refused.message)

    async def _labels(self, event: Event) -> Mapping[str, str] | None:
        ref = event.involved_object
        try:
            obj = await self.client.get(ref.api_version, ref.kind, ref.name,
                                        ref.namespace or None)
        except KubeError:
            return None
        found: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
        return found

    async def send(self, event: Event, match: Match) -> None:
        """One notification: metadata merged, the Provider resolved, sent with retries;
        a final failure is a Warning event on the Alert."""
        alert, alert_spec, provider, provider_spec = match
        metadata, conflicts = merged_metadata(event, alert, spec=alert_spec)
        if conflicts:
            await self.recorder.event(
                alert, type="Warning", reason="MetadataAppendFailed",
                message=f"metadata keys {sorted(set(conflicts))} conflict; the emitter's "
                        "values are kept")
        provider_type = provider_spec.type
        if not provider_takes(provider_type, event, metadata):
            return
        outgoing = dataclasses.replace(event, metadata=metadata)
        ref = event.involved_object
        subject = f"{ref.kind}/{ref.namespace}/{ref.name}" if ref.namespace else \
            f"{ref.kind}/{ref.name}"
        try:
            settings = await self.settings_for(provider, outgoing, alert,
                                               spec=provider_spec)
            notifier = providers.build(settings)
        except (ConfigError, KubeError, cel.CELError) as exc:
            await self._failed(alert, subject, str(exc))
            return
        assert self._session is not None
        client = HTTPClient(settings, self._session)
        error: SendError | None = None
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            if delay:
                await self.clock.sleep(delay)
            try:
                await notifier.post(outgoing, client)
            except SendError as exc:
                error = exc
                log.info("notification to %s failed (attempt %d): %s",
                         provider_type, attempt + 1, exc)
                if not exc.retryable:
                    break
                continue
            return
        await self._failed(alert, subject, str(error))

    async def _failed(self, alert: Obj, subject: str, why: str) -> None:
        await self.recorder.event(alert, type="Warning", reason="NotificationDispatchFailed",
                                  message=f"failed to send notification for {subject}: {why}")

    async def settings_for(self, provider: Obj, event: Event, alert: Obj, *,
                           spec: ProviderSpec | None = None) -> ProviderSettings:
        """The Provider's spec with its Secrets read (Secret keys win). ``spec``: the
        Provider's, parsed already (else it is parsed here, and a refused one raises
        ``ValidationError``)."""
        if spec is None:
            spec = provider_spec_of(provider)
        meta = provider["metadata"]
        ns = str(meta.get("namespace") or "")
        address = spec.address or ""
        channel, username = spec.channel or "", spec.username or ""
        token = password = ""
        headers: dict[str, str] = {}
        proxy = spec.proxy or None
        ca_pem = cert_pem = key_pem = None
        if spec.secret_ref is not None and spec.secret_ref.name:
            data = await self._secret(ns, spec.secret_ref.name)
            address = data.get("address", address).strip() or address
            token = data.get("token", "").strip()
            username = data.get("username", username) or username
            password = data.get("password", "")
            channel = data.get("channel", channel) or channel
            proxy = data.get("proxy", "").strip() or proxy
            if data.get("headers"):
                try:
                    parsed = yaml.safe_load(data["headers"]) or {}
                except yaml.YAMLError as exc:
                    raise ConfigError(f"invalid headers in secret: {exc}") from exc
                if not isinstance(parsed, dict):
                    raise ConfigError("invalid headers in secret: not a map")
                headers = {str(k): str(v) for k, v in parsed.items()}
            if data.get("ca.crt"):
                ca_pem = data["ca.crt"].encode()
        if spec.cert_secret_ref is not None and spec.cert_secret_ref.name:
            data = await self._secret(ns, spec.cert_secret_ref.name)
            ca_pem = (data.get("ca.crt") or data.get("caFile") or "").encode() or ca_pem
            cert_pem = (data.get("tls.crt") or data.get("certFile") or "").encode() or None
            key_pem = (data.get("tls.key") or data.get("keyFile") or "").encode() or None
        if spec.proxy_secret_ref is not None and spec.proxy_secret_ref.name:
            data = await self._secret(ns, spec.proxy_secret_ref.name)
            proxy = _proxy_url(data) or proxy
        commit_status = None
        if spec.commit_status_expr:
            expression = cel.Expression.compile(spec.commit_status_expr,
                                                variables=("event", "provider", "alert"))
            value = expression.evaluate({"event": event.to_json(), "provider": provider,
                                         "alert": alert})
            if not isinstance(value, str):
                raise cel.CELError("commitStatusExpr must evaluate to a string")
            commit_status = value
        return ProviderSettings(
            type=spec.type, name=str(meta.get("name") or ""), namespace=ns,
            uid=str(meta.get("uid") or ""), address=address, channel=channel,
            username=username, token=token, password=password, headers=headers,
            ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, proxy=proxy,
            timeout=provider_timeout(spec), commit_status=commit_status)

    async def _secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = await self.client.get("v1", "Secret", name, namespace)
        except NotFound as exc:
            raise ConfigError(f"secret '{namespace}/{name}' not found") from exc
        return {k: base64.b64decode(v).decode(errors="replace")
                for k, v in (secret.get("data") or {}).items()}


def _proxy_url(data: Mapping[str, str]) -> str | None:
    address = data.get("address", "").strip()
    if not address:
        return None
    user, password = data.get("username", ""), data.get("password", "")
    if user:
        scheme, sep, rest = address.partition("://")
        if sep:
            from urllib.parse import quote
            return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"
    return address


__all__ = ["Dispatcher", "Match", "ParsedSpecs", "RateLimiter", "Refused", "alert_matches",
           "alert_spec_of", "clean_metadata", "event_key", "event_size", "event_source_index",
           "labelled_sources_take", "merged_metadata", "message_passes", "provider_spec_of",
           "provider_takes", "provider_timeout", "sources_take"]
