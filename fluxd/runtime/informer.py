"""Shared informers: a local, always-current copy of one kind, and change notifications.

An ``Informer`` lists its kind (paginated), then watches from the list's
resourceVersion, keeping a store of plain dicts (``managedFields`` stripped: nobody
reconciles on them and they are most of an object's bytes). The rules, as client-go's
reflector has them:

- a watch that ends is resumed from the last resourceVersion seen (events or bookmarks);
- a watch that fails (connection refused, reset, server error) is resumed after an
  exponential backoff (``backoff_initial`` doubling to ``backoff_max``, reset by the next
  successful event), without a relist;
- ``410 Gone`` (the version is older than the server keeps) forces a relist; the relist
  replaces the store and tells handlers what changed (adds, updates, deletes), so no final
  state is missed or duplicated;
- every ``resync_period`` handlers get ``on_update(obj, obj)`` for every stored object.

Handlers get ``on_add(obj, initial)`` (``initial`` for objects of the first list, which
the queue takes at low priority), ``on_update(old, new)`` and ``on_delete(obj)``. Named
indexes map an object to keys (e.g. "kustomizations by sourceRef") for lookups.

``InformerCache`` holds one informer per kind and refuses Secrets and ConfigMaps: those
are read on demand, never cached. A *metadata-only* informer (``metadata_only=True``, as
controller-runtime's ``OnlyMetadata`` watches) keeps just the identity, labels and
annotations of each object, so it may watch Secrets and ConfigMaps to learn that one
changed without holding its data.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fluxd.clock import Clock
from fluxd.kube import Gone, KubeClient, KubeError

log = logging.getLogger("fluxd.informer")

Obj = dict[str, Any]
StoreKey = tuple[str, str]  # (namespace, name)
IndexFunc = Callable[[Obj], Iterable[str]]

UNCACHEABLE = frozenset({("v1", "Secret"), ("v1", "ConfigMap")})


class Handler(Protocol):
    def on_add(self, obj: Obj, *, initial: bool) -> None: ...

    def on_update(self, old: Obj, new: Obj) -> None: ...

    def on_delete(self, obj: Obj) -> None: ...


def store_key(obj: Obj) -> StoreKey:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _compact(value: Any) -> Any:
    """The same JSON value with its keys and short strings interned: thousands of cached
    objects then share one copy of "metadata", "Ready", "True", … (a third less memory)."""
    if isinstance(value, dict):
        return {sys.intern(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, str) and len(value) <= 48:
        return sys.intern(value)
    return value


def slim(obj: Obj) -> Obj:
    """The object as cached: without managedFields, with interned keys and short strings."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    compact: Obj = _compact(obj)
    return compact


_METADATA_KEYS = ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
                  "annotations", "deletionTimestamp")


def metadata_of(obj: Obj) -> Obj:
    """The object as a metadata-only informer keeps it: kind and identity, labels and
    annotations; no data, spec or status."""
    meta = obj.get("metadata") or {}
    kept: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                 "metadata": {k: meta[k] for k in _METADATA_KEYS if k in meta}}
    compact: Obj = _compact(kept)
    return compact


