"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

A candidate tries every ``retry_period`` to take the Lease: it may when the Lease does
not exist, is already its own, or has not been renewed for ``lease_duration`` as
*observed locally* (clocks of different machines are never compared). Writes are
conditional on the Lease's resourceVersion, so two candidates cannot both win. The leader
renews every ``retry_period``; if it cannot renew for ``renew_deadline`` it has lost the
lease and must stop working at once (``LeadershipLost``); the process then exits
non-zero and Kubernetes restarts it. On a clean shutdown the leader releases the Lease
(empty holder), so a standby takes over without waiting for expiry.

A Lease namespace that does not exist is a configuration error, not a passing fault:
``acquire`` raises ``LeaseNamespaceNotFound`` at once (naming the namespace and the
setting that chose it) instead of retrying as client-go does, so the process can exit
non-zero with one clear line. A namespace deleted under a running leader is a failed
renewal like any other: the renew deadline decides, and ``LeadershipLost`` says why.

Flux's defaults: lease 35 s, renew deadline 30 s, retry 5 s, release on cancel.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fluxd.clock import Clock, rfc3339_micro
from fluxd.kube import AlreadyExists, Conflict, KubeClient, KubeError, NotFound

log = logging.getLogger("fluxd.leader")

LEASE_API = "coordination.k8s.io/v1"


class LeadershipLost(Exception):
    """The lease could not be renewed within the renew deadline."""


class LeaseNamespaceNotFound(Exception):
    """The Lease cannot be created because its namespace does not exist."""

    def __init__(self, namespace: str, lease: str, origin: str) -> None:
        text = f'the leader election Lease namespace "{namespace}" does not exist'
        super().__init__(f"{text}; it is set by {origin}" if origin else text)
        self.namespace = namespace
        self.lease = lease


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 35.0
    renew_deadline: float = 30.0
    retry_period: float = 5.0
    release_on_cancel: bool = True
    #: what chose ``namespace`` (the setting a user would change), for the error when the
    #: namespace does not exist
    namespace_origin: str = ""


def _is_missing_namespace(exc: KubeError, namespace: str) -> bool:
    """True when the API server refused a write because ``namespace`` does not exist
    (its Status names the namespace, not the Lease)."""
    return (isinstance(exc, NotFound) and exc.details.get("kind") == "namespaces"
            and exc.details.get("name") == namespace)


def lease_name(base: str, shard_selector: str | None) -> str:
    """The Lease name for a shard: one Lease per label selector, a valid object name."""
    if not shard_selector:
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", shard_selector.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(shard_selector.encode()).hexdigest()[:8]
    return f"{base}-{slug}-{digest}" if slug else f"{base}-{digest}"


class LeaderElector:
    def __init__(self, client: KubeClient, config: ElectionConfig, *, clock: Clock,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self._client = client
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._leading = False
        #: the last Lease content seen, and when (local monotonic time) it last changed
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        #: why the last attempt did not take or renew the lease, for LeadershipLost
        self._failure = ""

    @property
    def is_leader(self) -> bool:
        return self._leading

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info("%s leadership of lease %s/%s", "acquired" if leading else "lost",
                     self.config.namespace, self.config.name)
            if self._on_change is not None:
                self._on_change(leading)

    async def acquire(self) -> None:
        """Return once this candidate holds the lease (retrying every retry_period);
        raise LeaseNamespaceNotFound when the Lease's namespace does not exist."""
        while not await self.try_acquire_or_renew():
            await self._clock.sleep(self.config.retry_period)
        self._set_leading(True)

    async def hold(self) -> None:
        """Renew until cancelled; raise LeadershipLost when renewal fails too long."""
        last_renew = self._clock.monotonic()
        while True:
            await self._clock.sleep(self.config.retry_period)
            try:
                renewed = await self.try_acquire_or_renew()
            except LeaseNamespaceNotFound as exc:
                log.warning("renewing lease %s/%s failed: %s", self.config.namespace,
                            self.config.name, exc)
                self._failure, renewed = str(exc), False
            if renewed:
                last_renew = self._clock.monotonic()
            elif self._clock.monotonic() - last_renew >= self.config.renew_deadline:
                self._set_leading(False)
                raise LeadershipLost(
                    f"could not renew lease {self.config.namespace}/{self.config.name} "
                    f"within {self.config.renew_deadline:g}s: {self._failure}")

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the lease; False (with the reason kept) when
        another holder has it or the API refused, LeaseNamespaceNotFound when it never
        can."""
        cfg = self.config
        now_text = rfc3339_micro(self._clock.now())
        try:
            lease = await self._client.get(LEASE_API, "Lease", cfg.name, cfg.namespace)
        except NotFound:
            lease = None
        except KubeError as exc:
            log.warning("reading lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
            self._failure = f"reading it failed: {exc}"
            return False
        if lease is None:
            body: dict[str, Any] = {"apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": {"holderIdentity": cfg.identity,
                             "leaseDurationSeconds": int(cfg.lease_duration),
                             "acquireTime": now_text, "renewTime": now_text,
                             "leaseTransitions": 0}}
            try:
                await self._client.create(body)
            except (AlreadyExists, Conflict):
                self._failure = "another candidate created it first"
                return False
            except KubeError as exc:
                if _is_missing_namespace(exc, cfg.namespace):
                    raise LeaseNamespaceNotFound(cfg.namespace, cfg.name,
                                                 cfg.namespace_origin) from exc
                log.warning("creating lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
                self._failure = f"creating it failed: {exc}"
                return False
            self._observe(body["spec"])
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        expired = self._clock.monotonic() - self._observed_at >= duration
        if holder and holder != cfg.identity and not expired:
            self._failure = f"it is held by {holder}"
            return False
        if holder != cfg.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now_text
        spec.update(holderIdentity=cfg.identity, leaseDurationSeconds=int(cfg.lease_duration),
                    renewTime=now_text)
        lease["spec"] = spec
        try:
            await self._client.update(lease)
        except Conflict:
            self._failure = "another writer changed it"
            return False
        except KubeError as exc:
            if _is_missing_namespace(exc, cfg.namespace):
                raise LeaseNamespaceNotFound(cfg.namespace, cfg.name,
                                             cfg.namespace_origin) from exc
            log.warning("renewing lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
            self._failure = f"writing it failed: {exc}"
            return False
        self._observe(spec)
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock.monotonic()

    async def release(self) -> None:
        """Give the lease up (if held) so a standby can take it at once."""
        if not self._leading:
            return
        self._set_leading(False)
        cfg = self.config
        try:
            lease = await self._client.get(LEASE_API, "Lease", cfg.name, cfg.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != cfg.identity:
                return
            now_text = rfc3339_micro(self._clock.now())
            lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1,
                             "renewTime": now_text, "acquireTime": now_text}
            await self._client.update(lease)
        except KubeError as exc:
            log.warning("releasing lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
