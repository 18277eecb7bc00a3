"""fluxd.runtime.conditions: setting, ordering, the end-of-reconcile summary, observed
generation, reconcile requests and the owned-conditions status patch."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fluxd.runtime import conditions as c

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
T0_TEXT = "2026-01-01T00:00:00Z"
T1_TEXT = "2026-01-01T00:05:00Z"

# A source-controller-like Ready: the GitRepository lists, in priority order.
OWNED = ["StorageOperationFailed", "FetchFailed", "ArtifactOutdated", "ArtifactInStorage",
         "SourceVerified", "Ready", "Reconciling", "Stalled"]
NEGATIVE = ["StorageOperationFailed", "FetchFailed", "ArtifactOutdated"]


def cond(type_: str, status: str = "True", reason: str = "Succeeded", message: str = "",
         when: str = T0_TEXT, generation: int = 1) -> dict[str, Any]:
    return {"type": type_, "status": status, "observedGeneration": generation,
            "lastTransitionTime": when, "reason": reason, "message": message}


def types(conds: list[dict[str, Any]]) -> list[str]:
    return [x["type"] for x in conds]


# --------------------------------------------------------------------------- setting


def test_a_new_condition_is_stamped_with_now_and_the_generation() -> None:
    out = c.mark_true([], "Ready", "Succeeded", "done", generation=3, now=T0)
    assert out == [{"type": "Ready", "status": "True", "observedGeneration": 3,
                    "lastTransitionTime": T0_TEXT, "reason": "Succeeded", "message": "done"}]


def test_same_state_keeps_the_transition_time_but_takes_the_new_generation() -> None:
    before = [cond("Ready", generation=1)]
    out = c.mark_true(before, "Ready", "Succeeded", "", generation=2, now=T1)
    assert out[0]["lastTransitionTime"] == T0_TEXT
    assert out[0]["observedGeneration"] == 2


def test_a_status_change_moves_the_transition_time() -> None:
    out = c.mark_false([cond("Ready")], "Ready", "Failed", "boom", generation=1, now=T1)
    assert out[0]["lastTransitionTime"] == T1_TEXT
    assert (out[0]["status"], out[0]["reason"], out[0]["message"]) == ("False", "Failed", "boom")


def test_a_reason_or_message_change_moves_the_transition_time_as_in_flux() -> None:
    by_reason = c.mark_true([cond("Ready")], "Ready", "Other", "", generation=1, now=T1)
    by_message = c.mark_true([cond("Ready")], "Ready", "Succeeded", "new", generation=1, now=T1)
    assert by_reason[0]["lastTransitionTime"] == T1_TEXT
    assert by_message[0]["lastTransitionTime"] == T1_TEXT


def test_setting_never_mutates_the_input() -> None:
    before = [cond("Ready")]
    snapshot = [dict(x) for x in before]
    c.mark_false(before, "Ready", "Failed", "x", generation=2, now=T1)
    c.delete(before, "Ready")
    assert before == snapshot


def test_conditions_are_ordered_stalled_reconciling_ready_then_by_type() -> None:
    out: list[dict[str, Any]] = []
    for type_ in ["Healthy", "Ready", "ArtifactInStorage", "Reconciling", "Stalled"]:
        out = c.mark_true(out, type_, "R", "", generation=1, now=T0)
    assert types(out) == ["Stalled", "Reconciling", "Ready", "ArtifactInStorage", "Healthy"]


@given(st.lists(st.sampled_from(["Ready", "Reconciling", "Stalled", "Healthy", "FetchFailed",
                                 "ArtifactInStorage", "Zeta"]), max_size=12),
       st.sampled_from(["True", "False", "Unknown"]))
def test_any_sequence_of_sets_stays_sorted_with_one_entry_per_type(
        sequence: list[str], status: str) -> None:
    out: list[dict[str, Any]] = []
    for type_ in sequence:
        out = c.set_condition(out, c.condition(type_, status, "R", "m", generation=1), T0)
    assert types(out) == sorted(set(sequence), key=lambda t: c.sort_key({"type": t}))


def test_a_set_condition_has_its_keys_in_kubernetes_order() -> None:
    out = c.set_condition([], {"message": "m", "reason": "R", "status": "True",
                               "type": "Ready"}, T0)
    assert list(out[0]) == ["type", "status", "lastTransitionTime", "reason", "message"]


def test_readers_treat_an_absent_condition_as_unknown() -> None:
    conds = [cond("Ready", "False", "Failed", "no")]
    assert c.is_false(conds, "Ready") and not c.is_true(conds, "Ready")
    assert c.is_unknown(conds, "Healthy") and not c.has(conds, "Healthy")
    assert c.reason_of(conds, "Ready") == "Failed" and c.message_of(conds, "Ready") == "no"
    assert c.reason_of(conds, "Healthy") == "" and c.get(None, "Ready") is None


def test_reconciling_and_stalled_replace_each_other() -> None:
    stalled = c.mark_stalled([], "URLInvalid", "bad url", generation=1, now=T0)
    reconciling = c.mark_reconciling(stalled, "Progressing", "go", generation=2, now=T1)
    assert types(reconciling) == ["Reconciling"]
    assert types(c.mark_stalled(reconciling, "X", "y", generation=2, now=T1)) == ["Stalled"]


def test_progressive_status_sets_ready_unknown_only_when_ready_is_not_known() -> None:
    fresh = c.progressive_status([], "Progressing", "building", generation=1, now=T0)
    assert c.is_unknown(fresh, "Ready") and c.reason_of(fresh, "Ready") == "Progressing"
    ready = [cond("Ready")]
    kept = c.progressive_status(ready, "Progressing", "building", generation=2, now=T1)
    assert c.is_true(kept, "Ready") and c.is_reconciling(kept)
    drifted = c.progressive_status(ready, "Progressing", "drift", generation=2, now=T1,
                                   drift=True)
    assert c.is_unknown(drifted, "Ready") and c.message_of(drifted, "Ready") == "drift"


# --------------------------------------------------------------------------- summary


def summarize(conds: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("owned", OWNED)
    kw.setdefault("negative_polarity", NEGATIVE)
    return c.summarize(conds, generation=2, now=T1, **kw)


def test_success_with_an_artifact_in_storage_is_ready_with_its_message() -> None:
    conds = [cond("Reconciling", reason="Progressing", message="building"),
             cond("ArtifactInStorage", message="stored artifact for revision 'main@sha1:1'")]
    out = summarize(conds)
    ready = c.get(out, "Ready")
    assert ready is not None and ready["status"] == "True"
    assert ready["message"] == "stored artifact for revision 'main@sha1:1'"
    assert ready["observedGeneration"] == 2
    assert not c.has(out, "Reconciling") and c.is_ready(out)


def test_a_negative_polarity_failure_makes_ready_false_with_its_reason() -> None:
    conds = [cond("Reconciling", reason="Progressing", message="building"),
             cond("FetchFailed", reason="AuthenticationFailed", message="401"),
             cond("ArtifactInStorage")]
    out = summarize(conds, outcome=c.Outcome.FAILED, reason="AuthenticationFailed",
                    message="401")
    assert (c.reason_of(out, "Ready"), c.message_of(out, "Ready")) == (
        "AuthenticationFailed", "401")
    assert c.is_false(out, "Ready")


def test_a_failed_retry_marks_reconciling_progressing_with_retry() -> None:
    conds = [cond("Reconciling", reason="Progressing", message="building")]
    out = summarize(conds, outcome=c.Outcome.FAILED, message="boom")
    assert c.reason_of(out, "Reconciling") == "ProgressingWithRetry"
    assert c.message_of(out, "Reconciling") == "building"
    # Reconciling is abnormal-true and the only condition in scope, so it decides Ready.
    assert c.is_false(out, "Ready") and c.reason_of(out, "Ready") == "ProgressingWithRetry"


def test_stalled_makes_ready_false_with_the_stalled_reason() -> None:
    conds = [cond("Reconciling", reason="Progressing"), cond("Ready")]
    out = summarize(conds, outcome=c.Outcome.STALLED, reason="URLInvalid",
                    message="scp-like URLs are not supported")
    assert types(out) == ["Stalled", "Ready"]
    assert c.is_false(out, "Ready")
    assert (c.reason_of(out, "Ready"), c.message_of(out, "Ready")) == (
        "URLInvalid", "scp-like URLs are not supported")
    assert c.is_stalled(out)


def test_stalled_without_owned_conditions_still_sets_ready_false() -> None:
    out = summarize([], owned=(), outcome=c.Outcome.STALLED, reason="AccessDenied",
                    message="denied")
    assert c.is_false(out, "Ready") and c.reason_of(out, "Ready") == "AccessDenied"


def test_a_failure_without_owned_conditions_uses_the_error() -> None:
    out = summarize([cond("Ready")], owned=(), outcome=c.Outcome.FAILED, message="apply failed")
    assert (c.get(out, "Ready") or {})["status"] == "False"
    assert (c.reason_of(out, "Ready"), c.message_of(out, "Ready")) == ("Failed", "apply failed")


def test_a_step_set_ready_false_is_kept_on_failure() -> None:
    conds = [cond("Ready", "False", "HealthCheckFailed", "not healthy")]
    out = summarize(conds, owned=(), outcome=c.Outcome.FAILED, message="other")
    assert c.reason_of(out, "Ready") == "HealthCheckFailed"


def test_waiting_makes_ready_false_dependency_not_ready_and_clears_stalled() -> None:
    conds = [cond("Stalled", reason="Old")]
    out = summarize(conds, owned=(), outcome=c.Outcome.WAITING,
                    message="dependency 'flux-system/infra' is not ready")
    assert not c.has(out, "Stalled")
    assert c.reason_of(out, "Ready") == "DependencyNotReady"


def test_success_removes_stalled_and_reconciling() -> None:
    conds = [cond("Stalled"), cond("Reconciling")]
    out = summarize(conds, owned=(), ready_message="Applied revision: main@sha1:1")
    assert types(out) == ["Ready"]
    assert c.is_true(out, "Ready") and c.reason_of(out, "Ready") == "Succeeded"
    assert c.message_of(out, "Ready") == "Applied revision: main@sha1:1"


def test_a_false_bipolarity_condition_overrides_ready() -> None:
    conds = [cond("ArtifactInStorage"),
             cond("SourceVerified", "False", "VerificationError", "bad signature")]
    out = summarize(conds, bipolarity=["SourceVerified"])
    assert c.is_false(out, "Ready") and c.reason_of(out, "Ready") == "VerificationError"


def test_priority_order_picks_the_reason_among_equal_failures() -> None:
    conds = [cond("FetchFailed", reason="GitOperationFailed"),
             cond("StorageOperationFailed", reason="ArchiveOperationFailed")]
    out = summarize(conds, outcome=c.Outcome.FAILED)
    assert c.reason_of(out, "Ready") == "ArchiveOperationFailed"


def test_summary_of_nothing_in_scope_is_none() -> None:
    assert c.summary([cond("Other")], target="Ready", scope=["A"],
                     negative_polarity=()) is None


def test_summary_inverts_a_normal_false_for_a_negative_target() -> None:
    out = c.summary([cond("Healthy", "False", "HealthCheckFailed")], target="Degraded",
                    scope=["Healthy"], negative_polarity=["Degraded"])
    assert out is not None and out["status"] == "True"


def test_summary_keeps_the_ready_transition_time_when_ready_stays_the_same() -> None:
    conds = [cond("Ready", message="stored"), cond("ArtifactInStorage", message="stored")]
    out = summarize(conds)
    assert (c.get(out, "Ready") or {})["lastTransitionTime"] == T0_TEXT


# --------------------------------------------------------------------------- observed generation


def test_observed_generation_moves_when_ready() -> None:
    assert c.observed_generation([cond("Ready")], generation=4, current=3) == 4


def test_observed_generation_moves_when_stalled() -> None:
    conds = [cond("Stalled", reason="URLInvalid"), cond("Ready", "False", "URLInvalid")]
    assert c.observed_generation(conds, generation=4, current=3) == 4


def test_observed_generation_stays_while_failing_or_reconciling() -> None:
    failing = [cond("Ready", "False", "Failed")]
    reconciling = [cond("Reconciling", reason="Progressing"), cond("Ready")]
    assert c.observed_generation(failing, generation=4, current=3) == 3
    assert c.observed_generation(reconciling, generation=4, current=-1) == -1


# --------------------------------------------------------------------------- requests


def obj(annotation: str | None = None, handled: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if annotation is not None:
        meta["annotations"] = {"reconcile.fluxcd.io/requestedAt": annotation}
    status = {} if handled is None else {"lastHandledReconcileAt": handled}
    return {"metadata": meta, "status": status}


def test_a_request_annotation_is_pending_until_handled() -> None:
    assert c.reconcile_requested(obj("2026-01-01T00:00:00.1Z")) == "2026-01-01T00:00:00.1Z"
    assert c.request_pending(obj("a"))
    assert not c.request_pending(obj("a", handled="a"))
    assert c.request_pending(obj("b", handled="a"))


def test_no_annotation_means_no_request() -> None:
    assert c.reconcile_requested(obj()) is None and c.reconcile_requested({}) is None
    assert not c.request_pending(obj(handled="a"))
    assert c.handled(obj(handled="a")) == "a" and c.handled({}) is None


# --------------------------------------------------------------------------- status patch


def test_status_patch_keeps_conditions_the_controller_does_not_own() -> None:
    server = {"observedGeneration": 1,
              "conditions": [cond("Ready", "False", "Failed"), cond("example.com/Audited")]}
    mine = {"observedGeneration": 2, "conditions": [cond("Ready", when=T1_TEXT)]}
    patch = c.status_patch(server, mine, owned_types={"Ready", "Reconciling", "Stalled"})
    assert patch["observedGeneration"] == 2
    assert types(patch["conditions"]) == ["Ready", "example.com/Audited"]
    assert patch["conditions"][0]["status"] == "True"


def test_status_patch_removes_an_owned_condition_the_controller_dropped() -> None:
    server = {"conditions": [cond("Reconciling"), cond("Ready")]}
    mine = {"conditions": [cond("Ready")]}
    patch = c.status_patch(server, mine, owned_types={"Ready", "Reconciling"})
    assert patch == {"conditions": [cond("Ready")]}


def test_status_patch_keeps_the_servers_transition_time_for_an_unchanged_state() -> None:
    server = {"conditions": [cond("Ready", when=T0_TEXT)]}
    mine = {"conditions": [cond("Ready", when=T1_TEXT)]}
    assert c.status_patch(server, mine, owned_types={"Ready"}) == {}


def test_status_patch_is_a_merge_patch_for_other_fields() -> None:
    server = {"artifact": {"revision": "a", "digest": "sha256:1"}, "lastHandledReconcileAt": "x"}
    mine = {"artifact": {"revision": "b", "digest": "sha256:1"}}
    assert c.status_patch(server, mine, owned_types=()) == {
        "artifact": {"revision": "b"}, "lastHandledReconcileAt": None}


def test_status_patch_ignores_changes_to_foreign_conditions() -> None:
    server = {"conditions": [cond("Other")]}
    mine: dict[str, Any] = {"conditions": []}
    assert c.status_patch(server, mine, owned_types={"Ready"}) == {}
    assert c.status_patch(None, {"conditions": [cond("Ready")]}, owned_types={"Ready"}) == {
        "conditions": [cond("Ready")]}
