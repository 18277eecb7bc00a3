"""Prometheus metrics under the names Flux users already chart.

Contract:

* Everything lives on the ``CollectorRegistry`` given to :class:`Metrics`; nothing touches
  prometheus_client's default registry, so two apps can share one test process.
* Names, labels, help texts and buckets are controller-runtime's
  (``pkg/internal/controller/metrics/metrics.go``, ``pkg/metrics/workqueue.go``) and Flux's
  (``fluxcd/pkg runtime/metrics``). The ``controller`` label, and the workqueue ``name``
  label, is the lowercase kind (``kustomization``); the ``kind`` label of ``gotk_*`` is the
  Kind as written (``Kustomization``).
* Nothing here reads a clock: callers pass durations and timestamps from the injected clock.
* Workqueue gauges (depth, unfinished work, longest running processor) are read at scrape
  time from a ``stats()`` callable, on the event loop thread that serves ``/metrics``.

The reconcile loop calls, per controller, :meth:`Metrics.controller_started` once, then per
reconcile :meth:`Metrics.reconcile_started` and :meth:`Metrics.reconcile_finished` with an
:class:`Outcome`; :meth:`Metrics.object_deleted` drops an object's ``gotk_*`` series.
"""

from __future__ import annotations

import bisect
import math
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

__all__ = [
    "GOTK_RECONCILE_DURATION_BUCKETS",
    "RECONCILE_TIME_BUCKETS",
    "WORKQUEUE_DURATION_BUCKETS",
    "KindStats",
    "Metrics",
    "ObjectHistogram",
    "Outcome",
    "WorkqueueCollector",
    "exponential_buckets",
    "exponential_buckets_range",
    "go_pow",
]


def go_pow(x: float, y: float) -> float:
    """``math.Pow`` exactly as Go computes it, for finite positive ``x``.

    Go's Pow multiplies integer powers out by repeated squaring of the mantissa, which
    rounds differently from C's ``pow``; bucket bounds (the ``le`` label) must match the
    Go controllers' to the last bit, or charts aggregating both split into two series.
    """
    if not (x > 0 and math.isfinite(x) and math.isfinite(y)):
        raise ValueError("go_pow supports finite positive x and finite y only")
    if y == 0 or x == 1:
        return 1.0
    yf, yi = math.modf(abs(y))
    a1 = 1.0
    ae = 0
    if yf != 0:
        if yf > 0.5:
            yf -= 1
            yi += 1
        a1 = math.exp(yf * math.log(x))
    x1, xe = math.frexp(x)
    i = int(yi)
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            # Catastrophic over/underflow: Ldexp below saturates the same way Go's does.
            ae += xe
            break
        if i & 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0:
        a1 = 1 / a1
        ae = -ae
    return math.ldexp(a1, ae)


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Go's ``prometheus.ExponentialBuckets``: repeated multiplication, as Go rounds it."""
    if count < 1 or start <= 0 or factor <= 1:
        raise ValueError("need count >= 1, start > 0 and factor > 1")
    buckets = []
    for _ in range(count):
        buckets.append(start)
        start *= factor
    return tuple(buckets)


def exponential_buckets_range(low: float, high: float, count: int) -> tuple[float, ...]:
    """Go's ``prometheus.ExponentialBucketsRange`` (the top bucket is not exactly ``high``)."""
    if count < 2 or low <= 0 or high <= low:
        raise ValueError("need count >= 2 and 0 < low < high")
    growth = go_pow(high / low, 1.0 / (count - 1))
    return tuple(low * go_pow(growth, float(i)) for i in range(count))


#: controller_runtime_reconcile_time_seconds, as controller-runtime lists them.
RECONCILE_TIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7,
    0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20,
    25, 30, 40, 50, 60,
)
#: workqueue_{queue,work}_duration_seconds: ExponentialBuckets(10e-9, 10, 12).
WORKQUEUE_DURATION_BUCKETS: tuple[float, ...] = exponential_buckets(10e-9, 10, 12)
#: gotk_reconcile_duration_seconds: ExponentialBucketsRange(0.01, 1800, 10).
GOTK_RECONCILE_DURATION_BUCKETS: tuple[float, ...] = exponential_buckets_range(0.01, 1800, 10)

#: controller-runtime's priority queue labels depth by ``strconv.Itoa(priority)``; items
#: from the initial list are queued at ``handler.LowPriority``.
PRIORITY_NORMAL = "0"
PRIORITY_LOW = "-100"


class Outcome(StrEnum):
    """How one reconcile ended; :meth:`Metrics.reconcile_finished` maps it to counters.

    The last four are errors: each counts in ``controller_runtime_reconcile_errors_total``
    and ``controller_runtime_reconcile_total{result="error"}``, and the special ones also in
    their own counter, as controller-runtime's ``reconcileHandler`` does.
    """

    SUCCESS = "success"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"
    ERROR = "error"
    TERMINAL_ERROR = "terminal_error"
    PANIC = "panic"
    TIMEOUT = "timeout"


