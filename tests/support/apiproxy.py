"""A Kubernetes API server behind a loopback proxy that can refuse chosen requests.

``ApiProxy`` forwards every request, streamed both ways (watches included), to the
cluster a kubeconfig names, authenticated with that kubeconfig's bearer token; a test's
``refuse`` predicate makes chosen requests fail with a Kubernetes ``Status`` answer
instead (503 by default), as an API server with an unavailable aggregated API does. The
proxy listens on plain HTTP on 127.0.0.1; ``write_kubeconfig`` gives clients a
kubeconfig that goes through it. Only bearer-token kubeconfigs are supported
(``ApiProxy.supports`` says whether one is).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.support.loopback import serve

#: a request as the predicate sees it: method, path, query
Request = tuple[str, str, dict[str, str]]

_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding",
                         "content-length", "accept-encoding", "upgrade", "te", "trailer",
                         "proxy-authorization", "proxy-connection"})
_NOT_COPIED_BACK = frozenset({"connection", "keep-alive", "transfer-encoding",
                              "content-length", "content-encoding"})


@dataclass
class _Upstream:
    server: str
    token: str
    ssl: ssl.SSLContext | bool


def _upstream(kubeconfig: Path) -> _Upstream | None:
    config = yaml.safe_load(kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context = contexts.get(config.get("current-context", ""), {})
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    cluster, user = clusters.get(context.get("cluster", "")), users.get(context.get("user", ""))
    if not cluster or not user or not user.get("token"):
        return None
    verify: ssl.SSLContext | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority-data"):
        verify = ssl.create_default_context(cadata=base64.b64decode(
            cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        verify = ssl.create_default_context(cafile=cluster["certificate-authority"])
    return _Upstream(str(cluster["server"]).rstrip("/"), str(user["token"]), verify)


class ApiProxy:
    def __init__(self, upstream: _Upstream) -> None:
        self._upstream = upstream
        #: requests refused while it says so (set by the test, any time)
        self.refuse: Callable[[Request], bool] = lambda _: False
        #: every request seen, in order
        self.seen: list[Request] = []
        self.refused: list[Request] = []
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._exchanges: set[asyncio.Task[Any]] = set()

    @staticmethod
    def supports(kubeconfig: Path) -> bool:
        return _upstream(kubeconfig) is not None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, kubeconfig: Path) -> AsyncIterator[ApiProxy]:
        upstream = _upstream(kubeconfig)
        if upstream is None:
            raise ValueError(f"{kubeconfig}: only bearer-token kubeconfigs can be proxied")
        proxy = cls(upstream)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy._handle)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream.ssl),
                                        trust_env=False, auto_decompress=False)
        proxy._session = session
        try:
            async with serve(app) as url:
                proxy.url = url
                try:
                    yield proxy
                finally:
                    # a watch its client left is still streamed from upstream: end every
                    # exchange, so the server stops at once
                    for task in proxy._exchanges:
                        task.cancel()
                    await asyncio.gather(*proxy._exchanges, return_exceptions=True)
        finally:
            await session.close()
            # aiohttp's graceful shutdown: the TLS transports to the cluster close on the
            # loop's next turns
            await asyncio.sleep(0.25)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose cluster is this proxy."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {"token": self._upstream.token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy"}))
        return path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._exchanges.add(task)
        try:
            return await self._exchange(request)
        finally:
            self._exchanges.discard(task)

    async def _exchange(self, request: web.Request) -> web.StreamResponse:
        seen: Request = (request.method, request.path, dict(request.query))
        self.seen.append(seen)
        if self.refuse(seen):
            self.refused.append(seen)
            return web.json_response(_status(503, "ServiceUnavailable",
                                             "the server is currently unable to handle "
                                             "the request"), status=503)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {self._upstream.token}"
        body = await request.read()
        async with self._session.request(
                request.method, self._upstream.server + request.rel_url.raw_path_qs,
                headers=headers, data=body or None, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items()
                if k.lower() not in _NOT_COPIED_BACK})
            await response.prepare(request)
            # either side may go away mid-stream (a watch ended by the client, the proxy
            # closing): the exchange just ends
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
