"""Flux's atomic release: the state of the release decides the next Helm action, which
runs, until the release is in sync, an action would repeat, or a remediation ran
(helm-controller ``internal/reconcile/atomic_release.go`` and one action per
``internal/reconcile/*.go``).

    determine the state (in-process) ──► the next action ──► none: in sync, summarise
            ▲                                   │
            └── record what the action ◄── run it with the real helm binary, through
                left in Helm's storage         a loopback API proxy session

| state     | action                                                                     |
|-----------|----------------------------------------------------------------------------|
| InSync    | none (history truncated; ``forceAt`` forces an upgrade)                     |
| Locked    | unlock: the stale ``pending-*`` release is marked failed                   |
| Absent    | install (unless install retries are exhausted: stalled)                    |
| Unmanaged | upgrade, the history cleared                                               |
| OutOfSync | upgrade (unless upgrade retries are exhausted: stalled)                    |
| Drifted   | warn, or correct the drift (``driftDetection.mode``)                       |
| Untested  | test                                                                       |
| Failed    | rollback or uninstall by the active remediation, or an upgrade             |

Each action marks its own condition (``Released``, ``TestSuccess``, ``Remediated``) with
Flux's reasons and messages, counts failures, records the releases it made in
``status.history`` (newest first) and sends its event with Flux's metadata (chart
version, config digest as token, app version, OCI digest). Ready is summarised from those
conditions after every action. A strategy of ``RetryOnFailure`` is never remediated: a
failed action is retried at ``retryInterval``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fluxd.api.helm import HelmReleaseSpec, Snapshot
from fluxd.clock import Clock, format_duration
from fluxd.config import parse_duration
from fluxd.controllers.helm import action as helm_action
from fluxd.controllers.helm import state as st
from fluxd.controllers.helm.chart import Chart
from fluxd.controllers.helm.storage import retain
from fluxd.controllers.helm.target import ReleaseTarget
from fluxd.runtime import conditions as cond
from fluxd.runtime.reconcile import ReconcileError, RetryError, StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.helm")

Obj = dict[str, Any]

RELEASED = "Released"
TEST_SUCCESS = "TestSuccess"
REMEDIATED = "Remediated"
DRIFTED = "Drifted"

INSTALL_SUCCEEDED = "InstallSucceeded"
INSTALL_FAILED = "InstallFailed"
UPGRADE_SUCCEEDED = "UpgradeSucceeded"
UPGRADE_FAILED = "UpgradeFailed"
TEST_SUCCEEDED = "TestSucceeded"
TEST_FAILED = "TestFailed"
ROLLBACK_SUCCEEDED = "RollbackSucceeded"
ROLLBACK_FAILED = "RollbackFailed"
UNINSTALL_SUCCEEDED = "UninstallSucceeded"
UNINSTALL_FAILED = "UninstallFailed"
PENDING_RELEASE = "PendingRelease"
DRIFT_DETECTED = "DriftDetected"
NO_DRIFT_DETECTED = "NoDriftDetected"
RETRIES_EXCEEDED = "RetriesExceeded"
MISSING_ROLLBACK_TARGET = "MissingRollbackTarget"
STATE_ERROR = "StateError"
RECONCILE_ERROR = "ReconcileError"
AWAITING_TESTS = "AwaitingTests"

DEFAULT_RETRY_INTERVAL = 300.0


class Storage(Protocol):
    """What the engine needs of ``storage.ReleaseStorage`` (read-only but ``unlock``)."""

    async def latest(self, namespace: str, name: str) -> Any: ...

    async def history(self, namespace: str, name: str) -> list[Any]: ...


class ActionOutcome(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str: ...

    @property
    def output(self) -> str: ...


class HelmActions(Protocol):
    """One Helm action run against the release, however it reaches the cluster."""

    async def install(self, req: ReleaseRequest) -> ActionOutcome: ...

    async def upgrade(self, req: ReleaseRequest) -> ActionOutcome: ...

    async def test(self, req: ReleaseRequest) -> ActionOutcome: ...

    async def rollback(self, req: ReleaseRequest, version: int) -> ActionOutcome: ...

    async def uninstall(self, req: ReleaseRequest, target: ReleaseTarget
                        ) -> ActionOutcome: ...

    async def unlock(self, req: ReleaseRequest, release: Any) -> None: ...


#: sends an event about the object: (type, reason, message, metadata)
EventFn = Callable[[str, str, str, Mapping[str, str]], Any]
#: builds the snapshot of a stored release (``storage.snapshot``)
SnapshotFn = Callable[..., Snapshot]


@dataclass
class ReleaseRequest:
    """One atomic release: the object's status (through its patcher), what is wanted."""

    obj: Obj
    spec: HelmReleaseSpec
    target: ReleaseTarget
    chart: Chart
    values: dict[str, Any]
    config_digest: str
    patcher: StatusPatcher
    #: ``status.history``, newest first
    history: list[Snapshot] = field(default_factory=list)
    #: a post-render setting changed since the last success (the release is out of sync)
    post_render_changed: str = ""

    # --- status helpers --------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        return self.patcher.status

    def remediation(self) -> st.Remediation | None:
        return st.remediation_for(self.spec, self.patcher.get_field(
            "lastAttemptedReleaseAction"))

    def count(self, name: str) -> None:
        self.patcher.set_field(name, int(self.patcher.get_field(name) or 0) + 1)

    def save_history(self) -> None:
        self.patcher.set_field("history", [s.to_json() for s in self.history] or None)

    def event_metadata(self) -> dict[str, str]:
        meta = {"revision": self.chart.version, "token": self.config_digest}
        if self.chart.app_version:
            meta["app-version"] = self.chart.app_version
        if self.chart.oci_digest:
            meta["oci-digest"] = self.chart.oci_digest
        return meta


