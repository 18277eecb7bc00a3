"""Events: what a controller says about one of its objects, to Kubernetes and to alerting.

The contract:

- ``Event`` is Flux's notification payload (``event.toolkit.fluxcd.io/v1beta1``);
  ``to_json`` gives the JSON a Flux controller POSTs to notification-controller.
- ``EventBus`` carries events inside the process, from every controller to the
  notification controller. ``publish`` is synchronous and never waits: each subscriber
  has a bounded queue, and a full queue drops its *oldest* event and counts the drop.
  ``close`` ends every subscription once the events already queued are read. The bus
  belongs to the event loop's thread.
- ``EventRecorder.event`` does what Flux's recorder does (``fluxcd/pkg``
  ``runtime/events/recorder.go``) for one object:

  * metadata keys without a ``/`` get the object's API group as prefix (``revision`` ->
    ``source.toolkit.fluxcd.io/revision``); the object's own ``event.toolkit.fluxcd.io/*``
    annotations are added and win over the caller's keys;
  * Warning is severity ``error``, Normal is ``info``; a trace event becomes a Normal
    Kubernetes Event only and never reaches the bus;
  * the core/v1 Event is written as client-go's recorder writes it, through client-go's
    correlator (``tools/record/events_cache.go``): an event seen before (same object,
    type, reason and message; no time limit, as long as the 4096-entry cache remembers it)
    is a merge patch of ``count``/``lastTimestamp``/``message`` on the first Event, which
    is created again if it has gone (the API server's event TTL); ten different messages
    with the same reason within ten minutes become one ``(combined from similar events)``
    Event; a token bucket per object (burst 25, one more every 5 minutes) drops the
    Kubernetes Events beyond it. The bus is not filtered: notification-controller does
    its own rate limiting, as it does for Flux.
  * nothing is raised: a failed write is logged, and the reconcile goes on.

Messages lose the credentials of any URL they quote (``https://user:pass@host``) before
they leave the process, and what is logged about an event goes through
``fluxd.logging.redact``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from fluxd import logging as fluxlog
from fluxd.clock import Clock, rfc3339
from fluxd.kube.errors import AlreadyExists, KubeError, NotFound
from fluxd.lru import LRU
from fluxd.tokenbucket import TokenBuckets

log = logging.getLogger("fluxd.events")

Obj = dict[str, Any]
EventType = Literal["Normal", "Warning"]

#: The API group of Flux events; ``<group>/*`` annotations on objects become metadata.
EVENT_GROUP = "event.toolkit.fluxcd.io"
NORMAL: EventType = "Normal"
WARNING: EventType = "Warning"
SEVERITY_TRACE = "trace"
SEVERITY_INFO = "info"
SEVERITY_ERROR = "error"

# client-go tools/record defaults.
SPAM_BURST = 25
SPAM_QPS = 1.0 / 300.0
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL = 600.0
LRU_SIZE = 4096
COMBINED_PREFIX = "(combined from similar events): "


# -- the notification payload -------------------------------------------------------------


@dataclass(frozen=True)
class ObjectReference:
    """``corev1.ObjectReference`` as Flux fills it for an event's involved object."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObjectReference:
        """The reference to ``obj`` (a dict as the API returns it); ValueError without a
        kind or a name."""
        meta = obj.get("metadata") or {}
        kind, name = str(obj.get("kind") or ""), str(meta.get("name") or "")
        if not kind or not name:
            raise ValueError("object has no kind or no metadata.name")
        return cls(kind=kind, name=name, namespace=str(meta.get("namespace") or ""),
                   uid=str(meta.get("uid") or ""), api_version=str(obj.get("apiVersion") or ""),
                   resource_version=str(meta.get("resourceVersion") or ""))

    @property
    def group(self) -> str:
        """The API group of the object: ``source.toolkit.fluxcd.io``, ``""`` for core."""
        return self.api_version.rpartition("/")[0]

    def to_json(self) -> Obj:
        # Every field of corev1.ObjectReference is omitempty.
        out = {"kind": self.kind, "namespace": self.namespace, "name": self.name,
               "uid": self.uid, "apiVersion": self.api_version,
               "resourceVersion": self.resource_version}
        return {k: v for k, v in out.items() if v}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectReference:
        return cls(kind=str(data.get("kind") or ""), name=str(data.get("name") or ""),
                   namespace=str(data.get("namespace") or ""), uid=str(data.get("uid") or ""),
                   api_version=str(data.get("apiVersion") or ""),
                   resource_version=str(data.get("resourceVersion") or ""))


