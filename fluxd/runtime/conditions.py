"""Status conditions as Flux writes them, as pure functions over plain JSON.

The informer cache holds objects as dicts, so ``status.conditions`` is a list of dicts
(``type``, ``status`` "True"/"False"/"Unknown", ``observedGeneration``,
``lastTransitionTime`` RFC 3339 seconds, ``reason``, ``message``). Nothing here mutates its
input: every setter returns a new list.

The rules follow ``fluxcd/pkg`` ``runtime/conditions`` and ``runtime/reconcile``:

- **Setting** a condition stamps the object's generation on it. ``lastTransitionTime``
  moves only when the *state* changes — status, reason or message (Flux's
  ``hasSameState``; Kubernetes' own helper looks at status alone).
- **Order** is Flux's, for kubectl readers: ``Stalled``, ``Reconciling``, ``Ready``, then
  the rest by type name.
- ``Reconciling`` and ``Stalled`` are *abnormal-true*: present only while True, and never
  both (marking one deletes the other).
- ``summarize`` is the final step of every reconcile (see its docstring).
- ``observed_generation``: ``status.observedGeneration`` moves to the object's generation
  only when the object is Ready or Stalled — kstatus clients read "observed and ready" or
  "observed and stuck" from it.
- ``status_patch`` makes the JSON merge patch a retry-on-conflict patcher sends: it
  replaces only the condition types the controller owns and keeps everyone else's.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from fluxd.clock import rfc3339

Condition = dict[str, Any]
#: What the readers accept: any sequence of condition mappings (e.g. straight from the cache).
Conditions = Sequence[Mapping[str, Any]]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

SUCCEEDED_REASON = "Succeeded"
FAILED_REASON = "Failed"
PROGRESSING_REASON = "Progressing"
PROGRESSING_WITH_RETRY_REASON = "ProgressingWithRetry"
DEPENDENCY_NOT_READY_REASON = "DependencyNotReady"

#: Any change of this annotation's value asks for a reconcile now (``flux reconcile``).
RECONCILE_REQUEST_ANNOTATION = "reconcile.fluxcd.io/requestedAt"

# Flux's conditionWeights: these go first, in this order; the rest sort by type.
_WEIGHTS = {STALLED: 0, RECONCILING: 1, READY: 2}
# The order of a condition's keys in metav1.Condition's JSON.
_KEYS = ("type", "status", "observedGeneration", "lastTransitionTime", "reason", "message")


# --------------------------------------------------------------------------- reading


def get(conditions: Conditions | None, type_: str) -> Condition | None:
    """A copy of the condition of ``type_``, or None."""
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def has(conditions: Conditions | None, type_: str) -> bool:
    return get(conditions, type_) is not None


def is_true(conditions: Conditions | None, type_: str) -> bool:
    cond = get(conditions, type_)
    return cond is not None and cond.get("status") == TRUE


def is_false(conditions: Conditions | None, type_: str) -> bool:
    cond = get(conditions, type_)
    return cond is not None and cond.get("status") == FALSE


def is_unknown(conditions: Conditions | None, type_: str) -> bool:
    """True when the condition is Unknown *or absent*, as in Flux."""
    cond = get(conditions, type_)
    return cond is None or cond.get("status") == UNKNOWN


def reason_of(conditions: Conditions | None, type_: str) -> str:
    """The reason of the condition of ``type_``, "" when absent."""
    cond = get(conditions, type_)
    return str(cond.get("reason") or "") if cond else ""


def message_of(conditions: Conditions | None, type_: str) -> str:
    """The message of the condition of ``type_``, "" when absent."""
    cond = get(conditions, type_)
    return str(cond.get("message") or "") if cond else ""


def is_stalled(conditions: Conditions | None) -> bool:
    """Stalled=True and not Reconciling=True."""
    return is_true(conditions, STALLED) and not is_true(conditions, RECONCILING)


def is_reconciling(conditions: Conditions | None) -> bool:
    """Reconciling=True and not Stalled=True."""
    return is_true(conditions, RECONCILING) and not is_true(conditions, STALLED)


def is_ready(conditions: Conditions | None) -> bool:
    """Ready=True, neither Stalled nor Reconciling."""
    return (is_true(conditions, READY) and not is_stalled(conditions)
            and not is_reconciling(conditions))


# --------------------------------------------------------------------------- writing


def sort_key(cond: Mapping[str, Any]) -> tuple[int, str]:
    type_ = str(cond.get("type", ""))
    return (_WEIGHTS.get(type_, len(_WEIGHTS)), type_)


def condition(type_: str, status: str, reason: str, message: str, *,
              generation: int | None = None) -> Condition:
    """A condition without a transition time (``set_condition`` stamps it)."""
    cond: Condition = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def _same_state(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(key) == b.get(key) for key in ("type", "status", "reason", "message"))


def _normal(cond: Mapping[str, Any]) -> Condition:
    """The condition with its keys in metav1.Condition order and ``message`` present."""
    out: Condition = {key: cond[key] for key in _KEYS if key in cond}
    out.setdefault("message", "")
    out.update({k: v for k, v in cond.items() if k not in out})
    return out


def _sorted(conditions: Iterable[Mapping[str, Any]]) -> list[Condition]:
    return sorted((dict(c) for c in conditions), key=sort_key)


def set_condition(conditions: Conditions | None, cond: Mapping[str, Any],
                  now: datetime) -> list[Condition]:
    """``conditions`` with ``cond`` set, sorted.

    An existing condition of the same type keeps its ``lastTransitionTime`` unless the
    status, reason or message changed; a new or changed one gets ``now`` (a new one keeps a
    ``lastTransitionTime`` it already carries).
    """
    new = _normal(cond)
    out: list[Condition] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != new["type"]:
            out.append(dict(existing))
            continue
        found = True
        if _same_state(existing, new):
            new["lastTransitionTime"] = existing.get("lastTransitionTime") or rfc3339(now)
        else:
            new["lastTransitionTime"] = rfc3339(now)
        out.append(_normal(new))
    if not found:
        new.setdefault("lastTransitionTime", rfc3339(now))
        out.append(_normal(new))
    return _sorted(out)


def mark_true(conditions: Conditions | None, type_: str, reason: str, message: str, *,
              generation: int, now: datetime) -> list[Condition]:
    return set_condition(conditions, condition(type_, TRUE, reason, message,
                                               generation=generation), now)


def mark_false(conditions: Conditions | None, type_: str, reason: str, message: str, *,
               generation: int, now: datetime) -> list[Condition]:
    return set_condition(conditions, condition(type_, FALSE, reason, message,
                                               generation=generation), now)


def mark_unknown(conditions: Conditions | None, type_: str, reason: str, message: str, *,
                 generation: int, now: datetime) -> list[Condition]:
    return set_condition(conditions, condition(type_, UNKNOWN, reason, message,
                                               generation=generation), now)


def delete(conditions: Conditions | None, type_: str) -> list[Condition]:
    return [dict(c) for c in conditions or () if c.get("type") != type_]


def mark_reconciling(conditions: Conditions | None, reason: str, message: str, *,
                     generation: int, now: datetime) -> list[Condition]:
    """Reconciling=True; Stalled goes (the two never coexist)."""
    return mark_true(delete(conditions, STALLED), RECONCILING, reason, message,
                     generation=generation, now=now)


def mark_stalled(conditions: Conditions | None, reason: str, message: str, *,
                 generation: int, now: datetime) -> list[Condition]:
    """Stalled=True; Reconciling goes."""
    return mark_true(delete(conditions, RECONCILING), STALLED, reason, message,
                     generation=generation, now=now)


def progressive_status(conditions: Conditions | None, reason: str, message: str, *,
                       generation: int, now: datetime, drift: bool = False) -> list[Condition]:
    """Report work in progress, as Flux's ``ProgressiveStatus``: Reconciling=True always;
    Ready=Unknown with the same reason and message only when Ready is absent or Unknown,
    or when ``drift`` says the last known Ready no longer holds."""
    out = mark_reconciling(conditions, reason, message, generation=generation, now=now)
    if drift or is_unknown(out, READY):
        out = mark_unknown(out, READY, reason, message, generation=generation, now=now)
    return out


# --------------------------------------------------------------------------- summary


def _merge_priority(status: str, negative: bool) -> int:
    # Flux's mergePriority: abnormal-true first, then normal-false, normal-true,
    # abnormal-false, and Unknown last.
    if status == TRUE:
        return 0 if negative else 2
    if status == FALSE:
        return 3 if negative else 1
    if status == UNKNOWN:
        return 4
    return 99


def summary(conditions: Conditions | None, *, target: str, scope: Sequence[str],
            negative_polarity: Collection[str]) -> Condition | None:
    """The condition ``target`` summarising the ``scope`` conditions (Flux's merge), or None
    when none of them is present.

    The present scope conditions are grouped by (status, polarity); the group of highest
    priority — abnormal-true, normal-false, normal-true, abnormal-false, Unknown — decides
    the status (inverted when its polarity differs from the target's) and its first member
    in ``scope`` order gives the reason and message.
    """
    present = [c for c in conditions or () if c.get("type") != target
               and c.get("type") in scope]
    if not present:
        return None
    ranked = [(_merge_priority(str(c.get("status")), c.get("type") in negative_polarity), c)
              for c in present]
    top = min(priority for priority, _ in ranked)
    group = [c for priority, c in ranked if priority == top]
    order = {type_: i for i, type_ in enumerate(scope)}
    first = min(group, key=lambda c: (order.get(str(c.get("type")), len(order)), sort_key(c)))
    status = str(first.get("status"))
    if status in (TRUE, FALSE) and (first.get("type") in negative_polarity) != (
            target in negative_polarity):
        status = FALSE if status == TRUE else TRUE
    return condition(target, status, str(first.get("reason") or ""),
                     str(first.get("message") or ""))


class Outcome(enum.Enum):
    """How the reconcile's steps ended, as ``summarize`` needs to know it."""

    #: every step ran; the object converged (``Result``)
    SUCCEEDED = "Succeeded"
    #: a failure worth retrying (``ReconcileError``)
    FAILED = "Failed"
    #: not ready yet, e.g. a dependency (``WaitingError``)
    WAITING = "Waiting"
    #: retrying cannot help until the spec changes (``StallingError``)
    STALLED = "Stalled"


def summarize(conditions: Conditions | None, *, generation: int, now: datetime,
              owned: Sequence[str] = (), negative_polarity: Collection[str] = (),
              bipolarity: Sequence[str] = (), outcome: Outcome = Outcome.SUCCEEDED,
              reason: str = "", message: str = "", ready_message: str = "",
              target: str = READY) -> list[Condition]:
    """The conditions at the end of a reconcile, with Ready (``target``) computed.

    Flux's ``ResultFinalizer.Finalize`` and source-controller's ``SummarizeAndPatch`` in
    one pass, in this order:

    1. Reconciling/Stalled from the outcome. ``SUCCEEDED`` removes both. ``FAILED`` and
       ``WAITING`` remove Stalled, and a Reconciling still present gets reason
       ``ProgressingWithRetry``. ``STALLED`` sets Stalled=True (``reason``, ``message``)
       and removes Reconciling.
    2. Ready from the outcome, unless a step already set Ready=False: ``STALLED`` makes it
       False with the Stalled reason and message; ``FAILED``/``WAITING`` make it False with
       ``reason`` (default ``Failed`` / ``DependencyNotReady``) and ``message``.
    3. When ``owned`` is given — the controller's own condition types in priority order,
       Flux's ``Summarize`` list — Ready is replaced by their summary (see ``summary``):
       an abnormal-true condition such as ``FetchFailed`` (list it in
       ``negative_polarity``) makes Ready False with its reason; Stalled and Reconciling are
       always in scope, last unless listed, and always abnormal-true, so a Stalled object
       is Ready=False with Stalled's reason and a failed retry is Ready=False with
       ``ProgressingWithRetry``.
    4. The first of ``bipolarity`` (e.g. ``SourceVerified``) that is False overrides Ready
       with its reason and message.
    5. ``SUCCEEDED`` with Ready still absent or Unknown, nothing reconciling or stalled:
       Ready=True, ``Succeeded``, ``ready_message``.

    A ``SUCCEEDED`` outcome that still ends not ``is_ready`` is a failure in Flux's eyes:
    the driver should retry with Ready's message as the error.
    """
    out = [dict(c) for c in conditions or ()]

    def mark(type_: str, status: str, why: str, text: str) -> None:
        nonlocal out
        out = set_condition(out, condition(type_, status, why, text, generation=generation), now)

    if outcome is Outcome.SUCCEEDED:
        out = delete(delete(out, STALLED), RECONCILING)
    elif outcome is Outcome.STALLED:
        out = mark_stalled(out, reason or FAILED_REASON, message, generation=generation,
                           now=now)
    else:
        out = delete(out, STALLED)
        reconciling = get(out, RECONCILING)
        if reconciling is not None:
            mark(RECONCILING, str(reconciling.get("status") or TRUE),
                 PROGRESSING_WITH_RETRY_REASON, str(reconciling.get("message") or ""))

    ready_open = is_unknown(out, target) or is_true(out, target)
    if outcome is Outcome.STALLED and ready_open:
        mark(target, FALSE, reason_of(out, STALLED), message_of(out, STALLED))
    elif outcome in (Outcome.FAILED, Outcome.WAITING) and ready_open:
        default = FAILED_REASON if outcome is Outcome.FAILED else DEPENDENCY_NOT_READY_REASON
        mark(target, FALSE, reason or default, message)

    if owned:
        scope = [t for t in owned if t != target]
        scope += [t for t in (STALLED, RECONCILING) if t not in scope]
        negative = {*negative_polarity, STALLED, RECONCILING}
        merged = summary(out, target=target, scope=scope, negative_polarity=negative)
        if merged is not None:
            mark(target, merged["status"], merged["reason"], merged["message"])

    failed = next((t for t in bipolarity if is_false(out, t)), None)
    if failed is not None:
        mark(target, FALSE, reason_of(out, failed), message_of(out, failed))

    if (outcome is Outcome.SUCCEEDED and is_unknown(out, target)
            and not is_true(out, RECONCILING) and not is_true(out, STALLED)):
        mark(target, TRUE, SUCCEEDED_REASON, ready_message)
    return out


def observed_generation(conditions: Conditions | None, *, generation: int,
                        current: int) -> int:
    """``status.observedGeneration`` after a reconcile: the object's ``generation`` when it
    is Ready or Stalled (the generation was fully handled), else ``current`` unchanged."""
    return generation if is_ready(conditions) or is_stalled(conditions) else current


# --------------------------------------------------------------------------- requests


def reconcile_requested(obj: Mapping[str, Any]) -> str | None:
    """The value of the ``reconcile.fluxcd.io/requestedAt`` annotation, if set. Only a
    change of value matters; it is not read as a time."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RECONCILE_REQUEST_ANNOTATION)
    return None if value is None else str(value)


def handled(obj: Mapping[str, Any]) -> str | None:
    """``status.lastHandledReconcileAt``: the request value the last reconcile handled."""
    value = (obj.get("status") or {}).get("lastHandledReconcileAt")
    return None if value is None else str(value)


def request_pending(obj: Mapping[str, Any]) -> bool:
    """A reconcile was requested and not handled yet."""
    requested = reconcile_requested(obj)
    return requested is not None and requested != handled(obj)


# --------------------------------------------------------------------------- patching


def _merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch turning ``old`` into ``new``."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(value, Mapping) and isinstance(old[key], Mapping):
                patch[key] = _merge_diff(old[key], value)
            else:
                patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def status_patch(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any] | None,
                 owned_types: Collection[str]) -> dict[str, Any]:
    """A JSON merge patch of ``status`` (send it as ``{"status": patch}``) turning the
    server's ``old_status`` into the controller's ``new_status``; ``{}`` when nothing
    changes.

    Conditions are the exception: a merge patch replaces lists whole, so the patch carries
    the full list — the server's conditions of types *not* in ``owned_types``, untouched,
    plus the controller's own ones from ``new_status`` (an owned type absent there is
    removed). An owned condition whose state the server already has keeps the server's
    ``lastTransitionTime``. After a conflict, fetch the object again and recompute: the
    result is a patch against the fresh state that never clobbers another writer's
    conditions.
    """
    old = dict(old_status or {})
    new = dict(new_status or {})
    old_conditions = [dict(c) for c in old.pop("conditions", None) or ()]
    new_conditions = [dict(c) for c in new.pop("conditions", None) or ()]
    patch = _merge_diff(old, new)

    by_type = {c.get("type"): c for c in old_conditions}
    merged = [c for c in old_conditions if c.get("type") not in owned_types]
    for cond in new_conditions:
        if cond.get("type") not in owned_types:
            continue
        before = by_type.get(cond.get("type"))
        if before is not None and _same_state(before, cond) and "lastTransitionTime" in before:
            cond = {**cond, "lastTransitionTime": before["lastTransitionTime"]}
        merged.append(_normal(cond))
    merged = _sorted(merged)
    if merged != old_conditions:
        patch["conditions"] = merged or None
    return patch
