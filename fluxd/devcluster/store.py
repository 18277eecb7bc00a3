"""In-memory object storage with one resourceVersion sequence and a bounded watch history.

Every write takes the next resourceVersion (monotonic, shared by all resources, as etcd's
revision is) and appends a ``Change`` to the history. A watch starts from a version: the
changes after it are replayed from history, then live changes follow through a queue. A
version older than the oldest retained change is *gone* (HTTP 410), exactly the condition
that makes informers relist; ``history_size`` is small in tests that force it.

Objects are plain JSON dicts, stored in their storage version, and treated as immutable
once stored: writers build a new dict, readers may share it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fluxd.devcluster.registry import StorageKey

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace, name)


class Gone(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    storage: StorageKey
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Watcher:
    storage: StorageKey
    namespace: str | None
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    #: set when the watcher fell too far behind and was cut off
    overflowed: bool = False


def key_of(obj: Obj) -> ObjKey:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Store:
    def __init__(self, *, history_size: int = 10_000, watcher_backlog: int = 100_000) -> None:
        self._objects: dict[StorageKey, dict[ObjKey, Obj]] = {}
        self._history: collections.deque[Change] = collections.deque(maxlen=history_size)
        self._watchers: dict[StorageKey, set[Watcher]] = {}
        self._rv = 0
        self._backlog = watcher_backlog
        #: the resourceVersion before the oldest retained change
        self._compacted = 0

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, storage: StorageKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(storage, {}).get((namespace, name))

    def select(self, storage: StorageKey, namespace: str | None = None,
             after: ObjKey | None = None) -> list[Obj]:
        """Objects sorted by (namespace, name), optionally only those after a key."""
        bucket = self._objects.get(storage, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        if after is not None:
            keys = [k for k in keys if k > after]
        return [bucket[k] for k in keys]

    def count(self, storage: StorageKey) -> int:
        return len(self._objects.get(storage, {}))

    def storages(self) -> Iterable[StorageKey]:
        return list(self._objects)

    def next_rv(self) -> int:
        return self._rv + 1

    def put(self, storage: StorageKey, obj: Obj) -> Obj:
        """Store ``obj`` (its metadata.resourceVersion must already be ``next_rv()``)."""
        rv = int(obj["metadata"]["resourceVersion"])
        if rv != self._rv + 1:
            raise RuntimeError(f"resourceVersion {rv} is not next ({self._rv + 1})")
        bucket = self._objects.setdefault(storage, {})
        key = key_of(obj)
        old = bucket.get(key)
        bucket[key] = obj
        self._commit(Change(rv, "ADDED" if old is None else "MODIFIED", storage, obj, old))
        return obj

    def remove(self, storage: StorageKey, obj: Obj) -> Obj:
        """Delete; ``obj`` is the final state with resourceVersion ``next_rv()``."""
        bucket = self._objects.get(storage, {})
        old = bucket.pop(key_of(obj), None)
        self._commit(Change(int(obj["metadata"]["resourceVersion"]), "DELETED", storage, obj, old))
        return obj

    def drop_storage(self, storage: StorageKey) -> None:
        self._objects.pop(storage, None)

    def _commit(self, change: Change) -> None:
        self._rv = change.rv
        if len(self._history) == self._history.maxlen and self._history:
            self._compacted = self._history[0].rv
        self._history.append(change)
        for watcher in list(self._watchers.get(change.storage, ())):
            if watcher.namespace is not None and key_of(change.obj)[0] != watcher.namespace:
                continue
            if watcher.queue.qsize() >= self._backlog:
                watcher.overflowed = True
                self.stop_watch(watcher)
                continue
            watcher.queue.put_nowait(change)

    def watch(self, storage: StorageKey, namespace: str | None,
              since: int | None) -> tuple[Watcher, list[Change]]:
        """Register a watcher; return it with the retained changes after ``since``.

        ``since=None`` means "from now". Raises ``Gone`` when ``since`` is older than the
        retained history.
        """
        backlog: list[Change] = []
        if since is not None and since < self._rv:
            if since < self._compacted:
                raise Gone(since, self._compacted + 1)
            for change in self._history:
                if change.rv <= since or change.storage != storage:
                    continue
                if namespace is not None and key_of(change.obj)[0] != namespace:
                    continue
                backlog.append(change)
        watcher = Watcher(storage, namespace)
        self._watchers.setdefault(storage, set()).add(watcher)
        return watcher, backlog

    def stop_watch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.storage)
        if watchers is not None and watcher in watchers:
            watchers.discard(watcher)
            watcher.queue.put_nowait(None)

    def stop_all_watches(self) -> None:
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                self.stop_watch(watcher)

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())