@dataclass(frozen=True)
class Event:
    """A report by a controller about one object, in Flux's notification shape.

    ``metadata`` is read-only by agreement: every subscriber gets the same instance.
    """

    involved_object: ObjectReference
    severity: str
    timestamp: datetime.datetime
    message: str
    reason: str
    reporting_controller: str
    metadata: dict[str, str] = field(default_factory=dict)
    reporting_instance: str = ""

    def to_json(self) -> Obj:
        """The JSON Flux controllers POST, with Flux's field names and omissions."""
        out: Obj = {
            "involvedObject": self.involved_object.to_json(),
            "severity": self.severity,
            "timestamp": rfc3339(self.timestamp),
            "message": self.message,
            "reason": self.reason,
        }
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        out["reportingController"] = self.reporting_controller
        if self.reporting_instance:
            out["reportingInstance"] = self.reporting_instance
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """An event as another Flux controller POSTs it; ValueError if it is malformed."""
        try:
            stamp = datetime.datetime.fromisoformat(str(data["timestamp"]))
            metadata = data.get("metadata") or {}
            return cls(involved_object=ObjectReference.from_json(data["involvedObject"]),
                       severity=str(data["severity"]), timestamp=stamp,
                       message=str(data["message"]), reason=str(data["reason"]),
                       reporting_controller=str(data["reportingController"]),
                       metadata={str(k): str(v) for k, v in metadata.items()},
                       reporting_instance=str(data.get("reportingInstance") or ""))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"invalid event: {exc!r}") from None


# -- the in-process bus -----------------------------------------------------------------


