"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

A candidate tries every ``retry_period`` to take the Lease: it may when the Lease does
not exist, is already its own, or has not been renewed for ``lease_duration`` as
*observed locally* (clocks of different machines are never compared). Writes are
conditional on the Lease's resourceVersion, so two candidates cannot both win. The leader
renews every ``retry_period``; if it cannot renew for ``renew_deadline`` it has lost the
lease and must stop working at once (``LeadershipLost``); the process then exits
non-zero and Kubernetes restarts it. On a clean shutdown the leader releases the Lease
(empty holder), so a standby takes over without waiting for expiry.

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


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 35.0
    renew_deadline: float = 30.0
    retry_period: float = 5.0
    release_on_cancel: bool = True


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
        """Return once this candidate holds the lease (retrying every retry_period)."""
        while not await self.try_acquire_or_renew():
            await self._clock.sleep(self.config.retry_period)
        self._set_leading(True)

    async def hold(self) -> None:
        """Renew until cancelled; raise LeadershipLost when renewal fails too long."""
        last_renew = self._clock.monotonic()
        while True:
            await self._clock.sleep(self.config.retry_period)
            if await self.try_acquire_or_renew():
                last_renew = self._clock.monotonic()
            elif self._clock.monotonic() - last_renew >= self.config.renew_deadline:
                self._set_leading(False)
                raise LeadershipLost(
                    f"could not renew lease {self.config.namespace}/{self.config.name} "
                    f"within {self.config.renew_deadline:g}s")

    async def try_acquire_or_renew(self) -> bool:
        cfg = self.config
        now_text = rfc3339_micro(self._clock.now())
        try:
            lease = await self._client.get(LEASE_API, "Lease", cfg.name, cfg.namespace)
        except NotFound:
            lease = None
        except KubeError as exc:
            log.warning("reading lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
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
                return False
            except KubeError as exc:
                log.warning("creating lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
                return False
            self._observe(body["spec"])
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        expired = self._clock.monotonic() - self._observed_at >= duration
        if holder and holder != cfg.identity and not expired:
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
            return False
        except KubeError as exc:
            log.warning("renewing lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
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
