"""Request bodies from strangers, read whole and within bounds.

A ``BodyReader`` serves one listener. ``async with reader.read(request) as body`` reads
the request's body to its end — in chunks, however the client cut it into TCP segments
or HTTP chunks, after any ``Content-Encoding`` is undone — and counts it as held until
the block ends (the request is answered). Every refusal is a ``RequestRejected`` with the
status to answer:

- more than ``max_size`` bytes, announced or streamed or inflated → **413**;
- the bodies the listener holds together would go past ``max_inflight`` bytes → **503**:
  a body whose announced length does not fit is refused before a byte is read, any
  other when the chunk that does not fit arrives;
- not complete within ``timeout`` seconds of the injected clock → **408**;
- not readable — broken chunked framing, bytes that are not the announced
  ``Content-Encoding``, the client going away → **400**.

After a refusal the rest of the body is left unread: the answer should close the
connection. What a listener holds is bounded by ``max_inflight`` plus, for a moment, the
one body being joined from its chunks.

``read_capped`` is the same bounded read without budget or deadline, for the documents
fluxd fetches itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from prometheus_client import Gauge

from fluxd.clock import Clock

#: how long a whole body may take to arrive
DEFAULT_TIMEOUT = 30.0

_CHUNK = 64 * 1024


class RequestRejected(Exception):
    """A request answered with ``status`` and the short ``answer``; the message is the
    detail that is logged, never sent."""

    def __init__(self, status: int, answer: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.answer = answer


class _NoRoom(Exception):
    """A chunk that does not fit in the listener's budget."""


class _Expired(Exception):
    """Set on a request's stream when its deadline passes, to wake a read that waits."""


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole stream, or None as soon as it goes past ``limit`` bytes (nothing more is
    kept than ``limit`` plus one chunk). Errors of the stream are raised as they are."""
    return await _gather(stream, limit, None)


async def _gather(stream: aiohttp.StreamReader, limit: int, hold: _Hold | None
                  ) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        if hold is not None:
            hold.take(len(chunk))
        chunks.append(chunk)
    body = b"".join(chunks)
    # the chunks go now, not when the caller's frame does
    chunks.clear()
    return body


class _Hold:
    """The bytes one request holds of its reader's budget."""

    def __init__(self, reader: BodyReader) -> None:
        self._reader = reader
        self.size = 0

    def take(self, size: int) -> None:
        reader = self._reader
        if reader.inflight + size > reader.max_inflight:
            raise _NoRoom
        reader.inflight += size
        self.size += size
        reader.changed()

    def release(self) -> None:
        self._reader.inflight -= self.size
        self.size = 0
        self._reader.changed()


class BodyReader:
    """Reads the request bodies of one listener (see the module docstring); ``inflight``
    is the bytes held right now, also set on ``gauge``."""

    def __init__(self, *, max_size: int, max_inflight: int, clock: Clock,
                 timeout: float = DEFAULT_TIMEOUT, gauge: Gauge | None = None) -> None:
        self.max_size = max_size
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.inflight = 0
        self._clock = clock
        self._gauge = gauge

    def changed(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self.inflight)

    @contextlib.asynccontextmanager
    async def read(self, request: web.Request) -> AsyncIterator[bytes]:
        """The whole body of ``request``, held until the block ends; ``RequestRejected``
        when it is refused (nothing is held then)."""
        hold = _Hold(self)
        try:
            yield await self._read(request, hold)
        finally:
            hold.release()

    async def _read(self, request: web.Request, hold: _Hold) -> bytes:
        announced = request.content_length
        if announced is not None and announced > self.max_size:
            raise self._too_large(f"request body of {announced} bytes exceeds the maximum "
                                  f"size of {self.max_size} bytes")
        if announced is not None and announced > self.max_inflight - self.inflight:
            raise self._busy()
        stream = request.content
        refused: RequestRejected
        async with asyncio.TaskGroup() as group:
            deadline = group.create_task(self._expire(stream), name="request body deadline")
            try:
                return await self._chunks(stream, hold)
            except RequestRejected as exc:
                # raised after the group, which would wrap it in an ExceptionGroup
                refused = exc
            finally:
                deadline.cancel()
        raise refused

    async def _chunks(self, stream: aiohttp.StreamReader, hold: _Hold) -> bytes:
        try:
            body = await _gather(stream, self.max_size, hold)
        except _NoRoom:
            raise self._busy() from None
        except _Expired:
            raise RequestRejected(408, "request timeout", "the request body was not read "
                                  f"within {self.timeout:g}s") from None
        except (web.RequestPayloadError, ConnectionError) as exc:
            # aiohttp's parser errors (chunked framing, Content-Encoding, a short body)
            # arrive as RequestPayloadError; a client that goes away as ConnectionError
            raise RequestRejected(400, "invalid request", f"failed to read the request "
                                  f"body: {exc}") from None
        if body is None:
            raise self._too_large(f"request body exceeds the maximum size of "
                                  f"{self.max_size} bytes")
        return body

    async def _expire(self, stream: aiohttp.StreamReader) -> None:
        await self._clock.sleep(self.timeout)
        stream.set_exception(_Expired())

    @staticmethod
    def _too_large(detail: str) -> RequestRejected:
        return RequestRejected(413, "request body too large", detail)

    def _busy(self) -> RequestRejected:
        return RequestRejected(503, "server busy", f"request bodies in flight would exceed "
                               f"{self.max_inflight} bytes")
