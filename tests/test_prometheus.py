"""fluxd.health as Prometheus sees it: the endpoints, promtool's lint, and a real scrape.

The real Prometheus and promtool come from the Debian ``prometheus`` package, which the
README's test command installs; without them these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.abc import Process
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from fluxd import listen
from fluxd.clock import FakeClock
from fluxd.health import RENDER_TTL, HealthServer, parse_address, serve
from fluxd.listen import ListenerLimits
from fluxd.metrics import Metrics

pytestmark = pytest.mark.anyio


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                   else None)
    if found is None:
        pytest.fail(f"{name} not found: run the README's test command (make test), which "
                    "installs the Debian prometheus package")
    return found


@dataclass
class Stats:
    depth: int = 2
    depth_low: int = 1
    processing: int = 1
    unfinished_seconds: float = 0.5
    longest_running_seconds: float = 0.5


@dataclass
class Fluxd:
    server: HealthServer
    registry: CollectorRegistry
    readiness: list[tuple[bool, str]]


def busy_metrics(registry: CollectorRegistry) -> Metrics:
    metrics = Metrics(registry)
    metrics.controller_started("kustomization", max_concurrent=4)
    metrics.reconcile_started("kustomization")
    metrics.reconcile_finished("kustomization", "success", 0.7,
                               kind="Kustomization", name="apps", namespace="flux-system")
    metrics.added("Kustomization")
    metrics.queued_for("Kustomization", 0.01)
    metrics.worked_for("Kustomization", 0.7)
    metrics.leader_changed("fluxd-leader-election", leading=True)
    metrics.config_reloaded(success=True, at=1_700_000_000.0)
    metrics.track_workqueues(lambda: {"Kustomization": Stats()})
    return metrics


@pytest.fixture
async def fluxd() -> AsyncIterator[Fluxd]:
    registry = CollectorRegistry()
    busy_metrics(registry)
    readiness = [(True, "controllers running")]
    async with serve("127.0.0.1:0", registry=registry,
                     ready=lambda: readiness[-1]) as server:
        yield Fluxd(server, registry, readiness)


async def get(url: str, **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


# -- the endpoints -------------------------------------------------------------------------


async def test_the_server_binds_a_free_port_and_reports_it(fluxd: Fluxd) -> None:
    assert fluxd.server.host == "127.0.0.1"
    assert fluxd.server.port > 0
    assert fluxd.server.url == f"http://127.0.0.1:{fluxd.server.port}"


async def test_healthz_says_ok_while_the_process_serves(fluxd: Fluxd) -> None:
    assert await get(f"{fluxd.server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok")


async def test_readyz_follows_the_readiness_callable(fluxd: Fluxd) -> None:
    status, _, body = await get(f"{fluxd.server.url}/readyz")
    assert (status, body) == (200, "controllers running")
    fluxd.readiness.append((False, "waiting for leader election"))
    status, _, body = await get(f"{fluxd.server.url}/readyz")
    assert (status, body) == (503, "waiting for leader election")


async def test_readyz_is_503_when_the_readiness_check_raises() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("cache not built")

    async with serve("127.0.0.1:0", registry=CollectorRegistry(), ready=broken) as server:
        status, _, body = await get(f"{server.url}/readyz")
    assert status == 503 and "cache not built" in body


async def test_metrics_are_prometheus_text_by_default(fluxd: Fluxd) -> None:
    status, content_type, body = await get(f"{fluxd.server.url}/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert ('controller_runtime_reconcile_total{controller="kustomization",result="success"} '
            '1.0') in body
    assert "_created" not in body  # the Go controllers expose no creation timestamps


async def test_metrics_are_openmetrics_when_asked(fluxd: Fluxd) -> None:
    status, content_type, body = await get(
        f"{fluxd.server.url}/metrics", Accept="application/openmetrics-text;version=1.0.0")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith("# EOF\n")
    assert "_created" not in body


async def test_leaving_the_block_closes_the_listener() -> None:
    async with serve("127.0.0.1:0", registry=CollectorRegistry(),
                     ready=lambda: (True, "")) as server:
        pass
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"{server.url}/healthz")


class SlowCollector:
    """A collector that takes 20 ms of CPU per collection, and counts them."""

    def __init__(self) -> None:
        self.collections = 0

    def collect(self) -> Iterator[Metric]:
        self.collections += 1
        done = time.perf_counter() + 0.02
        while time.perf_counter() < done:
            pass
        yield GaugeMetricFamily("fluxd_test_slow", "A slow collector.", value=1)


async def test_a_crowd_of_scrapes_shares_one_collection_and_readyz_answers_meanwhile(
        ) -> None:
    registry = CollectorRegistry()
    busy_metrics(registry)
    slow = SlowCollector()
    registry.register(slow)
    # as many as the listener admits, however low this machine's descriptor limit
    crowd = min(300, listen.connection_cap(400) - 2)
    async with serve("127.0.0.1:0", registry=registry, ready=lambda: (True, "ok"),
                     limits=ListenerLimits(max_connections=400), clock=FakeClock()) as server:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def scrape() -> tuple[int, str]:
                async with session.get(f"{server.url}/metrics") as resp:
                    return resp.status, await resp.text()

            async def readyz() -> float:
                await asyncio.sleep(0.05)  # once the crowd is in
                started = time.perf_counter()
                async with session.get(f"{server.url}/readyz") as resp:
                    assert resp.status == 200
                return time.perf_counter() - started

            *scrapes, waited = await asyncio.gather(*(scrape() for _ in range(crowd)),
                                                   readyz())
    assert slow.collections == 1
    assert waited < 1.0, f"/readyz took {waited:.2f}s"
    assert all(status == 200 and "fluxd_test_slow 1.0" in body
               and 'controller_runtime_reconcile_total{controller="kustomization",'
                   'result="success"} 1.0' in body for status, body in scrapes)


async def test_metrics_are_rendered_again_once_the_render_ttl_is_over() -> None:
    registry = CollectorRegistry()
    metrics = busy_metrics(registry)
    clock = FakeClock()
    line = 'controller_runtime_reconcile_total{controller="kustomization",result="success"}'
    async with serve("127.0.0.1:0", registry=registry, ready=lambda: (True, "ok"),
                     clock=clock) as server:
        assert f"{line} 1.0" in (await get(f"{server.url}/metrics"))[2]
        metrics.reconcile_finished("kustomization", "success", 0.7, kind="Kustomization",
                                   name="apps", namespace="flux-system")
        assert f"{line} 1.0" in (await get(f"{server.url}/metrics"))[2]
        _, content_type, body = await get(
            f"{server.url}/metrics", Accept="application/openmetrics-text;version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert f"{line} 1.0" in body  # the same collection, in the other format
        clock.advance(RENDER_TTL)
        assert f"{line} 2.0" in (await get(f"{server.url}/metrics"))[2]


def test_addresses_are_read_as_go_listeners_read_them() -> None:
    assert parse_address(":8080") == (None, 8080)
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:9440") == ("::1", 9440)
    with pytest.raises(ValueError):
        parse_address("localhost")


# -- promtool ------------------------------------------------------------------------------


async def test_promtool_accepts_the_metrics_output(fluxd: Fluxd) -> None:
    promtool = binary("promtool")
    _, _, body = await get(f"{fluxd.server.url}/metrics")
    with anyio.fail_after(60):
        done = await anyio.run_process([promtool, "check", "metrics"], input=body.encode(),
                                       check=False)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


# -- a real Prometheus ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        if resp.status != 200:
            return []
        answer = await resp.json()
    result: list[Any] = answer.get("data", {}).get("result", [])
    return result


async def stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(15, shield=True):
            await process.wait()
            return
        process.kill()
    with anyio.CancelScope(shield=True):
        await process.wait()


async def test_a_real_prometheus_scrapes_fluxd(fluxd: Fluxd, tmp_path: Path) -> None:
    prometheus = binary("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: fluxd\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{fluxd.server.port}']\n")
    log_path = tmp_path / "prometheus.log"
    base = f"http://127.0.0.1:{port}"
    found: dict[str, list[Any]] = {}
    wanted = {
        "up": 'up{job="fluxd"}',
        "reconciles": 'controller_runtime_reconcile_total{job="fluxd",'
                      'controller="kustomization",result="success"}',
        "gotk": 'gotk_reconcile_duration_seconds_count{job="fluxd",kind="Kustomization",'
                'name="apps",namespace="flux-system"}',
        "depth": 'workqueue_depth{job="fluxd",name="kustomization",priority="-100"}',
    }
    with log_path.open("wb") as log_file:
        process = await anyio.open_process(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log_file, stderr=log_file)
        try:
            async with aiohttp.ClientSession() as session:
                with anyio.move_on_after(90):
                    while len(found) < len(wanted):
                        assert process.returncode is None, "prometheus exited"
                        for key, promql in wanted.items():
                            try:
                                result = await query(session, base, promql)
                            except aiohttp.ClientConnectionError:
                                break  # not listening yet
                            if result and float(result[0]["value"][1]) >= 1:
                                found[key] = result
                        await anyio.sleep(0.5)
        finally:
            await stop(process)
            await process.aclose()
    logged = log_path.read_text(errors="replace")[-3000:]
    assert set(found) == set(wanted), f"missing {set(wanted) - set(found)}; log:\n{logged}"
    assert float(found["reconciles"][0]["value"][1]) == 1
    assert float(found["depth"][0]["value"][1]) == 1
