"""A real OCI registry for tests, on loopback only: Debian's ``docker-registry``.

``Registry`` runs ``/usr/bin/docker-registry`` (the CNCF distribution registry, Debian
package ``docker-registry``) with a generated config: filesystem storage in a directory of
its own, ``http.addr`` on a free 127.0.0.1 port, and optionally

* ``users``: htpasswd basic auth. The registry accepts bcrypt entries only; they are
  generated here by :func:`bcrypt_hash`, a pure-Python bcrypt (the Blowfish tables are
  the hexadecimal digits of pi, computed once), so neither the ``bcrypt`` module nor
  apache2-utils' ``htpasswd`` is needed;
* ``token_auth``: the distribution token flow, with :class:`TokenServer` (a stdlib HTTP
  server in a thread) as the realm. It checks the users' passwords (or an identity token)
  and signs ES256 JWTs whose ``x5c`` certificate is the registry's ``rootcertbundle``;
* ``tls``: HTTPS with a certificate from a CA made for the occasion (``ca_pem``).

Start waits (bounded) until ``/v2/`` answers; stop terminates the process (then kills
it). Debian's registry is distribution 2.8, which ignores ``n``/``last`` on
``tags/list``: :class:`TagPager` puts the pagination of distribution 3 in front of it
for tests of paging clients. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.pki import CertificateAuthority

HOST = "127.0.0.1"
REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_PACKAGE = "docker-registry"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SERVICE = "fluxd-test-registry"
ISSUER = "fluxd-test-token-issuer"


class RegistryUnavailable(RuntimeError):
    """The registry binary is missing; the message says what to install."""


def ensure_registry() -> str:
    if not os.access(REGISTRY_BINARY, os.X_OK):
        raise RegistryUnavailable(
            f"{REGISTRY_BINARY} is missing: install Debian's {REGISTRY_PACKAGE} package "
            f"(apt-get install -y {REGISTRY_PACKAGE})")
    return REGISTRY_BINARY


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------
# bcrypt, for htpasswd entries
# --------------------------------------------------------------------------------------

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_BCRYPT = str.maketrans(_STD_ALPHABET, _BCRYPT_ALPHABET)
_MASK = 0xFFFFFFFF
_tables: tuple[list[int], list[list[int]]] | None = None
_tables_lock = threading.Lock()


def _pi_words(count: int) -> list[int]:
    """The first ``count`` 32-bit words of pi's fractional part (Machin's formula)."""
    bits = 32 * count + 64
    one = 1 << bits

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign, x2 = 1, -1, x * x
        while term:
            term //= x2
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    pi = 16 * arctan_inv(5) - 4 * arctan_inv(239)
    frac = (pi - (3 << bits)) >> 64
    return [(frac >> (32 * (count - 1 - i))) & _MASK for i in range(count)]


def _blowfish_tables() -> tuple[list[int], list[list[int]]]:
    """Blowfish's initial P-array and S-boxes: the hex digits of pi, in order."""
    global _tables
    with _tables_lock:
        if _tables is None:
            words = _pi_words(18 + 4 * 256)
            _tables = (words[:18], [words[18 + 256 * i:18 + 256 * (i + 1)] for i in range(4)])
        return _tables


class _Blowfish:
    def __init__(self) -> None:
        p, s = _blowfish_tables()
        self.p = list(p)
        self.s = [list(box) for box in s]

    def encrypt(self, left: int, right: int) -> tuple[int, int]:
        p, s0, s1, s2, s3 = self.p, *self.s
        for i in range(0, 16, 2):
            left ^= p[i]
            right ^= (((s0[left >> 24] + s1[(left >> 16) & 0xFF]) & _MASK
                       ^ s2[(left >> 8) & 0xFF]) + s3[left & 0xFF]) & _MASK
            right ^= p[i + 1]
            left ^= (((s0[right >> 24] + s1[(right >> 16) & 0xFF]) & _MASK
                      ^ s2[(right >> 8) & 0xFF]) + s3[right & 0xFF]) & _MASK
        return right ^ p[17], left ^ p[16]

    def expand(self, key: bytes, salt: bytes | None) -> None:
        """EksBlowfish's ExpandKey (``salt`` None: the plain Blowfish key schedule)."""
        key_pos = 0

        def key_word() -> int:
            nonlocal key_pos
            word = 0
            for _ in range(4):
                word = (word << 8) | key[key_pos]
                key_pos = (key_pos + 1) % len(key)
            return word

        for i in range(18):
            self.p[i] ^= key_word()
        salt_words = ([int.from_bytes(salt[i:i + 4], "big") for i in range(0, 16, 4)]
                      if salt else [0, 0, 0, 0])
        left = right = 0
        n = 0
        targets: list[tuple[list[int], int]] = [(self.p, 18)] + [(box, 256) for box in self.s]
        for table, size in targets:
            for i in range(0, size, 2):
                left ^= salt_words[n % 4]
                right ^= salt_words[(n + 1) % 4]
                n += 2
                left, right = self.encrypt(left, right)
                table[i], table[i + 1] = left, right