_RESULT_LABELS = ("success", "error", "requeue", "requeue_after")
_ERRORS = {Outcome.ERROR, Outcome.TERMINAL_ERROR, Outcome.PANIC, Outcome.TIMEOUT}


class KindStats(Protocol):
    """One workqueue's state at scrape time (``depth`` counts ``depth_low`` in it)."""

    @property
    def depth(self) -> int: ...
    @property
    def depth_low(self) -> int: ...
    @property
    def processing(self) -> int: ...
    @property
    def unfinished_seconds(self) -> float: ...
    @property
    def longest_running_seconds(self) -> float: ...


_DEPTH_HELP = "Current depth of workqueue by workqueue and priority"
_UNFINISHED_HELP = (
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads. One can deduce the number of stuck "
    "threads by observing the rate at which this increases."
)
_LONGEST_HELP = "How many seconds has the longest running processor for workqueue been running."


class WorkqueueCollector:
    """Exports the workqueue gauges from ``stats()`` at each scrape.

    Depth is split by priority label as controller-runtime's priority queue does:
    ``"0"`` for normal items, ``"-100"`` for low-priority ones (initial list).
    """

    def __init__(self, stats: Callable[[], Mapping[str, KindStats]]) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth, unfinished, longest = self._families()
        for kind, stat in sorted(self._stats().items()):
            name = kind.lower()
            low = stat.depth_low
            depth.add_metric([name, name, PRIORITY_NORMAL], stat.depth - low)
            depth.add_metric([name, name, PRIORITY_LOW], low)
            unfinished.add_metric([name, name], stat.unfinished_seconds)
            longest.add_metric([name, name], stat.longest_running_seconds)
        return [depth, unfinished, longest]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("workqueue_depth", _DEPTH_HELP,
                              labels=["name", "controller", "priority"]),
            GaugeMetricFamily("workqueue_unfinished_work_seconds", _UNFINISHED_HELP,
                              labels=["name", "controller"]),
            GaugeMetricFamily("workqueue_longest_running_processor_seconds", _LONGEST_HELP,
                              labels=["name", "controller"]),
        ]


