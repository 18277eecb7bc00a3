"""Listener addresses as fluxd's flags take them, where a listener ended up bound, and
serving an aiohttp application on one for the length of an ``async with`` block.

Every listener :func:`serve_app` serves is bounded, whoever reaches its port (Go's
``http.Server`` has the two timeouts; the cap is fluxd's):

* At most ``limits.max_connections`` connections at once, and never more than an eighth
  of the process's file-descriptor limit (``RLIMIT_NOFILE``), so fluxd's four listeners
  together leave at least half of it to the API client, Git and notification sends. A
  connection past the cap is accepted, answered ``503`` and closed at once, so the
  listening socket never stays readable (it cannot spin) and the process never runs out
  of descriptors because of its listeners.
* A request's headers are due ``limits.read_header_timeout`` after the connection was
  accepted, or after the first byte of a later request on it (Go's ``ReadHeaderTimeout``);
  a client that has not sent them by then is disconnected. A watcher sleeping on the
  injected clock looks at every open connection a few times per timeout.
* An idle keep-alive connection is closed after ``limits.idle_timeout`` (Go's
  ``IdleTimeout``; aiohttp's own keep-alive timer).
* What aiohttp logs about a connection becomes one short line on the listener's logger,
  at most a few of each kind per interval, with the count of those held back: a malformed
  request (still answered ``400``) without a stack trace, a handler's exception (``500``)
  with its own.

:func:`throttle_accept_errors`, entered by the daemon on its event loop, does the same for
asyncio's ``socket.accept() out of system resource`` reports (``EMFILE``): one line per
interval, no stack trace, instead of one per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from fluxd import logging as fluxlog
from fluxd.clock import Clock, SystemClock

log = logging.getLogger("fluxd.listen")

#: a listener takes at most 1/8 of RLIMIT_NOFILE: fluxd's four take at most half of it
DESCRIPTOR_SHARE = 8
#: lines of one kind a listener writes per interval; the rest are counted
LOG_BURST = 5
LOG_INTERVAL = 10.0
#: most characters of a client's error quoted in a line
_QUOTE = 160
_BUSY_TEXT = b"too many connections\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: " + str(len(_BUSY_TEXT)).encode() + b"\r\n"
         b"Connection: close\r\n\r\n" + _BUSY_TEXT)
#: the errors asyncio's accept loop reports and then backs off from (selector_events)
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def parse_address(address: str) -> tuple[str | None, int]:
    """``host:port`` as Go's listeners take it: ``:8080`` (all interfaces), ``[::1]:0``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port)


@dataclass(frozen=True)
class Listener:
    """A running HTTP listener: where it is bound (port 0 resolved)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Limits(Protocol):
    """What bounds a listener: ``[http]`` in the configuration."""

    @property
    def max_connections(self) -> int: ...

    @property
    def read_header_timeout(self) -> float: ...

    @property
    def idle_timeout(self) -> float: ...


@dataclass(frozen=True)
class ListenerLimits:
    """``[http]``'s defaults, for a listener whose caller passes no limits."""

    max_connections: int = 256
    read_header_timeout: float = 10.0
    idle_timeout: float = 60.0


DEFAULT_LIMITS = ListenerLimits()


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to one listener's share of the descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft // DESCRIPTOR_SHARE))


