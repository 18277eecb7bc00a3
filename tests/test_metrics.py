"""fluxd.metrics: controller-runtime's and Flux's series, on a registry of our own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fluxd.metrics import (
    GOTK_RECONCILE_DURATION_BUCKETS,
    RECONCILE_TIME_BUCKETS,
    WORKQUEUE_DURATION_BUCKETS,
    Metrics,
    ObjectHistogram,
    Outcome,
    exponential_buckets_range,
    go_pow,
)

# Printed by Go 1.19 (strconv.FormatFloat(b, 'g', -1, 64)) from client_golang's
# ExponentialBucketsRange(0.01, 1800, 10) and ExponentialBuckets(10e-9, 10, 12).
GO_GOTK_BUCKETS = (
    0.01, 0.038363583488692544, 0.1471764538093883, 0.5646216173286169, 2.166090855590701,
    8.309900738254731, 31.879757075478317, 122.30217221643493, 469.19495946736544,
    1799.9999999999986,
)
GO_WORKQUEUE_BUCKETS = (
    1e-08, 1e-07, 1e-06, 9.999999999999999e-06, 9.999999999999999e-05, 0.001, 0.01, 0.1, 1,
    10, 100, 1000,
)


@dataclass
class Stats:
    depth: int = 0
    depth_low: int = 0
    processing: int = 0
    unfinished_seconds: float = 0.0
    longest_running_seconds: float = 0.0


@runtime_checkable
class WorkqueueHooks(Protocol):
    """The hooks fluxd.runtime.workqueue calls (mirrored here, as metrics.py does)."""

    def added(self, kind: str) -> None: ...
    def retried(self, kind: str) -> None: ...
    def queued_for(self, kind: str, seconds: float) -> None: ...
    def worked_for(self, kind: str, seconds: float) -> None: ...


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def families(registry: CollectorRegistry) -> dict[str, prometheus_client.Metric]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_started_controller_exposes_controller_runtime_series_at_zero(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.controller_started("kustomization", max_concurrent=4)

    for result in ("success", "error", "requeue", "requeue_after"):
        assert value(registry, "controller_runtime_reconcile_total",
                     controller="kustomization", result=result) == 0
    for name in ("controller_runtime_reconcile_errors_total",
                 "controller_runtime_terminal_reconcile_errors_total",
                 "controller_runtime_reconcile_panics_total",
                 "controller_runtime_reconcile_timeouts_total",
                 "controller_runtime_active_workers"):
        assert value(registry, name, controller="kustomization") == 0, name
    assert value(registry, "controller_runtime_max_concurrent_reconciles",
                 controller="kustomization") == 4
    for name in ("workqueue_adds_total", "workqueue_retries_total",
                 "workqueue_queue_duration_seconds_count",
                 "workqueue_work_duration_seconds_count"):
        assert value(registry, name, name="kustomization", controller="kustomization") == 0


def test_metric_types_and_label_names_are_controller_runtimes_and_fluxs(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.controller_started("gitrepository", max_concurrent=2)
    metrics.reconcile_started("gitrepository")
    metrics.reconcile_finished("gitrepository", Outcome.SUCCESS, 0.2,
                               kind="GitRepository", name="podinfo", namespace="default")
    metrics.leader_changed("source-controller-leader-election", leading=True)
    metrics.track_workqueues(lambda: {"GitRepository": Stats(depth=1)})
    found = families(registry)

    expected = {
        # family name (as the parser reports it): (type, label names of one sample)
        "controller_runtime_reconcile": ("counter", {"controller", "result"}),
        "controller_runtime_reconcile_errors": ("counter", {"controller"}),
        "controller_runtime_terminal_reconcile_errors": ("counter", {"controller"}),
        "controller_runtime_reconcile_panics": ("counter", {"controller"}),
        "controller_runtime_reconcile_timeouts": ("counter", {"controller"}),
        "controller_runtime_reconcile_time_seconds": ("histogram", {"controller"}),
        "controller_runtime_max_concurrent_reconciles": ("gauge", {"controller"}),
        "controller_runtime_active_workers": ("gauge", {"controller"}),
        "workqueue_depth": ("gauge", {"name", "controller", "priority"}),
        "workqueue_adds": ("counter", {"name", "controller"}),
        "workqueue_queue_duration_seconds": ("histogram", {"name", "controller"}),
        "workqueue_work_duration_seconds": ("histogram", {"name", "controller"}),
        "workqueue_unfinished_work_seconds": ("gauge", {"name", "controller"}),
        "workqueue_longest_running_processor_seconds": ("gauge", {"name", "controller"}),
        "workqueue_retries": ("counter", {"name", "controller"}),
        "gotk_reconcile_duration_seconds": ("histogram", {"kind", "name", "namespace"}),
        "leader_election_master_status": ("gauge", {"name"}),
        "fluxd_config_reloads": ("counter", {"result"}),
        "fluxd_config_last_reload_success_timestamp_seconds": ("gauge", set()),
    }
    for name, (kind, labels) in expected.items():
        assert name in found, name
        family = found[name]
        assert family.type == kind, name
        sample = next(s for s in family.samples if not s.name.endswith("_created"))
        assert set(sample.labels) - {"le"} == labels, name


def test_process_and_platform_metrics_are_on_the_given_registry(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    found = families(registry)
    assert "process_cpu_seconds" in found
    assert "process_resident_memory_bytes" in found
    assert "python_info" in found


def test_nothing_is_registered_on_the_default_registry(registry: CollectorRegistry) -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    Metrics(registry).controller_started("kustomization", max_concurrent=1)
    after = set(prometheus_client.REGISTRY._names_to_collectors)
    assert after == before
    assert not any(n.startswith(("controller_runtime", "gotk_", "fluxd_")) for n in after)


def test_two_apps_in_one_process_keep_separate_counts() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    a, b = Metrics(first), Metrics(second)
    a.controller_started("kustomization", max_concurrent=1)
    b.controller_started("kustomization", max_concurrent=1)
    a.reconcile_started("kustomization")
    a.reconcile_finished("kustomization", "success", 1.0, kind=None)
    assert value(first, "controller_runtime_reconcile_total",
                 controller="kustomization", result="success") == 1
    assert value(second, "controller_runtime_reconcile_total",
                 controller="kustomization", result="success") == 0


def test_reconcile_time_buckets_are_controller_runtimes() -> None:
    assert RECONCILE_TIME_BUCKETS[:6] == (0.005, 0.01, 0.025, 0.05, 0.1, 0.15)
    assert RECONCILE_TIME_BUCKETS[-4:] == (30, 40, 50, 60)
    assert len(RECONCILE_TIME_BUCKETS) == 40


def test_bucket_bounds_equal_gos_to_the_last_bit() -> None:
    assert GOTK_RECONCILE_DURATION_BUCKETS == GO_GOTK_BUCKETS
    assert WORKQUEUE_DURATION_BUCKETS == GO_WORKQUEUE_BUCKETS


def test_go_pow_rounds_integer_powers_as_go_does_not_as_c_does() -> None:
    growth = go_pow(1800 / 0.01, 1 / 9)
    assert growth == 3.836358348869254
    # C's pow gives 2.1660908555907006 here; Go's repeated squaring gives ...701.
    assert 0.01 * go_pow(growth, 4.0) == 2.166090855590701
    assert go_pow(2.0, -3.0) == 0.125
    assert go_pow(7.0, 0.0) == 1.0


def test_exponential_buckets_range_rejects_what_go_panics_on() -> None:
    with pytest.raises(ValueError):
        exponential_buckets_range(0, 10, 5)
    with pytest.raises(ValueError):
        exponential_buckets_range(1, 10, 1)


def test_gotk_histogram_exposes_gos_le_labels(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.reconcile_started("kustomization")
    metrics.reconcile_finished("kustomization", "success", 3.0,
                               kind="Kustomization", name="apps", namespace="flux-system")
    family = families(registry)["gotk_reconcile_duration_seconds"]
    bounds = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
    assert bounds == [repr(b) for b in GO_GOTK_BUCKETS] + ["+Inf"]
    assert value(registry, "gotk_reconcile_duration_seconds_bucket", kind="Kustomization",
                 name="apps", namespace="flux-system", le="2.166090855590701") == 0
    assert value(registry, "gotk_reconcile_duration_seconds_bucket", kind="Kustomization",
                 name="apps", namespace="flux-system", le="8.309900738254731") == 1


@pytest.mark.parametrize(("outcome", "result", "special"), [
    (Outcome.SUCCESS, "success", None),
    (Outcome.REQUEUE, "requeue", None),
    (Outcome.REQUEUE_AFTER, "requeue_after", None),
    (Outcome.ERROR, "error", None),
    (Outcome.TERMINAL_ERROR, "error", "controller_runtime_terminal_reconcile_errors_total"),
    (Outcome.PANIC, "error", "controller_runtime_reconcile_panics_total"),
    (Outcome.TIMEOUT, "error", "controller_runtime_reconcile_timeouts_total"),
])
def test_each_outcome_counts_where_controller_runtime_counts_it(
        registry: CollectorRegistry, metrics: Metrics, outcome: Outcome, result: str,
        special: str | None) -> None:
    metrics.controller_started("helmrelease", max_concurrent=4)
    metrics.reconcile_started("helmrelease")
    metrics.reconcile_finished("helmrelease", outcome, 0.5,
                               kind="HelmRelease", name="podinfo", namespace="apps")

    for label in ("success", "error", "requeue", "requeue_after"):
        assert value(registry, "controller_runtime_reconcile_total", controller="helmrelease",
                     result=label) == (1 if label == result else 0), label
    assert value(registry, "controller_runtime_reconcile_errors_total",
                 controller="helmrelease") == (1 if result == "error" else 0)
    for name in ("controller_runtime_terminal_reconcile_errors_total",
                 "controller_runtime_reconcile_panics_total",
                 "controller_runtime_reconcile_timeouts_total"):
        assert value(registry, name, controller="helmrelease") == (1 if name == special else 0)
    assert value(registry, "controller_runtime_reconcile_time_seconds_count",
                 controller="helmrelease") == 1
    assert value(registry, "gotk_reconcile_duration_seconds_sum", kind="HelmRelease",
                 name="podinfo", namespace="apps") == 0.5


def test_unknown_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError):
        metrics.reconcile_finished("kustomization", "requeued", 1.0, kind=None)


def test_active_workers_follow_started_and_finished_reconciles(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.controller_started("kustomization", max_concurrent=4)
    metrics.reconcile_started("kustomization")
    metrics.reconcile_started("kustomization")
    assert value(registry, "controller_runtime_active_workers", controller="kustomization") == 2
    metrics.reconcile_finished("kustomization", "success", 0.1, kind=None)
    assert value(registry, "controller_runtime_active_workers", controller="kustomization") == 1


def test_reconcile_without_an_object_creates_no_gotk_series(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.reconcile_started("kustomization")
    metrics.reconcile_finished("kustomization", "success", 0.1, kind=None)
    assert not [s for s in families(registry)["gotk_reconcile_duration_seconds"].samples]


def test_deleting_an_object_drops_only_its_gotk_series(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    for name in ("a", "b"):
        metrics.reconcile_started("kustomization")
        metrics.reconcile_finished("kustomization", "success", 1.0,
                                   kind="Kustomization", name=name, namespace="ns")
    metrics.object_deleted("Kustomization", "a", "ns")
    names = {s.labels["name"] for s in families(registry)["gotk_reconcile_duration_seconds"]
             .samples}
    assert names == {"b"}
    metrics.object_deleted("Kustomization", "never-seen", "ns")  # no error
    # controller-runtime's per-controller series are not per object and stay.
    assert value(registry, "controller_runtime_reconcile_time_seconds_count",
                 controller="kustomization") == 2


def test_metrics_implement_the_workqueue_hooks_with_lowercase_kind_labels(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    hooks: WorkqueueHooks = metrics
    assert isinstance(hooks, WorkqueueHooks)
    hooks.added("Kustomization")
    hooks.added("kustomization")
    hooks.retried("Kustomization")
    hooks.queued_for("Kustomization", 0.002)
    hooks.worked_for("Kustomization", 1.5)
    labels = {"name": "kustomization", "controller": "kustomization"}
    assert registry.get_sample_value("workqueue_adds_total", labels) == 2
    assert registry.get_sample_value("workqueue_retries_total", labels) == 1
    assert registry.get_sample_value("workqueue_queue_duration_seconds_bucket",
                                     {**labels, "le": "0.01"}) == 1
    assert registry.get_sample_value("workqueue_queue_duration_seconds_bucket",
                                     {**labels, "le": "0.001"}) == 0
    assert registry.get_sample_value("workqueue_work_duration_seconds_sum", labels) == 1.5


def test_workqueue_gauges_are_read_from_stats_at_each_scrape(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    current = {"Kustomization": Stats(depth=5, depth_low=2, processing=1,
                                      unfinished_seconds=3.5, longest_running_seconds=3.0)}
    calls = []

    def stats() -> dict[str, Stats]:
        calls.append(1)
        return current

    metrics.track_workqueues(stats)
    calls.clear()  # registering describes the collector; scraping is what counts
    labels = {"name": "kustomization", "controller": "kustomization"}
    assert registry.get_sample_value("workqueue_depth", {**labels, "priority": "0"}) == 3
    assert registry.get_sample_value("workqueue_depth", {**labels, "priority": "-100"}) == 2
    assert registry.get_sample_value("workqueue_unfinished_work_seconds", labels) == 3.5
    assert registry.get_sample_value("workqueue_longest_running_processor_seconds",
                                     labels) == 3.0
    assert calls

    current = {"Kustomization": Stats(), "HelmRelease": Stats(depth=1)}
    assert registry.get_sample_value("workqueue_depth", {**labels, "priority": "0"}) == 0
    assert registry.get_sample_value(
        "workqueue_depth",
        {"name": "helmrelease", "controller": "helmrelease", "priority": "0"}) == 1


def test_workqueue_stats_can_be_tracked_once(metrics: Metrics) -> None:
    metrics.track_workqueues(dict)
    with pytest.raises(ValueError):
        metrics.track_workqueues(dict)


def test_leader_status_is_one_while_leading(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.leader_changed("fluxd-leader-election", leading=True)
    assert value(registry, "leader_election_master_status", name="fluxd-leader-election") == 1
    metrics.leader_changed("fluxd-leader-election", leading=False)
    assert value(registry, "leader_election_master_status", name="fluxd-leader-election") == 0


def test_config_reloads_count_by_result_and_stamp_the_last_success(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    assert value(registry, "fluxd_config_reloads_total", result="failure") == 0
    metrics.config_reloaded(success=True, at=1_700_000_000.5)
    metrics.config_reloaded(success=False, at=1_700_000_100.0)
    assert value(registry, "fluxd_config_reloads_total", result="success") == 1
    assert value(registry, "fluxd_config_reloads_total", result="failure") == 1
    assert value(registry, "fluxd_config_last_reload_success_timestamp_seconds") == (
        1_700_000_000.5)


def test_the_per_object_histogram_exposes_what_a_prometheus_client_histogram_would() -> None:
    """``ObjectHistogram`` keeps a flat array per object; its scrape must be the samples of
    a ``prometheus_client`` Histogram fed the same observations (less ``_created``)."""
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = ObjectHistogram("d_seconds", "help", ["kind", "name", "namespace"],
                           buckets=GOTK_RECONCILE_DURATION_BUCKETS)
    ours_registry.register(ours)
    theirs = prometheus_client.Histogram("d_seconds", "help", ["kind", "name", "namespace"],
                                         buckets=GOTK_RECONCILE_DURATION_BUCKETS,
                                         registry=theirs_registry)
    observations = [(("Kustomization", "a", "x"), s) for s in (0.001, 0.01, 0.5, 3.0, 3.0, 5e4)]
    observations += [(("GitRepository", "b", "y"), 0.2), (("GitRepository", "c", "y"), 9.0)]
    for values, seconds in observations:
        ours.observe(values, seconds)
        theirs.labels(*values).observe(seconds)
    ours.remove(("GitRepository", "c", "y"))
    theirs.remove("GitRepository", "c", "y")

    def samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...],
                                                              float]]:
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                      for f in registry.collect() for s in f.samples
                      if not s.name.endswith("_created"))

    assert samples(ours_registry) == samples(theirs_registry)
    assert len(samples(ours_registry)) == 2 * (len(GOTK_RECONCILE_DURATION_BUCKETS) + 3)
    text = generate_latest(ours_registry).decode()
    assert "# TYPE d_seconds histogram" in text
    assert 'd_seconds_count{kind="Kustomization",name="a",namespace="x"} 6.0' in text