def _le_label(bound: float) -> str:
    """A bucket bound as ``prometheus_client``'s own histograms write it."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]  # untyped upstream
    return text


class ObjectHistogram:
    """A histogram with one series per object (Flux's ``gotk_reconcile_duration_seconds
    {kind,name,namespace}``), each kept as one array of bucket counts and the sum.

    A ``prometheus_client`` child holds a value object and a lock per bucket, about 2 KiB
    per object; these series grow with the number of Flux objects, so they are kept
    flat here and turned into samples only when scraped. No ``_created`` series, as
    the Go client exposes none.
    """

    def __init__(self, name: str, documentation: str, labels: list[str],
                 buckets: Iterable[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._bounds = [b for b in buckets if b != math.inf]
        self._le = [_le_label(b) for b in self._bounds] + ["+Inf"]
        #: label values → per-bucket (not cumulative) counts, then the sum
        self._series: dict[tuple[str, ...], array[float]] = {}
        self._lock = threading.Lock()

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        with self._lock:
            counts = self._series.get(values)
            if counts is None:
                counts = self._series[values] = array("d", bytes(8 * (len(self._le) + 1)))
            counts[bisect.bisect_left(self._bounds, amount)] += 1
            counts[-1] += amount

    def remove(self, values: tuple[str, ...]) -> None:
        with self._lock:
            self._series.pop(values, None)

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labels)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        with self._lock:
            series = [(values, counts.tolist()) for values, counts in self._series.items()]
        for values, counts in sorted(series):
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._le, counts, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(values), buckets, counts[-1])
        return [family]


class Metrics:
    """All of fluxd's metrics, registered on ``registry``.

    Reconcile loop: :meth:`controller_started`, :meth:`reconcile_started`,
    :meth:`reconcile_finished`, :meth:`object_deleted`.
    Workqueue hooks (the ``fluxd.runtime.workqueue`` metrics protocol): :meth:`added`,
    :meth:`retried`, :meth:`queued_for`, :meth:`worked_for`, plus :meth:`track_workqueues`
    for the scrape-time gauges.
    Process: :meth:`leader_changed`, :meth:`config_reloaded`.
    """

    def __init__(self, registry: CollectorRegistry, *, process_metrics: bool = True) -> None:
        self.registry = registry
        self._workqueue_collector: WorkqueueCollector | None = None
        r = registry

        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"], registry=r)
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"], registry=r)
        self.terminal_reconcile_errors = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"], registry=r)
        self.reconcile_panics = Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics per controller",
            ["controller"], registry=r)
        self.reconcile_timeouts = Counter(
            "controller_runtime_reconcile_timeouts_total",
            "Total number of reconciliation timeouts per controller",
            ["controller"], registry=r)
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"], buckets=RECONCILE_TIME_BUCKETS, registry=r)
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"], registry=r)
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"], registry=r)

        self.workqueue_adds = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue",
            ["name", "controller"], registry=r)
        self.workqueue_retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue",
            ["name", "controller"], registry=r)
        self.workqueue_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name", "controller"], buckets=WORKQUEUE_DURATION_BUCKETS, registry=r)
        self.workqueue_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            ["name", "controller"], buckets=WORKQUEUE_DURATION_BUCKETS, registry=r)

        self.gotk_reconcile_duration = ObjectHistogram(
            "gotk_reconcile_duration_seconds",
            "The duration in seconds of a GitOps Toolkit resource reconciliation.",
            ["kind", "name", "namespace"], buckets=GOTK_RECONCILE_DURATION_BUCKETS)
        r.register(self.gotk_reconcile_duration)

        self.leader_election_master_status = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
            "backup, 1 indicates master. 'name' is the string used to identify the lease. "
            "Please make sure to group by name.",
            ["name"], registry=r)

        self.config_reloads = Counter(
            "fluxd_config_reloads_total",
            "Configuration reloads by result (success or failure)",
            ["result"], registry=r)
        self.config_last_reload_success = Gauge(
            "fluxd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration load that succeeded",
            registry=r)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)

        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # -- reconcile loop ----------------------------------------------------------------

    def controller_started(self, controller: str, *, max_concurrent: int) -> None:
        """Create the controller's series at zero, as controller-runtime's initMetrics does."""
        for result in _RESULT_LABELS:
            self.reconcile_total.labels(controller, result)
        for counter in (self.reconcile_errors, self.terminal_reconcile_errors,
                        self.reconcile_panics, self.reconcile_timeouts):
            counter.labels(controller)
        self.max_concurrent_reconciles.labels(controller).set(max_concurrent)
        self.active_workers.labels(controller).set(0)
        name = controller.lower()
        for vec in (self.workqueue_adds, self.workqueue_retries,
                    self.workqueue_queue_duration, self.workqueue_work_duration):
            vec.labels(name, name)

    def reconcile_started(self, controller: str) -> None:
        """A worker took an item: one more active worker."""
        self.active_workers.labels(controller).inc()

    def reconcile_finished(self, controller: str, outcome: Outcome | str, seconds: float, *,
                           kind: str | None, name: str = "", namespace: str = "") -> None:
        """Count the outcome, observe the duration, release the worker.

        ``kind``/``name``/``namespace`` identify the object for
        ``gotk_reconcile_duration_seconds``; pass ``kind=None`` when there was no object
        (not found, already gone) so no per-object series is created.
        """
        outcome = Outcome(outcome)
        self.active_workers.labels(controller).dec()
        self.reconcile_time.labels(controller).observe(seconds)
        if outcome in _ERRORS:
            special = {
                Outcome.TERMINAL_ERROR: self.terminal_reconcile_errors,
                Outcome.PANIC: self.reconcile_panics,
                Outcome.TIMEOUT: self.reconcile_timeouts,
            }.get(outcome)
            if special is not None:
                special.labels(controller).inc()
            self.reconcile_errors.labels(controller).inc()
            self.reconcile_total.labels(controller, "error").inc()
        else:
            self.reconcile_total.labels(controller, outcome.value).inc()
        if kind is not None:
            self.gotk_reconcile_duration.observe((kind, name, namespace), seconds)

    def object_deleted(self, kind: str, name: str, namespace: str) -> None:
        """Drop the object's ``gotk_*`` series (Flux deletes them with the object)."""
        self.gotk_reconcile_duration.remove((kind, name, namespace))

    # -- workqueue hooks ---------------------------------------------------------------

    def added(self, kind: str) -> None:
        name = kind.lower()
        self.workqueue_adds.labels(name, name).inc()

    def retried(self, kind: str) -> None:
        name = kind.lower()
        self.workqueue_retries.labels(name, name).inc()

    def queued_for(self, kind: str, seconds: float) -> None:
        name = kind.lower()
        self.workqueue_queue_duration.labels(name, name).observe(seconds)

    def worked_for(self, kind: str, seconds: float) -> None:
        name = kind.lower()
        self.workqueue_work_duration.labels(name, name).observe(seconds)

    def track_workqueues(self, stats: Callable[[], Mapping[str, KindStats]]) -> None:
        """Export depth/unfinished/longest-running gauges from ``stats()`` at scrape time.

        ``stats`` maps kind to its queue's :class:`KindStats`; it is called on the thread
        serving ``/metrics`` (the event loop), so it may read queue state without locks.
        Call once; a second call raises ``ValueError``.
        """
        if self._workqueue_collector is not None:
            raise ValueError("workqueue stats are already tracked")
        self._workqueue_collector = WorkqueueCollector(stats)
        self.registry.register(self._workqueue_collector)

    # -- process -----------------------------------------------------------------------

    def leader_changed(self, name: str, *, leading: bool) -> None:
        """Set ``leader_election_master_status{name}`` (name: the lease name)."""
        self.leader_election_master_status.labels(name).set(1 if leading else 0)

    def config_reloaded(self, *, success: bool, at: float) -> None:
        """Count a configuration (re)load; ``at`` is the clock's Unix time."""
        self.config_reloads.labels("success" if success else "failure").inc()
        if success:
            self.config_last_reload_success.set(at)