def _quote(error: BaseException) -> str:
    """An error a client caused, on one short line: whitespace folded, nothing that could
    steer a terminal, at most ``_QUOTE`` characters."""
    text = " ".join(str(error).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _QUOTE else text[:_QUOTE - 1] + "…"


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class _Lines:
    """One listener's log lines about its connections, each kind throttled on its own."""

    def __init__(self, *, what: str, log: logging.Logger, clock: Clock) -> None:
        self.what = what
        self.log = log

        def throttle() -> fluxlog.LogThrottle:
            return fluxlog.LogThrottle(interval=LOG_INTERVAL, burst=LOG_BURST,
                                       monotonic=clock.monotonic)

        self.refused = throttle()
        self.late_headers = throttle()
        self.bad_requests = throttle()
        self.handler_errors = throttle()
        self.chatter = throttle()
        self._summaries = [
            (self.refused, logging.WARNING, "refused connections"),
            (self.late_headers, logging.INFO, "connections closed for late headers"),
            (self.bad_requests, logging.INFO, "bad requests"),
            (self.handler_errors, logging.ERROR, "request handler errors"),
            (self.chatter, logging.DEBUG, "connection debug lines"),
        ]

    def write(self, throttle: fluxlog.LogThrottle, level: int, msg: str, *args: object,
              exc_info: BaseException | None = None, **values: Any) -> None:
        if not self.log.isEnabledFor(level):
            return
        held = throttle.admit()
        if held is None:
            return
        if held:
            values["suppressed"] = held
        self.log.log(level, msg, *args, exc_info=exc_info, extra=fluxlog.fields(
            with_stacktrace=exc_info is not None, listener=self.what, **values))

    def summarise(self) -> None:
        """A line for each kind whose held-back lines no later line has reported."""
        for throttle, level, kind in self._summaries:
            held = throttle.overdue()
            if held:
                self.log.log(level, "%d more %s not logged in %gs", held, kind,
                             throttle.interval, extra=fluxlog.fields(listener=self.what))


class _HandlerLog(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's connection handler is given: what it reports about a
    connection (``Error handling request from …`` with the exception) as one line of
    :class:`_Lines`. A malformed request is the client's doing: no stack trace, and at
    most info level (aiohttp itself logs some at debug). A warning or error is a handler
    bug and keeps its trace; below that it is aiohttp's debug chatter."""

    def __init__(self, lines: _Lines) -> None:
        super().__init__(lines.log, {})
        self._lines = lines

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None,
            stack_info: bool = False, stacklevel: int = 1,
            extra: Mapping[str, object] | None = None, **kwargs: object) -> None:
        error = _exception_of(exc_info)
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        if isinstance(error, HttpProcessingError):
            self._lines.write(self._lines.bad_requests, min(level, logging.INFO), "%s", text,
                              error=_quote(error), status=error.code)
        elif level >= logging.WARNING:
            self._lines.write(self._lines.handler_errors, level, "%s", text, exc_info=error)
        else:
            self._lines.write(self._lines.chatter, level, "%s", text)


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        found = exc_info[1]
        return found if isinstance(found, BaseException) else None
    if exc_info:
        return sys.exc_info()[1]
    return None


def _awaiting_request(handler: RequestHandler) -> bool:
    """The handler waits for the next request's headers: none parsed, none queued. The
    state aiohttp's own keep-alive check reads (``_waiter``, ``_messages``, both there
    since aiohttp 3.0); the header-timeout tests fail should they change."""
    waiter: asyncio.Future[None] | None = getattr(handler, "_waiter", None)
    return waiter is not None and not waiter.done() and not _has_request(handler)


def _has_request(handler: RequestHandler) -> bool:
    """A request's headers are parsed and queued for the handler."""
    return bool(getattr(handler, "_messages", None))


class _Connection(asyncio.Protocol):
    """One admitted connection: aiohttp's handler behind it, its header deadline here."""

    def __init__(self, gate: _Gate, handler: RequestHandler, now: float) -> None:
        self.gate = gate
        self.handler = handler
        self.transport: asyncio.BaseTransport | None = None
        #: when the headers now awaited began to be due; None while none are awaited.
        #: The first request's are due from the accept, as in Go.
        self.header_since: float | None = now

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.header_since is None and _awaiting_request(self.handler):
            self.header_since = self.gate.clock.monotonic()
        self.handler.data_received(data)
        if self.header_since is not None and _has_request(self.handler):
            self.header_since = None

    def eof_received(self) -> bool | None:
        # aiohttp's handler ignores EOF; None lets the transport close
        self.handler.eof_received()
        return None

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def expire(self) -> None:
        """Disconnect: the headers are overdue."""
        self.gate.release(self)
        self.header_since = None
        if self.transport is None:  # accepted but never connected: only the slot to free
            return
        lines = self.gate.lines
        lines.write(lines.late_headers, logging.INFO,
                    "connection closed: request headers not received in %gs",
                    self.gate.header_timeout, remote=_peer(self.transport))
        self.handler.force_close()


class _Refused(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed as soon as it is made."""

    def __init__(self, gate: _Gate) -> None:
        self.gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lines = self.gate.lines
        lines.write(lines.refused, logging.WARNING,
                    "connection refused: %s holds its most connections", lines.what,
                    remote=_peer(transport), maxConnections=self.gate.cap)
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_BUSY)
        transport.close()


class _Gate:
    """One listener's connections: admitted under the cap, watched for late headers."""

    def __init__(self, server: web.Server, lines: _Lines, *, cap: int,
                 header_timeout: float, clock: Clock) -> None:
        self._server = server
        self.lines = lines
        self.cap = cap
        self.header_timeout = header_timeout
        self.clock = clock
        self.open: set[_Connection] = set()

    def protocol(self) -> asyncio.Protocol:
        """The loop's protocol factory: called once per accepted connection."""
        if len(self.open) >= self.cap:
            return _Refused(self)
        connection = _Connection(self, self._server(), self.clock.monotonic())
        self.open.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        self.open.discard(connection)

    async def watch(self) -> None:
        """Disconnect the clients whose headers are overdue, a few times per timeout."""
        tick = min(1.0, self.header_timeout / 4)
        while True:
            await self.clock.sleep(tick)
            self.reap()

    def reap(self) -> None:
        now = self.clock.monotonic()
        for connection in list(self.open):
            since = connection.header_since
            if since is not None and now - since >= self.header_timeout:
                connection.expire()
        self.lines.summarise()


class _Site(web.BaseSite):
    """A TCP site whose connections pass the gate first (aiohttp's ``TCPSite`` hands them
    to the handler factory directly)."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int,
                 gate: _Gate) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://{self._host or '*'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._gate.protocol, self._host, self._port,
                                                backlog=self._backlog)


@asynccontextmanager
async def serve_app(address: str, app: web.Application, *, what: str,
                    log: logging.Logger, lingering_time: float = 10.0,
                    limits: Limits = DEFAULT_LIMITS, clock: Clock | None = None
                    ) -> AsyncIterator[Listener]:
    """Serve ``app`` on ``address`` until the block ends; logs ``<what> listening``.

    With an empty host (``:0``) every interface is bound; with port 0 each socket may get
    its own port, and the first one is reported. Signals belong to the daemon, not here.
    ``lingering_time`` is how long an unread request body is drained after the answer
    (aiohttp's default 10 s); 0 closes the connection at once, for listeners that refuse
    oversized bodies from strangers. ``limits`` bound the connections (see the module
    docstring); ``clock`` times the header deadlines and the log throttling.
    """
    host, port = parse_address(address)
    clock = clock or SystemClock()
    lines = _Lines(what=what, log=log, clock=clock)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0,
                           lingering_time=lingering_time,
                           keepalive_timeout=limits.idle_timeout, logger=_HandlerLog(lines))
    await runner.setup()
    failure: BaseException | None = None
    try:
        assert runner.server is not None
        gate = _Gate(runner.server, lines, cap=connection_cap(limits.max_connections),
                     header_timeout=limits.read_header_timeout, clock=clock)
        await _Site(runner, host, port, gate).start()
        bound_host, bound_port = runner.addresses[0][:2]
        server = Listener(host=str(bound_host), port=int(bound_port))
        log.info("%s listening", what,
                 extra={"address": server.url, "maxConnections": gate.cap})
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(gate.watch(), name=f"{what} header deadlines")
            try:
                yield server
            except BaseException as exc:
                # raised again below, unwrapped: the caller sees its own exception, not
                # the task group's ExceptionGroup around it
                failure = exc
            finally:
                watcher.cancel()
    finally:
        await runner.cleanup()
    if failure is not None:
        raise failure


# -- accept errors -----------------------------------------------------------------------

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def _is_accept_exhaustion(context: Mapping[str, Any]) -> bool:
    error = context.get("exception")
    if context.get("message") == _ACCEPT_EXHAUSTED:
        return True
    return (isinstance(error, OSError) and error.errno in _EXHAUSTED
            and "socket" in context and "transport" not in context)


class AcceptErrorFilter:
    """A loop exception handler: asyncio's report of ``accept`` failing for want of
    descriptors or memory — one per attempt, with a stack trace, from every listening
    socket while the shortage lasts — becomes one line per interval with the count of
    the others. Every other report goes on to the handler this one replaced."""

    def __init__(self, *, clock: Clock, previous: ExceptionHandler | None = None,
                 interval: float = LOG_INTERVAL) -> None:
        self.previous = previous
        self._throttle = fluxlog.LogThrottle(interval=interval, burst=1,
                                             monotonic=clock.monotonic)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not _is_accept_exhaustion(context):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        held = self._throttle.admit()
        if held is None:
            return
        error = context.get("exception")
        values: dict[str, Any] = {"error": str(error) if error is not None else "unknown"}
        sock = context.get("socket")
        if sock is not None:
            with suppress(OSError):
                values["address"] = str(sock.getsockname())
        if held:
            values["suppressed"] = held
        log.error("accepting a connection failed; asyncio retries in a second",
                  extra=fluxlog.fields(**values))


@contextmanager
def throttle_accept_errors(loop: asyncio.AbstractEventLoop, *,
                           clock: Clock) -> Iterator[AcceptErrorFilter]:
    """Install an :class:`AcceptErrorFilter` on ``loop`` for the block."""
    previous = loop.get_exception_handler()
    handler = AcceptErrorFilter(clock=clock, previous=previous)
    loop.set_exception_handler(handler)
    try:
        yield handler
    finally:
        loop.set_exception_handler(previous)
