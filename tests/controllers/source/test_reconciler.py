"""The source kinds' shared part: each kind's condition order, as Flux summarises Ready."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fluxd.controllers.source.gitrepository import GitRepositoryReconciler
from fluxd.controllers.source.helmchart import HelmChartReconciler
from fluxd.controllers.source.helmrepository import HelmRepositoryReconciler
from fluxd.controllers.source.ocirepository import OCIRepositoryReconciler
from fluxd.controllers.source.reconciler import SourceReconciler
from fluxd.runtime import conditions as cond

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = [GitRepositoryReconciler, HelmRepositoryReconciler, HelmChartReconciler,
         OCIRepositoryReconciler]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_a_failed_retry_gives_ready_the_failing_condition_not_progressing_with_retry(
        kind: type[SourceReconciler[Any, Any]]) -> None:
    # a first reconcile that failed to fetch: still "building artifact", now retrying
    before = [cond.condition("Reconciling", "True", "Progressing", "building artifact"),
              cond.condition("FetchFailed", "True", "AuthenticationFailed",
                             "failed to get secret 'ns/creds'")]
    after = cond.summarize(before, generation=1, now=NOW, owned=kind.OWNED,
                           negative_polarity=kind.NEGATIVE, outcome=cond.Outcome.FAILED,
                           reason="AuthenticationFailed",
                           message="failed to get secret 'ns/creds'")
    assert (cond.reason_of(after, "Reconciling"), cond.reason_of(after, "Ready"),
            cond.message_of(after, "Ready")) == (
        "ProgressingWithRetry", "AuthenticationFailed", "failed to get secret 'ns/creds'")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_a_stall_gives_ready_the_failing_condition_before_stalled(
        kind: type[SourceReconciler[Any, Any]]) -> None:
    before = [cond.condition("FetchFailed", "True", "URLInvalid", "invalid URL"),
              cond.condition("ArtifactInStorage", "True", "Succeeded", "stored")]
    after = cond.summarize(before, generation=1, now=NOW, owned=kind.OWNED,
                           negative_polarity=kind.NEGATIVE, outcome=cond.Outcome.STALLED,
                           reason="StalledForAnotherReason", message="stalled")
    assert (cond.reason_of(after, "Ready"), cond.reason_of(after, "Stalled")) == (
        "URLInvalid", "StalledForAnotherReason")
    assert not cond.has(after, "Reconciling")