def _bcrypt_b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=").translate(_TO_BCRYPT)


def bcrypt_hash(password: str, *, cost: int = 4, salt: bytes | None = None) -> str:
    """``$2b$<cost>$<salt><hash>`` as OpenBSD's bcrypt computes it.

    Cost 4 (the minimum Go's ``x/crypto/bcrypt`` accepts) keeps this pure-Python version
    to a fraction of a second per password.
    """
    if not 4 <= cost <= 31:
        raise ValueError("bcrypt cost must be in 4..31")
    salt = salt if salt is not None else secrets.token_bytes(16)
    if len(salt) != 16:
        raise ValueError("bcrypt salt must be 16 bytes")
    key = (password.encode() + b"\x00")[:72]
    state = _Blowfish()
    state.expand(key, salt)
    for _ in range(1 << cost):
        state.expand(key, None)
        state.expand(salt, None)
    words = [int.from_bytes(b"OrpheanBeholderScryDoubt"[i:i + 4], "big") for i in range(0, 24, 4)]
    for _ in range(64):
        for i in range(0, 6, 2):
            words[i], words[i + 1] = state.encrypt(words[i], words[i + 1])
    digest = b"".join(w.to_bytes(4, "big") for w in words)[:23]
    return f"$2b${cost:02d}${_bcrypt_b64(salt)[:22]}{_bcrypt_b64(digest)[:31]}"


