"""A raw HTTP/1.1 client over loopback, for tests that decide how the bytes of a request
reach a server: in separate segments with pauses, in chunked framing, or stalled
half-way. Every wait is bounded."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def head(path: str, *, headers: Mapping[str, str] | None = None,
         content_length: int | None = None, chunked: bool = False) -> bytes:
    """The request line and headers of a POST to ``path``."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``LAST_CHUNK`` ends it)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


class Connection:
    """One TCP connection to a loopback server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "::1", "localhost"), "loopback only"
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(10):
            await self.writer.drain()

    async def response(self, *, within: float = 10) -> Response:
        """The next response (its body by ``Content-Length``)."""
        async with asyncio.timeout(within):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Response(status, headers, body)

    async def send_until_answered(self, parts: Iterable[bytes], *, pause: float = 0.0,
                                  within: float = 30) -> Response:
        """Send ``parts`` one after the other (``pause`` seconds apart), stopping early
        when the server answers before it has them all; the answer."""
        async with asyncio.timeout(within), asyncio.TaskGroup() as group:
            answer = group.create_task(self.response(within=within))
            for part in parts:
                if answer.done():
                    break
                try:
                    await self.send(part)
                except ConnectionError:
                    break
                await asyncio.sleep(pause)
        return answer.result()

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(5):
                await self.writer.wait_closed()
        except (ConnectionError, TimeoutError):
            pass
