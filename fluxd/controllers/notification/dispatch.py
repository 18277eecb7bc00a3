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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from prometheus_client import CollectorRegistry, Counter

from fluxd import regex
from fluxd.api.notification import GIT_PROVIDER_TYPES
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
from fluxd.runtime.events import EVENT_GROUP, SEVERITY_ERROR, SEVERITY_TRACE, Event
from fluxd.runtime.informer import Informer
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


# --------------------------------------------------------------------------- matching


#: messages longer than this are matched in a worker thread (RE2 lets go of the GIL), so a
#: slow pattern over a 3 MiB message costs a thread, never the event loop
INLINE_MATCH_LIMIT = 4096

InvalidPattern = Callable[[str], Awaitable[None]]


async def message_passes(spec: Mapping[str, Any], message: str, *,
                         patterns: regex.RegexCache | None = None,
                         invalid: InvalidPattern | None = None) -> bool:
    """Whether an Alert's ``inclusionList`` and ``exclusionList`` let ``message`` through,
    as Flux decides: with an inclusion list one of its patterns must match, then no
    exclusion pattern may. A pattern Go would not compile matches nothing and is reported
    to ``invalid`` each time it is met (Flux logs it and warns on the Alert)."""
    cache = patterns if patterns is not None else regex.RegexCache()
    inclusion_list = spec.get("inclusionList")
    if inclusion_list:
        inclusion = cache.any_of([str(p) for p in inclusion_list])
        if inclusion.refused:
            await _report(inclusion, "inclusion", invalid)
        if not await _search(inclusion, message):
            return False
    exclusion_list = spec.get("exclusionList")
    if not exclusion_list:
        return True
    exclusion = cache.any_of([str(p) for p in exclusion_list])
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


def event_source_index(alert: Mapping[str, Any]) -> list[str]:
    """Alerts by ``<namespace>/<kind>`` of each of their event sources: an event is
    matched only against the Alerts that can take it."""
    meta = alert.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    return sorted({f"{s.get('namespace') or namespace}/{s.get('kind')}"
                   for s in (alert.get("spec") or {}).get("eventSources") or []})


LabelReader = Callable[[Event], Awaitable[Mapping[str, str] | None]]


