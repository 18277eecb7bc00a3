"""One repository over Git's smart HTTP protocol, read-only, with dulwich's own WSGI server.

``serve(path)`` is an async context manager: on entry ``dulwich.web``'s application listens
on a free loopback port in a thread of its own (``wsgiref``, one request at a time) and the
repository's URL is yielded; on exit the server stops, its thread is joined and the
repository closed. Pushes are refused: the working copy is changed with ``git commit``.
Request logs go to the ``dulwich`` logger at info level.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast
from wsgiref.simple_server import WSGIServer, make_server

from dulwich.repo import Repo
from dulwich.server import BackendRepo, DictBackend
from dulwich.web import (
    GunzipFilter,
    HTTPGitApplication,
    LimitedInputFilter,
    WSGIRequestHandlerLogger,
    WSGIServerLogger,
)

HOST = "127.0.0.1"
#: how often the server thread looks for a shutdown request
POLL_INTERVAL = 0.1
#: how long stopping may wait for the thread (a request in progress finishes first)
STOP_TIMEOUT = 10.0


def _start(path: Path, url_path: str) -> tuple[WSGIServer, Repo]:
    repo = Repo(str(path))
    backend = DictBackend({url_path: cast(BackendRepo, repo)})
    git_app = HTTPGitApplication(backend)
    # no receive-pack handler: git push gets 403 "Unsupported service"
    git_app.handlers.pop(b"git-receive-pack")
    # the middleware make_wsgi_chain() puts around the application
    app = LimitedInputFilter(GunzipFilter(git_app))
    try:
        server = make_server(HOST, 0, app, server_class=WSGIServerLogger,
                             handler_class=WSGIRequestHandlerLogger)
    except BaseException:
        repo.close()
        raise
    return server, repo


def _stop(server: WSGIServer, thread: threading.Thread, repo: Repo) -> None:
    try:
        if thread.is_alive():
            server.shutdown()
        thread.join(STOP_TIMEOUT)
    finally:
        server.server_close()
        repo.close()


@contextlib.asynccontextmanager
async def serve(path: Path, *, name: str = "gitops.git") -> AsyncIterator[str]:
    """Serve the repository at ``path`` as ``http://127.0.0.1:<port>/<name>``."""
    url_path = f"/{name}"
    server, repo = await asyncio.to_thread(_start, path, url_path)
    thread = threading.Thread(target=server.serve_forever, name="demo git server",
                              kwargs={"poll_interval": POLL_INTERVAL}, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}{url_path}"
    finally:
        await asyncio.to_thread(_stop, server, thread, repo)
