"""Credentials stay secret end to end: the running daemon is driven through the scenarios
where a password or token is in play (a Git source with the right and a wrong password,
credentials in a source URL, a Provider whose address and headers carry tokens and whose
endpoint fails, a commit-status Provider, a webhook Receiver with signed and badly signed
deliveries), and then every place fluxd writes to is searched for them: the log at debug
level with stack traces, Kubernetes Events, every object's status, ``/metrics`` and the
bodies the Providers received."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from fluxd import logging as fluxlog
from tests.controllers.conftest import Flux, condition
from tests.controllers.notification.test_receiver import gitea_headers, gitea_push
from tests.support import loopback
from tests.support.gitserver import BasicAuth, GitServer, head

pytestmark = pytest.mark.anyio

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KS_API = "kustomize.toolkit.fluxcd.io/v1"
NOTIFY_API = "notification.toolkit.fluxcd.io/v1beta3"
RECEIVER_API = "notification.toolkit.fluxcd.io/v1"

GIT_PASSWORD = "git-pass-5a1e0c"
WRONG_PASSWORD = "wrong-pass-77b3d1"
URL_PASSWORD = "url-pass-c0ffee"
HOOK_PATH_TOKEN = "path-token-d00d42"
HEADER_TOKEN = "header-token-fa11ed"
GITEA_TOKEN = "gitea-token-beef01"
RECEIVER_TOKEN = "receiver-token-0ddba11"
SECRETS = (GIT_PASSWORD, WRONG_PASSWORD, URL_PASSWORD, HOOK_PATH_TOKEN, HEADER_TOKEN,
           GITEA_TOKEN, RECEIVER_TOKEN)


@dataclass
class Endpoint:
    """Loopback stand-ins for a chat webhook (failing) and Gitea's status API."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    state = Endpoint()

    async def hook(request: web.Request) -> web.Response:
        state.bodies.append(await request.read())
        state.headers.append(dict(request.headers))
        return web.Response(status=403, text="denied")  # not retried: a failure at once

    async def status(request: web.Request) -> web.Response:
        state.bodies.append(await request.read())
        state.headers.append(dict(request.headers))
        if request.method == "GET":
            return web.json_response([])
        return web.json_response({"id": 1}, status=201)

    app = web.Application()
    app.router.add_post("/services/{token}", hook)
    app.router.add_route("*", "/api/v1/repos/org/app/{rest:.*}", status)
    async with loopback.serve(app) as state.url:
        yield state


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos", auth=BasicAuth("bot", GIT_PASSWORD)) as srv:
        yield srv


def secret(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def configmap(namespace: str, value: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "settings", "namespace": namespace},
                           "data": {"value": value}})


