"""What the demo reads from the cluster, as pure functions over plain JSON objects.

A Flux object is *applied at* a revision when it is Ready, its status describes its
current generation, and it reports that revision (a Kustomization's
``lastAppliedRevision``, a source's ``artifact.revision``). A commit is applied when the
root Kustomization and every Kustomization in its inventory are applied at its revision,
and every HelmRelease is Ready for its current generation. ``Reporter`` turns successive
snapshots into progress lines, one per change of an object's Ready condition;
``latest_release`` is the Helm release revision a HelmRelease made last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fluxd.runtime import conditions

Obj = Mapping[str, Any]

KUSTOMIZATION_GROUP = "kustomize.toolkit.fluxcd.io"
KUSTOMIZATION = "Kustomization"
HELMRELEASE = "HelmRelease"
#: the widest kind the reporter names (HelmRepository)
KIND_WIDTH = 14


def name_of(obj: Obj) -> str:
    """``namespace/name``."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def ready_condition(obj: Obj) -> dict[str, Any] | None:
    return conditions.get((obj.get("status") or {}).get("conditions"), conditions.READY)


def revision_of(obj: Obj) -> str:
    """The revision an object last applied (Kustomization) or stored (source)."""
    status = obj.get("status") or {}
    if obj.get("kind") == KUSTOMIZATION:
        return str(status.get("lastAppliedRevision") or "")
    return str((status.get("artifact") or {}).get("revision") or "")


def ready_for_generation(obj: Obj) -> bool:
    """Ready, and the status describes the object's current generation."""
    status = obj.get("status") or {}
    ready = ready_condition(obj)
    return (ready is not None and ready.get("status") == conditions.TRUE
            and status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation"))


def applied_at(obj: Obj, revision: str) -> bool:
    return ready_for_generation(obj) and revision_of(obj) == revision


def inventory_kustomizations(obj: Obj) -> list[str]:
    """The Kustomizations (``namespace/name``) in a Kustomization's inventory."""
    found = []
    for entry in ((obj.get("status") or {}).get("inventory") or {}).get("entries") or []:
        # Flux's object id: <namespace>_<name>_<group>_<kind>
        parts = str(entry.get("id", "")).split("_")
        if len(parts) == 4 and parts[2:] == [KUSTOMIZATION_GROUP, KUSTOMIZATION]:
            found.append(f"{parts[0]}/{parts[1]}")
    return found


def not_applied(kustomizations: Iterable[Obj], *, root: str, revision: str) -> list[str]:
    """The root and the Kustomizations it created that are not applied at ``revision``
    (empty when the commit is applied everywhere)."""
    by_name = {name_of(k): k for k in kustomizations}
    wanted = [root, *inventory_kustomizations(by_name.get(root) or {})]
    return [name for name in wanted
            if name not in by_name or not applied_at(by_name[name], revision)]


def releases_not_ready(objects: Iterable[Obj]) -> list[str]:
    """The HelmReleases among ``objects`` not Ready for their current generation."""
    return [name_of(o) for o in objects
            if o.get("kind") == HELMRELEASE and not ready_for_generation(o)]


def latest_release(obj: Obj) -> dict[str, Any] | None:
    """The newest Helm release snapshot in a HelmRelease's ``status.history``."""
    history = (obj.get("status") or {}).get("history") or []
    latest = history[0] if isinstance(history, list) and history else None
    return latest if isinstance(latest, dict) else None


def describe_release(snapshot: Obj) -> str:
    """``revision 2 of release podinfo/cache deployed (chart cache@0.1.0, upgrade)``."""
    details = [f"chart {snapshot.get('chartName')}@{snapshot.get('chartVersion')}"]
    if snapshot.get("action"):
        details.append(str(snapshot["action"]))
    return (f"revision {snapshot.get('version')} of release {snapshot.get('namespace')}/"
            f"{snapshot.get('name')} {snapshot.get('status')} ({', '.join(details)})")


def describe(obj: Obj) -> str:
    """One line of an object's state: ``Ready`` or its reason, then its Ready message."""
    ready = ready_condition(obj)
    if ready is None:
        return "no status yet"
    word = "Ready" if ready.get("status") == conditions.TRUE else \
        str(ready.get("reason") or ready.get("status"))
    return f"{word}: {ready.get('message', '')}".rstrip(": ")


class Reporter:
    """Progress lines for successive snapshots of Flux objects: a line when an object's
    Ready condition (status, reason, message) differs from what was last said of it."""

    def __init__(self) -> None:
        self._said: dict[tuple[str, str], tuple[str, str, str]] = {}

    def lines(self, objects: Iterable[Obj], *, elapsed: float) -> list[str]:
        out = []
        for obj in objects:
            ready = ready_condition(obj)
            if ready is None:
                continue
            key = (str(obj.get("kind", "")), name_of(obj))
            state = (str(ready.get("status")), str(ready.get("reason")),
                     str(ready.get("message")))
            if self._said.get(key) == state:
                continue
            self._said[key] = state
            out.append(f"[{elapsed:5.1f}s] {key[0]:<{KIND_WIDTH}} {key[1]:<26} "
                       f"{describe(obj)}")
        return out
