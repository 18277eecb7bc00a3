"""Registry credentials and the distribution token flow.

Contract:

* :class:`Keychain` maps a registry host to :class:`Credentials`. It is built from a
  ``kubernetes.io/dockerconfigjson`` Secret (``auths`` -> ``auth`` (base64
  ``user:password``) or ``username``/``password``, plus ``identitytoken`` and
  ``registrytoken``), from one static pair, or empty (anonymous). Keys match like
  kubelet's credential provider: scheme and a trailing ``/v1/``-style path are dropped,
  the host (with port) must match, ``*`` matches one DNS label, and a key with a path
  matches repositories below it. Docker Hub's aliases (``docker.io``, ``index.docker.io``,
  ``registry-1.docker.io``) are one registry.
* :class:`Authenticator` answers a registry's 401. A ``Basic`` challenge is answered with
  the credentials; a ``Bearer realm=…,service=…,scope=…`` challenge by asking the realm
  for a token (GET with basic credentials or none; with an identity token, the OAuth2
  ``refresh_token`` POST) and reading ``token`` or ``access_token``. Tokens are cached per
  (registry, realm, service, scope, user) until ``expires_in`` (default 60 s, as the
  token spec says) minus a margin, on the injected clock, and sent before the next
  request for the same scope. The cache never outlives a rejection: a fresh 401 always
  fetches a new token.
* Secrets never appear in ``repr`` or in error messages: errors name the realm without
  its query and quote at most a short piece of the server's answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "DOCKER_HUB",
    "AuthenticationError",
    "Authenticator",
    "Challenge",
    "Credentials",
    "Keychain",
    "TokenCache",
    "parse_challenges",
    "read_at_most",
]

#: the name go-containerregistry gives Docker Hub, and the host its API lives on
DOCKER_HUB = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", DOCKER_HUB, DOCKER_HUB_API})

DOCKER_CONFIG_SECRET_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockerconfigjson"

#: the token spec's default lifetime when ``expires_in`` is absent
DEFAULT_TOKEN_LIFETIME = 60.0
_MAX_TOKEN_RESPONSE = 1 << 20
_CLIENT_ID = "fluxd"


class AuthenticationError(Exception):
    """Credentials were missing, malformed or refused by a token server."""


class _Clock(Protocol):
    def monotonic(self) -> float: ...


# -- credentials ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Credentials:
    """One registry login; the secret parts stay out of ``repr``."""

    username: str = ""
    password: str = field(default="", repr=False)
    #: an OAuth2 refresh token (docker config ``identitytoken``)
    identity_token: str = field(default="", repr=False)
    #: a bearer token sent as it is (docker config ``registrytoken``)
    registry_token: str = field(default="", repr=False)

    def basic(self) -> str | None:
        if not (self.username or self.password):
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def _normalise_host(key: str) -> tuple[str, str]:
    """A docker config key -> (host[:port] lowercased, path below it)."""
    key = key.strip()
    if "://" in key:
        key = key.split("://", 1)[1]
    host, _, path = key.partition("/")
    host = host.lower()
    if host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        path = ""  # "https://index.docker.io/v1/" names all of Docker Hub
    path = path.strip("/")
    if path in ("v1", "v2"):
        path = ""
    return host, path


def _host_matches(pattern: str, host: str) -> bool:
    pattern_name, _, pattern_port = pattern.partition(":")
    name, _, port = host.partition(":")
    if pattern_port != port:
        return False
    wanted, labels = pattern_name.split("."), name.split(".")
    if len(wanted) != len(labels):
        return False
    return all(w == "*" or w == label for w, label in zip(wanted, labels, strict=True))


class Keychain:
    """Credentials by registry host (see the module docstring for how keys match)."""

    def __init__(self, entries: Mapping[str, Credentials] | None = None) -> None:
        self._entries: list[tuple[str, str, Credentials]] = []
        for key, creds in (entries or {}).items():
            host, path = _normalise_host(key)
            self._entries.append((host, path, creds))
        # the most specific key wins: exact hosts before globs, longer paths first
        self._entries.sort(key=lambda e: ("*" in e[0], -len(e[1])))

    def __repr__(self) -> str:
        return f"Keychain(registries={[h + ('/' + p if p else '') for h, p, _ in self._entries]})"

    def __bool__(self) -> bool:
        return bool(self._entries)

    @classmethod
    def static(cls, registry: str, username: str, password: str) -> Keychain:
        return cls({registry: Credentials(username=username, password=password)})

    @classmethod
    def from_docker_config(cls, config: bytes | str | Mapping[str, Any]) -> Keychain:
        """From ``~/.docker/config.json`` content (the ``auths`` section)."""
        if isinstance(config, bytes | str):
            try:
                config = json.loads(config)
            except ValueError as exc:
                raise AuthenticationError("docker config is not valid JSON") from exc
        if not isinstance(config, Mapping):
            raise AuthenticationError("docker config is not a JSON object")
        auths = config.get("auths", {})
        if not isinstance(auths, Mapping):
            raise AuthenticationError("docker config 'auths' is not an object")
        entries: dict[str, Credentials] = {}
        for key, value in auths.items():
            if not isinstance(value, Mapping):
                raise AuthenticationError(f"docker config entry for {key!r} is not an object")
            entries[str(key)] = _credentials_from_entry(str(key), value)
        return cls(entries)

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> Keychain:
        """From a Secret object (a dict as the API returns it) of the dockerconfigjson type.

        Reads ``data`` (base64, as the API returns it) or ``stringData``.
        """
        secret_type = secret.get("type", "")
        name = (secret.get("metadata") or {}).get("name", "")
        if secret_type != DOCKER_CONFIG_SECRET_TYPE:
            raise AuthenticationError(
                f"secret '{name}' has type '{secret_type}', want '{DOCKER_CONFIG_SECRET_TYPE}'")
        data = secret.get("data") or {}
        string_data = secret.get("stringData") or {}
        if DOCKER_CONFIG_KEY in string_data:
            raw: bytes = str(string_data[DOCKER_CONFIG_KEY]).encode()
        elif DOCKER_CONFIG_KEY in data:
            try:
                raw = base64.b64decode(data[DOCKER_CONFIG_KEY], validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise AuthenticationError(
                    f"secret '{name}': '{DOCKER_CONFIG_KEY}' is not base64") from exc
        else:
            raise AuthenticationError(f"secret '{name}' has no '{DOCKER_CONFIG_KEY}' key")
        return cls.from_docker_config(raw)

    def lookup(self, registry: str, repository: str = "") -> Credentials | None:
        """The credentials for ``registry`` (host[:port]) and ``repository``, if any."""
        host, _ = _normalise_host(registry)
        for pattern, path, creds in self._entries:
            if not _host_matches(pattern, host):
                continue
            if path and not (repository == path or repository.startswith(path + "/")):
                continue
            return creds
        return None


def _credentials_from_entry(key: str, entry: Mapping[str, Any]) -> Credentials:
    username = str(entry.get("username", "") or "")
    password = str(entry.get("password", "") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthenticationError(f"docker config 'auth' for {key!r} is not base64") from exc
        user, sep, pw = decoded.partition(":")
        if not sep:
            raise AuthenticationError(f"docker config 'auth' for {key!r} is not user:password")
        username, password = user, pw
    return Credentials(username=username, password=password,
                       identity_token=str(entry.get("identitytoken", "") or ""),
                       registry_token=str(entry.get("registrytoken", "") or ""))


# -- challenges ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme (lowercased) and its parameters."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


_SCHEME = re.compile(r"[\s,]*([^\s,=\"]+)")
_PARAM = re.compile(r'\s*([^\s,=\"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` values (RFC 7235): several challenges may share one
    value, and quoted parameter values may hold commas and escaped quotes."""
    values = [headers] if isinstance(headers, str) else list(headers)
    out: list[Challenge] = []
    for text in values:
        pos = 0
        while (scheme := _SCHEME.match(text, pos)) is not None:
            pos = scheme.end()
            params: dict[str, str] = {}
            while (param := _PARAM.match(text, pos)) is not None:
                raw = param.group(2)
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                params[param.group(1).lower()] = raw
                pos = param.end()
            out.append(Challenge(scheme.group(1).lower(), params))
    return out