class Informer:
    def __init__(self, client: KubeClient, api_version: str, kind: str, *, clock: Clock,
                 namespace: str | None = None, label_selector: str | None = None,
                 resync_period: float = 36_000.0, watch_timeout: int = 300,
                 backoff_initial: float = 0.8, backoff_max: float = 30.0,
                 page_size: int = 500, metadata_only: bool = False) -> None:
        if (api_version, kind) in UNCACHEABLE and not metadata_only:
            raise ValueError(f"{kind} objects are read on demand, never cached")
        self._slim = metadata_of if metadata_only else slim
        self.api_version = api_version
        self.kind = kind
        self._client = client
        self._clock = clock
        self._namespace = namespace
        self._selector = label_selector
        self._resync = resync_period
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._page_size = page_size
        self._store: dict[StoreKey, Obj] = {}
        self._handlers: list[Handler] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[StoreKey]]] = {}
        self._synced = asyncio.Event()
        self._rv = ""
        #: counters for tests and diagnostics
        self.lists = 0
        self.watches = 0

    # --- reading ----------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        return self._rv

    async def wait_for_sync(self) -> None:
        await self._synced.wait()

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._store.get((namespace, name))

    def objects(self, namespace: str | None = None) -> list[Obj]:
        return [o for k, o in self._store.items() if namespace is None or k[0] == namespace]

    def __len__(self) -> int:
        return len(self._store)

    def add_handler(self, handler: Handler) -> None:
        """Register a handler; it is told about objects already stored as initial adds."""
        self._handlers.append(handler)
        for obj in list(self._store.values()):
            handler.on_add(obj, initial=True)

    def add_index(self, name: str, func: IndexFunc) -> None:
        self._index_funcs[name] = func
        index: dict[str, set[StoreKey]] = {}
        for key, obj in self._store.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    def by_index(self, name: str, value: str) -> list[Obj]:
        keys = self._indexes[name].get(value, set())
        return [self._store[k] for k in sorted(keys) if k in self._store]

    # --- store maintenance ------------------------------------------------------------

    def _index(self, key: StoreKey, old: Obj | None, new: Obj | None) -> None:
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            for value in func(old) if old is not None else ():
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in func(new) if new is not None else ():
                index.setdefault(value, set()).add(key)

    def _put(self, obj: Obj, *, initial: bool = False) -> None:
        obj = self._slim(obj)
        key = store_key(obj)
        old = self._store.get(key)
        self._store[key] = obj
        self._index(key, old, obj)
        for handler in self._handlers:
            if old is None:
                handler.on_add(obj, initial=initial)
            else:
                handler.on_update(old, obj)

    def _remove(self, obj: Obj) -> None:
        key = store_key(obj)
        old = self._store.pop(key, None)
        if old is None:
            return
        self._index(key, old, None)
        final = self._slim(obj) if obj.get("metadata") else old
        for handler in self._handlers:
            handler.on_delete(final)

    def _replace(self, items: list[Obj], *, initial: bool) -> None:
        """A fresh list: apply only the differences, so handlers see real changes."""
        fresh = {store_key(o): o for o in items}
        for key in [k for k in self._store if k not in fresh]:
            self._remove(self._store[key])
        for key, obj in fresh.items():
            old = self._store.get(key)
            if old is not None and _rv(old) == _rv(obj):
                continue
            self._put(obj, initial=initial)

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled."""
        backoff = self._backoff_initial
        need_list = True
        next_resync = self._clock.monotonic() + self._resync if self._resync > 0 else None
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    backoff = self._backoff_initial
                started = self._clock.monotonic()
                progressed = await self._watch(next_resync)
                if progressed:
                    backoff = self._backoff_initial
                elif self._clock.monotonic() - started < 1.0:
                    # ended at once with nothing: don't spin against a server going away
                    await self._clock.sleep(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
            except Gone:
                log.info("watch of %s expired at resourceVersion %s; relisting", self.kind,
                         self._rv)
                need_list = True
                continue
            except KubeError as exc:
                log.warning("list/watch of %s failed, retrying in %.1fs: %s", self.kind,
                            backoff, exc)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
            if next_resync is not None and self._clock.monotonic() >= next_resync:
                self.resync()
                next_resync = self._clock.monotonic() + self._resync

    async def _list(self) -> None:
        result = await self._client.list_all(
            self.api_version, self.kind, self._namespace, label_selector=self._selector,
            page_size=self._page_size)
        self.lists += 1
        self._replace(result.items, initial=not self._synced.is_set())
        self._rv = result.resource_version
        self._synced.set()

    async def _watch(self, deadline: float | None) -> bool:
        """One watch request; True when it delivered anything."""
        self.watches += 1
        timeout = self._watch_timeout
        if deadline is not None:
            timeout = max(1, min(timeout, int(deadline - self._clock.monotonic()) + 1))
        progressed = False
        async for event in self._client.watch(
                self.api_version, self.kind, self._namespace, resource_version=self._rv,
                label_selector=self._selector, timeout_seconds=timeout, bookmarks=True):
            progressed = True
            rv = _rv(event.object)
            if event.type == "BOOKMARK":
                self._rv = rv or self._rv
                continue
            event.object.setdefault("apiVersion", self.api_version)
            event.object.setdefault("kind", self.kind)
            if event.type in ("ADDED", "MODIFIED"):
                self._put(event.object)
            elif event.type == "DELETED":
                self._remove(event.object)
            self._rv = rv or self._rv
        return progressed

    def resync(self) -> None:
        """Tell handlers about every stored object again (as unchanged updates)."""
        for obj in list(self._store.values()):
            for handler in self._handlers:
                handler.on_update(obj, obj)


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class InformerCache:
    """One shared informer per kind, created on first use and run by the manager."""

    def __init__(self, client: KubeClient, *, clock: Clock, label_selector: str | None = None,
                 namespace: str | None = None, resync_period: float = 36_000.0) -> None:
        self._client = client
        self._clock = clock
        self._selector = label_selector
        self._namespace = namespace
        self._resync = resync_period
        self._informers: dict[tuple[str, str], Informer] = {}
        self._metadata_informers: dict[tuple[str, str, str], Informer] = {}

    def informer(self, api_version: str, kind: str) -> Informer:
        key = (api_version, kind)
        found = self._informers.get(key)
        if found is None:
            found = Informer(self._client, api_version, kind, clock=self._clock,
                             namespace=self._namespace, label_selector=self._selector,
                             resync_period=self._resync)
            self._informers[key] = found
        return found

    def metadata_informer(self, api_version: str, kind: str, *,
                          label_selector: str) -> Informer:
        """A metadata-only informer of objects with ``label_selector`` (the process's
        sharding selector does not apply: it selects fluxd's own kinds, not the
        ConfigMaps and Secrets they reference)."""
        key = (api_version, kind, label_selector)
        found = self._metadata_informers.get(key)
        if found is None:
            found = Informer(self._client, api_version, kind, clock=self._clock,
                             namespace=self._namespace, label_selector=label_selector,
                             resync_period=self._resync, metadata_only=True)
            self._metadata_informers[key] = found
        return found

    def informers(self) -> list[Informer]:
        return [*self._informers.values(), *self._metadata_informers.values()]

    @property
    def has_synced(self) -> bool:
        return all(i.has_synced for i in self.informers())

    async def wait_for_sync(self) -> None:
        for informer in self.informers():
            await informer.wait_for_sync()

    def object_count(self) -> int:
        return sum(len(i) for i in self.informers())