def action_timeout(spec: HelmReleaseSpec, action: str) -> float:
    """Flux's ``timeoutForAction`` in seconds: the rule helm is given
    (``action.action_timeout``) for the spec section named ``action``."""
    own = getattr(getattr(spec, action, None), "timeout", None)
    return parse_duration(str(helm_action.action_timeout(spec, own)))


def retry_interval(spec: HelmReleaseSpec, action: str) -> float | None:
    """The ``retryInterval`` of an action whose strategy is ``RetryOnFailure``."""
    options = getattr(spec, action, None)
    strategy = getattr(options, "strategy", None)
    if strategy is None or strategy.name != "RetryOnFailure":
        return None
    return parse_duration(str(strategy.retry_interval)) if strategy.retry_interval \
        else DEFAULT_RETRY_INTERVAL


def summarize(patcher: StatusPatcher, spec: HelmReleaseSpec) -> None:
    """Flux's ``summarize``: Ready from Remediated, TestSuccess (when tests are enabled
    and failures count) and Released — the most recent generation first, then in that
    order; a remediation is never Ready."""
    test = spec.test
    enabled = bool(test and test.enable)
    order = [REMEDIATED, RELEASED]
    if enabled and not (test and test.ignore_failures):
        order = [REMEDIATED, TEST_SUCCESS, RELEASED]
    if not enabled:
        patcher.delete_condition(TEST_SUCCESS)
    found = [c for c in patcher.conditions if c.get("type") in order]
    if not found:
        return
    first = min(found, key=lambda c: (-int(c.get("observedGeneration") or 0),
                                      order.index(str(c["type"]))))
    status = str(first.get("status"))
    if first["type"] == REMEDIATED:
        status = cond.FALSE
    if status == cond.TRUE:
        patcher.delete_condition(cond.STALLED)
    reason, message = str(first.get("reason") or ""), str(first.get("message") or "")
    if status == cond.TRUE:
        patcher.mark_true(cond.READY, reason, message)
    elif status == cond.FALSE:
        patcher.mark_false(cond.READY, reason, message)
    else:
        patcher.mark_unknown(cond.READY, reason, message)


class MustRequeue(ReconcileError):
    """The release needs another reconcile soon (an action would have repeated, or a
    remediation ran and retries remain): Flux's ``ErrMustRequeue``. Ready is already
    summarised; retried with backoff."""


class ActionFailed(ReconcileError):
    """An action failed without leaving a release in storage: nothing to remediate, the
    reconcile is retried with backoff."""