# -- tokens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float


class TokenCache:
    """Bearer tokens by key until they expire on ``clock``; share one across clients."""

    #: tokens are dropped this long (or a tenth of their life) before they expire
    MARGIN = 5.0

    def __init__(self, *, clock: _Clock) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, ...], _Token] = {}

    def get(self, key: tuple[str, ...]) -> str | None:
        token = self._tokens.get(key)
        if token is None:
            return None
        if self._clock.monotonic() >= token.expires_at:
            del self._tokens[key]
            return None
        return token.value

    def put(self, key: tuple[str, ...], value: str, lifetime: float) -> None:
        margin = min(self.MARGIN, lifetime / 10)
        self._tokens[key] = _Token(value, self._clock.monotonic() + lifetime - margin)

    def discard(self, key: tuple[str, ...]) -> None:
        self._tokens.pop(key, None)

    def __len__(self) -> int:
        return len(self._tokens)


def _brief(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _realm_for_messages(realm: str) -> str:
    parts = urlsplit(realm)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class Authenticator:
    """Answers one client's challenges (see the module docstring)."""

    def __init__(self, *, keychain: Keychain, clock: _Clock,
                 cache: TokenCache | None = None) -> None:
        self.keychain = keychain
        self.cache = cache if cache is not None else TokenCache(clock=clock)
        # per registry: the last challenge seen, so later requests can authenticate first
        self._challenges: dict[str, Challenge] = {}

    def _key(self, registry: str, challenge: Challenge, scope: str,
             creds: Credentials | None) -> tuple[str, ...]:
        return (registry, challenge.realm, challenge.service, scope,
                creds.username if creds else "")

    def authorization(self, registry: str, repository: str, scope: str) -> str | None:
        """The ``Authorization`` value to send first, if one is already known."""
        creds = self.keychain.lookup(registry, repository)
        if creds is not None and creds.registry_token:
            return f"Bearer {creds.registry_token}"
        challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return creds.basic() if creds is not None else None
        token = self.cache.get(self._key(registry, challenge, scope, creds))
        return f"Bearer {token}" if token else None

    async def respond(self, session: aiohttp.ClientSession, registry: str, repository: str,
                      headers: Sequence[str], scope: str, *,
                      ssl: Any = True) -> str:
        """The ``Authorization`` value that answers the 401 ``headers`` (fresh, not cached).

        ``scope`` is the fallback when the challenge names none.
        """
        challenges = parse_challenges(headers)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        creds = self.keychain.lookup(registry, repository)
        if bearer is not None:
            self._challenges[registry] = bearer
            wanted = bearer.scope or scope
            token, lifetime = await self._fetch_token(session, bearer, wanted, creds, ssl=ssl)
            # cache under the scope we will ask with next time, and the one granted
            for key_scope in {scope, wanted}:
                self.cache.put(self._key(registry, bearer, key_scope, creds), token, lifetime)
            return f"Bearer {token}"
        if basic is not None:
            self._challenges[registry] = basic
            header = creds.basic() if creds is not None else None
            if header is None:
                raise AuthenticationError(f"{registry} requires credentials and none were given")
            return header
        schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
        raise AuthenticationError(f"{registry} asked for unsupported authentication ({schemes})")

    async def _fetch_token(self, session: aiohttp.ClientSession, challenge: Challenge,
                           scope: str, creds: Credentials | None, *,
                           ssl: Any) -> tuple[str, float]:
        realm = challenge.realm
        if urlsplit(realm).scheme not in ("http", "https"):
            raise AuthenticationError(f"bearer challenge has no usable realm ({realm!r})")
        where = _realm_for_messages(realm)
        scopes = [s for s in scope.split(" ") if s]
        headers = {"Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                    ("client_id", _CLIENT_ID)]
            if challenge.service:
                form.append(("service", challenge.service))
            form += [("scope", s) for s in scopes]
            request = session.post(realm, data=form, headers=headers, ssl=ssl)
        else:
            query = [("service", challenge.service)] if challenge.service else []
            query += [("scope", s) for s in scopes]
            basic = creds.basic() if creds is not None else None
            if basic:
                headers["Authorization"] = basic
                query.append(("account", creds.username if creds else ""))
            request = session.get(realm, params=query, headers=headers, ssl=ssl)
        try:
            async with request as resp:
                body = await read_at_most(resp, _MAX_TOKEN_RESPONSE)
                if resp.status != 200:
                    raise AuthenticationError(
                        f"token request to {where} failed with {resp.status}: "
                        f"{_error_text(body)}")
        except aiohttp.ClientError as exc:
            raise AuthenticationError(f"token request to {where} failed: "
                                      f"{type(exc).__name__}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise AuthenticationError(f"token response from {where} is not JSON") from None
        if not isinstance(doc, Mapping):
            raise AuthenticationError(f"token response from {where} is not a JSON object")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"token response from {where} has no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return token, float(lifetime)


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes (one ``read`` may return less than asked)."""
    body = b""
    while len(body) < limit and (chunk := await resp.content.read(limit - len(body))):
        body += chunk
    return body


def _error_text(body: bytes) -> str:
    """A token server's complaint, briefly: the registry error JSON's message, or text."""
    try:
        doc = json.loads(body)
    except ValueError:
        return _brief(body.decode(errors="replace")) or "no message"
    if isinstance(doc, Mapping):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            first = errors[0]
            return _brief(f"{first.get('code', '')}: {first.get('message', '')}".strip(": "))
        for key in ("error_description", "error", "details", "message"):
            if isinstance(doc.get(key), str):
                return _brief(doc[key])
    return "no message"
