"""The status patcher: how a reconcile writes its outcome, as Flux's ``SerialPatcher``.

Contract:

- **Built per reconcile** from the object as read at the start (the *base*), with the
  condition types the controller owns. The reconciler edits a *desired* status through
  the helpers (``set_field``, ``mark_*``, ``summarize``, ``handle_request``,
  ``observe_generation``); the base is never mutated.
- **``patch`` sends only changes**: a JSON merge patch of ``status`` holding the fields
  whose desired value differs from the base, plus the conditions when an owned type
  differs. Conditions go as one full list rebuilt from the server's current list: other
  writers' condition types are kept, owned ones replaced (``conditions.status_patch``).
  Nothing is sent when nothing changed.
- **Optimistic, retried**: the patch carries the resourceVersion it was computed
  against. On ``Conflict`` (someone wrote meanwhile) the object is read again and the
  patch recomputed against it, so the other writer's fields and conditions survive; at
  most ``attempts`` tries, with doubling backoff on the injected clock, then the
  ``Conflict`` is raised. Other errors are raised at once.
- **Gone is quiet**: ``NotFound`` — or an object recreated under another uid — means
  the object this reconcile was about no longer exists; ``patch`` returns None.
- **Serial**: after a successful patch the server's answer becomes the new base, so a
  later ``patch`` sends only what changed since.
- **Final write**: ``patch_shielded`` is for the reconciler's ``finally``. It survives
  the caller's cancellation (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from fluxd.clock import Clock
from fluxd.jsonvalue import clone
from fluxd.kube.errors import Conflict, NotFound
from fluxd.runtime import conditions as conds
from fluxd.runtime.conditions import Condition, Conditions, Outcome

log = logging.getLogger("fluxd.status")


Obj = dict[str, Any]

LAST_HANDLED_RECONCILE_AT = "lastHandledReconcileAt"
OBSERVED_GENERATION = "observedGeneration"


class StatusClient(Protocol):
    """What the patcher needs of ``fluxd.kube.KubeClient``."""

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj: ...

    async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                           namespace: str | None = None) -> Obj: ...


_MISSING = object()


class StatusPatcher:
    """The desired status of one object during one reconcile, and its write."""

    def __init__(self, client: StatusClient, obj: Obj, *, owned_conditions: Collection[str],
                 clock: Clock, attempts: int = 5, backoff: float = 0.1) -> None:
        meta = obj.get("metadata") or {}
        self._client = client
        self._clock = clock
        self._owned = frozenset(owned_conditions)
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._api_version = str(obj["apiVersion"])
        self._kind = str(obj["kind"])
        self._name = str(meta["name"])
        self._namespace: str | None = meta.get("namespace") or None
        self._uid: str | None = meta.get("uid")
        self._base: Obj = clone(obj)
        self._desired: Obj = clone(obj.get("status") or {})
        self._gone = False

    # --- reading ------------------------------------------------------------------------

    @property
    def object(self) -> Obj:
        """The object as last known: as read at the start, or the last patch's answer.
        Read-only."""
        return self._base

    @property
    def generation(self) -> int:
        """The generation this reconcile works on (the base's)."""
        return int((self._base.get("metadata") or {}).get("generation") or 0)

    @property
    def owned_conditions(self) -> frozenset[str]:
        return self._owned

    @property
    def status(self) -> Obj:
        """A copy of the desired status."""
        return clone(self._desired)

    @property
    def conditions(self) -> list[Condition]:
        """A copy of the desired conditions."""
        return [dict(c) for c in self._desired.get("conditions") or ()]

    def get_field(self, name: str, default: Any = None) -> Any:
        """A copy of the desired ``status.<name>``."""
        return clone(self._desired.get(name, default))

    @property
    def gone(self) -> bool:
        """A patch found the object deleted (or replaced by a new one of the same name)."""
        return self._gone

    @property
    def changed(self) -> bool:
        """Whether ``patch`` would send anything against the base."""
        return bool(self._status_patch(self._base.get("status") or {}))

    # --- editing fields -----------------------------------------------------------------

    def set_field(self, name: str, value: Any) -> None:
        """Set ``status.<name>`` (``artifact``, ``inventory``, ``lastAppliedRevision``…);
        None removes it. Conditions have their own helpers."""
        if name == "conditions":
            raise ValueError("set conditions with set_conditions or the mark helpers")
        if value is None:
            self._desired.pop(name, None)
        else:
            self._desired[name] = clone(value)

    def delete_field(self, name: str) -> None:
        self.set_field(name, None)

    def handle_request(self) -> str | None:
        """Record the ``reconcile.fluxcd.io/requestedAt`` value, when the object has one,
        as ``status.lastHandledReconcileAt`` (Flux writes it whatever the outcome), and
        return it."""
        requested = conds.reconcile_requested(self._base)
        if requested is not None:
            self.set_field(LAST_HANDLED_RECONCILE_AT, requested)
        return requested

    def observe_generation(self) -> int | None:
        """Apply Flux's rule: ``status.observedGeneration`` becomes the generation when the
        desired conditions say Ready or Stalled, else stays. Call it once the conditions
        are final (after ``summarize``); returns the resulting value."""
        current = self._desired.get(OBSERVED_GENERATION)
        if conds.is_ready(self.conditions) or conds.is_stalled(self.conditions):
            self.set_field(OBSERVED_GENERATION, self.generation)
            return self.generation
        return None if current is None else int(current)

    # --- editing conditions -------------------------------------------------------------

    def set_conditions(self, new: Conditions) -> None:
        """Replace the desired conditions wholesale (only owned types are written)."""
        listed = [dict(c) for c in new]
        if listed:
            self._desired["conditions"] = listed
        else:
            self._desired.pop("conditions", None)

    def set_condition(self, cond: Condition) -> None:
        self.set_conditions(conds.set_condition(self.conditions, cond, self._clock.now()))

    def mark_true(self, type_: str, reason: str, message: str) -> None:
        self.set_conditions(conds.mark_true(
            self.conditions, type_, reason, message, generation=self.generation,
            now=self._clock.now()))

    def mark_false(self, type_: str, reason: str, message: str) -> None:
        self.set_conditions(conds.mark_false(
            self.conditions, type_, reason, message, generation=self.generation,
            now=self._clock.now()))

    def mark_unknown(self, type_: str, reason: str, message: str) -> None:
        self.set_conditions(conds.mark_unknown(
            self.conditions, type_, reason, message, generation=self.generation,
            now=self._clock.now()))

    def mark_reconciling(self, reason: str, message: str) -> None:
        self.set_conditions(conds.mark_reconciling(
            self.conditions, reason, message, generation=self.generation,
            now=self._clock.now()))

    def mark_stalled(self, reason: str, message: str) -> None:
        self.set_conditions(conds.mark_stalled(
            self.conditions, reason, message, generation=self.generation,
            now=self._clock.now()))

    def progressive_status(self, reason: str, message: str, *, drift: bool = False) -> None:
        self.set_conditions(conds.progressive_status(
            self.conditions, reason, message, generation=self.generation,
            now=self._clock.now(), drift=drift))

    def delete_condition(self, type_: str) -> None:
        self.set_conditions(conds.delete(self.conditions, type_))

    def summarize(self, *, owned: Sequence[str] = (), negative_polarity: Collection[str] = (),
                  bipolarity: Sequence[str] = (), outcome: Outcome = Outcome.SUCCEEDED,
                  reason: str = "", message: str = "", ready_message: str = "",
                  target: str = conds.READY) -> None:
        """``conditions.summarize`` over the desired conditions (see there)."""
        self.set_conditions(conds.summarize(
            self.conditions, generation=self.generation, now=self._clock.now(), owned=owned,
            negative_polarity=negative_polarity, bipolarity=bipolarity, outcome=outcome,
            reason=reason, message=message, ready_message=ready_message, target=target))

    # --- writing ------------------------------------------------------------------------

    def _status_patch(self, server_status: Obj) -> Obj:
        """The merge patch of ``status`` against ``server_status``: our changed fields
        (desired vs. base) laid over the server's, and the owned conditions."""
        base_status = self._base.get("status") or {}
        target = {k: v for k, v in server_status.items() if k != "conditions"}
        for key in {*self._desired, *base_status} - {"conditions"}:
            wanted = self._desired.get(key, _MISSING)
            if wanted == base_status.get(key, _MISSING):
                continue
            if wanted is _MISSING:
                target.pop(key, None)
            else:
                target[key] = wanted
        target["conditions"] = self._desired.get("conditions") or []
        return conds.status_patch(server_status, target, self._owned)

    async def patch(self) -> Obj | None:
        """Write the changes (see the module docstring). Returns a copy of the object as
        the server now has it (the base when nothing needed sending), None when the
        object is gone. Raises ``Conflict`` when the attempts run out, and any other
        ``KubeError`` as it comes."""
        if self._gone:
            return None
        current = self._base
        attempt = 1
        while True:
            body = self._status_patch(current.get("status") or {})
            if not body:
                if current is not self._base:
                    self._rebase(current)
                return clone(current)
            patch: Obj = {"status": body}
            version = (current.get("metadata") or {}).get("resourceVersion")
            if version:
                patch["metadata"] = {"resourceVersion": version}
            try:
                patched = await self._client.patch_status(
                    self._api_version, self._kind, self._name, patch, self._namespace)
            except NotFound:
                self._vanish()
                return None
            except Conflict:
                if attempt >= self._attempts:
                    raise
                log.debug("Status patch conflicted; reading the object again",
                          extra={"attempt": attempt})
                await self._clock.sleep(self._backoff * 2 ** (attempt - 1))
                attempt += 1
                try:
                    current = await self._client.get(
                        self._api_version, self._kind, self._name, self._namespace)
                except NotFound:
                    self._vanish()
                    return None
                uid = (current.get("metadata") or {}).get("uid")
                if self._uid and uid and uid != self._uid:
                    self._vanish()
                    return None
                continue
            self._rebase(patched)
            return clone(patched)

    async def patch_shielded(self, timeout: float = 30.0) -> Obj | None:  # noqa: ASYNC109
        """``patch`` for the reconciler's ``finally``: it goes through even when the caller
        is cancelled (shutdown, the per-reconcile deadline).

        The write runs in its own task under ``asyncio.shield``, bounded by ``timeout``
        seconds on the injected clock (as the controller's reconcile deadline is). If the
        caller is cancelled meanwhile — once or repeatedly, as an anyio cancel scope
        does — this keeps waiting for that task, so it never outlives its owner, then
        re-raises the ``CancelledError``; a failure of the write in that case
        is logged, since the cancellation takes precedence. Without cancellation it
        returns or raises as ``patch`` does (``TimeoutError`` past the deadline).
        """
        async def bounded() -> Obj | None:
            async with self._clock.timeout(timeout):
                return await self.patch()

        # Owned here: awaited to completion below, whatever happens to the caller.
        write = asyncio.ensure_future(bounded())
        cancelled: asyncio.CancelledError | None = None
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError as exc:
                if write.cancelled():
                    raise  # the write itself was cancelled (the loop is closing)
                cancelled = exc  # the caller was: finish the write first
            except Exception:
                break  # the write failed: its task holds the error, read below
        if cancelled is None:
            return write.result()
        error = write.exception()
        if error is not None:
            log.error("Final status patch failed while the reconcile was cancelled",
                      extra={"error": f"{type(error).__name__}: {error}"})
        raise cancelled

    def _rebase(self, obj: Obj) -> None:
        # The server's answer holds our changes and everyone else's: editing continues
        # from it, so a later patch sends only new changes and reverts nobody. The answer
        # is this patcher's own (callers get a copy), so the base is kept as it is.
        self._base = obj
        self._desired = clone(obj.get("status") or {})

    def _vanish(self) -> None:
        log.debug("Object gone; its status is not written")
        self._gone = True
