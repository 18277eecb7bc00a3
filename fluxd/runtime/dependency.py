"""``dependsOn``: whether the objects an object depends on are ready, as Flux's appliers
(Kustomization, HelmRelease) decide it.

A dependency is an object of the same kind, in the dependent's namespace unless it names
another. It is ready when its ``readyExpr`` (CEL over ``self``, the dependent, and
``dep``) is true, or — without one — when it is Ready at its current generation; the
caller may add a check of its own (a Kustomization on the same source must be at the
same revision). ``check`` raises ``NotReady`` with the first reason found, or
``CrossNamespaceRefused`` when references to other namespaces are blocked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fluxd.kube.errors import KubeError, NotFound
from fluxd.runtime import cel
from fluxd.runtime import conditions as cond

Obj = dict[str, Any]


class Dependency(Protocol):
    """A ``dependsOn`` entry (``fluxd.api.meta.DependencyReference``)."""

    name: str
    namespace: str | None
    ready_expr: str | None


class DependencyClient(Protocol):
    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj: ...


class NotReady(Exception):
    """A dependency is missing or not ready; the message says which and why."""


class CrossNamespaceRefused(Exception):
    """A dependency in another namespace while such references are blocked."""


async def check(client: DependencyClient, *, api_version: str, kind: str, obj: Mapping[str, Any],
                depends_on: Sequence[Dependency], no_cross_namespace_refs: bool = False,
                not_found: Callable[[str, Dependency], str] | None = None,
                also: Callable[[str, Dependency, Obj], str | None] | None = None) -> None:
    """Every dependency ready, or ``NotReady``. ``not_found(shown, dep)`` words a missing
    one (default: ``dependency '<ns>/<name>' not found``); ``also(shown, dep, found)`` is
    the caller's own check of a dependency Ready by the built-in rule (a reason, or
    None)."""
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    for dep in depends_on:
        dep_ns = dep.namespace or namespace
        shown = f"{dep_ns}/{dep.name}"
        if no_cross_namespace_refs and dep_ns != namespace:
            raise CrossNamespaceRefused(f"cannot access {kind}/{dep_ns}/{dep.name}, "
                                        "cross-namespace references have been blocked")
        try:
            found = await client.get(api_version, kind, dep.name, dep_ns)
        except NotFound:
            raise NotReady(not_found(shown, dep) if not_found is not None
                           else f"dependency '{shown}' not found") from None
        except KubeError as exc:
            raise NotReady(f"unable to get dependency '{shown}': {exc}") from exc
        if dep.ready_expr:
            try:
                ok = cel.Expression.compile(
                    dep.ready_expr, variables=cel.READY_EXPR_VARIABLES).evaluate_bool(
                    {"self": obj, "dep": found})
            except cel.CELError as exc:
                # compiled once already by the caller; an evaluation error is retried
                raise NotReady(f"dependency '{shown}' readyExpr evaluation failed: "
                               f"{exc}") from exc
            if not ok:
                raise NotReady(f"dependency '{shown}' is not ready according to readyExpr "
                               "eval")
            continue
        status = found.get("status") or {}
        generation = (found.get("metadata") or {}).get("generation")
        if status.get("observedGeneration") != generation or \
                not cond.is_true(status.get("conditions"), cond.READY):
            raise NotReady(f"dependency '{shown}' is not ready")
        if also is not None:
            why = also(shown, dep, found)
            if why:
                raise NotReady(why)


__all__ = ["CrossNamespaceRefused", "Dependency", "NotReady", "check"]