@dataclass
class AtomicRelease:
    """Runs the atomic release of one request (see the module docstring)."""

    storage: Storage
    actions: HelmActions
    snapshot: SnapshotFn
    clock: Clock
    event: EventFn
    #: decides drift: returns a summary of the changes, "" when none
    detect_drift: Callable[[ReleaseRequest, Any], Any] | None = None
    correct_drift: Callable[[ReleaseRequest, Any], Any] | None = None
    logger: logging.Logger = log
    #: how many actions one reconcile may run at most (a safety bound: the strategy
    #: stops far earlier)
    max_actions: int = 8

    async def reconcile(self, req: ReleaseRequest) -> None:
        """Converge the release; returns when in sync or when Flux's strategy stops
        (then raising ``MustRequeue``), raises ``StallingError`` when retries are
        exhausted, ``RetryError`` for a ``RetryOnFailure`` action that failed."""
        done: list[str] = []
        for _ in range(self.max_actions):
            release = await self.storage.latest(req.target.storage_namespace,
                                                req.target.name)
            try:
                state = await self.determine(req, release)
            except st.StateError as exc:
                req.patcher.mark_false(cond.READY, STATE_ERROR,
                                       f"Could not determine release state: {exc}")
                raise ReconcileError(f"cannot determine release state: {exc}",
                                     reason=STATE_ERROR) from exc
            step = await self.action_for(req, state, release)
            if step is None:
                req.patcher.delete_condition(cond.RECONCILING)
                summarize(req.patcher, req.spec)
                return
            kind, run = step
            if kind in done:
                return self._stop(req, before=True)
            timeout = action_timeout(req.spec, _timeout_key(kind))
            message = f"Running '{kind}' action with timeout of {format_duration(timeout)}"
            req.patcher.mark_reconciling(cond.PROGRESSING_REASON, message)
            if kind in ("install", "upgrade"):
                req.patcher.mark_unknown(cond.READY, cond.PROGRESSING_REASON, message)
            await req.patcher.patch()
            self.logger.info(f"running '{kind}' action with timeout of "
                             f"{format_duration(timeout)}")
            await run()
            if kind in ("rollback", "uninstall-remediation"):
                return self._stop(req, before=False)
            done.append(kind)
            await req.patcher.patch()
        raise ReconcileError("too many Helm actions in one reconcile",
                             reason=RECONCILE_ERROR)

    def _stop(self, req: ReleaseRequest, *, before: bool) -> None:
        """Flux's strategy stops the loop: requeue while retries remain."""
        remediation = req.remediation()
        ready_message = cond.message_of(req.patcher.conditions, cond.READY)
        if remediation is None or not remediation.retries_exhausted(req.status):
            req.patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON, ready_message)
            action = req.patcher.get_field("lastAttemptedReleaseAction") or "install"
            interval = retry_interval(req.spec, action)
            if interval is not None and remediation is None and \
                    not cond.is_true(req.patcher.conditions, cond.READY):
                raise RetryError(ready_message, reason=cond.reason_of(
                    req.patcher.conditions, cond.READY), requeue_after=interval)
            raise MustRequeue(ready_message, reason=cond.reason_of(
                req.patcher.conditions, cond.READY) or RECONCILE_ERROR)
        if not before:
            self._exhausted(req, remediation)
        req.patcher.delete_condition(cond.RECONCILING)

    def _exhausted(self, req: ReleaseRequest, remediation: st.Remediation) -> None:
        action = req.patcher.get_field("lastAttemptedReleaseAction") or remediation.action
        message = f"Failed to {action} after {remediation.failure_count(req.status)} " \
                  "attempt(s)"
        req.patcher.mark_stalled(RETRIES_EXCEEDED, message)
        raise StallingError(cond.message_of(req.patcher.conditions, cond.READY) or message,
                            reason=cond.reason_of(req.patcher.conditions, cond.READY)
                            or RETRIES_EXCEEDED)

    # --- state and next action ---------------------------------------------------------

    async def determine(self, req: ReleaseRequest, release: Any) -> st.ReleaseState:
        # Flux compares the post-render digests for a generation not summarised yet only:
        # the observed digests are recorded at the end of a successful reconcile, so a
        # release made for this generation must not look out of sync again
        ready = cond.get(req.patcher.conditions, cond.READY)
        changed = req.post_render_changed if ready is None or \
            ready.get("observedGeneration") != req.patcher.generation else ""
        state = st.determine(
            release=release, history=req.history, spec=req.spec,
            chart_name=req.chart.name, chart_version=req.chart.version,
            config_digest=req.config_digest, remediation=req.remediation(),
            post_render_changed=changed)
        if state.status is st.Status.IN_SYNC and self.detect_drift is not None:
            mode = req.spec.drift_detection.mode if req.spec.drift_detection else None
            if mode in ("enabled", "warn"):
                drift = await self.detect_drift(req, release)
                if drift:
                    return st.ReleaseState(st.Status.DRIFTED, str(drift))
                req.patcher.mark_false(DRIFTED, NO_DRIFT_DETECTED,
                                       "No drift detected in the cluster state")
            else:
                req.patcher.delete_condition(DRIFTED)
        return state

    async def action_for(self, req: ReleaseRequest, state: st.ReleaseState, release: Any
                         ) -> tuple[str, Callable[[], Any]] | None:
        status, spec = state.status, req.spec
        force = self.force_requested(req)
        reason = f": {state.reason}" if state.reason else ""
        if status is st.Status.IN_SYNC:
            self.logger.info("release in-sync with desired state")
            remediation = req.remediation()
            ignore = remediation.ignore_test_failures if remediation else \
                bool(spec.test and spec.test.ignore_failures)
            truncated = retain(req.history, ignore_tests=ignore)
            if truncated != req.history:
                req.history = truncated
                req.save_history()
            if force:
                self.logger.info("forcing upgrade for in-sync release: force requested "
                                 "through annotation")
                return "upgrade", lambda: self.upgrade(req)
            self._remediated_to_released(req)
            return None
        if status is st.Status.LOCKED:
            self.logger.info(f"release locked{reason}")
            return "unlock", lambda: self.unlock(req, release)
        if status is st.Status.ABSENT:
            self.logger.info(f"release not installed{reason}")
            if not force:
                self._unless_exhausted(req, "install", "cannot install release")
            return "install", lambda: self.install(req)
        if status is st.Status.UNMANAGED:
            self.logger.info(f"release not managed by controller{reason}")
            req.history = []
            req.save_history()
            return "upgrade", lambda: self.upgrade(req)
        if status is st.Status.OUT_OF_SYNC:
            self.logger.info(f"release out-of-sync with desired state{reason}")
            if not force:
                self._unless_exhausted(req, "upgrade", "cannot upgrade release")
            return "upgrade", lambda: self.upgrade(req)
        if status is st.Status.DRIFTED:
            self.logger.info(f"detected changes in cluster state{reason}")
            latest = req.history[0] if req.history else None
            name = req.target.full_name(latest.version) if latest else req.target.name
            await self.event("Warning", DRIFT_DETECTED,
                             f"Cluster state of release {name} has drifted from the "
                             f"desired state:\n{state.reason}", req.event_metadata())
            req.patcher.mark_true(DRIFTED, DRIFT_DETECTED,
                                  f"Cluster state of release {name} has drifted from the "
                                  "desired state")
            mode = spec.drift_detection.mode if spec.drift_detection else None
            if mode == "enabled" and self.correct_drift is not None:
                correct = self.correct_drift
                return "correct-drift", lambda: correct(req, release)
            summarize(req.patcher, spec)
            return None
        if status is st.Status.UNTESTED:
            self.logger.info(f"release has not been tested{reason}")
            self._remediated_to_released(req)
            return "test", lambda: self.test(req)
        if status is st.Status.FAILED:
            self.logger.info(f"release is in a failed state{reason}")
            remediation = req.remediation()
            if remediation is None:
                return "upgrade", lambda: self.upgrade(req)
            if remediation.failure_count(req.status) <= 0:
                self.logger.info("release conditions have changed since last failure")
                return "upgrade", lambda: self.upgrade(req)
            if force:
                return "upgrade", lambda: self.upgrade(req)
            if remediation.retries_exhausted(req.status) and \
                    not remediation.remediate_last_failure:
                self._retries_exceeded(req, remediation.action, remediation,
                                       "cannot remediate failed release")
            req.history = retain(req.history, ignore_tests=remediation.ignore_test_failures)
            req.save_history()
            if remediation.strategy == "rollback":
                prev = st.previous(req.history,
                                   ignore_test_failures=remediation.ignore_test_failures)
                target = await self._rollback_target(req, prev)
                if target is None:
                    return "upgrade", lambda: self.upgrade(req)
                return "rollback", lambda: self.rollback(req, target)
            return "uninstall-remediation", lambda: self.uninstall_remediation(req)
        raise ReconcileError(f"unknown release status: {status.value}",
                             reason=RECONCILE_ERROR)

    def _unless_exhausted(self, req: ReleaseRequest, action: str, why: str) -> None:
        """Stalls when ``action``'s remediation retries are exhausted."""
        remediation = st.remediation_for(req.spec, action)
        if remediation is not None and remediation.retries_exhausted(req.status):
            self._retries_exceeded(req, action, remediation, why)

    def _retries_exceeded(self, req: ReleaseRequest, action: str,
                          remediation: st.Remediation, why: str) -> None:
        count = remediation.failure_count(req.status)
        message = f"Failed to {req.patcher.get_field('lastAttemptedReleaseAction') or action}" \
                  f" after {count} attempt(s)"
        req.patcher.mark_stalled(RETRIES_EXCEEDED, message)
        req.patcher.delete_condition(cond.RECONCILING)
        summarize(req.patcher, req.spec)
        raise StallingError(f"no retries remain: {why}",
                            reason=cond.reason_of(req.patcher.conditions, cond.READY)
                            or RETRIES_EXCEEDED)

    async def _rollback_target(self, req: ReleaseRequest, prev: Snapshot | None
                               ) -> Snapshot | None:
        """The previous release, verified in storage; None when it changed (Flux then
        upgrades); a missing one stalls (``MissingRollbackTarget``)."""
        message = "no retries remain: cannot remediate failed release"
        if prev is None:
            req.patcher.mark_stalled(MISSING_ROLLBACK_TARGET,
                                     f"Failed to perform remediation: {message}")
            raise StallingError(message, reason=MISSING_ROLLBACK_TARGET)
        stored = {r.version: r for r in await self.storage.history(
            req.target.storage_namespace, prev.name)}
        found = stored.get(prev.version)
        if found is None:
            req.patcher.mark_stalled(MISSING_ROLLBACK_TARGET,
                                     f"Failed to perform remediation: {message}")
            raise StallingError(message, reason=MISSING_ROLLBACK_TARGET)
        if prev.api_version == "v2" and found.digest_for(prev.oci_digest) != prev.digest:
            self.logger.info("unable to verify previous release in storage to roll back "
                             "to: release digest verification error")
            return None
        return prev

    def force_requested(self, req: ReleaseRequest) -> bool:
        """Flux's ``ShouldHandleForceRequest``: ``forceAt`` equal to ``requestedAt`` and
        not handled yet; handling it is recorded at once."""
        annotations = (req.obj.get("metadata") or {}).get("annotations") or {}
        force = annotations.get("reconcile.fluxcd.io/forceAt")
        if not force or annotations.get(cond.RECONCILE_REQUEST_ANNOTATION) != force:
            return False
        if req.patcher.get_field("lastHandledForceAt") == force:
            return False
        req.patcher.set_field("lastHandledForceAt", force)
        return True

    def _remediated_to_released(self, req: ReleaseRequest) -> None:
        """A release already matching the wanted state after a remediation: Released
        replaces Remediated (Flux's ``replaceCondition``)."""
        if not cond.is_true(req.patcher.conditions, REMEDIATED) or not req.history:
            return
        cur = req.history[0]
        req.patcher.delete_condition(REMEDIATED)
        req.patcher.mark_true(RELEASED, UPGRADE_SUCCEEDED, _success(
            "upgrade", req.target.full_name(cur.version), _versioned(cur)))

    # --- the actions ---------------------------------------------------------------------

    async def _observe(self, req: ReleaseRequest, before: Sequence[Any],
                       action: str | None, config_digest: str,
                       oci_digest: str | None) -> list[Any]:
        """The releases the action wrote to storage, recorded on the history: the newest
        as a new snapshot, older ones (superseded, failed) updated in place."""
        known = {r.version: r.digest for r in before}
        after = await self.storage.history(req.target.storage_namespace, req.target.name)
        observed = [r for r in after if known.get(r.version) != r.digest]
        if not observed:
            return []
        observed.sort(key=lambda r: r.version, reverse=True)
        newest = observed[0]
        if newest.version not in known:
            snap = self.snapshot(newest, config_digest=config_digest,
                                 oci_digest=oci_digest, action=action)
            req.history.insert(0, snap)
            rest = observed[1:]
        else:
            rest = observed
        for rel in rest:
            for i, snap in enumerate(req.history):
                if st.targets(snap, rel.name, rel.namespace, rel.version):
                    new = self.snapshot(rel, config_digest=snap.config_digest,
                                        oci_digest=snap.oci_digest, action=snap.action)
                    if snap.test_hooks is not None and new.test_hooks is None:
                        new = new.model_copy(update={"test_hooks": snap.test_hooks})
                    req.history[i] = new
                    break
        # bounded as Flux's truncation bounds it: down to the previous successful
        # release (the rollback target), else the newest five
        remediation = req.remediation()
        req.history = retain(req.history, ignore_tests=remediation.ignore_test_failures
                             if remediation else bool(req.spec.test and
                                                       req.spec.test.ignore_failures))
        req.save_history()
        return observed

    async def _release_action(self, req: ReleaseRequest, action: str) -> None:
        """install or upgrade: Flux's ``Install``/``Upgrade`` reconcilers."""
        patcher, chart = req.patcher, req.chart
        patcher.set_field("lastAttemptedReleaseAction", action)
        # a new release: the conditions of the previous one's tests and remediation no
        # longer apply (Flux deletes them before the action)
        patcher.delete_condition(TEST_SUCCESS)
        patcher.delete_condition(REMEDIATED)
        if action == "install":
            req.history = []
            req.save_history()
        before = await self.storage.history(req.target.storage_namespace, req.target.name)
        started = self.clock.monotonic()
        run = self.actions.install if action == "install" else self.actions.upgrade
        outcome = await run(req)
        patcher.set_field("lastAttemptedReleaseActionDuration",
                          _go_duration(self.clock.monotonic() - started))
        observed = await self._observe(
            req, before, action, req.config_digest,
            patcher.get_field("lastAttemptedRevisionDigest") or None)
        title = action.capitalize()
        failed_reason = INSTALL_FAILED if action == "install" else UPGRADE_FAILED
        if not outcome.ok:
            message = (f"Helm {action} failed for release {req.target.namespace}/"
                       f"{req.target.name} with chart {chart.name}@{chart.version}: "
                       f"{outcome.error.strip()}")
            req.count("failures")
            patcher.mark_false(RELEASED, failed_reason, message)
            await self.event("Warning", failed_reason, _with_log(message, outcome.output),
                             req.event_metadata())
            summarize(patcher, req.spec)
            if not observed:
                interval = retry_interval(req.spec, action)
                if interval is not None:
                    raise RetryError(message, reason=failed_reason, requeue_after=interval)
                raise ActionFailed(message, reason=failed_reason)
            req.count(f"{action}Failures")
            interval = retry_interval(req.spec, action)
            if interval is not None:
                patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON, message)
                raise RetryError(message, reason=failed_reason, requeue_after=interval)
            return
        cur = req.history[0] if req.history else None
        full = req.target.full_name(cur.version) if cur else req.target.name
        versioned = _versioned(cur) if cur else f"{chart.name}@{chart.version}"
        message = _success(action, full, versioned)
        patcher.mark_true(RELEASED, INSTALL_SUCCEEDED if action == "install"
                          else UPGRADE_SUCCEEDED, message)
        if req.spec.test and req.spec.test.enable and cur is not None and \
                not st.has_been_tested(cur):
            patcher.mark_unknown(TEST_SUCCESS, AWAITING_TESTS,
                                 f"Release {full} with chart {versioned} has not been "
                                 "tested yet")
        if retry_interval(req.spec, action) is not None:
            # with RetryOnFailure, failures count only while the release is failed
            for name in ("failures", "installFailures", "upgradeFailures"):
                patcher.delete_field(name)
        await self.event("Normal", f"{title}Succeeded", message, req.event_metadata())
        summarize(patcher, req.spec)

    async def install(self, req: ReleaseRequest) -> None:
        await self._release_action(req, "install")

    async def upgrade(self, req: ReleaseRequest) -> None:
        await self._release_action(req, "upgrade")

    async def test(self, req: ReleaseRequest) -> None:
        """Flux's ``Test``: the hooks' results on the latest snapshot and TestSuccess."""
        patcher = req.patcher
        cur = req.history[0] if req.history else None
        if cur is None:
            raise ReconcileError("no latest release", reason=TEST_FAILED)
        outcome = await self.actions.test(req)
        after = {r.version: r for r in await self.storage.history(
            req.target.storage_namespace, req.target.name)}
        tested = after.get(cur.version)
        full, versioned = req.target.full_name(cur.version), _versioned(cur)
        if tested is not None:
            req.history[0] = self.snapshot(tested, config_digest=cur.config_digest,
                                           oci_digest=cur.oci_digest, action=cur.action,
                                           with_test_hooks=True)
            req.save_history()
        if not outcome.ok:
            message = f"Helm test failed for release {full} with chart {versioned}: " \
                      f"{outcome.error.strip()}"
            patcher.mark_false(TEST_SUCCESS, TEST_FAILED, message)
            req.count("failures")
            remediation = req.remediation()
            if remediation is not None and not remediation.ignore_test_failures:
                req.count(remediation.counter())
            await self.event("Warning", TEST_FAILED, _with_log(message, outcome.output),
                             req.event_metadata())
            summarize(patcher, req.spec)
            if tested is None or not st.has_been_tested(req.history[0]):
                raise ActionFailed(message, reason=TEST_FAILED)
            return
        hooks = len(req.history[0].test_hooks or {})
        detail = "no test hooks" if hooks == 0 else \
            f"{hooks} test hook{'s' if hooks > 1 else ''} completed successfully"
        message = f"Helm test succeeded for release {full} with chart {versioned}: {detail}"
        patcher.mark_true(TEST_SUCCESS, TEST_SUCCEEDED, message)
        await self.event("Normal", TEST_SUCCEEDED, message, req.event_metadata())
        summarize(patcher, req.spec)

    async def rollback(self, req: ReleaseRequest, prev: Snapshot) -> None:
        """Flux's ``RollbackRemediation``: back to the previous successful release."""
        patcher = req.patcher
        before = await self.storage.history(req.target.storage_namespace, req.target.name)
        outcome = await self.actions.rollback(req, prev.version)
        observed = await self._observe(req, before, prev.action, prev.config_digest,
                                       prev.oci_digest)
        full, versioned = req.target.full_name(prev.version), _versioned(prev)
        if not outcome.ok:
            message = f"Helm rollback to previous release {full} with chart {versioned} " \
                      f"failed: {outcome.error.strip()}"
            patcher.mark_false(REMEDIATED, ROLLBACK_FAILED, message)
            req.count("failures")
            await self.event("Warning", ROLLBACK_FAILED, _with_log(message, outcome.output),
                             req.event_metadata())
            summarize(patcher, req.spec)
            if not observed:
                raise ActionFailed(message, reason=ROLLBACK_FAILED)
            return
        message = f"Helm rollback to previous release {full} with chart {versioned} " \
                  "succeeded"
        patcher.mark_true(REMEDIATED, ROLLBACK_SUCCEEDED, message)
        await self.event("Normal", ROLLBACK_SUCCEEDED, message, req.event_metadata())
        summarize(patcher, req.spec)

    async def uninstall_remediation(self, req: ReleaseRequest) -> None:
        """Flux's ``UninstallRemediation``: the failed release uninstalled."""
        patcher = req.patcher
        cur = req.history[0] if req.history else None
        outcome = await self.actions.uninstall(req, req.target)
        full = req.target.full_name(cur.version) if cur else req.target.name
        versioned = _versioned(cur) if cur else f"{req.chart.name}@{req.chart.version}"
        if not outcome.ok:
            message = f"Helm uninstall remediation for release {full} with chart " \
                      f"{versioned} failed: {outcome.error.strip()}"
            patcher.mark_false(REMEDIATED, UNINSTALL_FAILED, message)
            req.count("failures")
            await self.event("Warning", UNINSTALL_FAILED, _with_log(message, outcome.output),
                             req.event_metadata())
            summarize(patcher, req.spec)
            raise ActionFailed(message, reason=UNINSTALL_FAILED)
        if cur is not None:
            req.history[0] = cur.model_copy(update={"status": "uninstalled",
                                                    "deleted": self.clock.now()})
            req.save_history()
        message = f"Helm uninstall remediation for release {full} with chart {versioned} " \
                  "succeeded"
        patcher.mark_true(REMEDIATED, UNINSTALL_SUCCEEDED, message)
        await self.event("Normal", UNINSTALL_SUCCEEDED, message, req.event_metadata())
        summarize(patcher, req.spec)

    async def unlock(self, req: ReleaseRequest, release: Any) -> None:
        """Flux's ``Unlock``: a release left ``pending-*`` (an action that never
        finished) is marked failed in Helm's storage, so it can be remediated."""
        patcher = req.patcher
        status = release.status
        versioned = f"{release.chart_name}@{release.chart_version}"
        full = req.target.full_name(release.version)
        try:
            await self.actions.unlock(req, release)
        except Exception as exc:
            message = f"Unlock of Helm release {full} with chart {versioned} failed: {exc}"
            patcher.mark_false(RELEASED, PENDING_RELEASE, message)
            await self.event("Warning", PENDING_RELEASE, message, req.event_metadata())
            raise ReconcileError(message, reason=PENDING_RELEASE) from exc
        after = await self.storage.latest(req.target.storage_namespace, req.target.name)
        # only a release the history records is updated (Flux's observeUnlock); one it
        # never saw stays unmanaged, and is upgraded next
        if after is not None and req.history and st.targets(
                req.history[0], after.name, after.namespace, after.version):
            cur = req.history[0]
            req.history[0] = self.snapshot(after, config_digest=cur.config_digest,
                                           oci_digest=cur.oci_digest, action=cur.action
                                           ).model_copy(update={"test_hooks": cur.test_hooks})
            req.save_history()
        message = f"Unlocked Helm release {full} with chart {versioned} in {status} state"
        patcher.mark_false(RELEASED, PENDING_RELEASE, message)
        await self.event("Normal", PENDING_RELEASE, message, req.event_metadata())
        summarize(patcher, req.spec)


