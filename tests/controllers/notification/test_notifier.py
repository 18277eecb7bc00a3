"""The HTTP every Provider shares: extra headers for the generic types only, masked
errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from fluxd.controllers.notification.notifier import HTTPClient, ProviderSettings, SendError

pytestmark = pytest.mark.anyio


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=int(request.query.get("status", "200")), text="no")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("provider_type, sent", [("generic", True), ("generic-hmac", True),
                                                 ("slack", False), ("gitea", False)])
async def test_the_secret_s_headers_go_only_to_the_generic_webhooks(
        echo: tuple[str, list[dict[str, str]]], provider_type: str, sent: bool) -> None:
    url, seen = echo
    settings = ProviderSettings(type=provider_type, name="p", namespace="n",
                                headers={"X-Team": "a"})
    async with aiohttp.ClientSession() as session:
        await HTTPClient(settings, session).request("POST", f"{url}/hook", json_body={})
    assert ("X-Team" in seen[0]) is sent


async def test_errors_show_neither_the_token_nor_the_webhook_path(
        echo: tuple[str, list[dict[str, str]]]) -> None:
    url, _ = echo
    address = f"{url}/services/T000/B000/secretpart"
    settings = ProviderSettings(type="slack", name="p", namespace="n", address=address,
                                token="s3cr3t-token")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SendError) as failed:
            await HTTPClient(settings, session).request(
                "POST", f"{address}?status=500&t=s3cr3t-token", json_body={})
    assert failed.value.retryable and failed.value.status == 500
    assert "secretpart" not in str(failed.value)
    assert "s3cr3t-token" not in str(failed.value)
