"""Every alerting Provider type against a loopback HTTP server that records what it gets.

The expected requests follow Flux's notifiers (``fluxcd/notification-controller``
``internal/notifier``) and their tests: method, path, headers and body, for an info
event and an error event carrying metadata and a ``summary``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from fluxd.controllers.notification import providers
from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
    SendError,
)
from fluxd.controllers.notification.providers import chat_types, telegram
from fluxd.runtime.events import Event, ObjectReference

pytestmark = pytest.mark.anyio

TOKEN = "s3cr3t-t0ken-value"
REVISION = "main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
SUMMARY = "Cluster: prod-eu <primary> & co."
UID = "7d0cdc51-ddcf-4743-b223-83ca5c699632"
INFO_MESSAGE = "Reconciliation finished in 1.2s, next run in 10m"
ERROR_MESSAGE = "service/apps/webapp validation error: spec.type: Unsupported value: Ingress"

INFO = Event(
    involved_object=ObjectReference(kind="Kustomization", name="webapp", namespace="apps",
                                    uid=UID, api_version="kustomize.toolkit.fluxcd.io/v1"),
    severity="info",
    timestamp=datetime.datetime(2022, 10, 28, 7, 26, 19, tzinfo=datetime.UTC),
    message=INFO_MESSAGE,
    reason="ReconciliationSucceeded",
    reporting_controller="kustomize-controller",
    # not in key order: notifiers sort, as Go's JSON encoder sorts a map
    metadata={"summary": SUMMARY, "revision": REVISION},
    reporting_instance="kustomize-controller-7c7b47f5f-8bhrp",
)
ERROR = replace(INFO, severity="error", message=ERROR_MESSAGE, reason="ValidationFailed")

#: INFO as Flux marshals it: compact, metadata sorted, <, > and & escaped.
INFO_JSON = (
    '{"involvedObject":{"kind":"Kustomization","namespace":"apps","name":"webapp",'
    f'"uid":"{UID}","apiVersion":"kustomize.toolkit.fluxcd.io/v1"}},'
    '"severity":"info","timestamp":"2022-10-28T07:26:19Z",'
    f'"message":"{INFO_MESSAGE}","reason":"ReconciliationSucceeded",'
    f'"metadata":{{"revision":"{REVISION}",'
    '"summary":"Cluster: prod-eu \\u003cprimary\\u003e \\u0026 co."},'
    '"reportingController":"kustomize-controller",'
    '"reportingInstance":"kustomize-controller-7c7b47f5f-8bhrp"}'
)
ERROR_JSON = INFO_JSON.replace('"severity":"info"', '"severity":"error"').replace(
    INFO_MESSAGE, ERROR_MESSAGE).replace("ReconciliationSucceeded", "ValidationFailed")

ALL_TYPES = {"generic", "generic-hmac", "slack", "msteams", "discord", "rocket",
             "googlechat", "webex", "telegram", "matrix", "lark", "zulip", "alertmanager",
             "grafana", "opsgenie", "pagerduty", "datadog", "sentry", "githubdispatch"}


# -- the loopback receiver ------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str
    host: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; answers ``status`` with ``answer``, or never (``hang``)."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    answer: bytes = b""
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def only(self) -> Recorded:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded(request.method, request.path, request.raw_path,
                                      request.host, request.headers, await request.read()))
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.status, body=self.answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"http://{host}:{port}"
    try:
        yield recv
    finally:
        recv.release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def settings(provider_type: str, **spec: Any) -> ProviderSettings:
    return ProviderSettings(type=provider_type, name="alerts", namespace="apps", **spec)


def notifier_for(provider_type: str, receiver: Receiver, **spec: Any) -> Notifier:
    if provider_type == "telegram":
        return telegram.notifier(settings(provider_type, **spec), api_url=receiver.url)
    return chat_types.FACTORIES[provider_type](settings(provider_type, **spec))


async def deliver(provider_type: str, receiver: Receiver, session: aiohttp.ClientSession,
                  event: Event, **spec: Any) -> None:
    notifier = notifier_for(provider_type, receiver, **spec)
    await notifier.post(event, HTTPClient(settings(provider_type, **spec), session))


# -- registration --------------------------------------------------------------------


def test_every_alerting_type_is_registered() -> None:
    assert set(chat_types.FACTORIES) == ALL_TYPES


def test_build_resolves_an_alerting_type() -> None:
    built = providers.build(settings("slack", address="https://hooks.slack.com/services/x"))
    assert hasattr(built, "post")


# -- generic --------------------------------------------------------------------------


@pytest.mark.parametrize("event, body", [(INFO, INFO_JSON), (ERROR, ERROR_JSON)])
async def test_generic_posts_the_event_json_as_flux_marshals_it(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, body: str) -> None:
    await deliver("generic", receiver, session, event, address=f"{receiver.url}/hook?x=1")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/hook")
    assert got.body == body.encode()
    assert got.headers["Gotk-Component"] == "kustomize-controller"
    assert got.headers["Content-Type"] == "application/json"
    assert "X-Signature" not in got.headers


async def test_generic_sends_the_secret_headers_once_and_lets_them_override(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("generic", receiver, session, INFO, address=receiver.url,
                  headers={"authorization": "Token abc", "gotk-component": "custom"})
    got = receiver.only
    assert got.headers.getall("Authorization") == ["Token abc"]
    assert got.headers.getall("Gotk-Component") == ["custom"]


@pytest.mark.parametrize("event, body", [(INFO, INFO_JSON), (ERROR, ERROR_JSON)])
async def test_generic_hmac_signs_the_body_with_the_token(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, body: str) -> None:
    await deliver("generic-hmac", receiver, session, event, address=receiver.url,
                  token=TOKEN)
    got = receiver.only
    assert got.body == body.encode()
    expected = hmac.new(TOKEN.encode(), body.encode(), hashlib.sha256).hexdigest()
    assert got.headers["X-Signature"] == f"sha256={expected}"
    assert got.headers["Gotk-Component"] == "kustomize-controller"


# -- Slack and its relatives -----------------------------------------------------------


def slack_attachment(color: str, message: str) -> dict[str, Any]:
    return {"color": color, "author_name": "kustomization/webapp.apps", "text": message,
            "mrkdwn_in": ["text"],
            "fields": [{"title": "revision", "value": REVISION, "short": False},
                       {"title": "summary", "value": SUMMARY, "short": False}]}


@pytest.mark.parametrize("event, color", [(INFO, "good"), (ERROR, "danger")])
async def test_slack_posts_one_attachment_with_the_metadata_as_fields(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, color: str) -> None:
    await deliver("slack", receiver, session, event,
                  address=f"{receiver.url}/services/T0/B0/X0", channel="general", token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/services/T0/B0/X0")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Content-Type"] == "application/json"
    assert got.json() == {"channel": "general", "username": "kustomize-controller",
                          "icon_url": "", "icon_emoji": "",
                          "attachments": [slack_attachment(color, event.message)]}


async def test_slack_sends_the_provider_username_and_no_token_header_without_a_token(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("slack", receiver, session, INFO, address=receiver.url, username="flux")
    got = receiver.only
    assert got.json()["username"] == "flux"
    assert got.json()["channel"] == ""
    assert "Authorization" not in got.headers


async def test_slack_web_api_failure_in_a_200_answer_is_an_error(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    receiver.answer = b'{"ok": false, "error": "channel_not_found"}'
    with pytest.raises(SendError, match="channel_not_found") as caught:
        await deliver("slack", receiver, session, INFO, channel="nope", token=TOKEN,
                      address=f"{receiver.url}/api/chat.postMessage")
    assert not caught.value.retryable


async def test_slack_web_api_success_is_read_from_the_ok_flag(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    receiver.answer = b'{"ok": true, "channel": "C1"}'
    await deliver("slack", receiver, session, INFO, channel="general", token=TOKEN,
                  address=f"{receiver.url}/api/chat.postMessage")
    assert receiver.only.path == "/api/chat.postMessage"


@pytest.mark.parametrize("event, color", [(INFO, "good"), (ERROR, "danger")])
async def test_discord_posts_the_slack_payload_to_the_slack_endpoint(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, color: str) -> None:
    await deliver("discord", receiver, session, event,
                  address=f"{receiver.url}/api/webhooks/123/abc", channel="ignored")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/webhooks/123/abc/slack")
    assert got.json() == {"channel": "", "username": "kustomize-controller",
                          "icon_url": "", "icon_emoji": "",
                          "attachments": [slack_attachment(color, event.message)]}


async def test_discord_keeps_an_address_that_already_ends_in_slack(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("discord", receiver, session, INFO, username="flux",
                  address=f"{receiver.url}/api/webhooks/123/abc/slack")
    assert receiver.only.path == "/api/webhooks/123/abc/slack"
    assert receiver.only.json()["username"] == "flux"


@pytest.mark.parametrize("event, color", [(INFO, "#0076D7"), (ERROR, "#FF0000")])
async def test_rocket_posts_the_slack_payload_with_rocket_colours(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, color: str) -> None:
    await deliver("rocket", receiver, session, event, address=f"{receiver.url}/hooks/abc",
                  channel="#flux", username="flux-bot")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/hooks/abc")
    assert got.json() == {"channel": "#flux", "username": "flux-bot", "icon_url": "",
                          "icon_emoji": "",
                          "attachments": [slack_attachment(color, event.message)]}


# -- Microsoft Teams ------------------------------------------------------------------


@pytest.mark.parametrize("event", [INFO, ERROR])
async def test_msteams_posts_an_adaptive_card_to_a_workflows_webhook(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event) -> None:
    await deliver("msteams", receiver, session, event,
                  address=f"{receiver.url}/workflows/xyz/triggers/manual/paths/invoke")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/workflows/xyz/triggers/manual/paths/invoke")
    message: dict[str, Any] = {"type": "TextBlock", "text": event.message, "wrap": True}
    if event is ERROR:
        message["color"] = "attention"
    assert got.json() == {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "Container", "items": [
                    {"type": "TextBlock", "text": "kustomization/webapp.apps",
                     "size": "large", "weight": "bolder", "wrap": True},
                    message,
                    {"type": "FactSet", "facts": [  # summary first, then sorted
                        {"title": "summary", "value": SUMMARY},
                        {"title": "revision", "value": REVISION}]},
                ]}],
                "msteams": {"width": "Full"},
            },
        }],
    }


@pytest.mark.parametrize("event, color", [(INFO, "0076D7"), (ERROR, "FF0000")])
async def test_msteams_posts_a_message_card_to_an_office_365_connector(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, color: str) -> None:
    # the connector's host is reached through the receiver, acting as an HTTP proxy
    await deliver("msteams", receiver, session, event, proxy=receiver.url,
                  address="http://acme.webhook.office.com/webhookb2/abc")
    got = receiver.only
    assert (got.method, got.host, got.path) == ("POST", "acme.webhook.office.com",
                                                "/webhookb2/abc")
    assert got.json() == {
        "@type": "MessageCard", "@context": "http://schema.org/extensions",
        "themeColor": color, "summary": "kustomization/webapp.apps",
        "sections": [{"activityTitle": event.message,
                      "activitySubtitle": "kustomization/webapp.apps",
                      "facts": [{"name": "revision", "value": REVISION},
                                {"name": "summary", "value": SUMMARY}]}],
    }


async def test_msteams_adaptive_card_without_metadata_has_an_empty_fact_set(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("msteams", receiver, session, replace(INFO, metadata={}),
                  address=receiver.url)
    items = receiver.only.json()["attachments"][0]["content"]["body"][0]["items"]
    assert items[2] == {"type": "FactSet"}


# -- the other chat services -----------------------------------------------------------


@pytest.mark.parametrize("event, text", [
    (INFO, INFO_MESSAGE), (ERROR, f'<font color="#ff0000">{ERROR_MESSAGE}</font>')])
async def test_googlechat_posts_a_card_with_the_metadata_as_key_values(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, text: str) -> None:
    await deliver("googlechat", receiver, session, event,
                  address=f"{receiver.url}/v1/spaces/AAA/messages?key=k&token=t")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/v1/spaces/AAA/messages")

    def key_value(key: str, value: str) -> dict[str, Any]:
        return {"textParagraph": None,
                "keyValue": {"topLabel": key, "content": value, "contentMultiline": False,
                             "bottomLabel": None, "icon": None}}

    assert got.json() == {"cards": [{
        "header": {"title": "kustomization/webapp.apps", "subtitle": "kustomize-controller",
                   "imageUrl": None, "imageStyle": None},
        "sections": [
            {"header": "", "widgets": [{"textParagraph": {"text": text}, "keyValue": None}]},
            {"header": "", "widgets": [key_value("revision", REVISION),
                                       key_value("summary", SUMMARY)]},
        ],
    }]}


@pytest.mark.parametrize("event, emoji", [(INFO, "✅"), (ERROR, "💣")])
async def test_webex_posts_markdown_to_the_room_with_the_bot_token(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, emoji: str) -> None:
    await deliver("webex", receiver, session, event, address=f"{receiver.url}/v1/messages",
                  channel="room-1", token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/v1/messages")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.json() == {
        "roomId": "room-1",
        "markdown": f"{emoji} **kustomization/webapp.apps**\n{event.message}\n"
                    f">**revision**: {REVISION}\n>**summary**: {SUMMARY}\n",
    }


TELEGRAM_METADATA = ("\\- *revision*: main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1\n"
                     "\\- *summary*: Cluster: prod\\-eu <primary\\> & co\\.\n")


@pytest.mark.parametrize("event, text", [
    (INFO, "*💫 kustomization/webapp/apps*\n"
           "Reconciliation finished in 1\\.2s, next run in 10m\n" + TELEGRAM_METADATA),
    (ERROR, "*🚨 kustomization/webapp/apps*\n"
            "service/apps/webapp validation error: spec\\.type: Unsupported value: Ingress\n"
            + TELEGRAM_METADATA),
])
async def test_telegram_sends_markdown_v2_to_the_bot_api(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, text: str) -> None:
    await deliver("telegram", receiver, session, event, channel="@fluxcd", token=TOKEN,
                  address="https://api.telegram.org")
    got = receiver.only
    assert (got.method, got.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert got.headers["Content-Type"] == "application/json"
    assert got.json() == {"chat_id": "@fluxcd", "text": text, "parse_mode": "MarkdownV2"}


async def test_telegram_sends_to_a_forum_topic_given_as_chat_colon_thread(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("telegram", receiver, session, INFO, channel="-100123:42", token=TOKEN)
    body = receiver.only.json()
    assert (body["chat_id"], body["message_thread_id"]) == ("-100123", "42")


@pytest.mark.parametrize("event, body_json, emoji", [
    (INFO, INFO_JSON, "💫"), (ERROR, ERROR_JSON, "🚨")])
async def test_matrix_puts_a_text_message_with_the_event_hash_as_transaction_id(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, body_json: str,
        emoji: str) -> None:
    await deliver("matrix", receiver, session, event, address=receiver.url,
                  channel="!jezptmDwEeLapMLjOc:matrix.org", token=TOKEN)
    got = receiver.only
    txn = hashlib.sha1(body_json.encode()).hexdigest()
    assert got.method == "PUT"
    assert got.raw_path == ("/_matrix/client/r0/rooms/!jezptmDwEeLapMLjOc:matrix.org"
                            f"/send/m.room.message/{txn}")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.json() == {
        "body": f"{emoji} kustomization/webapp.apps\n{event.message}\n"
                f"- revision: {REVISION}\n- summary: {SUMMARY}\n",
        "msgtype": "m.text",
    }


def test_matrix_transaction_id_matches_flux_for_the_same_event() -> None:
    from fluxd.controllers.notification.providers.matrix import transaction_id

    # the vector from Flux's matrix_test.go
    event = Event(involved_object=ObjectReference(kind="", name=""), severity="info",
                  timestamp=datetime.datetime(2021, 8, 24, 16, 18, tzinfo=datetime.UTC),
                  message="update successful", reason="update sucesful",
                  reporting_controller="")
    assert transaction_id(event) == "37d91b4f6a1e44c6a38273b0a0fd408fade7b0f5"


@pytest.mark.parametrize("event, emoji, template", [
    (INFO, "💫", "turquoise"), (ERROR, "🚨", "red")])
async def test_lark_posts_an_interactive_card(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, emoji: str,
        template: str) -> None:
    await deliver("lark", receiver, session, event,
                  address=f"{receiver.url}/open-apis/bot/v2/hook/xyz")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/open-apis/bot/v2/hook/xyz")
    assert got.json() == {"msg_type": "interactive", "card": {
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text",
                             "content": f"{emoji} kustomization/webapp.apps"},
                   "template": template},
        "elements": [{"tag": "div", "text": {
            "tag": "lark_md",
            "content": f"**{event.message}**\n\nrevision: {REVISION}\nsummary: {SUMMARY}\n"}}],
    }}


@pytest.mark.parametrize("event, emoji", [(INFO, "\u2139\ufe0f"), (ERROR, "\u26a0\ufe0f")])
async def test_zulip_posts_the_markdown_post_as_a_form_with_basic_auth(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event, emoji: str) -> None:
    await deliver("zulip", receiver, session,
                  replace(event, metadata={**event.metadata, "change_request": "7"}),
                  address=f"{receiver.url}/some/path", channel="general/deploys",
                  username="flux-bot@zulip.example.com", password=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/v1/messages")
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"flux-bot@zulip.example.com:{TOKEN}".encode()).decode()
    assert got.headers["Authorization"] == f"Basic {basic}"
    form = urllib.parse.parse_qs(got.body.decode(), strict_parsing=True)
    assert form == {
        "type": ["stream"], "to": ["general"], "topic": ["deploys"],
        "content": [f"## Flux Status\n\n{emoji} Kustomization/apps/webapp\n\n"
                    f"{event.message}\n\nMetadata:\n"
                    f"* `revision`: {REVISION}\n* `summary`: {SUMMARY}\n"],
    }
    assert got.body.decode().startswith("content=")  # Go encodes the keys sorted


# -- incident and monitoring services --------------------------------------------------


@pytest.mark.parametrize("event, alertname", [
    (INFO, "FluxKustomizationReconciliationsucceeded"),
    (ERROR, "FluxKustomizationValidationfailed")])
async def test_alertmanager_posts_a_firing_alert_with_the_summary_as_annotation(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event,
        alertname: str) -> None:
    await deliver("alertmanager", receiver, session, event,
                  address=f"{receiver.url}/api/v2/alerts", token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/v2/alerts")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.json() == [{
        "status": "firing",
        "labels": {"alertname": alertname, "kind": "Kustomization", "name": "webapp",
                   "namespace": "apps", "reason": event.reason,
                   "reportingcontroller": "kustomize-controller", "revision": REVISION,
                   "severity": event.severity},
        "annotations": {"message": event.message, "summary": SUMMARY},
        "startsAt": "2022-10-28T07:26:19Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }]


async def test_alertmanager_uses_basic_auth_from_username_and_password(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("alertmanager", receiver, session, INFO, address=receiver.url,
                  username="am", password=TOKEN)
    basic = base64.b64encode(f"am:{TOKEN}".encode()).decode()
    assert receiver.only.headers["Authorization"] == f"Basic {basic}"


async def test_alertmanager_takes_credentials_from_the_address(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    address = receiver.url.replace("http://", "http://am:pw@") + "/api/v2/alerts/"
    await deliver("alertmanager", receiver, session, INFO, address=address)
    assert receiver.only.headers["Authorization"] == "Basic YW06cHc="


async def test_alertmanager_token_beats_credentials_in_the_address(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    address = receiver.url.replace("http://", "http://am:pw@") + "/api/v2/alerts/"
    await deliver("alertmanager", receiver, session, INFO, address=address, token=TOKEN)
    assert receiver.only.headers.getall("Authorization") == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize("event", [INFO, ERROR])
async def test_grafana_posts_an_annotation_tagged_with_flux_and_the_metadata(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event) -> None:
    await deliver("grafana", receiver, session, event,
                  address=f"{receiver.url}/api/annotations", token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/annotations")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.json() == {
        "when": 1666941979,
        "text": "kustomization/webapp.apps",
        "tags": ["flux", "kustomize-controller",
                 "revision: main@sha1|731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
                 "summary: Cluster| prod-eu <primary> & co.",
                 "kind: Kustomization", "name: webapp", "namespace: apps"],
    }


async def test_grafana_prefers_the_token_over_basic_auth(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("grafana", receiver, session, INFO, address=receiver.url, token=TOKEN,
                  username="admin", password="pw")
    assert receiver.only.headers.getall("Authorization") == [f"Bearer {TOKEN}"]


async def test_grafana_uses_basic_auth_without_a_token(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("grafana", receiver, session, INFO, address=receiver.url,
                  username="admin", password="pw")
    assert receiver.only.headers["Authorization"] == "Basic YWRtaW46cHc="


@pytest.mark.parametrize("event", [INFO, ERROR])
async def test_opsgenie_posts_an_alert_with_the_metadata_as_details(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event) -> None:
    await deliver("opsgenie", receiver, session, event, address=f"{receiver.url}/v2/alerts",
                  token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/v2/alerts")
    assert got.headers["Authorization"] == f"GenieKey {TOKEN}"
    assert got.json() == {"message": "Kustomization/webapp", "description": event.message,
                          "details": {"revision": REVISION, "severity": event.severity,
                                      "summary": SUMMARY}}


async def test_pagerduty_resolves_and_records_a_change_for_an_info_event(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("pagerduty", receiver, session, INFO,
                  address=f"{receiver.url}/v2/enqueue?ignored=1", channel="routing-key")
    alert, change = receiver.requests
    assert (alert.method, alert.path) == ("POST", "/v2/enqueue")
    assert alert.json() == {"routing_key": "routing-key", "event_action": "resolve",
                            "dedup_key": UID}
    assert (change.method, change.path) == ("POST", "/v2/change/enqueue")
    assert change.json() == {
        "routing_key": "routing-key",
        "payload": {"source": "Flux kustomize-controller",
                    "summary": "reconciliation succeeded: kustomization/webapp",
                    "timestamp": "2022-10-28T07:26:19Z",
                    "custom_details": {"message": INFO_MESSAGE,
                                       "metadata": {"revision": REVISION,
                                                    "summary": SUMMARY}}},
        "links": None,
    }


async def test_pagerduty_triggers_an_incident_for_an_error_event(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("pagerduty", receiver, session, ERROR, address=receiver.url,
                  channel="routing-key")
    got = receiver.only
    assert got.path == "/v2/enqueue"
    assert got.json() == {
        "routing_key": "routing-key", "event_action": "trigger", "dedup_key": UID,
        "payload": {"summary": "validation failed: kustomization/webapp",
                    "source": "Flux kustomize-controller", "severity": "error",
                    "timestamp": "2022-10-28T07:26:19Z", "component": "webapp",
                    "group": "Kustomization",
                    "custom_details": {"message": ERROR_MESSAGE,
                                       "metadata": {"revision": REVISION,
                                                    "summary": SUMMARY}}},
    }


async def test_pagerduty_skips_progressing_events(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("pagerduty", receiver, session, replace(INFO, reason="Progressing"),
                  address=receiver.url, channel="routing-key")
    assert receiver.requests == []


@pytest.mark.parametrize("event", [INFO, ERROR])
async def test_datadog_posts_an_event_with_lowercased_tags(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event) -> None:
    await deliver("datadog", receiver, session, event, address=f"{receiver.url}/ignored",
                  token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/v1/events")
    assert got.headers["DD-API-KEY"] == TOKEN
    assert got.json() == {
        "alert_type": event.severity,
        "date_happened": 1666941979,
        "source_type_name": "fluxcd",
        "tags": ["flux_reporting_controller:kustomize-controller",
                 f"flux_reason:{event.reason.lower()}", "kube_kind:kustomization",
                 "kube_name:webapp", "kube_namespace:apps", f"revision:{REVISION}",
                 "summary:cluster: prod-eu <primary> & co."],
        "text": event.message,
        "title": "Events from the Kustomization webapp/apps",
    }


def envelope_items(body: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    header, item_header, item, rest = body.split(b"\n")
    assert rest == b""
    assert json.loads(item_header)["length"] == len(item)
    return json.loads(header), json.loads(item_header), json.loads(item)


async def test_sentry_sends_an_error_event_in_an_envelope(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    dsn = receiver.url.replace("http://", "http://publickey@") + "/42"
    await deliver("sentry", receiver, session, ERROR, address=dsn, channel="staging")
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/42/envelope/")
    assert got.headers["Content-Type"] == "application/x-sentry-envelope"
    assert got.headers["X-Sentry-Auth"] == ("Sentry sentry_version=7, "
                                            "sentry_client=fluxd/0.1.0, sentry_key=publickey")
    header, item_header, item = envelope_items(got.body)
    assert item_header["type"] == "event"
    assert header["event_id"] == item["event_id"]
    assert len(item.pop("event_id")) == 32
    assert item == {"level": "error", "message": ERROR_MESSAGE,
                    "timestamp": "2022-10-28T07:26:19Z",
                    "server_name": "kustomize-controller",
                    "transaction": "Kustomization: apps/webapp",
                    "extra": {"revision": REVISION, "summary": SUMMARY},
                    "platform": "other", "sdk": {"name": "fluxd", "version": "0.1.0"},
                    "environment": "staging"}


async def test_sentry_sends_an_info_event_as_a_transaction_with_one_span(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    dsn = receiver.url.replace("http://", "http://publickey@") + "/sentry/42"
    await deliver("sentry", receiver, session, INFO, address=dsn)
    got = receiver.only
    assert got.path == "/sentry/api/42/envelope/"
    _, item_header, item = envelope_items(got.body)
    assert item_header["type"] == "transaction"
    trace = item["contexts"]["trace"]
    assert (len(trace["trace_id"]), len(trace["span_id"]), trace["op"]) == (32, 16, "event")
    tags = {"flux_involved_object_kind": "Kustomization",
            "flux_involved_object_name": "webapp",
            "flux_involved_object_namespace": "apps",
            "flux_reason": "ReconciliationSucceeded",
            "flux_reporting_controller": "kustomize-controller",
            "flux_reporting_instance": "kustomize-controller-7c7b47f5f-8bhrp",
            "revision": REVISION, "summary": SUMMARY}
    assert item["spans"] == [{"trace_id": trace["trace_id"], "span_id": trace["span_id"],
                              "op": "event", "tags": tags,
                              "start_timestamp": "2022-10-28T07:26:19Z",
                              "timestamp": "2022-10-28T07:26:19Z"}]
    assert (item["type"], item["transaction"], item["message"], item["tags"]) == (
        "transaction", "Kustomization: apps/webapp", INFO_MESSAGE, tags)
    assert item["start_timestamp"] == item["timestamp"] == "2022-10-28T07:26:19Z"
    assert "environment" not in item


@pytest.mark.parametrize("event, body_json", [(INFO, INFO_JSON), (ERROR, ERROR_JSON)])
async def test_githubdispatch_posts_a_repository_dispatch_with_the_event_as_payload(
        receiver: Receiver, session: aiohttp.ClientSession, event: Event,
        body_json: str) -> None:
    await deliver("githubdispatch", receiver, session, event,
                  address=f"{receiver.url}/acme/podinfo.git", token=TOKEN)
    got = receiver.only
    assert (got.method, got.path) == ("POST", "/api/v3/repos/acme/podinfo/dispatches")
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Accept"] == "application/vnd.github.v3+json"
    assert got.body == (b'{"event_type":"Kustomization/webapp.apps","client_payload":'
                        + body_json.encode() + b"}")


async def test_githubdispatch_takes_the_password_when_there_is_no_token(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("githubdispatch", receiver, session, INFO,
                  address=f"{receiver.url}/acme/podinfo", password=TOKEN)
    assert receiver.only.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_githubdispatch_skips_commit_status_updates(
        receiver: Receiver, session: aiohttp.ClientSession) -> None:
    await deliver("githubdispatch", receiver, session,
                  replace(INFO, metadata={"commit_status": "update"}),
                  address=f"{receiver.url}/acme/podinfo", token=TOKEN)
    assert receiver.requests == []


@pytest.mark.parametrize("address, url", [
    ("https://github.com/acme/podinfo", "https://api.github.com/repos/acme/podinfo/dispatches"),
    ("git@github.com:acme/podinfo.git",
     "https://api.github.com/repos/acme/podinfo/dispatches"),
    ("ssh://git@ghe.example.com/acme/podinfo",
     "https://ghe.example.com/api/v3/repos/acme/podinfo/dispatches"),
    ("https://api.ghe.example.com/acme/podinfo",
     "https://api.ghe.example.com/repos/acme/podinfo/dispatches"),
])
def test_githubdispatch_finds_the_api_of_the_repository_host(address: str, url: str) -> None:
    built: Any = chat_types.FACTORIES["githubdispatch"](
        settings("githubdispatch", address=address, token=TOKEN))
    assert built._url == url


# -- configuration errors --------------------------------------------------------------


@pytest.mark.parametrize("provider_type, spec, message", [
    ("generic", {"address": "not a url"}, "invalid webhook URL"),
    ("generic", {"address": "ftp://example.com/x"}, "expected an absolute http(s) URL"),
    ("generic", {"address": ""}, "invalid webhook URL"),
    ("generic", {"address": "http://example.com:port/"}, "invalid webhook URL"),
    ("generic-hmac", {"address": "https://example.com"}, "HMAC key"),
    ("slack", {"address": "hooks.slack.com/services/x"}, "invalid Slack hook URL"),
    ("msteams", {"address": "teams"}, "invalid MS Teams webhook URL"),
    ("discord", {"address": "discord"}, "invalid Discord hook URL"),
    ("rocket", {"address": ""}, "invalid Rocket hook URL"),
    ("googlechat", {"address": "x"}, "invalid Google Chat hook URL"),
    ("webex", {"address": "x"}, "invalid Webex hook URL"),
    ("telegram", {"token": TOKEN}, "empty Telegram channel"),
    ("telegram", {"channel": "@flux"}, "empty Telegram token"),
    ("matrix", {"address": "matrix.org", "channel": "!r:m"}, "invalid Matrix homeserver"),
    ("lark", {"address": "x"}, "invalid Lark hook URL"),
    ("zulip", {"address": "https://zulip.example.com", "channel": "general"},
     "invalid Zulip channel format, expected <channel>/<topic>, got 'general'"),
    ("zulip", {"address": "zulip", "channel": "a/b"}, "invalid Zulip endpoint URL"),
    ("alertmanager", {"address": "am"}, "invalid Alertmanager URL"),
    ("grafana", {"address": "g"}, "invalid Grafana URL"),
    ("opsgenie", {"address": "https://api.opsgenie.com/v2/alerts"}, "empty Opsgenie"),
    ("opsgenie", {"address": "o", "token": TOKEN}, "invalid Opsgenie hook URL"),
    ("pagerduty", {"address": "not a url", "channel": "k"}, "invalid PagerDuty endpoint"),
    ("datadog", {"address": "https://api.datadoghq.com"}, "token cannot be empty"),
    ("datadog", {"address": "bad url :)", "token": TOKEN}, "invalid DataDog URL"),
    ("sentry", {"address": ""}, "DSN cannot be empty"),
    ("sentry", {"address": "https://sentry.io/42"}, "empty public key"),
    ("sentry", {"address": "https://key@sentry.io/"}, "empty project id"),
    ("sentry", {"address": "key@sentry.io/42"}, "invalid Sentry DSN"),
    ("githubdispatch", {"address": "https://github.com/foo/bar"},
     "github token or github app details must be specified"),
    ("githubdispatch", {"address": "https://github.com/foo/bar/baz", "token": TOKEN},
     "invalid repository id"),
    ("githubdispatch", {"address": "ftp://github.com/foo/bar", "token": TOKEN},
     "failed parsing URL"),
])
def test_a_configuration_that_cannot_work_is_refused(
        provider_type: str, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        chat_types.FACTORIES[provider_type](settings(provider_type, **spec))


def test_a_refused_address_is_not_quoted_as_it_may_hold_the_webhook_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        chat_types.FACTORIES["slack"](settings("slack", address="hooks.slack.com/T0/B0/XYZ"))
    assert "XYZ" not in str(caught.value)


# -- failures, for every type ----------------------------------------------------------


def working_spec(provider_type: str, receiver: Receiver) -> dict[str, Any]:
    """A configuration of each type that sends one request to the receiver."""
    base = receiver.url
    return {
        "generic": {"address": base},
        "generic-hmac": {"address": base, "token": TOKEN},
        "slack": {"address": base, "token": TOKEN, "channel": "general"},
        "msteams": {"address": base},
        "discord": {"address": base},
        "rocket": {"address": base},
        "googlechat": {"address": base},
        "webex": {"address": base, "token": TOKEN, "channel": "room"},
        "telegram": {"token": TOKEN, "channel": "@flux"},
        "matrix": {"address": base, "token": TOKEN, "channel": "!room:example.org"},
        "lark": {"address": base},
        "zulip": {"address": base, "channel": "general/flux", "username": "bot",
                  "password": TOKEN},
        "alertmanager": {"address": base, "token": TOKEN},
        "grafana": {"address": base, "token": TOKEN},
        "opsgenie": {"address": base, "token": TOKEN},
        "pagerduty": {"address": base, "channel": "routing-key"},
        "datadog": {"address": base, "token": TOKEN},
        "sentry": {"address": base.replace("http://", "http://publickey@") + "/1"},
        "githubdispatch": {"address": f"{base}/acme/app", "token": TOKEN},
    }[provider_type]


def has_secret(provider_type: str) -> bool:
    """Whether the type's working configuration holds ``TOKEN`` as token or password (the
    secrets ``HTTPClient`` masks)."""
    spec = working_spec(provider_type, Receiver(url="http://127.0.0.1:1"))
    return TOKEN in (spec.get("token"), spec.get("password"))


@pytest.mark.parametrize("provider_type", sorted(ALL_TYPES))
async def test_a_server_error_is_retryable_and_the_token_is_not_in_the_message(
        receiver: Receiver, session: aiohttp.ClientSession, provider_type: str) -> None:
    receiver.status, receiver.answer = 500, f"upstream broke for {TOKEN}".encode()
    with pytest.raises(SendError) as caught:
        await deliver(provider_type, receiver, session, ERROR,
                      **working_spec(provider_type, receiver))
    assert caught.value.retryable
    assert caught.value.status == 500
    # the answer is quoted in the message, with the Provider's own secrets masked
    assert (TOKEN in str(caught.value)) is not has_secret(provider_type)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("provider_type", sorted(ALL_TYPES))
async def test_a_rejected_request_is_not_retryable_and_the_token_is_not_in_the_message(
        receiver: Receiver, session: aiohttp.ClientSession, provider_type: str) -> None:
    receiver.status, receiver.answer = 400, f"bad token {TOKEN}".encode()
    with pytest.raises(SendError) as caught:
        await deliver(provider_type, receiver, session, ERROR,
                      **working_spec(provider_type, receiver))
    assert not caught.value.retryable
    assert caught.value.status == 400
    assert (TOKEN in str(caught.value)) is not has_secret(provider_type)


@pytest.mark.parametrize("provider_type", sorted(ALL_TYPES))
async def test_a_server_that_hangs_times_out_as_retryable_after_the_provider_timeout(
        receiver: Receiver, session: aiohttp.ClientSession, provider_type: str) -> None:
    receiver.hang = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SendError, match="timed out") as caught:
        await deliver(provider_type, receiver, session, ERROR, timeout=0.2,
                      **working_spec(provider_type, receiver))
    assert 0.2 <= loop.time() - started < 5
    assert caught.value.retryable
    assert TOKEN not in str(caught.value)
