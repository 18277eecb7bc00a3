"""The controllers a real control plane runs, reduced to what the dev server needs.

After each stored change ``Cluster`` calls the hooks registered here; the work they
queue runs on one background task, in order, like the asynchronous controllers of a
real cluster:

- **CRDs**: a stored CRD is served at once; a deleted one first has its objects deleted,
  then stops being served and goes.
- **namespaces**: a terminating namespace has its objects deleted (finalizers honoured);
  when it is empty the ``kubernetes`` finalizer is dropped and the namespace goes.
- **garbage collection**: when an owner goes, dependents lose that ``ownerReference``
  and are deleted once no owner is left (background propagation); ``foregroundDeletion``
  deletes the dependents before the owner; ``orphan`` strips the references.
- **root CA publisher**: every active namespace gets the ConfigMap ``kube-root-ca.crt``
  holding the cluster's CA (``ca.crt``) and the ``kubernetes.io/description`` annotation,
  written by ``kube-controller-manager`` as kube-controller-manager's root-CA publisher
  does; it comes back when deleted and is put right when its data or annotation change.
- **workloads**: there is no kubelet, so Deployments, StatefulSets, DaemonSets,
  ReplicaSets, Jobs, Pods, PVCs and LoadBalancer Services get a simulated status after
  a delay (``simulate.py``), or fail on request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from fluxd.devcluster import simulate
from fluxd.devcluster.cluster import CRDS, NAMESPACES, Cluster, WriteOptions
from fluxd.devcluster.errors import ApiError
from fluxd.devcluster.registry import ResourceType, StorageKey
from fluxd.devcluster.store import Obj
from fluxd.jsonvalue import clone

log = logging.getLogger("fluxd.devcluster.lifecycle")

DepKey = tuple[StorageKey, str, str]

CONFIGMAPS: StorageKey = ("", "configmaps")
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION_ANNOTATION = "kubernetes.io/description"
#: the publisher's own words, so tools that show the annotation see what they would on a cluster
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters.")


class Lifecycle:
    def __init__(self, cluster: Cluster, *, ready_delay: float = 1.0,
                 root_ca: bytes | None = None) -> None:
        self.cluster = cluster
        self.ready_delay = ready_delay
        #: the CA published as ``kube-root-ca.crt`` into every namespace; None publishes none
        self.root_ca = root_ca
        self._work: asyncio.Queue[Callable[[], None]] = asyncio.Queue()
        self._dependents: dict[str, set[DepKey]] = {}
        self._timers: dict[DepKey, asyncio.Task[None]] = {}
        #: the spec fingerprint last simulated per object, so status writes don't re-trigger
        self._simulated: dict[DepKey, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        cluster.hooks.after_write.append(self._after_write)
        cluster.hooks.after_remove.append(self._after_remove)

    # --- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Process queued work until cancelled."""
        try:
            while True:
                job = await self._work.get()
                try:
                    job()
                except ApiError as exc:
                    log.debug("lifecycle step answered %s: %s", exc.code, exc.message)
                except Exception:
                    log.exception("lifecycle step failed")
                if self._work.empty():
                    self._idle.set()
        finally:
            for task in self._timers.values():
                task.cancel()

    async def settled(self) -> None:
        """Wait until no queued lifecycle work is left (tests, demo)."""
        await self._idle.wait()

    def _queue(self, job: Callable[[], None]) -> None:
        self._idle.clear()
        self._work.put_nowait(job)

    # --- hooks ------------------------------------------------------------------------

    def _after_write(self, rt: ResourceType, old: Obj | None, new: Obj) -> None:
        meta = new["metadata"]
        self._index_owners(rt.storage, old, new)
        if rt.storage == CRDS:
            if meta.get("deletionTimestamp"):
                self._queue(lambda: self._drain_crd(meta["name"]))
            else:
                self.cluster.registry.set_crd(new)
                self._schedule_establishing(rt, new)
        if self.root_ca is not None:
            if rt.storage == NAMESPACES and not meta.get("deletionTimestamp"):
                self._queue(functools.partial(self._publish_root_ca, meta["name"]))
            elif rt.storage == CONFIGMAPS and meta["name"] == ROOT_CA_CONFIGMAP:
                self._queue(functools.partial(self._publish_root_ca, meta["namespace"]))
        if meta.get("deletionTimestamp"):
            if rt.storage == NAMESPACES:
                self._queue(lambda: self._drain_namespace(meta["name"]))
            finalizers = meta.get("finalizers") or []
            if "orphan" in finalizers:
                self._queue(lambda: self._orphan(rt, new))
            if "foregroundDeletion" in finalizers:
                self._queue(lambda: self._delete_dependents(new, "Foreground"))
        elif (rt.group, rt.kind) in simulate.simulated_kinds():
            self._schedule_simulation(rt, new)

    def _after_remove(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        self._index_owners(rt.storage, obj, None)
        key = (rt.storage, meta.get("namespace") or "", meta["name"])
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._simulated.pop(key, None)
        if rt.storage == CRDS:
            for gone in self.cluster.registry.remove_crd(meta["name"]):
                self.cluster.store.drop_storage(gone.storage)
        if (self.root_ca is not None and rt.storage == CONFIGMAPS
                and meta["name"] == ROOT_CA_CONFIGMAP):
            self._queue(functools.partial(self._publish_root_ca, meta["namespace"]))
        uid = meta.get("uid")
        if uid and uid in self._dependents:
            self._queue(lambda: self._collect(uid))
        ns = meta.get("namespace")
        if ns:
            self._queue(lambda: self._maybe_finish_namespace(ns))
        crd_name = rt.crd
        if crd_name:
            self._queue(lambda: self._maybe_finish_crd(crd_name))
        for owner_uid in _owner_uids(obj):
            self._queue(functools.partial(self._maybe_finish_foreground, owner_uid))

    # --- owner index and garbage collection -------------------------------------------

    def _index_owners(self, storage: StorageKey, old: Obj | None, new: Obj | None) -> None:
        some = new or old
        assert some is not None
        meta = some["metadata"]
        key = (storage, meta.get("namespace") or "", meta["name"])
        for uid in _owner_uids(old) - _owner_uids(new):
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[uid]
        for uid in _owner_uids(new):
            self._dependents.setdefault(uid, set()).add(key)

    def _dependents_of(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        out = []
        for storage, ns, name in sorted(self._dependents.get(uid, ())):
            obj = self.cluster.store.get(storage, ns, name)
            rt = self._storage_rt(storage)
            if obj is not None and rt is not None:
                out.append((rt, obj))
        return out

    def _owner_exists(self, ref: dict[str, Any], namespace: str) -> bool:
        api_version = ref.get("apiVersion", "")
        rt = self.cluster.registry.for_api_version(api_version, ref.get("kind", ""))
        if rt is None:
            return False
        owner = self.cluster.store.get(rt.storage, namespace if rt.namespaced else "",
                                       ref.get("name", ""))
        return owner is not None and owner["metadata"].get("uid") == ref.get("uid")

    def _collect(self, uid: str) -> None:
        """An owner went: drop references to it; delete dependents left without owners."""
        for rt, obj in self._dependents_of(uid):
            meta = obj["metadata"]
            ns = meta.get("namespace") or ""
            remaining = [r for r in meta.get("ownerReferences") or []
                         if r.get("uid") != uid and self._owner_exists(r, ns)]
            if remaining:
                new = clone(obj)
                new["metadata"]["ownerReferences"] = remaining
                self.cluster.system_update(rt, new, manager="kube-controller-manager")
            elif not meta.get("deletionTimestamp"):
                self.cluster.delete(rt, ns, meta["name"], propagation="Background")

    def _orphan(self, rt: ResourceType, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep_rt, obj in self._dependents_of(uid):
            new = clone(obj)
            refs = [r for r in new["metadata"].get("ownerReferences") or []
                    if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.cluster.system_update(dep_rt, new, manager="kube-controller-manager")
        self._drop_finalizer(rt, owner, "orphan")

    def _delete_dependents(self, owner: Obj, propagation: str) -> None:
        uid = owner["metadata"]["uid"]
        for rt, obj in self._dependents_of(uid):
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp"):
                self.cluster.delete(rt, meta.get("namespace") or "", meta["name"],
                                    propagation=propagation)
        self._maybe_finish_foreground(uid)

    def _maybe_finish_foreground(self, uid: str) -> None:
        if self._dependents_of(uid):
            return
        for storage in list(self.cluster.store.storages()):
            rt = self._storage_rt(storage)
            if rt is None:
                continue
            for obj in self.cluster.store.select(storage):
                meta = obj["metadata"]
                if meta.get("uid") == uid and "foregroundDeletion" in (
                        meta.get("finalizers") or []):
                    self._drop_finalizer(rt, obj, "foregroundDeletion")
                    return

    def _drop_finalizer(self, rt: ResourceType, obj: Obj, finalizer: str) -> None:
        current = self.cluster.store.get(rt.storage, obj["metadata"].get("namespace") or "",
                                         obj["metadata"]["name"])
        if current is None:
            return
        new = clone(current)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
        self.cluster.system_update(rt, new, manager="kube-controller-manager")

    # --- namespaces and CRDs ----------------------------------------------------------

    def _namespaced_types(self) -> list[ResourceType]:
        seen: dict[StorageKey, ResourceType] = {}
        for rt in self.cluster.registry:
            if rt.namespaced and not rt.virtual and rt.storage_of is None:
                seen.setdefault(rt.storage, self.cluster.storage_type(rt))
        return list(seen.values())

    def _drain_namespace(self, name: str) -> None:
        for rt in self._namespaced_types():
            for obj in self.cluster.store.select(rt.storage, name):
                if not obj["metadata"].get("deletionTimestamp"):
                    self.cluster.delete(rt, name, obj["metadata"]["name"],
                                        propagation="Background")
        self._maybe_finish_namespace(name)

    def _maybe_finish_namespace(self, name: str) -> None:
        ns = self.cluster.store.get(NAMESPACES, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if any(self.cluster.store.select(rt.storage, name) for rt in self._namespaced_types()):
            return
        rt = self.cluster.registry.lookup("", "v1", "namespaces")
        assert rt is not None
        new = clone(ns)
        new.setdefault("spec", {})["finalizers"] = [
            f for f in new["spec"].get("finalizers") or [] if f != "kubernetes"]
        stored = self.cluster.system_update(rt, new, manager="namespace-controller")
        meta = stored["metadata"]
        done = not meta.get("finalizers") and not (stored.get("spec") or {}).get("finalizers")
        if done and self.cluster.store.get(NAMESPACES, "", name) is not None:
            self.cluster.remove(rt, stored)

    def _crd_rt(self, crd_name: str) -> ResourceType | None:
        for name, types in self.cluster.registry.crd_types():
            if name == crd_name and types:
                return self.cluster.storage_type(types[0])
        return None

    def _drain_crd(self, crd_name: str) -> None:
        rt = self._crd_rt(crd_name)
        if rt is not None:
            for obj in self.cluster.store.select(rt.storage):
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    self.cluster.delete(rt, meta.get("namespace") or "", meta["name"])
        self._maybe_finish_crd(crd_name)

    def _maybe_finish_crd(self, crd_name: str) -> None:
        crd = self.cluster.store.get(CRDS, "", crd_name)
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return
        rt = self._crd_rt(crd_name)
        if rt is not None and self.cluster.store.count(rt.storage):
            return
        crd_rt = self.cluster.registry.lookup("apiextensions.k8s.io", "v1",
                                              "customresourcedefinitions")
        assert crd_rt is not None
        self._drop_finalizer(crd_rt, crd, "customresourcecleanup.apiextensions.k8s.io")

    def _storage_rt(self, storage: StorageKey) -> ResourceType | None:
        for rt in self.cluster.registry:
            if rt.storage == storage and rt.storage_of is None:
                return self.cluster.storage_type(rt)
        return None

    # --- root CA publisher ------------------------------------------------------------

    def _publish_root_ca(self, namespace: str) -> None:
        """Create or put right ``kube-root-ca.crt`` in an active namespace."""
        assert self.root_ca is not None
        ns = self.cluster.store.get(NAMESPACES, "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return  # as the real publisher, which does not retry into a terminating namespace
        rt = self.cluster.registry.lookup("", "v1", "configmaps")
        assert rt is not None
        data = {"ca.crt": self.root_ca.decode()}
        current = self.cluster.store.get(CONFIGMAPS, namespace, ROOT_CA_CONFIGMAP)
        if current is None:
            self.cluster.create(rt, namespace, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {
                    ROOT_CA_DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION}},
                "data": data,
            }, opts=WriteOptions(field_manager="kube-controller-manager"))
            return
        annotations = current["metadata"].get("annotations") or {}
        if current.get("data") == data and annotations.get(ROOT_CA_DESCRIPTION_ANNOTATION):
            return
        new = clone(current)
        new["data"] = data
        new["metadata"]["annotations"] = {
            **annotations, ROOT_CA_DESCRIPTION_ANNOTATION: ROOT_CA_DESCRIPTION}
        self.cluster.system_update(rt, new, manager="kube-controller-manager")

    # --- CRDs ------------------------------------------------------------------------

    def _schedule_establishing(self, rt: ResourceType, crd: Obj) -> None:
        """Mark a new CRD Established when discovery lists its kinds (the registry's
        ``discovery_delay``), as a real server's establishing controller does."""
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True"
               for c in conditions):
            return
        key = (rt.storage, "", crd["metadata"]["name"])
        if key not in self._timers:
            self._timers[key] = asyncio.get_running_loop().create_task(
                self._establish(rt, key), name=f"establish {key}")

    async def _establish(self, rt: ResourceType, key: DepKey) -> None:
        storage, _, name = key
        registry = self.cluster.registry
        try:
            for _ in range(3):  # the delay, and a step more should the clock land short
                left = registry.establishing_left(name)
                if left <= 0:
                    break
                await self.cluster.clock.sleep(left)
            obj = self.cluster.store.get(storage, "", name)
            if obj is not None and not obj["metadata"].get("deletionTimestamp"):
                # the write recomputes the conditions: Established now
                self.cluster.system_update(rt, obj, subresource="status",
                                           manager="kube-apiserver")
        except ApiError as exc:
            log.debug("establishing %s answered %s", name, exc.message)
        finally:
            if self._timers.get(key) is asyncio.current_task():
                del self._timers[key]

    # --- workload simulation ----------------------------------------------------------

    def _schedule_simulation(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (rt.storage, meta.get("namespace") or "", meta["name"])
        fingerprint = _fingerprint(obj)
        if self._simulated.get(key) == fingerprint:
            return  # this spec is being (or has been) simulated; status writes land here too
        if not simulate.needs_simulation(rt.group, rt.kind, obj):
            return
        self._simulated[key] = fingerprint
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        delay = simulate.ready_delay(obj, self.ready_delay)
        self._timers[key] = asyncio.get_running_loop().create_task(
            self._simulate(rt, key, delay), name=f"simulate {key}")

    async def _simulate(self, rt: ResourceType, key: DepKey, delay: float) -> None:
        storage, ns, name = key
        try:
            obj = self.cluster.store.get(storage, ns, name)
            if obj is None:
                return
            pending = simulate.pending_status(rt.group, rt.kind, obj, self.cluster.now())
            if pending is not None and pending != obj.get("status"):
                self._write_status(rt, obj, pending)
            await self.cluster.clock.sleep(delay)
            obj = self.cluster.store.get(storage, ns, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return
            final = simulate.final_status(rt.group, rt.kind, obj, self.cluster.now())
            if final != obj.get("status"):
                self._write_status(rt, obj, final)
        except ApiError as exc:
            log.debug("simulated status write for %s answered %s", key, exc.message)
        finally:
            if self._timers.get(key) is asyncio.current_task():
                del self._timers[key]

    def _write_status(self, rt: ResourceType, obj: Obj, status: dict[str, Any]) -> None:
        new = clone(obj)
        new["status"] = status
        sub = "status" if rt.has_status else ""
        self.cluster.system_update(rt, new, subresource=sub)


def _fingerprint(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return json.dumps([
        obj.get("spec"), meta.get("generation"),
        annotations.get(simulate.FAIL_ANNOTATION), annotations.get(simulate.DELAY_ANNOTATION),
    ], sort_keys=True, default=str)


def _owner_uids(obj: Obj | None) -> set[str]:
    if not obj:
        return set()
    return {r["uid"] for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if isinstance(r, dict) and r.get("uid")}