def _timeout_key(kind: str) -> str:
    return {"rollback": "rollback", "uninstall-remediation": "uninstall",
            "test": "test", "install": "install", "upgrade": "upgrade"}.get(kind, "")


def _versioned(snap: Snapshot) -> str:
    return f"{snap.chart_name}@{snap.chart_version}"


def _success(action: str, full: str, versioned: str) -> str:
    return f"Helm {action} succeeded for release {full} with chart {versioned}"


def _with_log(message: str, output: str) -> str:
    """Flux's ``eventMessageWithLog``: the last lines helm wrote after the message."""
    tail = "\n".join(output.strip().splitlines()[-10:])
    return f"{message}\n\nLast Helm logs:\n\n{tail}" if tail else message


def _go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it (``1.234s``)."""
    if seconds < 1:
        return f"{seconds * 1000:.3f}".rstrip("0").rstrip(".") + "ms"
    minutes, secs = divmod(seconds, 60)
    if minutes < 1:
        return f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    hours, minutes = divmod(int(minutes), 60)
    text = f"{minutes}m{secs:.9f}".rstrip("0").rstrip(".") + "s"
    return f"{hours}h{text}" if hours else text


__all__ = ["AtomicRelease", "MustRequeue", "ReleaseRequest", "action_timeout",
           "summarize"]
