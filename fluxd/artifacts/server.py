"""The artifact HTTP server: the store's root, read-only, at Flux's URL layout.

Contract (after ``fluxcd/pkg`` ``artifact/server``, a Go ``http.FileServer`` on the
storage path):

* ``GET``/``HEAD /<kind>/<namespace>/<name>/<file>`` sends the file with its exact bytes,
  ``Content-Length``, ``Last-Modified``/``ETag`` and range support, zero-copy
  (``sendfile``) through :class:`aiohttp.web.FileResponse`. Never a ``Content-Encoding``:
  a ``.tar.gz`` goes out as ``application/x-gzip`` bytes (what Go sniffs), and a ``.gz``
  sibling is never substituted, so the received bytes always match the digest.
* ``GET /`` answers 200: it is the readiness probe, as in Flux.
* No directory listings (Go's FileServer has them): they would hand every
  namespace/name of every source to anyone who can reach the port, and no consumer reads
  them. Any other directory, missing file or special file is a 404.
* Paths are decoded, then any ``..`` segment is a 404; symlinks are followed only while
  the resolved file stays under the root (``index.yaml``, ``latest.tar.gz``), else 404.
* :func:`serve` owns the listener like :func:`fluxd.health.serve`: entering binds
  (port 0 picks a free port, reported), leaving closes it; it is bounded as every
  listener is (:mod:`fluxd.listen`). No auth, no TLS (as Flux).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import Clock
from fluxd.listen import DEFAULT_LIMITS, Limits, Listener, serve_app

__all__ = ["ArtifactServer", "create_app", "serve"]

log = logging.getLogger("fluxd.artifacts.server")

_CONTENT_TYPES = {
    ".gz": "application/x-gzip",
    ".tgz": "application/x-gzip",
    ".yaml": "text/plain; charset=utf-8",
    ".yml": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}
_FALLBACK_TYPE = "application/octet-stream"


class _PlainFileResponse(web.FileResponse):
    """A FileResponse that never swaps in a pre-compressed ``<file>.gz``/``.br`` sibling.

    aiohttp looks for a sibling only in the codings the request accepts, so the response
    is prepared for the request as if it accepted none (``Request.clone``, public API).
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return await super().prepare(_accepting_no_coding(request))


def _accepting_no_coding(request: web.BaseRequest) -> web.BaseRequest:
    """``request`` without its ``Accept-Encoding``. A header value that is not text (a
    client's invalid UTF-8) cannot be copied into the clone; it is left out too."""
    if hdrs.ACCEPT_ENCODING not in request.headers:
        return request
    headers = CIMultiDict((name, value) for name, value in request.headers.items()
                          if name.lower() != "accept-encoding" and _is_text(value))
    return request.clone(headers=headers)


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _content_type(path: Path) -> str:
    return _CONTENT_TYPES.get(path.suffix.lower(), _FALLBACK_TYPE)


def _resolve(root: str, parts: list[str]) -> Path | None:
    """The real path of a regular file under ``root`` (itself a real path), or None."""
    try:
        real = os.path.realpath(os.path.join(root, *parts), strict=True)
        if os.path.commonpath([root, real]) != root:
            return None
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return Path(real)


def create_app(root: Path) -> web.Application:
    """The aiohttp application serving ``root`` read-only."""
    real_root = os.path.realpath(root)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def artifact(request: web.Request) -> web.StreamResponse:
        segments = request.match_info["path"].split("/")
        if any(s == ".." or "\x00" in s for s in segments):
            raise web.HTTPNotFound()
        parts = [s for s in segments if s not in ("", ".")]
        if not parts:
            return await index(request)
        real = await anyio.to_thread.run_sync(_resolve, real_root, parts)
        if real is None:
            raise web.HTTPNotFound()
        return _PlainFileResponse(real, headers={"Content-Type": _content_type(real)})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/{path:.+}", artifact)
    return app


#: where the server is bound
ArtifactServer = Listener


@asynccontextmanager
async def serve(address: str, store: ArtifactStore, *, limits: Limits = DEFAULT_LIMITS,
                clock: Clock | None = None) -> AsyncIterator[ArtifactServer]:
    """Serve ``store.root`` on ``address`` (Flux's ``--storage-addr``, e.g. ``:9090``) for the
    duration of the ``async with`` block; ``limits`` bound its connections (``[http]``)."""
    async with serve_app(address, create_app(store.root), what="artifact server",
                         log=log, limits=limits, clock=clock) as server:
        yield server
