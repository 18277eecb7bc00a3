"""A static Helm chart repository for tests, on loopback only, and the tools that fill it.

``HelmRepoServer`` serves the files under a directory (``index.yaml``, chart ``.tgz``) over
HTTP or HTTPS from an aiohttp server in a daemon thread with an event loop of its own, so
tests drive it from their own loops exactly as they would a remote repository. Basic auth
and TLS (a server certificate from a test CA, optionally requiring client certificates)
are opt-in; ``down``/``up`` close and reopen the listener on the same port; every request
is counted by path.

TLS key pairs come from ``tests.support.pki``. ``HelmCLI`` runs the real ``helm`` binary
with an isolated home: ``write_chart`` + ``package`` + ``index`` build a repository the
way chart publishers do. ``large_index`` writes a synthetic index of a given size in
Helm's layout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.support.pki import KeyPair

HOST = "127.0.0.1"
#: how long one helm CLI invocation may take
HELM_TIMEOUT = 120.0

# --------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str


class HelmRepoServer:
    """The files under ``root`` at ``<url>/<path>``, read-only.

    ``auth`` answers anything without those credentials ``401`` with
    ``WWW-Authenticate: Basic``. ``tls`` serves HTTPS with that key pair; ``client_ca``
    then also requires a client certificate issued by that CA.
    """

    def __init__(self, root: Path | str, *, auth: BasicAuth | None = None,
                 tls: KeyPair | None = None, client_ca: bytes | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.tls = tls
        self.client_ca = client_ca
        self.port = 0
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("already started")
        if self.tls is not None:
            self._ssl = self._server_context(self.tls)
        self._thread = threading.Thread(target=self._main, name="helmrepo", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("helm repository server did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def down(self) -> None:
        """Close the listener and every connection."""
        self._call(self._listen_stop())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen(self.port))

    # -- what tests look at ----------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def requests(self, path: str) -> int:
        """How many requests asked for ``path`` (e.g. ``/index.yaml``), answered or not."""
        with self._lock:
            return self._requests[path]

    # -- the server thread -------------------------------------------------------------------

    def _server_context(self, pair: KeyPair) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="fluxd-helmrepo-tls-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(pair.cert)
            key.write_bytes(pair.key)
            context.load_cert_chain(cert, key)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.client_ca.decode())
        return context

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("server not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._listen(0)
            self._ready.set()
            await self._stop.wait()
        finally:
            await self._listen_stop()

    async def _listen(self, port: int) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port, ssl_context=self._ssl, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def _listen_stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode() \
                .partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (hmac.compare_digest(user.encode(), self.auth.username.encode())
                and hmac.compare_digest(password.encode(), self.auth.password.encode()))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._requests[request.path] += 1
        if not self._authorized(request.headers.get("Authorization")):
            return web.Response(status=401, headers={
                "WWW-Authenticate": 'Basic realm="fluxd-test-charts"'})
        relative = request.match_info["path"]
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return web.Response(status=404, text="not found\n")
        return web.FileResponse(target)


# --------------------------------------------------------------------------------------
# Charts, with the real helm CLI
# --------------------------------------------------------------------------------------


class HelmCLI:
    """The ``helm`` binary with a private cache/config/data home under ``home``."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.home = home
        home.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        argv = [self.binary, *(str(a) for a in args)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=HELM_TIMEOUT, check=False)
        if done.returncode != 0:
            raise AssertionError(f"helm {' '.join(argv[1:])} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def package(self, chart_dir: Path, destination: Path) -> Path:
        """``helm package``: the chart archive, written into ``destination``."""
        destination.mkdir(parents=True, exist_ok=True)
        self.run("package", chart_dir, "--destination", destination)
        chart = read_chart_yaml(chart_dir)
        return destination / f"{chart['name']}-{chart['version']}.tgz"

    def index(self, directory: Path, url: str) -> Path:
        """``helm repo index``: (re)write ``directory/index.yaml`` for the archives there."""
        self.run("repo", "index", directory, "--url", url)
        return directory / "index.yaml"


def write_chart(parent: Path, name: str, version: str, *, app_version: str = "1.0.0") -> Path:
    """A minimal chart directory (Chart.yaml, values.yaml, one template)."""
    chart = parent / f"{name}-{version}"
    if chart.exists():
        shutil.rmtree(chart)
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{app_version}\"\n"
        f"description: A test chart\ntype: application\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    return chart


def read_chart_yaml(chart_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (chart_dir / "Chart.yaml").read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            out[key.strip()] = value.strip().strip('"')
    return out


def large_index(size: int, *, versions_per_chart: int = 50) -> bytes:
    """A valid index of at least ``size`` bytes in ``helm repo index``'s layout."""
    parts = ["apiVersion: v1\nentries:\n"]
    total = len(parts[0])
    chart = 0
    while total < size:
        name = f"chart-{chart:05d}"
        block = [f"  {name}:\n"]
        for v in range(versions_per_chart):
            block.append(
                f"  - apiVersion: v2\n"
                f"    appVersion: 1.{v}.0\n"
                f"    created: \"2024-01-01T00:00:00.000000000Z\"\n"
                f"    description: Synthetic chart {chart} at version {v} for load tests\n"
                f"    digest: {chart * 1000 + v:064x}\n"
                f"    name: {name}\n"
                f"    type: application\n"
                f"    urls:\n"
                f"    - https://charts.example.com/{name}-0.{v}.0.tgz\n"
                f"    version: 0.{v}.0\n")
        text = "".join(block)
        parts.append(text)
        total += len(text)
        chart += 1
    parts.append('generated: "2024-01-01T00:00:00Z"\n')
    return "".join(parts).encode()