def bcrypt_check(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (``$2a$``/``$2b$``/``$2y$``) is the bcrypt of ``password``."""
    prefix, cost, rest = hashed[1:3], int(hashed[4:6]), hashed[7:]
    if prefix not in ("2a", "2b", "2y") or len(rest) != 53:
        raise ValueError("not a bcrypt hash")
    encoded = rest[:22].translate(str.maketrans(_BCRYPT_ALPHABET, _STD_ALPHABET))
    salt = base64.b64decode(encoded + "==")[:16]
    return bcrypt_hash(password, cost=cost, salt=salt)[7:] == rest


def htpasswd(users: Mapping[str, str]) -> str:
    return "".join(f"{user}:{bcrypt_hash(password)}\n" for user, password in users.items())


# --------------------------------------------------------------------------------------
# keys and certificates
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerTLS:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> ServerTLS:
        directory.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create("fluxd test CA")
        pair = ca.issue("fluxd test registry", hosts=(HOST, "localhost"))
        cert_file, key_file = directory / "tls.crt", directory / "tls.key"
        cert_file.write_bytes(pair.cert)
        key_file.write_bytes(pair.key)
        key_file.chmod(0o600)
        return cls(ca.ca_pem, cert_file, key_file)


# --------------------------------------------------------------------------------------
# small threaded HTTP servers
# --------------------------------------------------------------------------------------

class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _ThreadedServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        owner = self

        class Handler(self.handler):  # type: ignore[name-defined,misc]
            server_owner = owner

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _registry_error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class _TokenHandler(_QuietHandler):
    server_owner: TokenServer

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        user = self._basic_user()
        if user is None:
            self.reply(401, _registry_error("UNAUTHORIZED", "invalid username or password"),
                       {"Content-Type": "application/json"})
            return
        self._issue(parts.path, query, user)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        owner = self.server_owner
        if form.get("grant_type") != ["refresh_token"]:
            self.reply(400, b'{"error":"unsupported_grant_type"}',
                       {"Content-Type": "application/json"})
            return
        user = owner.refresh_tokens.get((form.get("refresh_token") or [""])[0])
        if user is None:
            self.reply(401, b'{"error":"invalid_grant"}', {"Content-Type": "application/json"})
            return
        self._issue(urllib.parse.urlsplit(self.path).path, form, user)

    def _basic_user(self) -> str | None:
        """The authenticated user, "" for anonymous, None for bad credentials."""
        header = self.headers.get("Authorization", "")
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if not user or self.server_owner.users.get(user) != password:
            return None
        return user

    def _issue(self, path: str, query: Mapping[str, list[str]], user: str) -> None:
        owner = self.server_owner
        if path != "/token" or query.get("service") != [SERVICE]:
            self.reply(400, _registry_error("DENIED", "unknown service"),
                       {"Content-Type": "application/json"})
            return
        access = []
        asked = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = sorted(a for a in actions.split(",") if a)
                asked.append(f"{kind}:{name}:{','.join(wanted)}")
                granted = wanted if user else [a for a in wanted if a == "pull"
                                               and owner.anonymous_pull]
                access.append({"type": kind, "name": name, "actions": granted})
        with owner.lock:
            owner.requests[" ".join(asked)] += 1
        token = owner.sign(user, access)
        body = {"token": token, "access_token": token, "expires_in": owner.expires_in,
                "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


class TokenServer(_ThreadedServer):
    """The realm of a registry's token auth: issues ES256 JWTs for the configured users.

    Authenticated users get every action they ask for; anonymous callers get ``pull``
    only when ``anonymous_pull``. ``refresh_tokens`` maps OAuth2 refresh tokens (docker
    config ``identitytoken``) to users. ``requests`` counts issued tokens per scope, with
    each scope's actions sorted (the registry names them in no fixed order).
    """

    handler = _TokenHandler

    def __init__(self, directory: Path, *, users: Mapping[str, str],
                 anonymous_pull: bool = False, expires_in: int = 300,
                 refresh_tokens: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users)
        self.anonymous_pull = anonymous_pull
        self.expires_in = expires_in
        self.refresh_tokens = dict(refresh_tokens or {})
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        issuer = CertificateAuthority.create("fluxd test token issuer")
        self._key, self._cert = issuer.key, issuer.cert
        directory.mkdir(parents=True, exist_ok=True)
        self.root_bundle = directory / "token-root.pem"
        self.root_bundle.write_bytes(issuer.ca_pem)

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(
                      self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class _PagerHandler(_QuietHandler):
    server_owner: TagPager

    def do_GET(self) -> None:
        owner = self.server_owner
        parts = urllib.parse.urlsplit(self.path)
        upstream = owner.upstream + parts.path
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "accept")}
        if not parts.path.endswith("/tags/list"):
            self._forward(upstream, headers)
            return
        status, reply_headers, body = _fetch(upstream, headers)
        if status != 200:
            self.reply(status, body, reply_headers)
            return
        query = urllib.parse.parse_qs(parts.query)
        tags = sorted(json.loads(body).get("tags") or [])
        last = (query.get("last") or [""])[0]
        if last:
            tags = [t for t in tags if t > last]
        n = int((query.get("n") or [str(owner.default_page)])[0])
        page, more = tags[:n], len(tags) > n
        with owner.lock:
            owner.pages_served += 1
        out = {"Content-Type": "application/json"}
        if more:
            nxt = urllib.parse.urlencode({"n": n, "last": page[-1]})
            out["Link"] = f'<{parts.path}?{nxt}>; rel="next"'
        name = parts.path[len("/v2/"):-len("/tags/list")]
        self.reply(200, json.dumps({"name": name, "tags": page}).encode(), out)

    def _forward(self, url: str, headers: Mapping[str, str]) -> None:
        status, reply_headers, body = _fetch(url, headers)
        self.reply(status, body, reply_headers)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch(url: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=dict(headers))
    keep = ("content-type", "www-authenticate", "docker-distribution-api-version",
            "docker-content-digest")
    try:
        with _NO_PROXY.open(request, timeout=10) as resp:
            return (resp.status, {k: v for k, v in resp.headers.items() if k.lower() in keep},
                    resp.read())
    except urllib.error.HTTPError as err:
        return (err.code, {k: v for k, v in err.headers.items() if k.lower() in keep},
                err.read())


class TagPager(_ThreadedServer):
    """A front that pages ``GET /v2/<name>/tags/list`` (``n``, ``last``, ``Link``) as
    distribution 3 does, over a registry that returns all tags at once; ``GET /v2/`` and
    other GETs pass through. Tags come back sorted, ``default_page`` at a time."""

    handler = _PagerHandler

    def __init__(self, upstream: str, *, default_page: int = 100) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.default_page = default_page
        self.pages_served = 0
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------

class Registry:
    """One ``docker-registry`` process; ``address`` is ``127.0.0.1:<port>``.

    ``users`` turns on htpasswd basic auth, ``token_auth`` (with ``users``) the token flow
    through a :class:`TokenServer` (``token_server``), ``tls`` HTTPS (``ca_pem``).
    """

    def __init__(self, root: Path, *, users: Mapping[str, str] | None = None,
                 token_auth: bool = False, tls: bool = False, anonymous_pull: bool = False,
                 token_expires_in: int = 300,
                 refresh_tokens: Mapping[str, str] | None = None) -> None:
        if token_auth and users is None:
            users = {}
        self.root = root
        self.users = dict(users or {})
        self.token_auth = token_auth
        self.tls: ServerTLS | None = None
        self._want_tls = tls
        self._anonymous_pull = anonymous_pull
        self._token_expires_in = token_expires_in
        self._refresh_tokens = refresh_tokens
        self.token_server: TokenServer | None = None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def ca_pem(self) -> bytes:
        assert self.tls is not None, "registry runs without TLS"
        return self.tls.ca_pem

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True},
                    "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.address, "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls.cert_file),
                                     "key": str(self.tls.key_file)}
        if self.token_server is not None:
            config["auth"] = {"token": {"realm": self.token_server.realm, "service": SERVICE,
                                        "issuer": ISSUER,
                                        "rootcertbundle": str(self.token_server.root_bundle)}}
        elif self.users:
            path = self.root / "htpasswd"
            path.write_text(htpasswd(self.users))
            config["auth"] = {"htpasswd": {"realm": "fluxd-test", "path": str(path)}}
        return config

    def start(self) -> Self:
        binary = ensure_registry()
        self.root.mkdir(parents=True, exist_ok=True)
        if self._want_tls and self.tls is None:
            self.tls = ServerTLS.create(self.root / "tls")
        if self.token_auth and self.token_server is None:
            self.token_server = TokenServer(
                self.root / "token", users=self.users, anonymous_pull=self._anonymous_pull,
                expires_in=self._token_expires_in, refresh_tokens=self._refresh_tokens).start()
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            config_path = self.root / "config.yml"
            config_path.write_text(yaml.safe_dump(self._config()))
            self._log_file = self.log_path.open("ab")
            env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.root),
                   "NO_PROXY": "*", "no_proxy": "*"}
            self._proc = subprocess.Popen([binary, "serve", str(config_path)], env=env,
                                          stdin=subprocess.DEVNULL, stdout=self._log_file,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self._terminate()
                if "address already in use" not in self.log():
                    break
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {last_error}\n{self.log()[-4000:]}")

    def _wait_ready(self) -> None:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cadata=self.tls.ca_pem.decode())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"exited with {self._proc.returncode}")
            try:
                with opener.open(f"{self.url}/v2/", timeout=2):
                    return
            except urllib.error.HTTPError as err:
                if err.code == 401:  # auth is on: it is up
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"/v2/ did not answer within {START_TIMEOUT} s")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        self._terminate()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- helpers for tests ------------------------------------------------------------------

    def blob_path(self, repository: str, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt them in tests)."""
        algo, hexpart = digest.split(":", 1)
        return (self.root / "data" / "docker" / "registry" / "v2" / "blobs" / algo
                / hexpart[:2] / hexpart / "data")

    def remove_storage(self) -> None:
        shutil.rmtree(self.root / "data", ignore_errors=True)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
