"""The platform's flow end to end: a commit pushed to a git repository, a Gitea-style
signed push webhook to a Receiver, the Kustomization applying the new revision at once,
and a stand-in Gitea API receiving `pending` then `success` commit statuses for that
exact commit."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.controllers.conftest import Flux, condition
from tests.controllers.notification.test_receiver import gitea_headers, gitea_push
from tests.support.gitserver import GitServer, commit, head

pytestmark = pytest.mark.anyio

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KS_API = "kustomize.toolkit.fluxcd.io/v1"
NOTIFY_API = "notification.toolkit.fluxcd.io/v1beta3"
RECEIVER_API = "notification.toolkit.fluxcd.io/v1"
TOKEN = "gitea-api-token-0123"
HOOK_TOKEN = "webhook-secret-4567"


@dataclass
class Gitea:
    """The commit-status part of Gitea's API, enough for fluxd's gitea provider."""

    url: str = ""
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    auth: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def gitea() -> AsyncIterator[Gitea]:
    state = Gitea()

    async def post_status(request: web.Request) -> web.Response:
        state.auth.append(request.headers.get("Authorization", ""))
        body = await request.json()
        sha = request.match_info["sha"]
        entry = {"id": len(state.statuses.get(sha, [])) + 1, "status": body["state"],
                 "context": body["context"], "description": body["description"],
                 "target_url": body.get("target_url", "")}
        state.statuses.setdefault(sha, []).insert(0, entry)  # Gitea lists newest first
        state.changed.set()
        return web.json_response(entry, status=201)

    async def list_statuses(request: web.Request) -> web.Response:
        return web.json_response(state.statuses.get(request.match_info["sha"], []))

    app = web.Application()
    app.router.add_post("/api/v1/repos/org/app/statuses/{sha}", post_status)
    app.router.add_get("/api/v1/repos/org/app/commits/{sha}/statuses", list_statuses)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


def configmap(namespace: str, value: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "settings", "namespace": namespace},
                           "data": {"value": value}})


def secret(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def states(gitea: Gitea, sha: str) -> list[str]:
    return [s["status"] for s in reversed(gitea.statuses.get(sha, []))]


async def until(check: Any, *, within: float) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling what the servers received
            await asyncio.sleep(0.05)


async def test_a_gitea_push_is_applied_at_once_and_reported_as_commit_statuses(
        flux: Flux, server: GitServer, namespace: str, gitea: Gitea) -> None:
    repo = server.make_repo("app", {"cm.yaml": configmap(namespace, "v1")})
    first = head(repo)
    client = flux.client
    await client.create(secret("gitea-token", namespace, token=TOKEN))
    await client.create(secret("hook-token", namespace, token=HOOK_TOKEN))
    provider = await client.create({"apiVersion": NOTIFY_API, "kind": "Provider",
                                    "metadata": {"name": "gitea", "namespace": namespace},
                         "spec": {"type": "gitea", "address": f"{gitea.url}/org/app",
                                  "secretRef": {"name": "gitea-token"}}})
    await client.create({"apiVersion": NOTIFY_API, "kind": "Alert",
                         "metadata": {"name": "status", "namespace": namespace},
                         "spec": {"providerRef": {"name": "gitea"},
                                  "eventSources": [{"kind": "Kustomization", "name": "*"}]}})
    await client.create({"apiVersion": RECEIVER_API, "kind": "Receiver",
                         "metadata": {"name": "gitea-push", "namespace": namespace},
                         "spec": {"type": "github", "events": ["push"],
                                  "secretRef": {"name": "hook-token"},
                                  "resources": [{"apiVersion": SOURCE_API,
                                                 "kind": "GitRepository", "name": "repo"}]}})
    alerts = flux.context.cache.informer(NOTIFY_API, "Alert")
    await until(lambda: alerts.get(namespace, "status") is not None, within=10)
    await client.create({"apiVersion": SOURCE_API, "kind": "GitRepository",
                         "metadata": {"name": "repo", "namespace": namespace},
                         "spec": {"interval": "10m", "url": server.repo_url("app"),
                                  "ref": {"branch": "main"}}})
    await client.create({"apiVersion": KS_API, "kind": "Kustomization",
                         "metadata": {"name": "app", "namespace": namespace},
                         "spec": {"interval": "10m", "prune": True,
                                  "sourceRef": {"kind": "GitRepository", "name": "repo"}}})
    # Flux's id: <kind>/<name>/<first segment of the Provider's uid>
    context = f"kustomization/app/{provider['metadata']['uid'].split('-')[0]}"
    await until(lambda: "success" in states(gitea, first), within=20)
    assert states(gitea, first) == ["pending", "success"]

    receiver = await flux.wait(RECEIVER_API, "Receiver", "gitea-push", namespace,
                               lambda o: condition(o, "Ready").get("status") == "True")
    path = receiver["status"]["webhookPath"]
    address = flux.listeners["webhook receiver"]

    second = commit(repo, {"cm.yaml": configmap(namespace, "v2")}, "bump to v2")
    body = gitea_push(first, second)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(
            f"{address}{path}", data=body, headers=gitea_headers(body, HOOK_TOKEN)) as resp:
        assert resp.status == 200

    async def applied() -> bool:
        cm = await client.get("v1", "ConfigMap", "settings", namespace)
        return bool(cm["data"] == {"value": "v2"})

    async with asyncio.timeout(10):
        while not await applied():  # noqa: ASYNC110 - polling the API server
            await asyncio.sleep(0.05)
    assert time.monotonic() - started < 5  # no interval waited for
    await until(lambda: "success" in states(gitea, second), within=10)
    assert states(gitea, second) == ["pending", "success"]
    latest = gitea.statuses[second][0]
    assert latest["context"] == context
    assert latest["description"] == "reconciliation succeeded"
    assert all(a == f"token {TOKEN}" for a in gitea.auth)
