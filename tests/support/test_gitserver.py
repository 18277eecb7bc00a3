"""The test git server, driven by the real git CLI, dulwich and aiohttp over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import random
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dulwich.client import HttpGitClient, HTTPUnauthorized, get_transport_and_path
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo as DulwichRepo

from tests.support.gitserver import (
    BadCgiResponse,
    BasicAuth,
    BearerAuth,
    File,
    GitServer,
    SshdUnavailable,
    SshGitServer,
    add_submodule,
    branch,
    commit,
    ensure_sshd,
    git,
    head,
    make_repo,
    read_cgi_headers,
    refs,
    tag,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

USER, PASSWORD, TOKEN = "gitea-user", "gta_0123456789abcdef", "ghp-test-token"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

Serve = Callable[..., GitServer]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start servers (keyword arguments go to ``GitServer``); all stopped afterwards."""
    started: list[GitServer] = []

    def start(**options: Any) -> GitServer:
        server = GitServer(tmp_path / f"repos-{len(started)}", **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(serve: Serve) -> GitServer:
    return serve()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def statuses(server: GitServer) -> set[int]:
    return {r.status for r in server.stats.requests}


# -- clone, fetch, push without auth -----------------------------------------------------


def test_a_clone_over_http_gets_the_files_and_the_head_commit(server: GitServer,
                                                              tmp_path: Path) -> None:
    repo = server.make_repo("app", {"deploy/app.yaml": "kind: Deployment\n", "README": b"hi"})
    git("clone", server.repo_url("app"), tmp_path / "clone")
    assert (tmp_path / "clone/deploy/app.yaml").read_text() == "kind: Deployment\n"
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").stdout.strip() == head(repo)


def test_a_repository_in_a_subdirectory_is_served_under_its_path(server: GitServer,
                                                                 tmp_path: Path) -> None:
    repo = server.make_repo("org/fleet", {"a": "1"})
    out = git("ls-remote", server.repo_url("org/fleet")).stdout
    assert f"{head(repo)}\trefs/heads/main" in out


def test_a_fetch_after_a_new_commit_brings_the_new_head(server: GitServer,
                                                        tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    git("clone", server.repo_url("app"), tmp_path / "clone")
    new = commit(repo, {"a": "2", "b": "new"}, "second")
    git("fetch", "origin", cwd=tmp_path / "clone")
    assert git("rev-parse", "origin/main", cwd=tmp_path / "clone").stdout.strip() == new


def test_a_push_with_the_git_cli_updates_the_served_branch(server: GitServer,
                                                           tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    work = tmp_path / "clone"
    git("clone", server.repo_url("app"), work)
    (work / "pushed.txt").write_text("from a test\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "pushed", cwd=work)
    git("push", "origin", "main", cwd=work)
    assert head(repo) == git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert server.stats.count(method="POST", service="git-receive-pack", command="push",
                              status=200) == 1


def test_an_anonymous_push_is_refused_when_anonymous_pushes_are_off(serve: Serve,
                                                                    tmp_path: Path) -> None:
    server = serve(allow_push=False)
    repo = server.make_repo("app", {"a": "1"})
    before = head(repo)
    work = tmp_path / "clone"
    git("clone", server.repo_url("app"), work)
    git("commit", "-q", "--allow-empty", "-m", "nope", cwd=work)
    done = git("push", "origin", "main", cwd=work, check=False)
    assert done.returncode != 0
    assert head(repo) == before
    assert server.stats.count(service="git-receive-pack", status=403) == 1


def test_a_commit_helper_after_a_push_builds_on_the_pushed_tip(server: GitServer,
                                                               tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    work = tmp_path / "clone"
    git("clone", server.repo_url("app"), work)
    git("commit", "-q", "--allow-empty", "-m", "pushed", cwd=work)
    git("push", "origin", "main", cwd=work)
    pushed = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    new = commit(repo, {"b": "2"}, "on top")
    assert repo.git("rev-parse", f"{new}^") == pushed


def test_an_unknown_repository_is_a_404(server: GitServer) -> None:
    done = git("ls-remote", server.repo_url("missing"), check=False)
    assert done.returncode != 0
    assert statuses(server) == {404}


# -- auth --------------------------------------------------------------------------------


def test_basic_auth_with_the_right_password_clones_and_pushes(serve: Serve,
                                                              tmp_path: Path) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD), allow_push=False)
    repo = server.make_repo("app", {"a": "1"})
    work = tmp_path / "clone"
    git("clone", server.repo_url("app", username=USER, password=PASSWORD), work)
    git("commit", "-q", "--allow-empty", "-m", "authenticated", cwd=work)
    git("push", "origin", "main", cwd=work)  # REMOTE_USER is set, so receive-pack is on
    assert head(repo) == git("rev-parse", "HEAD", cwd=work).stdout.strip()
    served = server.stats.select(status=200)
    assert served and {r.user for r in served} == {USER}


def test_basic_auth_with_a_wrong_password_is_refused(serve: Serve, tmp_path: Path) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD))
    server.make_repo("app", {"a": "1"})
    done = git("clone", server.repo_url("app", username=USER, password="wrong"),
               tmp_path / "clone", check=False)
    assert done.returncode != 0
    assert "Authentication failed" in done.stderr
    assert statuses(server) == {401}
    assert not (tmp_path / "clone").exists()


def test_missing_credentials_are_refused_without_a_prompt(serve: Serve, tmp_path: Path) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD))
    server.make_repo("app", {"a": "1"})
    done = git("ls-remote", server.repo_url("app"), check=False, timeout=30)
    assert done.returncode != 0
    assert "terminal prompts disabled" in done.stderr
    assert statuses(server) == {401}


