"""From informer notifications to queue keys, with Flux's predicates.

An object is enqueued when it is first seen (at low priority while the initial list
loads, so a fresh change is not stuck behind start-up), when its ``generation`` changes
(spec edits; status and metadata writes don't), when ``reconcile.fluxcd.io/requestedAt``
changes (``flux reconcile``, webhook receivers), when deletion starts, on periodic
resync, and when it is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fluxd.runtime.reconcile import ObjectKey

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"

Obj = dict[str, Any]


class Adder(Protocol):
    def add(self, key: ObjectKey, *, low_priority: bool = False) -> None: ...


def key_for(kind: str, obj: Obj) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(kind, meta.get("namespace") or "", meta.get("name") or "")


def needs_reconcile(old: Obj, new: Obj) -> bool:
    if old is new:
        return True  # resync
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    if old_meta.get("generation") != new_meta.get("generation"):
        return True
    if (old_meta.get("annotations") or {}).get(REQUESTED_AT) != (
            new_meta.get("annotations") or {}).get(REQUESTED_AT):
        return True
    return bool(new_meta.get("deletionTimestamp")) and not old_meta.get("deletionTimestamp")


class EnqueueHandler:
    def __init__(self, queue: Adder, kind: str) -> None:
        self._queue = queue
        self._kind = kind

    def on_add(self, obj: Obj, *, initial: bool) -> None:
        self._queue.add(key_for(self._kind, obj), low_priority=initial)

    def on_update(self, old: Obj, new: Obj) -> None:
        if needs_reconcile(old, new):
            self._queue.add(key_for(self._kind, new), low_priority=old is new)

    def on_delete(self, obj: Obj) -> None:
        self._queue.add(key_for(self._kind, obj))


class Indexed(Protocol):
    def by_index(self, name: str, value: str) -> list[Obj]: ...


class ReferrersHandler:
    """For an informer of referenced objects (e.g. watched Secrets): when one is created,
    changed or deleted — not on the initial list or a resync — enqueue the objects of
    ``kind`` that refer to it, found in ``referrers`` under ``index`` by ``key(obj)``."""

    def __init__(self, queue: Adder, kind: str, referrers: Indexed, index: str,
                 key: Callable[[Obj], str]) -> None:
        self._queue = queue
        self._kind = kind
        self._referrers = referrers
        self._index = index
        self._key = key

    def _enqueue(self, obj: Obj) -> None:
        for referrer in self._referrers.by_index(self._index, self._key(obj)):
            self._queue.add(key_for(self._kind, referrer))

    def on_add(self, obj: Obj, *, initial: bool) -> None:
        if not initial:
            self._enqueue(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        if old is not new:
            self._enqueue(new)

    def on_delete(self, obj: Obj) -> None:
        self._enqueue(obj)


class DependentsHandler:
    """For the informer of a kind with ``dependsOn`` (Kustomization, HelmRelease): when
    an object becomes Ready at its generation, or is Ready at a new
    ``status.<revision_field>``, enqueue the objects of the kind that depend on it (found
    under ``index`` by ``<ns>/<name>``) — Flux polls every 30 s for this."""

    def __init__(self, queue: Adder, kind: str, dependents: Indexed, *,
                 index: str = "dependsOn", revision_field: str) -> None:
        self._queue = queue
        self._kind = kind
        self._dependents = dependents
        self._index = index
        self._field = revision_field

    def on_add(self, obj: Obj, *, initial: bool) -> None:
        return None

    def on_update(self, old: Obj, new: Obj) -> None:
        if old is new:
            return
        if not _ready(new):
            return
        old_status, new_status = old.get("status") or {}, new.get("status") or {}
        if _ready(old) and old_status.get(self._field) == new_status.get(self._field):
            return
        meta = new.get("metadata") or {}
        for dependent in self._dependents.by_index(
                self._index, f"{meta.get('namespace', '')}/{meta.get('name', '')}"):
            self._queue.add(key_for(self._kind, dependent))

    def on_delete(self, obj: Obj) -> None:
        return None


def _ready(obj: Obj) -> bool:
    """Ready at its current generation, as a dependency must be (a status written in the
    middle of a reconcile still shows the last generation's Ready)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != (obj.get("metadata") or {}).get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or ())
