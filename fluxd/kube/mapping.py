"""The REST mapping: which resource serves a kind, and at which scope.

Built from aggregated discovery (two requests: ``/api`` and ``/apis``), with a fallback
to the per-group-version documents for servers without it. Cached; a kind that is not
known triggers a refresh (a CRD may have been added since); a kind that a refresh did not
find fails at once for ``min_refresh_interval`` seconds (until an explicit ``refresh``),
so a typo in a manifest cannot turn into a discovery storm.

A CRD reaches discovery a moment after it is written: the API server's establishing and
discovery controllers run after the write (and an HA server waits seconds before it
establishes), so even an Established CRD may not be listed yet. The client tells the
mapper of each CRD it writes (``expect_crd``); a lookup of one of its kinds that misses
is looked for again, backing off, for up to ``discovery_wait`` seconds before it fails.
Other misses fail after one refresh, as controller-runtime's and client-go's mappers do.
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


#: first pause between two looks for an expected kind; doubled each time
_FIRST_RETRY = 0.1
#: how long after a CRD is written a miss of its kinds still waits for discovery
_EXPECT_FOR = 300.0


class RESTMapper:
    def __init__(self, fetcher: Fetcher, clock: Clock, *, min_refresh_interval: float = 5.0,
                 discovery_wait: float = 5.0):
        self._fetcher = fetcher
        self._clock = clock
        self._min_refresh = min_refresh_interval
        self._discovery_wait = discovery_wait
        self._by_kind: dict[tuple[str, str], Mapping] = {}
        #: kinds a refresh did not find, and when: asked again sooner, they fail at once
        self._missing: dict[tuple[str, str], float] = {}
        #: kinds of the CRDs written through this mapper's client, and when
        self._expected: dict[tuple[str, str], float] = {}

    def expect_crd(self, crd: dict[str, Any]) -> None:
        """``crd`` was just written: its served kinds will be listed in a moment."""
        spec = crd.get("spec") or {}
        group = str(spec.get("group") or "")
        kind = str((spec.get("names") or {}).get("kind") or "")
        now = self._clock.monotonic()
        self._expected = {k: t for k, t in self._expected.items() if now - t < _EXPECT_FOR}
        for version in spec.get("versions") or []:
            if isinstance(version, dict) and version.get("served") and group and kind:
                key = (f"{group}/{version.get('name')}", kind)
                self._expected[key] = now
                self._missing.pop(key, None)

    async def mapping(self, api_version: str, kind: str) -> Mapping:
        key = (api_version, kind)
        found = self._by_kind.get(key)
        if found is not None:
            return found
        now = self._clock.monotonic()
        written = self._expected.get(key)
        expected = written is not None and now - written < _EXPECT_FOR
        missed = self._missing.get(key)
        if expected or missed is None or now - missed >= self._min_refresh:
            found = await self._look_for(key, now + self._discovery_wait if expected else now)
            self._expected.pop(key, None)
            if found is not None:
                return found
            self._missing[key] = self._clock.monotonic()
        raise NotFound(404, f'no matches for kind "{kind}" in version "{api_version}"',
                       reason="NoKindMatch")

    async def _look_for(self, key: tuple[str, str], deadline: float) -> Mapping | None:
        """Reload discovery until it lists ``key`` or ``deadline`` has passed."""
        pause = _FIRST_RETRY
        while True:
            await self._reload()
            found = self._by_kind.get(key)
            left = deadline - self._clock.monotonic()
            if found is not None or left <= 0:
                return found
            await self._clock.sleep(min(pause, left))
            pause *= 2

    async def refresh(self) -> None:
        """Re-read discovery now, and forget which kinds were missing (a caller that
        installed CRDs knows they may exist now)."""
        self._missing.clear()
        await self._reload()

    async def _reload(self) -> None:
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