def test_bearer_auth_with_the_right_token_clones(serve: Serve, tmp_path: Path) -> None:
    server = serve(auth=BearerAuth(TOKEN))
    repo = server.make_repo("app", {"a": "1"})
    git("-c", f"http.extraHeader=Authorization: Bearer {TOKEN}", "clone",
        server.repo_url("app"), tmp_path / "clone")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").stdout.strip() == head(repo)
    assert statuses(server) == {200}
    assert {r.user for r in server.stats.requests} == {"bearer"}


def test_bearer_auth_with_a_wrong_token_is_refused(serve: Serve, tmp_path: Path) -> None:
    server = serve(auth=BearerAuth(TOKEN))
    server.make_repo("app", {"a": "1"})
    done = git("-c", "http.extraHeader=Authorization: Bearer wrong", "clone",
               server.repo_url("app"), tmp_path / "clone", check=False)
    assert done.returncode != 0
    assert statuses(server) == {401}


def test_a_server_may_accept_basic_and_bearer_alike(serve: Serve) -> None:
    server = serve(auth=(BasicAuth(USER, PASSWORD), BearerAuth(TOKEN)))
    server.make_repo("app", {"a": "1"})
    git("ls-remote", server.repo_url("app", username=USER, password=PASSWORD))
    git("-c", f"http.extraHeader=Authorization: Bearer {TOKEN}", "ls-remote",
        server.repo_url("app"))


async def test_a_401_carries_a_basic_realm_challenge_and_an_empty_body(serve: Serve) -> None:
    server = serve(auth=BearerAuth(TOKEN), realm="Gitea")
    server.make_repo("app", {"a": "1"})
    url = f"{server.repo_url('app')}/info/refs?service=git-upload-pack"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic bm90OmJhc2U2NA=="}):
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Basic realm="Gitea"'
                assert await resp.read() == b""
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200


# -- protocol versions and counters ----------------------------------------------------------


def test_the_git_cli_speaks_protocol_v2_and_the_server_passes_it_on(server: GitServer,
                                                                    tmp_path: Path) -> None:
    server.make_repo("app", {"a": "1"})
    done = git("clone", server.repo_url("app"), tmp_path / "clone",
               env={"GIT_TRACE_PACKET": "1"})
    assert "clone< version 2" in done.stderr  # only sent when GIT_PROTOCOL reached git
    requests = server.stats.requests
    assert {r.protocol for r in requests} == {2}
    assert requests[0].headers["Git-Protocol"] == "version=2"
    assert [(r.method, r.kind, r.command) for r in requests] == [
        ("GET", "info-refs", None), ("POST", "rpc", "ls-refs"), ("POST", "rpc", "fetch")]