class Subscription:
    """One subscriber's queue: iterate it with ``async for``.

    Holds at most ``maxsize`` events; when full, publishing drops the oldest and counts
    it in ``dropped``. Iteration ends when the subscription is closed (or the bus is),
    after the events still queued.
    """

    def __init__(self, bus: EventBus, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        #: events dropped because this subscriber fell ``maxsize`` behind
        self.dropped = 0
        self._bus = bus
        # One slot more than maxsize, so the end marker always fits.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize + 1)
        self._closed = False
        self._finished = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Events queued and not yet read."""
        marker = 1 if self._closed and not self._finished else 0
        return self._queue.qsize() - marker

    def close(self) -> None:
        """Unsubscribe; iteration ends after the events already queued."""
        self._bus.unsubscribe(self)

    def poll(self) -> Event | None:
        """The next queued event without waiting; None when there is none (yet)."""
        if self._finished or self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if item is None:
            self._finished = True
        return item

    def _offer(self, event: Event) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self.maxsize:
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: not every drop
                log.warning("event subscriber is behind, dropping its oldest events",
                            extra=fluxlog.fields(subscriber=self.name, dropped=self.dropped))
        self._queue.put_nowait(event)

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._finished = True
            raise StopAsyncIteration
        return item


class EventBus:
    """In-process publish/subscribe of ``Event``s; see the module docstring."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions.values())

    def subscribe(self, name: str, *, maxsize: int = 1000) -> Subscription:
        """A new subscriber that gets every event published from now on.

        ``name`` identifies it in logs and must be unique among live subscribers. On a
        closed bus the subscription is already ended.
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if name in self._subscriptions:
            raise ValueError(f"an event subscriber named {name!r} exists already")
        subscription = Subscription(self, name, maxsize)
        if self._closed:
            subscription._end()
        else:
            self._subscriptions[name] = subscription
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.name) is subscription:
            del self._subscriptions[subscription.name]
        subscription._end()

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber; never waits (see ``Subscription``)."""
        for subscription in tuple(self._subscriptions.values()):
            subscription._offer(event)

    def close(self) -> None:
        """End every subscription; later publishes go nowhere."""
        self._closed = True
        for subscription in tuple(self._subscriptions.values()):
            self.unsubscribe(subscription)


# -- client-go's event correlator ----------------------------------------------------------

@dataclass(frozen=True)
class _KubeEvent:
    """The core/v1 Event being recorded, before correlation decides create or patch."""

    name: str
    namespace: str
    involved: ObjectReference
    type: str
    reason: str
    message: str
    annotations: dict[str, str]
    component: str
    instance: str
    first_timestamp: str
    last_timestamp: str
    count: int = 1

    def body(self) -> Obj:
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return {
            "apiVersion": "v1", "kind": "Event", "metadata": meta,
            "involvedObject": self.involved.to_json(),
            "reason": self.reason, "message": self.message, "type": self.type,
            "source": {"component": self.component},
            "firstTimestamp": self.first_timestamp, "lastTimestamp": self.last_timestamp,
            "count": self.count,
            # no eventTime: as client-go's core/v1 recorder, which keeps the message out of
            # the 1024-byte limit the API applies to events.k8s.io notes
            "reportingComponent": self.component, "reportingInstance": self.instance,
        }

    def object_key(self) -> tuple[str, ...]:
        ref = self.involved
        return (self.component, ref.kind, ref.namespace, ref.name, ref.uid, ref.api_version)

    def event_key(self) -> tuple[str, ...]:
        return (*self.object_key(), self.type, self.reason, self.message)

    def aggregate_key(self) -> tuple[str, ...]:
        return (*self.object_key(), self.type, self.reason, self.component, self.instance)


@dataclass
class _Aggregate:
    messages: set[str]
    last: float


@dataclass(frozen=True)
class _Observation:
    count: int
    first_timestamp: str
    name: str


@dataclass(frozen=True)
class _Correlation:
    event: _KubeEvent
    key: tuple[str, ...]
    patch: Obj | None
    skip: bool


class _Correlator:
    """Aggregation, counting and the spam filter, in client-go's order and with its
    defaults; intervals are measured on the clock's monotonic time."""

    def __init__(self, clock: Clock, *, burst: int, qps: float, max_events: int,
                 interval: float, cache_size: int = LRU_SIZE) -> None:
        self._clock = clock
        self._max_events = max_events
        self._interval = interval
        self._aggregates: LRU[tuple[str, ...], _Aggregate] = LRU(cache_size)
        self._observations: LRU[tuple[str, ...], _Observation] = LRU(cache_size)
        self._buckets: TokenBuckets[tuple[str, ...]] = TokenBuckets(
            burst=burst, every=1.0 / qps, monotonic=clock.monotonic, max_keys=cache_size)

    def correlate(self, event: _KubeEvent) -> _Correlation:
        event, key = self._aggregate(event)
        event, patch = self._observe(event, key)
        return _Correlation(event, key, patch, skip=not self._allow(event))

    def _aggregate(self, event: _KubeEvent) -> tuple[_KubeEvent, tuple[str, ...]]:
        now = self._clock.monotonic()
        group = event.aggregate_key()
        record = self._aggregates.get(group)
        if record is None or now - record.last > self._interval:
            record = _Aggregate(set(), now)
        record.messages.add(event.message)
        record.last = now
        self._aggregates.put(group, record)
        if len(record.messages) < self._max_events:
            return event, event.event_key()
        record.messages.pop()  # the set never grows past the threshold
        # A new Event (the fresh name), counted from then on under the group's key.
        combined = replace(event, message=COMBINED_PREFIX + event.message, count=1)
        return combined, group

    def _observe(self, event: _KubeEvent, key: tuple[str, ...]) -> tuple[_KubeEvent, Obj | None]:
        seen = self._observations.get(key)
        patch: Obj | None = None
        if seen is not None:
            event = replace(event, name=seen.name, first_timestamp=seen.first_timestamp,
                            count=seen.count + 1)
            patch = {"count": event.count, "lastTimestamp": event.last_timestamp,
                     "message": event.message}
        self._observations.put(key, _Observation(event.count, event.first_timestamp,
                                                 event.name))
        return event, patch

    def _allow(self, event: _KubeEvent) -> bool:
        return self._buckets.take(event.object_key())

    def written(self, key: tuple[str, ...], event: _KubeEvent, server: Obj) -> None:
        """Remember what the server holds now (its count may be ahead of ours)."""
        count = server.get("count")
        self._observations.put(key, _Observation(
            count if isinstance(count, int) and count > 0 else event.count,
            str(server.get("firstTimestamp") or event.first_timestamp),
            str((server.get("metadata") or {}).get("name") or event.name)))


# -- the recorder -------------------------------------------------------------------------


class EventWriter(Protocol):
    """What the recorder needs of ``KubeClient``."""

    async def create(self, obj: Obj) -> Obj: ...

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: Obj,
                          namespace: str | None = None) -> Obj: ...


