"""The REST mapping: which resource serves a kind, and at which scope.

Built from aggregated discovery (two requests: ``/api`` and ``/apis``), with a fallback
to the per-group-version documents for servers without it. Cached; a kind that is not
known triggers a refresh (a CRD may have been added since); a kind that a refresh did not
find fails at once for ``min_refresh_interval`` seconds, so a typo in a manifest cannot
turn into a discovery storm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fluxd.clock import Clock
from fluxd.kube.errors import NotFound

AGGREGATED = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
              "application/json")


@dataclass(frozen=True)
class Mapping:
    group: str
    version: str
    kind: str
    resource: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.resource}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


class Fetcher(Protocol):
    async def get_json(self, path: str, *, accept: str) -> tuple[Any, str]:
        """(decoded JSON, response content type)."""
        ...


class RESTMapper:
    def __init__(self, fetcher: Fetcher, clock: Clock, *, min_refresh_interval: float = 5.0):
        self._fetcher = fetcher
        self._clock = clock
        self._min_refresh = min_refresh_interval
        self._by_kind: dict[tuple[str, str], Mapping] = {}
        #: kinds a refresh did not find, and when: asked again sooner, they fail at once
        self._missing: dict[tuple[str, str], float] = {}

    async def mapping(self, api_version: str, kind: str) -> Mapping:
        key = (api_version, kind)
        found = self._by_kind.get(key)
        if found is not None:
            return found
        missed = self._missing.get(key)
        now = self._clock.monotonic()
        if missed is None or now - missed >= self._min_refresh:
            await self.refresh()
            found = self._by_kind.get(key)
            if found is not None:
                return found
            self._missing[key] = self._clock.monotonic()
        raise NotFound(404, f'no matches for kind "{kind}" in version "{api_version}"',
                       reason="NoKindMatch")

    async def refresh(self) -> None:
        mappings: dict[tuple[str, str], Mapping] = {}
        for root in ("/api", "/apis"):
            doc, ctype = await self._fetcher.get_json(root, accept=AGGREGATED)
            if "as=APIGroupDiscoveryList" in ctype:
                for item in doc.get("items") or []:
                    group = (item.get("metadata") or {}).get("name") or ""
                    for ver in item.get("versions") or []:
                        for res in ver.get("resources") or []:
                            _add(mappings, group, ver.get("version", ""), res)
            else:
                await self._legacy(root, doc, mappings)
        self._by_kind = mappings

    async def _legacy(self, root: str, doc: Any, out: dict[tuple[str, str], Mapping]) -> None:
        if root == "/api":
            gvs = [("", v) for v in doc.get("versions") or []]
        else:
            gvs = [(g["name"], v["version"]) for g in doc.get("groups") or []
                   for v in g.get("versions") or []]
        for group, version in gvs:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            listing, _ = await self._fetcher.get_json(path, accept="application/json")
            subs: dict[str, set[str]] = {}
            for res in listing.get("resources") or []:
                name = res.get("name", "")
                if "/" in name:
                    parent, _, sub = name.partition("/")
                    subs.setdefault(parent, set()).add(sub)
            for res in listing.get("resources") or []:
                name = res.get("name", "")
                if "/" in name:
                    continue
                _add(out, group, version, {
                    "resource": name, "scope": "Namespaced" if res.get("namespaced")
                    else "Cluster", "responseKind": {"kind": res.get("kind")},
                    "subresources": [{"subresource": s} for s in subs.get(name, ())]})


def _add(out: dict[tuple[str, str], Mapping], group: str, version: str,
         res: dict[str, Any]) -> None:
    kind = (res.get("responseKind") or {}).get("kind") or ""
    if not kind:
        return
    mapping = Mapping(
        group=group, version=version, kind=kind, resource=res.get("resource", ""),
        namespaced=res.get("scope") == "Namespaced",
        subresources=frozenset(s.get("subresource", "") for s in res.get("subresources") or []),
    )
    out.setdefault((mapping.api_version, kind), mapping)
