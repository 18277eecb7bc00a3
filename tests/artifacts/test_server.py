"""The artifact HTTP server: Flux's URLs, exact bytes, and no way out of the storage root."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fluxd.artifacts.server import ArtifactServer, serve
from fluxd.artifacts.storage import ArtifactRecord, ArtifactStore
from fluxd.clock import FakeClock
from fluxd.listen import ListenerLimits
from tests.artifacts.trees import make_tree

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(store: ArtifactStore) -> AsyncIterator[ArtifactServer]:
    async with serve("127.0.0.1:0", store) as running:
        yield running


@pytest.fixture
def artifact(store: ArtifactStore, tmp_path: Path) -> ArtifactRecord:
    source = make_tree(tmp_path / "src", {"a.yaml": "a: 1\n", "b/c.yaml": os.urandom(200_000)})
    return store.archive("GitRepository", "flux-system", "podinfo", source, "abc.tar.gz")


async def get(server: ArtifactServer, path: str, *, method: str = "GET",
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.request(method, server.url + path, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def raw_status(server: ArtifactServer, target: str) -> int:
    """Send ``target`` verbatim on the request line (no client-side normalising)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_root_answers_200_for_the_readiness_probe(server: ArtifactServer) -> None:
    status, _, _ = await get(server, "/")
    assert status == 200


async def test_get_sends_the_exact_bytes_with_their_length(
        server: ArtifactServer, artifact: ArtifactRecord) -> None:
    status, headers, body = await get(server, "/" + artifact.path,
                                      headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert "sha256:" + hashlib.sha256(body).hexdigest() == artifact.digest
    assert int(headers["Content-Length"]) == artifact.size == len(body)
    assert headers["Content-Type"] == "application/x-gzip"
    assert "Content-Encoding" not in headers


async def test_the_advertised_url_path_is_what_the_server_serves(
        store: ArtifactStore, tmp_path: Path) -> None:
    async with serve("127.0.0.1:0", store) as running:
        moved = ArtifactStore(store.root, clock=store.clock,
                              advertised=f"127.0.0.1:{running.port}")
        record = moved.store_file("Bucket", "ns", "b", "x.tar.gz", b"bytes")
        async with aiohttp.ClientSession() as session, session.get(record.url) as response:
            assert await response.read() == b"bytes"


async def test_head_gives_the_headers_without_a_body(server: ArtifactServer,
                                                     artifact: ArtifactRecord) -> None:
    status, headers, body = await get(server, "/" + artifact.path, method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == artifact.size


async def test_a_missing_artifact_is_404(server: ArtifactServer) -> None:
    status, _, _ = await get(server, "/gitrepository/flux-system/podinfo/nope.tar.gz")
    assert status == 404


async def test_directories_are_not_listed(server: ArtifactServer,
                                          artifact: ArtifactRecord) -> None:
    for path in ("/gitrepository", "/gitrepository/flux-system/podinfo/"):
        status, _, body = await get(server, path)
        assert status == 404
        assert b"abc.tar.gz" not in body


async def test_symlinks_inside_the_root_are_followed(server: ArtifactServer,
                                                     store: ArtifactStore) -> None:
    store.store_file("HelmRepository", "ns", "r", "index-1.yaml", b"entries: {}\n")
    store.symlink("HelmRepository", "ns", "r", "index.yaml", "index-1.yaml")
    status, headers, body = await get(server, "/helmrepository/ns/r/index.yaml")
    assert (status, body) == (200, b"entries: {}\n")
    assert headers["Content-Type"].startswith("text/plain")


async def test_a_symlink_leading_out_of_the_root_is_404(server: ArtifactServer,
                                                        store: ArtifactStore,
                                                        tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    store.store_file("Bucket", "ns", "b", "x", b"x")
    (store.root / "bucket/ns/b/escape").symlink_to(secret)
    (store.root / "bucket/ns/b/escape-dir").symlink_to(tmp_path)
    for path in ("/bucket/ns/b/escape", "/bucket/ns/b/escape-dir/secret.txt"):
        status, _, body = await get(server, path)
        assert (status, body.count(b"secret")) == (404, 0), path


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/%2e%2e/secret.txt", "/bucket/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/bucket/ns/..%2f..%2f..%2f..%2fsecret.txt", "/..%5csecret.txt",
    "/bucket/ns/b/%00", "//etc/passwd", "/%2fetc%2fpasswd"])
async def test_path_traversal_attempts_never_reach_outside_the_root(
        server: ArtifactServer, store: ArtifactStore, tmp_path: Path, target: str) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    store.store_file("Bucket", "ns", "b", "x", b"x")
    assert await raw_status(server, target) in (400, 404)


async def test_a_precompressed_sibling_is_never_sent_instead(server: ArtifactServer,
                                                             store: ArtifactStore) -> None:
    store.store_file("Bucket", "ns", "b", "data.tar", b"the tar")
    store.store_file("Bucket", "ns", "b", "data.tar.gz", b"something else")
    status, headers, body = await get(server, "/bucket/ns/b/data.tar",
                                      headers={"Accept-Encoding": "gzip, br"})
    assert (status, body) == (200, b"the tar")
    assert "Content-Encoding" not in headers


async def test_writes_are_not_allowed(server: ArtifactServer, artifact: ArtifactRecord) -> None:
    status, _, _ = await get(server, "/" + artifact.path, method="PUT")
    assert status == 405


async def test_the_server_is_bounded_as_every_listener_is(store: ArtifactStore,
                                                           clock: FakeClock) -> None:
    limits = ListenerLimits(max_connections=2, read_header_timeout=10)
    async with serve("127.0.0.1:0", store, limits=limits, clock=clock) as server:
        held = [await asyncio.open_connection(server.host, server.port) for _ in range(2)]
        reader, writer = await asyncio.open_connection(server.host, server.port)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
        writer.close()
        held[0][1].write(b"GET / HTTP/1.1\r\n")  # and the rest never comes
        await held[0][1].drain()
        clock.advance(10)
        for held_reader, held_writer in held:
            # a reset when closed before reading what was sent: as closed as EOF
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(held_reader.read(), 5) == b""
            held_writer.close()


async def test_ranges_and_validators_apply_to_a_client_that_accepts_compression(
        server: ArtifactServer, store: ArtifactStore) -> None:
    store.store_file("Bucket", "ns", "b", "data.tar", b"the tar")
    store.store_file("Bucket", "ns", "b", "data.tar.gz", b"something else")
    path = "/bucket/ns/b/data.tar"
    accepts = {"Accept-Encoding": "gzip, br"}
    status, headers, body = await get(server, path, headers={**accepts, "Range": "bytes=4-"})
    assert (status, body) == (206, b"tar")
    assert headers["Content-Range"] == "bytes 4-6/7"
    _, headers, _ = await get(server, path, headers=accepts)
    etag = next(value for name, value in headers.items() if name.lower() == "etag")
    status, _, body = await get(server, path, headers={**accepts, "If-None-Match": etag})
    assert (status, body) == (304, b"")


async def test_a_header_that_is_not_utf8_does_not_spoil_the_answer(
        server: ArtifactServer, store: ArtifactStore) -> None:
    store.store_file("Bucket", "ns", "b", "data.tar", b"the tar")
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /bucket/ns/b/data.tar HTTP/1.1\r\nHost: x\r\n"
                     b"Accept-Encoding: gzip\r\nX-Note: caf\xe9\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nthe tar")
