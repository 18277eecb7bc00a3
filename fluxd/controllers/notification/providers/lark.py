"""Type ``lark``: an interactive message card, POSTed to a Lark (Feishu) bot webhook.

The card header is 💫 (🚨 for errors) and ``kind/name.namespace`` on a turquoise (red)
template; one ``lark_md`` element holds the bold message and ``key: value`` lines.
"""

from __future__ import annotations

from typing import Any

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import (
    http_url,
    is_error,
    object_label,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event


def card_message(event: Event) -> dict[str, Any]:
    emoji, template = ("🚨", "red") if is_error(event) else ("💫", "turquoise")
    content = f"**{event.message}**\n\n" + "".join(
        f"{key}: {value}\n" for key, value in sorted_metadata(event))
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text",
                                 "content": f"{emoji} {object_label(event)}"},
                       "template": template},
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": content}}],
        },
    }


class Lark:
    def __init__(self, url: str) -> None:
        self._url = url

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=card_message(event))


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Lark hook")
    return Lark(settings.address.strip())
