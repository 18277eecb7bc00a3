"""The state of a HelmRelease's release, decided in-process (Flux's
``DetermineReleaseState``), and the remediation that applies to it.

The release Helm stores last is compared with the object's ``status.history`` and the
desired chart and values — no helm process is started to find a release in sync:

| state       | when                                                                     |
|-------------|--------------------------------------------------------------------------|
| Absent      | nothing in storage, or the release was uninstalled                        |
| Locked      | the last release is ``pending-*`` (an action did not finish)              |
| Unmanaged   | no history, or the history's latest is not this release (another version, |
|             | another digest: changed by hand)                                         |
| Failed      | the last release failed, or its tests failed and are not ignored          |
| OutOfSync   | deployed, but with another chart, version, values, post-renderers or      |
|             | common metadata                                                           |
| Untested    | deployed and in sync, tests enabled and not run for it                    |
| Drifted     | the cluster's objects differ from the release's (drift detection on)      |
| InSync      | nothing to do                                                            |
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fluxd.api.helm import HelmReleaseSpec, Snapshot

# Flux's verification errors (helm-controller ``internal/action/verify.go``)
RELEASE_NOT_OBSERVED = "release not observed to be made for object"
RELEASE_DIGEST = "release digest verification error"
CHART_CHANGED = "release chart changed"
CONFIG_CHANGED = "release config values changed"


class Status(enum.Enum):
    UNKNOWN = "Unknown"
    ABSENT = "Absent"
    UNMANAGED = "Unmanaged"
    OUT_OF_SYNC = "OutOfSync"
    DRIFTED = "Drifted"
    LOCKED = "Locked"
    UNTESTED = "Untested"
    IN_SYNC = "InSync"
    FAILED = "Failed"


@dataclass(frozen=True)
class ReleaseState:
    status: Status
    reason: str = ""


class StateError(Exception):
    """The state could not be decided (a release status Helm should not leave)."""


@dataclass(frozen=True)
class Remediation:
    """The remediation of the last release action (Flux's ``GetActiveRemediation``):
    how often a failed install/upgrade is retried and what undoes it."""

    action: Literal["install", "upgrade"]
    retries: int
    strategy: Literal["rollback", "uninstall"]
    ignore_test_failures: bool
    remediate_last_failure: bool

    def failure_count(self, status: dict[str, Any]) -> int:
        field = "installFailures" if self.action == "install" else "upgradeFailures"
        return int(status.get(field) or 0)

    def retries_exhausted(self, status: dict[str, Any]) -> bool:
        """A negative ``retries`` retries for ever."""
        return self.retries >= 0 and self.failure_count(status) > self.retries

    def counter(self) -> str:
        return "installFailures" if self.action == "install" else "upgradeFailures"


def remediation_for(spec: HelmReleaseSpec, action: str | None) -> Remediation | None:
    """The remediation of ``action`` (``status.lastAttemptedReleaseAction``); None when
    no release action was attempted yet, or the action's strategy is
    ``RetryOnFailure`` (retried at ``retryInterval``, never remediated)."""
    test_ignore = bool(spec.test and spec.test.ignore_failures)
    if action == "install":
        install = spec.install
        if install and install.strategy and install.strategy.name == "RetryOnFailure":
            return None
        rem = install.remediation if install else None
        return Remediation(
            action="install", retries=rem.retries or 0 if rem else 0, strategy="uninstall",
            ignore_test_failures=rem.ignore_test_failures
            if rem and rem.ignore_test_failures is not None else test_ignore,
            remediate_last_failure=bool(rem and rem.remediate_last_failure))
    if action == "upgrade":
        upgrade = spec.upgrade
        if upgrade and upgrade.strategy and upgrade.strategy.name == "RetryOnFailure":
            return None
        urem = upgrade.remediation if upgrade else None
        retries = (urem.retries or 0) if urem else 0
        return Remediation(
            action="upgrade", retries=retries,
            strategy=(urem.strategy or "rollback") if urem else "rollback",
            ignore_test_failures=urem.ignore_test_failures
            if urem and urem.ignore_test_failures is not None else test_ignore,
            remediate_last_failure=urem.remediate_last_failure
            if urem and urem.remediate_last_failure is not None else retries > 0)
    return None


def targets(snapshot: Snapshot, name: str, namespace: str, version: int) -> bool:
    return (snapshot.name, snapshot.namespace, snapshot.version) == (name, namespace, version)


def has_been_tested(snapshot: Snapshot) -> bool:
    return snapshot.test_hooks is not None


def has_test_in_phase(snapshot: Snapshot, phase: str) -> bool:
    return any(h.phase == phase for h in (snapshot.test_hooks or {}).values())


def determine(*, release: Any, history: Sequence[Snapshot], spec: HelmReleaseSpec,
              chart_name: str, chart_version: str, config_digest: str,
              remediation: Remediation | None,
              post_render_changed: str = "") -> ReleaseState:
    """The state of ``release`` (``storage.Release`` or None: the last one in storage)
    for the object with ``history`` and the desired chart and values.
    ``post_render_changed`` names a post-render setting changed since the last success
    (the release is then out of sync). Drift is decided by the caller afterwards."""
    if release is None:
        return ReleaseState(Status.ABSENT, "no release in storage for object")
    if release.pending:
        return ReleaseState(Status.LOCKED, f"release with status '{release.status}'")
    if not history:
        if release.status == "uninstalled":
            return ReleaseState(Status.ABSENT, "found uninstalled release in storage")
        return ReleaseState(Status.UNMANAGED, "found existing release in storage")
    current = history[0]
    if not targets(current, release.name, release.namespace, release.version):
        return ReleaseState(Status.UNMANAGED, RELEASE_NOT_OBSERVED)
    # snapshots older than Helm 4's digests (apiVersion v2) are not verified (Flux)
    if current.api_version == "v2" and \
            release.digest_for(current.oci_digest) != current.digest:
        return ReleaseState(Status.UNMANAGED, RELEASE_DIGEST)
    if release.status == "failed":
        return ReleaseState(Status.FAILED)
    if release.status == "uninstalled":
        return ReleaseState(Status.ABSENT, "found uninstalled release in storage")
    if release.status != "deployed":
        raise StateError(f"unable to determine state for release with status "
                         f"'{release.status}'")
    if (release.chart_name, release.chart_version) != (chart_name, chart_version):
        return ReleaseState(Status.OUT_OF_SYNC, CHART_CHANGED)
    if current.config_digest != config_digest:
        return ReleaseState(Status.OUT_OF_SYNC, CONFIG_CHANGED)
    if post_render_changed:
        return ReleaseState(Status.OUT_OF_SYNC, post_render_changed)
    test = spec.test
    if test is not None and test.enable:
        if not has_been_tested(current):
            return ReleaseState(Status.UNTESTED)
        ignore = remediation.ignore_test_failures if remediation is not None \
            else bool(test.ignore_failures)
        if remediation is not None and not ignore and has_test_in_phase(current, "Failed"):
            return ReleaseState(Status.FAILED, "release has test in failed phase")
    return ReleaseState(Status.IN_SYNC)


def previous(history: Sequence[Snapshot], *, ignore_test_failures: bool) -> Snapshot | None:
    """Flux's ``Snapshots.Previous``: the release to roll back to."""
    for snap in history[1:]:
        if snap.status in ("deployed", "superseded"):
            if not ignore_test_failures and has_test_in_phase(snap, "Failed"):
                continue
            return snap
    return None


__all__ = ["CHART_CHANGED", "CONFIG_CHANGED", "RELEASE_DIGEST", "RELEASE_NOT_OBSERVED",
           "ReleaseState", "Remediation", "StateError", "Status", "determine",
           "has_been_tested", "has_test_in_phase", "previous", "remediation_for",
           "targets"]