async def test_an_async_client_gets_a_v2_capability_advertisement(server: GitServer) -> None:
    server.make_repo("app", {"a": "1"})
    url = f"{server.repo_url('app')}/info/refs?service=git-upload-pack"
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.get(url, headers={"Git-Protocol": "version=2"}) as resp):
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        assert resp.headers["Cache-Control"].startswith("no-cache")
    assert b"version 2\n" in body and b"ls-refs" in body


def test_protocol_v0_still_clones_with_a_single_fetch_post(server: GitServer,
                                                           tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    git("-c", "protocol.version=0", "clone", server.repo_url("app"), tmp_path / "clone")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").stdout.strip() == head(repo)
    requests = server.stats.requests
    assert {r.protocol for r in requests} == {0}
    assert "Git-Protocol" not in requests[0].headers
    assert [(r.method, r.kind, r.command) for r in requests] == [
        ("GET", "info-refs", None), ("POST", "rpc", "fetch")]
    assert server.stats.packs_sent() == 1


@pytest.mark.parametrize("version", ["0", "2"])
def test_ls_remote_lists_refs_without_fetching_a_pack(server: GitServer, version: str) -> None:
    repo = server.make_repo("app", {"a": "1"})
    out = git("-c", f"protocol.version={version}", "ls-remote", server.repo_url("app")).stdout
    assert f"{head(repo)}\trefs/heads/main" in out
    assert server.stats.packs_sent() == 0
    assert server.stats.pack_bytes() == 0
    # v2 asks with an ls-refs POST; v0 reads the info/refs advertisement alone
    expected = 1 if version == "2" else 0
    assert server.stats.upload_pack_posts() == expected
    assert server.stats.count(command="ls-refs") == expected


def test_a_second_fetch_with_nothing_new_transfers_no_pack(server: GitServer,
                                                           tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    git("clone", server.repo_url("app"), tmp_path / "clone")
    assert server.stats.packs_sent() == 1
    assert server.stats.pack_bytes() > 0
    server.stats.reset()
    git("fetch", "origin", cwd=tmp_path / "clone")
    assert server.stats.packs_sent() == 0
    assert server.stats.count(command="fetch") == 0
    commit(repo, {"a": "2"}, "second")
    git("fetch", "origin", cwd=tmp_path / "clone")
    assert server.stats.packs_sent() == 1


def test_the_counters_count_requests_by_path_and_service(server: GitServer,
                                                         tmp_path: Path) -> None:
    server.make_repo("app", {"a": "1"})
    server.make_repo("other", {"b": "2"})
    git("clone", server.repo_url("app"), tmp_path / "clone")
    git("ls-remote", server.repo_url("other"))
    assert server.stats.by_path() == {
        "GET /app.git/info/refs": 1, "POST /app.git/git-upload-pack": 2,
        "GET /other.git/info/refs": 1, "POST /other.git/git-upload-pack": 1}
    assert server.stats.by_service() == {
        "GET info-refs git-upload-pack": 2, "POST rpc git-upload-pack": 3}
    assert server.stats.upload_pack_posts("app") == 2
    assert server.stats.packs_sent("app") == 1
    assert server.stats.packs_sent("other") == 0
    fetch = server.stats.select(repo="app", command="fetch")[0]
    assert 0 < fetch.pack_bytes < fetch.bytes_out


# -- availability ----------------------------------------------------------------------------


def test_the_server_recovers_after_down_and_up_on_the_same_port(server: GitServer) -> None:
    repo = server.make_repo("app", {"a": "1"})
    port = server.port
    git("ls-remote", server.repo_url("app"))
    server.down()
    assert not server.is_up
    done = git("ls-remote", server.repo_url("app"), check=False, timeout=30)
    assert done.returncode != 0
    assert "Couldn't connect to server" in done.stderr
    new = commit(repo, {"a": "2"}, "while down")
    server.up()
    assert server.port == port
    assert f"{new}\trefs/heads/main" in git("ls-remote", server.repo_url("app")).stdout


def _hanging_upload_pack(server: GitServer) -> socket.socket:
    """A POST whose body never arrives in full: the backend waits for it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /app.git/git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/x-git-upload-pack-request\r\n"
                 b"Content-Length: 100000\r\n\r\n0009done\n")
    return sock


def test_a_client_that_disconnects_gets_its_backend_killed(server: GitServer) -> None:
    server.make_repo("app", {"a": "1"})
    with _hanging_upload_pack(server):
        wait_until(lambda: server.running_backends == 1)
    wait_until(lambda: server.running_backends == 0 and server.stats.killed == 1)


def test_a_request_that_outlives_its_timeout_is_cut_off(serve: Serve) -> None:
    server = serve(timeout=0.5)
    server.make_repo("app", {"a": "1"})
    started = time.monotonic()
    with _hanging_upload_pack(server) as sock:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert time.monotonic() - started < 5
    # cut off after its headers went out, or answered 504 before they did
    assert received.startswith((b"HTTP/1.1 200", b"HTTP/1.1 504"))
    wait_until(lambda: server.stats.killed == 1)
    assert server.running_backends == 0
    assert server.stats.requests[0].timed_out


# -- the CGI front ------------------------------------------------------------------------------

ENV_CGI = """#!/bin/sh
printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Seen: a\\r\\nX-Seen: b\\r\\n\\r\\n'
env | sort
echo ---
cat
"""


async def test_the_front_hands_the_backend_an_rfc_3875_environment(serve: Serve,
                                                                   tmp_path: Path) -> None:
    cgi = tmp_path / "env.cgi"
    cgi.write_text(ENV_CGI)
    cgi.chmod(0o755)
    server = serve(auth=BasicAuth(USER, PASSWORD), backend=cgi)
    gz = gzip.compress(b"0014command=ls-refs\n0000")
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(f"{server.url}/org/app.git/git-upload-pack?x=1&y=2", data=gz,
                             headers={"Authorization": f"Basic {BASIC}",
                                      "Git-Protocol": "version=2", "Content-Encoding": "gzip",
                                      "Content-Type": "application/x-git-upload-pack-request"},
                             ) as resp):
        body = await resp.read()
        assert resp.status == 201
        assert resp.headers.getall("X-Seen") == ["a", "b"]
    env_text, _, echoed = body.partition(b"---\n")
    env = dict(line.split("=", 1) for line in env_text.decode().splitlines() if "=" in line)
    assert echoed == gz  # the raw gzipped body, for git http-backend to inflate
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/org/app.git/git-upload-pack"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["CONTENT_TYPE"] == "application/x-git-upload-pack-request"
    assert env["CONTENT_LENGTH"] == str(len(gz))
    assert env["HTTP_CONTENT_ENCODING"] == "gzip"
    assert env["GIT_PROTOCOL"] == env["HTTP_GIT_PROTOCOL"] == "version=2"
    assert env["GIT_PROJECT_ROOT"] == str(server.root)
    assert env["GIT_HTTP_EXPORT_ALL"] == "1"
    assert env["REMOTE_USER"] == USER and env["AUTH_TYPE"] == "Basic"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert "HTTP_AUTHORIZATION" not in env
    record = server.stats.requests[0]
    assert (record.command, record.protocol, record.user) == ("ls-refs", 2, USER)


async def test_cgi_headers_are_parsed_with_status_location_and_repeats() -> None:
    async def parse(raw: bytes) -> tuple[int, str | None, list[tuple[str, str]]]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        status, reason, headers = await read_cgi_headers(reader)
        assert await reader.read() == b"body"
        return status, reason, list(headers.items())

    assert await parse(b"Content-Type: a/b\n\nbody") == (200, None, [("Content-Type", "a/b")])
    assert await parse(b"Status: 403 Forbidden\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody") == (
        403, "Forbidden", [("X-A", "1"), ("X-A", "2")])
    assert await parse(b"Location: /x\r\n\r\nbody") == (302, None, [("Location", "/x")])
    for bad in (b"Content-Type: a/b\r\n", b"no colon\r\n\r\n", b"Status: ok\n\n"):
        reader = asyncio.StreamReader()
        reader.feed_data(bad)
        reader.feed_eof()
        with pytest.raises(BadCgiResponse):
            await read_cgi_headers(reader)


async def test_a_repository_file_is_served_over_dumb_http_with_its_length(
        server: GitServer) -> None:
    server.make_repo("app", {"a": "1"})
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.get(f"{server.repo_url('app')}/HEAD") as resp):
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(b"ref: refs/heads/main\n"))
        assert await resp.read() == b"ref: refs/heads/main\n"
    assert server.stats.requests[0].kind == "other"


# -- bodies: big, chunked, gzipped -----------------------------------------------------------


def test_a_repository_of_5000_files_clones(server: GitServer, tmp_path: Path) -> None:
    repo = server.make_large_repo("big")
    # no checkout: writing 5,000 files measures the disk, not the server
    git("clone", "--quiet", "--no-checkout", server.repo_url("big"), tmp_path / "clone")
    tree = git("ls-tree", "-r", "--name-only", "HEAD", cwd=tmp_path / "clone").stdout
    assert len(tree.splitlines()) == 5000
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").stdout.strip() == head(repo)
    assert server.stats.pack_bytes("big") > 100_000


def test_a_push_larger_than_the_post_buffer_streams_in_chunks(server: GitServer,
                                                              tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    work = tmp_path / "clone"
    git("clone", server.repo_url("app"), work)
    (work / "blob.bin").write_bytes(random.Random(7).randbytes(3 * 1024 * 1024))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    git("push", "origin", "main", cwd=work)
    assert head(repo) == git("rev-parse", "HEAD", cwd=work).stdout.strip()
    push = server.stats.select(command="push")[0]
    assert push.headers.get("Transfer-Encoding") == "chunked"
    assert push.bytes_in > 3 * 1024 * 1024
    git("clone", server.repo_url("app"), tmp_path / "again")
    assert (tmp_path / "again/blob.bin").stat().st_size == 3 * 1024 * 1024


def test_a_gzipped_request_body_is_inflated_and_answered(server: GitServer,
                                                         tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a": "1"})
    tips = {f"b{i:02d}": commit(repo, {f"f{i}": str(i)}, f"branch {i}", branch=f"b{i:02d}")
            for i in range(60)}
    git("clone", server.repo_url("app"), tmp_path / "clone")
    fetch = server.stats.select(command="fetch")[0]
    assert fetch.headers.get("Content-Encoding") == "gzip"
    assert fetch.pack_bytes > 0
    remote = git("branch", "-r", "--format=%(refname:short) %(objectname)",
                 cwd=tmp_path / "clone").stdout
    assert all(f"origin/{name} {sha}" in remote for name, sha in tips.items())


# -- dulwich as the client -------------------------------------------------------------------


def test_dulwich_lists_the_refs_with_basic_auth(serve: Serve) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD))
    repo = server.make_repo("app", {"a": "1"})
    tag(repo, "v1.0.0", annotated=True)
    client, path = get_transport_and_path(server.repo_url("app"), username=USER,
                                          password=PASSWORD)
    assert isinstance(client, HttpGitClient)
    try:
        result = client.get_refs(path)
    finally:
        client.pool_manager.clear()
    assert result.refs[Ref(b"refs/heads/main")] == head(repo).encode()
    assert result.refs[Ref(b"refs/tags/v1.0.0^{}")] == head(repo).encode()
    assert result.symrefs[Ref(b"HEAD")] == b"refs/heads/main"
    assert server.stats.packs_sent() == 0


@pytest.mark.parametrize("version", [0, 2])
def test_dulwich_fetches_the_head_commit_with_basic_auth(serve: Serve, tmp_path: Path,
                                                         version: int) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD))
    repo = server.make_repo("app", {"deploy/app.yaml": "kind: Deployment\n"})
    client, path = get_transport_and_path(server.repo_url("app"), username=USER,
                                          password=PASSWORD)
    assert isinstance(client, HttpGitClient)
    target = DulwichRepo.init_bare(str(tmp_path / "target.git"), mkdir=True)
    try:
        result = client.fetch(path, target, protocol_version=version)
    finally:
        client.pool_manager.clear()
        target.close()
    assert result.refs[Ref(b"refs/heads/main")] == head(repo).encode()
    with DulwichRepo(str(tmp_path / "target.git")) as fetched:
        assert ObjectID(head(repo).encode()) in fetched.object_store
    assert server.stats.packs_sent() == 1
    assert {r.protocol for r in server.stats.requests} == {version}
    assert {r.user for r in server.stats.select(status=200)} == {USER}


def test_dulwich_with_a_wrong_password_is_unauthorized(serve: Serve) -> None:
    server = serve(auth=BasicAuth(USER, PASSWORD))
    server.make_repo("app", {"a": "1"})
    client, path = get_transport_and_path(server.repo_url("app"), username=USER,
                                          password="wrong")
    assert isinstance(client, HttpGitClient)
    try:
        with pytest.raises(HTTPUnauthorized):
            client.get_refs(path)
    finally:
        client.pool_manager.clear()


# -- repository helpers ----------------------------------------------------------------------


def test_the_same_helper_calls_make_the_same_commits(tmp_path: Path) -> None:
    shas = []
    for root in ("one", "two"):
        repo = make_repo(tmp_path / root, "app", {"a": "1", "b/c": b"\x00bin"})
        commit(repo, {"a": "2", "b/c": None}, "drop c")
        shas.append((head(repo), tag(repo, "v1", annotated=True)))
    assert shas[0] == shas[1]


def test_tags_branches_and_file_modes_are_served(server: GitServer, tmp_path: Path) -> None:
    repo = server.make_repo("app", {"run.sh": File("#!/bin/sh\n", "100755"),
                                    "link": File("run.sh", "120000")})
    first = head(repo)
    light = tag(repo, "v0.1.0")
    annotated = tag(repo, "v1.0.0", annotated=True, message="one")
    assert light == first and annotated != first
    assert branch(repo, "release") == first
    later = commit(repo, {"more": "x"}, "later")
    assert refs(repo) == {"refs/heads/main": later, "refs/heads/release": first,
                          "refs/tags/v0.1.0": first, "refs/tags/v1.0.0": annotated}
    out = git("ls-remote", server.repo_url("app")).stdout
    assert f"{annotated}\trefs/tags/v1.0.0\n{first}\trefs/tags/v1.0.0^{{}}" in out
    git("clone", "--branch", "v1.0.0", server.repo_url("app"), tmp_path / "clone")
    assert os.stat(tmp_path / "clone/run.sh").st_mode & stat.S_IXUSR
    assert os.readlink(tmp_path / "clone/link") == "run.sh"


def test_a_submodule_clones_recursively_from_the_server(server: GitServer,
                                                        tmp_path: Path) -> None:
    lib = server.make_repo("lib", {"lib.yaml": "shared: true\n"})
    app = server.make_repo("app", {"app.yaml": "kind: App\n"})
    add_submodule(app, "vendor/lib", lib, server.repo_url("lib"))
    git("clone", "--recurse-submodules", server.repo_url("app"), tmp_path / "clone")
    assert (tmp_path / "clone/vendor/lib/lib.yaml").read_text() == "shared: true\n"
    gitlink = git("ls-tree", "HEAD", "vendor/lib", cwd=tmp_path / "clone").stdout
    assert gitlink.startswith(f"160000 commit {head(lib)}")


# -- SSH -----------------------------------------------------------------------------------------


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshGitServer]:
    try:
        ensure_sshd()
    except SshdUnavailable as exc:
        pytest.skip(str(exc))
    with SshGitServer(tmp_path / "repos", tmp_path / "ssh") as server:
        yield server


def test_a_clone_and_a_push_over_ssh_work_with_protocol_v2(ssh_server: SshGitServer,
                                                           tmp_path: Path) -> None:
    repo = ssh_server.make_repo("app", {"a": "1"})
    work = tmp_path / "clone"
    done = git("clone", ssh_server.repo_url("app"), work,
               env={**ssh_server.client_env(), "GIT_TRACE_PACKET": "1"})
    assert "clone< version 2" in done.stderr
    git("commit", "-q", "--allow-empty", "-m", "over ssh", cwd=work)
    git("push", "origin", "main", cwd=work, env=ssh_server.client_env())
    assert head(repo) == git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_ssh_refuses_a_key_it_does_not_know(ssh_server: SshGitServer, tmp_path: Path) -> None:
    ssh_server.make_repo("app", {"a": "1"})
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True, capture_output=True, timeout=30)
    command = ssh_server.ssh_command.replace(str(ssh_server.identity), str(stranger))
    done = git("ls-remote", ssh_server.repo_url("app"), env={"GIT_SSH_COMMAND": command},
               check=False, timeout=30)
    assert done.returncode != 0
    assert "Permission denied" in done.stderr