def git_repository(name: str, namespace: str, url: str, secret_name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": "10m", "url": url, "ref": {"branch": "main"}}
    if secret_name:
        spec["secretRef"] = {"name": secret_name}
    return {"apiVersion": SOURCE_API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def found_in(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def test_no_password_or_token_reaches_logs_events_statuses_metrics_or_payloads(
        flux: Flux, server: GitServer, endpoint: Endpoint, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = flux.client
    repo = server.make_repo("app", {"cm.yaml": configmap(namespace, "v1")})
    first = head(repo)
    await client.create(secret("git-good", namespace, username="bot", password=GIT_PASSWORD))
    await client.create(secret("git-bad", namespace, username="bot", password=WRONG_PASSWORD))
    await client.create(secret("hook", namespace,
                               address=f"{endpoint.url}/services/{HOOK_PATH_TOKEN}",
                               headers=f"Authorization: Bearer {HEADER_TOKEN}\n"))
    await client.create(secret("gitea", namespace, token=GITEA_TOKEN))
    await client.create(secret("receiver", namespace, token=RECEIVER_TOKEN))
    for name, type_, secret_name, address in (
            ("chat", "generic", "hook", None),
            ("gitea", "gitea", "gitea", f"{endpoint.url}/org/app")):
        spec: dict[str, Any] = {"type": type_, "secretRef": {"name": secret_name}}
        if address:
            spec["address"] = address
        await client.create({"apiVersion": NOTIFY_API, "kind": "Provider",
                             "metadata": {"name": name, "namespace": namespace}, "spec": spec})
        await client.create({"apiVersion": NOTIFY_API, "kind": "Alert",
                             "metadata": {"name": name, "namespace": namespace},
                             "spec": {"providerRef": {"name": name},
                                      "eventSources": [{"kind": "GitRepository", "name": "*"},
                                                       {"kind": "Kustomization",
                                                        "name": "*"}]}})
    alerts = flux.context.cache.informer(NOTIFY_API, "Alert")
    async with asyncio.timeout(10):
        while alerts.get(namespace, "chat") is None or alerts.get(namespace, "gitea") is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await client.create({"apiVersion": RECEIVER_API, "kind": "Receiver",
                         "metadata": {"name": "push", "namespace": namespace},
                         "spec": {"type": "github", "events": ["push"],
                                  "secretRef": {"name": "receiver"},
                                  "resources": [{"apiVersion": SOURCE_API,
                                                 "kind": "GitRepository", "name": "good"}]}})

    url = server.repo_url("app")
    in_url = url.replace("://", f"://bot:{URL_PASSWORD}@", 1)
    await client.create(git_repository("good", namespace, url, "git-good"))
    await client.create(git_repository("bad", namespace, url, "git-bad"))
    await client.create(git_repository("in-url", namespace, in_url, None))
    await client.create({"apiVersion": KS_API, "kind": "Kustomization",
                         "metadata": {"name": "app", "namespace": namespace},
                         "spec": {"interval": "10m", "prune": True,
                                  "sourceRef": {"kind": "GitRepository", "name": "good"}}})

    def failed(obj: dict[str, Any]) -> bool:
        return condition(obj, "Ready").get("status") == "False"

    await flux.wait(SOURCE_API, "GitRepository", "good", namespace,
                    lambda o: condition(o, "Ready").get("status") == "True")
    await flux.wait(SOURCE_API, "GitRepository", "bad", namespace, failed)
    await flux.wait(SOURCE_API, "GitRepository", "in-url", namespace, failed)
    await flux.wait(KS_API, "Kustomization", "app", namespace,
                    lambda o: condition(o, "Ready").get("status") == "True")
    receiver = await flux.wait(RECEIVER_API, "Receiver", "push", namespace,
                               lambda o: condition(o, "Ready").get("status") == "True")

    address = flux.listeners["webhook receiver"] + receiver["status"]["webhookPath"]
    body = gitea_push(first, first)
    async with aiohttp.ClientSession() as session:
        for headers in (gitea_headers(body, RECEIVER_TOKEN),
                        gitea_headers(body, WRONG_PASSWORD)):
            async with session.post(address, data=body, headers=headers) as resp:
                assert resp.status in (200, 400)
        assert flux.manager.server is not None
        async with session.get(f"{flux.manager.server.url}/metrics") as resp:
            metrics = await resp.text()

    # the failing chat Provider's warning on its Alert, and the statuses posted to Gitea
    async def dispatch_failed() -> list[dict[str, Any]]:
        listed = await client.list_all("v1", "Event", namespace)
        return [e for e in listed.items if e.get("reason") == "NotificationDispatchFailed"]

    async with asyncio.timeout(20):
        while not await dispatch_failed():  # noqa: ASYNC110 - polling the API server
            await asyncio.sleep(0.1)
    assert any(b"success" in body for body in endpoint.bodies), "a status reached Gitea"

    # the channels actually carried the secrets to the services that must have them
    assert any(h.get("Authorization") == f"Bearer {HEADER_TOKEN}" for h in endpoint.headers)
    assert any(h.get("Authorization") == f"token {GITEA_TOKEN}" for h in endpoint.headers)

    formatter = fluxlog.JSONFormatter(stacktraces=True)
    # everything fluxd and its libraries logged; the access log is this test's own servers'
    logged = "\n".join(formatter.format(r) for r in caplog.records
                       if r.name != "aiohttp.access")
    assert logged.count("\n") > 20, "the log at debug level says something"
    assert found_in(logged) == []

    events = (await client.list_all("v1", "Event", namespace)).items
    assert len(events) >= 5
    assert found_in(json.dumps(events)) == []

    for api_version, kind in ((SOURCE_API, "GitRepository"), (KS_API, "Kustomization"),
                              (NOTIFY_API, "Provider"), (NOTIFY_API, "Alert"),
                              (RECEIVER_API, "Receiver")):
        for obj in (await client.list_all(api_version, kind, namespace)).items:
            assert found_in(json.dumps(obj.get("status"))) == [], (kind, obj["metadata"]["name"])
    bad = await flux.get(SOURCE_API, "GitRepository", "bad", namespace)
    assert condition(bad, "Ready")["reason"] == "AuthenticationFailed"

    assert "gotk_reconcile_duration_seconds" in metrics
    assert found_in(metrics) == []

    assert endpoint.bodies
    assert found_in(b"\n".join(endpoint.bodies).decode()) == []
