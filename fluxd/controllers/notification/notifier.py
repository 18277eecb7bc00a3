"""What every Provider type implements, and the HTTP they share.

A ``Notifier`` sends one event (its metadata already merged by the dispatcher) to one
destination. Each Provider type lives in its own module under ``providers/`` and is
looked up by type in ``providers.build``. The contract:

- ``build(settings)`` validates the configuration once (an address that is not a URL, a
  missing token, a repository address that does not parse) and raises ``ConfigError``
  with a message fit for a Warning event; a Notifier is then reused for every event.
- ``Notifier.post(event, client)`` sends, or decides not to (a commit-status provider
  skips events without a revision, Progressing events, duplicates of the last status),
  and returns. It raises ``SendError``: ``retryable`` for timeouts, connection errors,
  429 and 5xx (the dispatcher retries those with backoff), not retryable for any other
  answer. Messages never contain the token: ``HTTPClient`` masks it.
- ``HTTPClient`` carries a Provider's TLS (``ca.crt``, client certificate), proxy and
  timeout, and for the generic types the Secret's extra ``headers``. Notifiers use
  ``request`` and nothing else for I/O, so a test can point any provider at a loopback
  server.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from fluxd.runtime.events import Event

__all__ = ["GENERIC_TYPES", "ConfigError", "HTTPClient", "Notifier", "ProviderSettings",
           "Response", "SendError"]

#: the Provider types that send the Secret's ``headers`` (Flux's forwarder)
GENERIC_TYPES = frozenset({"generic", "generic-hmac"})


class ConfigError(ValueError):
    """A Provider whose configuration cannot work (the message names what is wrong)."""


class SendError(Exception):
    """Sending failed; ``retryable`` when trying again may work (timeouts, connection
    errors, 429, 5xx)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class ProviderSettings:
    """A Provider's spec with its Secrets resolved (Secret keys win over the spec)."""

    type: str
    name: str
    namespace: str
    uid: str = ""
    address: str = ""
    channel: str = ""
    username: str = ""
    token: str = ""
    password: str = ""
    #: extra HTTP headers (the Secret's 'headers' key, a YAML map)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: PEM of the CA bundle to trust instead of the system's ('ca.crt')
    ca_pem: bytes | None = None
    #: PEM client certificate and key ('tls.crt', 'tls.key')
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    #: proxy URL, possibly with credentials
    proxy: str | None = None
    timeout: float = 15.0
    #: the commit status id when the Provider's commitStatusExpr gave one for this event
    commit_status: str | None = None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Notifier(Protocol):
    async def post(self, event: Event, client: HTTPClient) -> None: ...


class HTTPClient:
    """HTTP for one Provider: its TLS, proxy, timeout and headers; error texts with the
    token masked."""

    def __init__(self, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._session = session
        self._ssl = _ssl_context(settings)

    def mask(self, text: str) -> str:
        """``text`` without the Provider's secrets: the token, the password, and the
        address past its host (for Slack, Teams, Discord and the like the webhook URL
        is itself the secret)."""
        address = self.settings.address
        if address:
            split = urllib.parse.urlsplit(address)
            if split.scheme and split.netloc and (split.path.strip("/") or split.query):
                text = text.replace(address, f"{split.scheme}://{split.hostname}/*****")
        for secret in (self.settings.token, self.settings.password):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "*****")
        return text

    def _shown(self, url: str) -> str:
        """``url`` as errors show it: scheme and host only."""
        split = urllib.parse.urlsplit(url)
        return f"{split.scheme}://{split.hostname}" if split.hostname else "the provider"

    async def request(self, method: str, url: str, *, json_body: Any = None,
                      data: bytes | None = None, headers: Mapping[str, str] | None = None,
                      ok: tuple[int, ...] = ()) -> Response:
        """Send and read the answer. A status outside 2xx (and outside ``ok``) raises
        ``SendError`` (retryable for 429 and 5xx); so do timeouts and connection errors
        (retryable)."""
        body = data
        # the Secret's extra headers are for the generic webhooks only, as in Flux
        extra = self.settings.headers if self.settings.type in GENERIC_TYPES else {}
        sent_headers = {**extra, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        try:
            async with self._session.request(
                    method, url, data=body, headers=sent_headers, proxy=self.settings.proxy,
                    ssl=self._ssl if self._ssl is not None else True,
                    timeout=aiohttp.ClientTimeout(total=self.settings.timeout)) as resp:
                payload = await resp.read()
                answer = Response(resp.status, payload, dict(resp.headers))
        except TimeoutError:
            raise SendError(f"{method} {self._shown(url)}: timed out after "
                            f"{self.settings.timeout:g}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise SendError(self.mask(f"{method} {self._shown(url)}: "
                                      f"{exc or type(exc).__name__}"),
                            retryable=True) from None
        except ValueError as exc:
            # aiohttp refuses some requests outright (a newline in a header value)
            raise SendError(self.mask(f"{method} {self._shown(url)}: {exc}"),
                            retryable=False) from None
        if 200 <= answer.status < 300 or answer.status in ok:
            return answer
        text = payload[:500].decode(errors="replace").strip()
        raise SendError(self.mask(f"{method} {self._shown(url)}: {answer.status}: {text}"),
                        retryable=answer.status == 429 or answer.status >= 500,
                        status=answer.status)


def _ssl_context(settings: ProviderSettings) -> ssl.SSLContext | None:
    if settings.ca_pem is None and settings.cert_pem is None:
        return None
    context = ssl.create_default_context(
        cadata=settings.ca_pem.decode() if settings.ca_pem else None)
    if settings.cert_pem and settings.key_pem:
        import os
        import tempfile

        # load_cert_chain reads files only
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            with open(cert, "wb") as f:
                f.write(settings.cert_pem)
            with open(key, "wb") as f:
                f.write(settings.key_pem)
            context.load_cert_chain(cert, key)
    return context