def _is_namespace_terminating(exc: KubeError) -> bool:
    causes = exc.details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating"
               for c in causes)


class EventRecorder:
    """Records events for one controller: a Kubernetes Event, and an ``Event`` on the bus.

    ``controller`` is the Flux controller name (``kustomize-controller``), written as the
    Event's source component and the notification's ``reportingController``; ``instance``
    identifies this process (Flux uses the host name).
    """

    def __init__(self, client: EventWriter, bus: EventBus, *, controller: str, instance: str,
                 clock: Clock, spam_burst: int = SPAM_BURST, spam_qps: float = SPAM_QPS,
                 aggregate_max_events: int = AGGREGATE_MAX_EVENTS,
                 aggregate_interval: float = AGGREGATE_INTERVAL) -> None:
        self._client = client
        self._bus = bus
        self.controller = controller
        self.instance = instance
        self._clock = clock
        self._correlator = _Correlator(clock, burst=spam_burst, qps=spam_qps,
                                       max_events=aggregate_max_events,
                                       interval=aggregate_interval)
        self._last_nanos = 0

    async def event(self, obj: Mapping[str, Any], *, type: EventType = NORMAL, reason: str,
                    message: str, metadata: Mapping[str, str] | None = None,
                    trace: bool = False, notify_only: bool = False) -> None:
        """Record an event about ``obj`` (the object as read from the API).

        ``metadata`` keys without a ``/`` are prefixed with the object's API group; keys
        with one are kept as given. ``trace=True`` writes a Normal Kubernetes Event only;
        ``notify_only=True`` sends the event to the notification controller only (a
        signal for providers, such as a commit status going to pending, that would only
        clutter ``kubectl get events``).
        Never raises for a failed write (it is logged); a cancelled caller is cancelled.
        """
        try:
            ref = ObjectReference.from_object(obj)
        except ValueError as exc:
            log.error("failed to get object reference", extra=fluxlog.fields(error=str(exc)))
            return
        annotations = event_metadata(obj, ref, metadata)
        message = fluxlog.strip_url_credentials(message)
        now = self._clock.now()
        # Flux's recorder logs with these keys.
        where: dict[str, Any] = {"name": ref.name, "namespace": ref.namespace,
                                 "reconciler kind": ref.kind}
        self._log(type, reason, message, annotations, where)
        if not trace:
            self._publish(ref, type, reason, message, annotations, now, where)
        if notify_only:
            return
        await self._record(ref, NORMAL if trace else type, reason, message, annotations, now,
                           where)

    def _log(self, type: str, reason: str, message: str, annotations: dict[str, str],
             where: dict[str, Any]) -> None:
        # As Flux: events are logged only at trace level, warnings as errors.
        if not log.isEnabledFor(fluxlog.TRACE):
            return
        safe = fluxlog.redact(annotations)
        if type == WARNING:
            log.error(message, extra=fluxlog.fields(**where, error=reason, annotations=safe))
        else:
            log.info(message, extra=fluxlog.fields(**where, reason=reason, annotations=safe))

    def _publish(self, ref: ObjectReference, type: str, reason: str, message: str,
                 annotations: dict[str, str], now: datetime.datetime,
                 where: dict[str, Any]) -> None:
        if not ref.namespace:
            # Flux's recorder refuses to send events about cluster-scoped objects.
            log.error("unable to record event", extra=fluxlog.fields(
                **where, error="failed to get object namespace"))
            return
        self._bus.publish(Event(
            involved_object=ref,
            severity=SEVERITY_ERROR if type == WARNING else SEVERITY_INFO,
            timestamp=now, message=message, reason=reason,
            reporting_controller=self.controller, metadata=dict(annotations),
            reporting_instance=self.instance))

    def _event_name(self, object_name: str, now: datetime.datetime) -> str:
        # client-go names Events <object>.<unix nanoseconds in hex>; kept strictly
        # increasing here so that two events at one (virtual) instant do not collide.
        nanos = int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000
        nanos = max(nanos, self._last_nanos + 1)
        self._last_nanos = nanos
        return f"{object_name}.{nanos:x}"

    async def _record(self, ref: ObjectReference, type: str, reason: str, message: str,
                      annotations: dict[str, str], now: datetime.datetime,
                      where: dict[str, Any]) -> None:
        if type not in (NORMAL, WARNING):
            log.error("unsupported event type", extra=fluxlog.fields(**where, type=type))
            return
        stamp = rfc3339(now)
        fresh = _KubeEvent(
            name=self._event_name(ref.name, now), namespace=ref.namespace or "default",
            involved=ref, type=type, reason=reason, message=message, annotations=annotations,
            component=self.controller, instance=self.instance, first_timestamp=stamp,
            last_timestamp=stamp)
        result = self._correlator.correlate(fresh)
        if result.skip:
            log.debug("event dropped by the spam filter",
                      extra=fluxlog.fields(**where, reason=reason))
            return
        event = result.event
        try:
            written = None
            if result.patch is not None:
                try:
                    written = await self._client.merge_patch(
                        "v1", "Event", event.name, result.patch, event.namespace)
                except NotFound:
                    written = None  # expired or deleted: create it again, as client-go
            if written is None:
                written = await self._client.create(event.body())
        except KubeError as exc:
            # client-go is quiet about these two: the Event exists, or soon cannot.
            quiet = isinstance(exc, AlreadyExists) or _is_namespace_terminating(exc)
            what = "server rejected event" if exc.status else "unable to write event"
            log.log(logging.DEBUG if quiet else logging.ERROR, f"{what} (will not retry)",
                    extra=fluxlog.fields(**where, reason=reason, error=str(exc)))
            return
        except Exception as exc:
            log.error("unable to write event (will not retry)", exc_info=exc,
                      extra=fluxlog.fields(**where, reason=reason, with_stacktrace=True))
            return
        self._correlator.written(result.key, event, written)


def event_metadata(obj: Mapping[str, Any], ref: ObjectReference,
                   metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The metadata Flux attaches to an event about ``obj``: the caller's keys, qualified
    with the object's API group unless they already have a prefix, then the object's
    ``event.toolkit.fluxcd.io/*`` annotations (which win)."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        qualified = key if "/" in key or not ref.group else f"{ref.group}/{key}"
        out[qualified] = str(value)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for key, value in annotations.items():
        if str(key).startswith(EVENT_GROUP + "/"):
            out[str(key)] = str(value)
    return out