def _labels_match(match_labels: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """An event source's ``matchLabels`` over the object's labels, as Flux reads them (a
    label selector); one that is not a valid selector matches nothing."""
    try:
        return from_label_selector({"matchLabels": match_labels}).matches(labels)
    except SelectorError:
        return False


async def alert_matches(alert: Mapping[str, Any], event: Event, *, labels: LabelReader,
                        no_cross_namespace_refs: bool = False,
                        patterns: regex.RegexCache | None = None,
                        invalid: InvalidPattern | None = None) -> bool:
    """Whether ``alert`` takes ``event`` (see the module docstring); ``patterns`` and
    ``invalid`` as for ``message_passes``."""
    spec = alert.get("spec") or {}
    if spec.get("suspend"):
        return False
    ref = event.involved_object
    alert_ns = str((alert.get("metadata") or {}).get("namespace") or "")
    if no_cross_namespace_refs and ref.namespace != alert_ns:
        return False
    if spec.get("eventSeverity") == SEVERITY_ERROR and event.severity != SEVERITY_ERROR:
        return False
    matched = False
    for source in spec.get("eventSources") or []:
        if str(source.get("namespace") or alert_ns) != ref.namespace:
            continue
        if source.get("kind") != ref.kind:
            continue
        name = str(source.get("name") or "")
        if name not in ("*", ref.name):
            continue
        wanted = source.get("matchLabels") or {}
        if wanted:
            found = await labels(event)
            if found is None or not _labels_match(wanted, found):
                continue
        matched = True
        break
    if not matched:
        return False
    return await message_passes(spec, event.message, patterns=patterns, invalid=invalid)


def merged_metadata(event: Event, alert: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The metadata an Alert sends (RFC 0008 precedence) and the keys whose values
    conflicted (the emitter's value is kept)."""
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
    spec = alert.get("spec") or {}
    for key, value in (spec.get("eventMetadata") or {}).items():
        put(str(key), str(value))
    if spec.get("summary"):
        put("summary", str(spec["summary"]))
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


@dataclass(eq=False)
class _Send:
    queued: _Queued
    alert: Obj
    provider: Obj


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

    def __post_init__(self) -> None:
        self._limiter = RateLimiter(self.clock, self.window)
        self.alerts.add_index(EVENT_SOURCE_INDEX, event_source_index)
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
                pairs = await self.matches(queued.event)
            except Exception:
                # a bug must not make one event end the loop over and over
                log.exception("matching an event against the Alerts failed; it is dropped")
                pairs = []
            if queued.dropped:  # over the budget while it was being matched
                continue
            del self._unmatched[queued.number]
            for alert, provider in pairs:
                meta = provider.get("metadata") or {}
                key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = _Lane(key)
                self._send_numbers += 1
                lane.waiting[self._send_numbers] = _Send(queued, alert, provider)
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
            await self.send(send.queued.event, send.alert, send.provider)
        except Exception:
            # a bug in a provider must not end the dispatcher
            log.exception("sending a notification failed unexpectedly")
        finally:
            lane.running -= 1
            self._running -= 1
            self._offer_turn(lane)
            self._tidy(lane)
            self._start_sends()

    async def matches(self, event: Event) -> list[tuple[Obj, Obj]]:
        """The (Alert, Provider) pairs that take ``event``."""
        found: list[tuple[Obj, Obj]] = []
        labels_cache: dict[str, Mapping[str, str] | None] = {}

        async def labels(ev: Event) -> Mapping[str, str] | None:
            if "labels" not in labels_cache:
                labels_cache["labels"] = await self._labels(ev)
            return labels_cache["labels"]

        source = event.involved_object
        for alert in self.alerts.by_index(EVENT_SOURCE_INDEX,
                                          f"{source.namespace}/{source.kind}"):
            meta = alert["metadata"]

            async def invalid(message: str, alert: Obj = alert) -> None:
                log.error("Alert %s/%s: %s", alert["metadata"].get("namespace"),
                          alert["metadata"].get("name"), message)
                await self.recorder.event(alert, type="Warning", reason="InvalidConfig",
                                          message=message)

            if not await alert_matches(alert, event, labels=labels,
                                       no_cross_namespace_refs=self.no_cross_namespace_refs,
                                       patterns=self._patterns, invalid=invalid):
                continue
            ref = str(((alert.get("spec") or {}).get("providerRef") or {}).get("name") or "")
            provider = self.provider_objects.get(meta.get("namespace", ""), ref)
            if provider is None:
                log.info("Alert %s/%s: provider %r not found", meta.get("namespace"),
                         meta.get("name"), ref)
                continue
            if (provider.get("spec") or {}).get("suspend"):
                continue
            found.append((alert, provider))
        return found

    async def _labels(self, event: Event) -> Mapping[str, str] | None:
        ref = event.involved_object
        try:
            obj = await self.client.get(ref.api_version, ref.kind, ref.name,
                                        ref.namespace or None)
        except KubeError:
            return None
        found: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
        return found

    async def send(self, event: Event, alert: Obj, provider: Obj) -> None:
        """One notification: metadata merged, the Provider resolved, sent with retries;
        a final failure is a Warning event on the Alert."""
        metadata, conflicts = merged_metadata(event, alert)
        if conflicts:
            await self.recorder.event(
                alert, type="Warning", reason="MetadataAppendFailed",
                message=f"metadata keys {sorted(set(conflicts))} conflict; the emitter's "
                        "values are kept")
        spec = provider.get("spec") or {}
        provider_type = str(spec.get("type") or "")
        if not provider_takes(provider_type, event, metadata):
            return
        outgoing = dataclasses.replace(event, metadata=metadata)
        ref = event.involved_object
        subject = f"{ref.kind}/{ref.namespace}/{ref.name}" if ref.namespace else \
            f"{ref.kind}/{ref.name}"
        try:
            settings = await self.settings_for(provider, outgoing, alert)
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

    async def settings_for(self, provider: Obj, event: Event, alert: Obj) -> ProviderSettings:
        """The Provider's spec with its Secrets read (Secret keys win)."""
        meta = provider["metadata"]
        spec = provider.get("spec") or {}
        ns = str(meta.get("namespace") or "")
        address = str(spec.get("address") or "")
        channel, username = str(spec.get("channel") or ""), str(spec.get("username") or "")
        token = password = ""
        headers: dict[str, str] = {}
        proxy = str(spec.get("proxy") or "") or None
        ca_pem = cert_pem = key_pem = None
        if (spec.get("secretRef") or {}).get("name"):
            data = await self._secret(ns, str(spec["secretRef"]["name"]))
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
        if (spec.get("certSecretRef") or {}).get("name"):
            data = await self._secret(ns, str(spec["certSecretRef"]["name"]))
            ca_pem = (data.get("ca.crt") or data.get("caFile") or "").encode() or ca_pem
            cert_pem = (data.get("tls.crt") or data.get("certFile") or "").encode() or None
            key_pem = (data.get("tls.key") or data.get("keyFile") or "").encode() or None
        if (spec.get("proxySecretRef") or {}).get("name"):
            data = await self._secret(ns, str(spec["proxySecretRef"]["name"]))
            proxy = _proxy_url(data) or proxy
        commit_status = None
        if spec.get("commitStatusExpr"):
            expression = cel.Expression.compile(str(spec["commitStatusExpr"]),
                                                variables=("event", "provider", "alert"))
            value = expression.evaluate({"event": event.to_json(), "provider": provider,
                                         "alert": alert})
            if not isinstance(value, str):
                raise cel.CELError("commitStatusExpr must evaluate to a string")
            commit_status = value
        timeout = parse_duration(spec["timeout"]) if spec.get("timeout") else 15.0
        return ProviderSettings(
            type=str(spec.get("type") or ""), name=str(meta.get("name") or ""), namespace=ns,
            uid=str(meta.get("uid") or ""), address=address, channel=channel,
            username=username, token=token, password=password, headers=headers,
            ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem, proxy=proxy,
            timeout=timeout, commit_status=commit_status)

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


__all__ = ["Dispatcher", "RateLimiter",
           "alert_matches", "clean_metadata", "event_key", "event_size", "merged_metadata",
           "message_passes", "provider_takes"]
