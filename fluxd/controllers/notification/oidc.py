"""Bearer-token (JWT) verification for the OIDC-authenticated Receiver types
(``gcr``, ``generic-oidc``): the issuer's discovery document and key set (cached,
fetched again for an unknown key id), the signature (RSA, RSA-PSS, ECDSA, Ed25519) and
the ``iss``/``aud``/``exp``/``nbf`` claims; documents are read with ``body.read_capped``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from fluxd.clock import Clock
from fluxd.controllers.notification.body import read_capped
from fluxd.lru import LRU

if TYPE_CHECKING:
    from fluxd.controllers.notification.jws import PublicKey

log = logging.getLogger("fluxd.notification.receiver")

class OIDCError(Exception):
    """A bearer token that could not be verified (the message says why)."""


SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
                        "ES384", "ES512", "EdDSA")


def b64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_int(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return int.from_bytes(b64url(text), "big")


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str | None
    key: PublicKey


@dataclass(frozen=True)
class _KeySet:
    keys: tuple[_Key, ...]
    algorithms: tuple[str, ...]
    fetched: float


def unverified_claims(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """A compact JWS's header, claims, signing input and signature, unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise OIDCError("token is not a JWT")
    try:
        header = json.loads(b64url(parts[0]))
        claims = json.loads(b64url(parts[1]))
        signature = b64url(parts[2])
    except (ValueError, RecursionError) as exc:
        raise OIDCError(f"failed to parse token: {exc}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OIDCError("failed to parse token: not a JSON object")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


class OIDCVerifier:
    """Verifies ID tokens against issuers' published keys, as go-oidc does: discovery at
    ``<issuer>/.well-known/openid-configuration`` (its ``issuer`` must match), keys from
    its ``jwks_uri`` (kept ``ttl`` seconds; fetched again for an unknown ``kid``, at most
    every ``refresh`` seconds), then signature, ``iss``, ``aud``, ``exp`` and ``nbf``
    (five minutes of leeway). Only issuers named by Receivers are ever fetched."""

    def __init__(self, *, clock: Clock, timeout: float = 10.0, ttl: float = 600.0,
                 refresh: float = 30.0, max_document: int = 1024 * 1024,
                 max_issuers: int = 64) -> None:
        self._clock = clock
        self._timeout = timeout
        self._ttl = ttl
        self._refresh = refresh
        self._max_document = max_document
        #: key sets by issuer, the least recently fetched forgotten first
        self._sets: LRU[str, _KeySet] = LRU(max_issuers)
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def verify(self, token: str, *, issuer: str, audience: str | None,
                     issuers: Collection[str] | None = None) -> dict[str, Any]:
        """The claims of ``token`` once verified; ``OIDCError`` otherwise. ``issuers``
        lists the accepted ``iss`` values (``issuer`` alone by default)."""
        header, claims, signing_input, signature = unverified_claims(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
            raise OIDCError(f"unsupported signing algorithm {alg!r}")
        keys = await self._keys(issuer)
        if alg not in keys.algorithms:
            raise OIDCError(f"signing algorithm {alg!r} is not one the issuer uses")
        candidates = self._candidates(keys, alg, kid)
        if not candidates and kid is not None and \
                self._clock.monotonic() - keys.fetched >= self._refresh:
            keys = await self._keys(issuer, again=True)
            candidates = self._candidates(keys, alg, kid)
        from fluxd.controllers.notification import jws  # cryptography, on first use

        if not any(jws.signature_valid(k.key, alg, signing_input, signature)
                   for k in candidates):
            raise OIDCError("failed to verify signature")
        self._check_claims(claims, issuers or (issuer,), audience)
        return claims

    @staticmethod
    def _candidates(keys: _KeySet, alg: str, kid: Any) -> list[_Key]:
        return [k for k in keys.keys
                if (kid is None or k.kid == kid) and (k.alg is None or k.alg == alg)]

    def _check_claims(self, claims: Mapping[str, Any], issuers: Collection[str],
                      audience: str | None) -> None:
        if claims.get("iss") not in issuers:
            raise OIDCError(f"id token issued by a different provider: {claims.get('iss')!r}")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if audience is not None and audience not in audiences:
            raise OIDCError(f"expected audience {audience!r} got {audiences!r}")
        now = self._clock.now().timestamp()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp < now:
            raise OIDCError("token is expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now + 300:
            raise OIDCError("token is not valid yet")

    async def _keys(self, issuer: str, *, again: bool = False) -> _KeySet:
        """The issuer's keys: cached ones younger than ``ttl`` (``refresh`` when asked
        ``again``: another request may have just fetched them), else fetched."""
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:
            cached = self._sets.peek(issuer)
            if cached is not None and self._clock.monotonic() - cached.fetched < (
                    self._refresh if again else self._ttl):
                return cached
            keys = await self._fetch(issuer)
            for old, _ in self._sets.put(issuer, keys):
                self._locks.pop(old, None)
            return keys

    async def _fetch(self, issuer: str) -> _KeySet:
        config = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if config.get("issuer") != issuer:
            raise OIDCError(f"issuer did not match the issuer returned by provider, expected "
                            f"{issuer!r} got {config.get('issuer')!r}")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise OIDCError("the provider's discovery document has no jwks_uri")
        listed = config.get("id_token_signing_alg_values_supported")
        algorithms = tuple(a for a in listed if a in SUPPORTED_ALGORITHMS) \
            if isinstance(listed, list) else ()
        document = await self._get_json(jwks_uri)
        from fluxd.controllers.notification import jws  # cryptography, on first use

        keys = []
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = jws.public_key(jwk)
            except (ValueError, TypeError) as exc:
                log.debug("skipping a JWK: %s", exc)
                continue
            kid, alg = jwk.get("kid"), jwk.get("alg")
            keys.append(_Key(kid if isinstance(kid, str) else None,
                             alg if isinstance(alg, str) else None, key))
        return _KeySet(tuple(keys), algorithms or ("RS256",), self._clock.monotonic())

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._clock.timeout(self._timeout), self._session.get(
                    url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise OIDCError(f"GET {url}: HTTP {resp.status}")
                body = await read_capped(resp.content, self._max_document)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OIDCError(f"GET {url}: {exc or type(exc).__name__}") from None
        if body is None:
            raise OIDCError(f"GET {url}: the document is too large")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise OIDCError(f"GET {url}: {exc}") from None
        if not isinstance(document, dict):
            raise OIDCError(f"GET {url}: not a JSON object")
        return document
