"""GitRepository end to end: the real manager, the cluster fixture, a real git server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import pytest

from fluxd.artifacts.bus import ArtifactEvent
from fluxd.clock import FakeClock
from fluxd.controllers.source import git
from fluxd.controllers.source.gitrepository import TIMEOUT_GRACE, run_stoppable
from fluxd.kube import NotFound
from tests.controllers.conftest import Flux, condition
from tests.support.gitserver import (
    BasicAuth,
    Gitlink,
    GitServer,
    add_submodule,
    commit,
    commit_raw_tree,
    head,
    raw_ref,
)

pytestmark = pytest.mark.anyio

API = "source.toolkit.fluxcd.io/v1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


def gitrepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}, **spec}}


def repo_subject(repo: Any) -> str:
    from tests.support.gitserver import git
    return git("log", "-1", "--format=%s", "main", cwd=repo.path).stdout.strip()


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def files_in(flux: Flux, obj: dict[str, Any]) -> dict[str, bytes]:
    path = flux.storage / obj["status"]["artifact"]["path"]
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


async def request(flux: Flux, name: str, namespace: str, value: str) -> None:
    await flux.client.merge_patch(API, "GitRepository", name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": value}}}, namespace)


async def test_branch_becomes_an_artifact_in_storage_and_on_the_bus(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"deploy/cm.yaml": "kind: ConfigMap\n",
                                    "image.png": "binary", "README.md": "hi"})
    sha = head(repo, "main")
    seen: list[ArtifactEvent] = []
    unsubscribe = flux.context.artifact_bus.subscribe(seen.append)
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    unsubscribe()
    artifact = obj["status"]["artifact"]
    assert artifact["revision"] == f"main@sha1:{sha}"
    assert artifact["path"] == f"gitrepository/{namespace}/app/{sha}.tar.gz"
    assert artifact["digest"].startswith("sha256:") and artifact["size"] > 0
    assert condition(obj, "Ready")["message"] == f"stored artifact for revision 'main@sha1:{sha}'"
    assert condition(obj, "ArtifactInStorage")["status"] == "True"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "finalizers.fluxcd.io" in obj["metadata"]["finalizers"]
    # default exclusions: *.png goes, the rest stays
    assert set(files_in(flux, obj)) == {"deploy/cm.yaml", "README.md"}
    # served over HTTP at Flux's URL layout, with the digest the status records
    async with aiohttp.ClientSession() as session, session.get(artifact["url"]) as resp:
        body = await resp.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == artifact["digest"]
    assert [(e.source.name, e.revision) for e in seen] == [("app", artifact["revision"])]
    events = await flux.client.list_all("v1", "Event", namespace)
    new = [e for e in events.items if e["reason"] == "NewArtifact"]
    assert [e["message"] for e in new] == [
        f"stored artifact for commit '{repo_subject(repo)}'"]


async def test_new_commit_on_request_and_unchanged_remote_fetches_nothing(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"a.yaml": "v: 1\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    first = await flux.wait(API, "GitRepository", "app", namespace, ready)
    commit(repo, {"a.yaml": "v: 2\n"}, "bump to v2")
    await request(flux, "app", namespace, "1")
    second = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "1" and ready(o)))
    assert second["status"]["artifact"]["revision"] == f"main@sha1:{head(repo, 'main')}"
    assert second["status"]["artifact"]["digest"] != first["status"]["artifact"]["digest"]
    assert files_in(flux, second)["a.yaml"] == b"v: 2\n"
    # nothing new upstream: one ls-remote, no pack
    server.stats.reset()
    await request(flux, "app", namespace, "2")
    third = await flux.wait(API, "GitRepository", "app", namespace,
                            lambda o: o["status"].get("lastHandledReconcileAt") == "2")
    assert third["status"]["artifact"] == second["status"]["artifact"]
    assert server.stats.packs_sent("app") == 0


async def test_a_torn_artifact_is_found_by_its_digest_and_rebuilt(
        flux: Flux, server: GitServer, namespace: str) -> None:
    # artifacts are written without fsync (as Flux); what makes that safe is this check
    server.make_repo("app", {"a.yaml": "v: 1\n", "b.yaml": "v: 2\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    first = await flux.wait(API, "GitRepository", "app", namespace, ready)
    path = flux.storage / first["status"]["artifact"]["path"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    await request(flux, "app", namespace, "torn")
    again = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "torn" and ready(o)))
    assert again["status"]["artifact"]["digest"] == first["status"]["artifact"]["digest"]
    assert path.read_bytes() == good
    events = await flux.client.list_all("v1", "Event", namespace)
    assert [e["message"] for e in events.items if e["reason"] == "ArtifactVerificationFailed"
            ] == ["failed to verify integrity of artifact: computed digest doesn't match "
                  f"'{first['status']['artifact']['digest']}'"]


async def test_wrong_credentials_fail_then_recover_when_fixed(
        flux: Flux, tmp_path: Path, namespace: str) -> None:
    with GitServer(tmp_path / "private", auth=BasicAuth("gitea", "token-1")) as srv:
        srv.make_repo("app", {"a": "1"})

        async def secret(password: str) -> None:
            data = {"username": base64.b64encode(b"gitea").decode(),
                    "password": base64.b64encode(password.encode()).decode()}
            await flux.client.apply({"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": "git-auth", "namespace": namespace},
                                     "data": data})

        await secret("wrong")
        await flux.client.create(gitrepo("app", namespace, srv.repo_url("app"),
                                         secretRef={"name": "git-auth"}))
        failed = await flux.wait(API, "GitRepository", "app", namespace,
                                 lambda o: condition(o, "FetchFailed").get("status") == "True")
        assert condition(failed, "FetchFailed")["reason"] == "AuthenticationFailed"
        assert condition(failed, "Ready")["status"] == "False"
        assert "wrong" not in json.dumps(failed["status"])
        await secret("token-1")
        await request(flux, "app", namespace, "fixed")
        fixed = await flux.wait(API, "GitRepository", "app", namespace, ready)
        assert not condition(fixed, "FetchFailed")


async def test_invalid_url_stalls(flux: Flux, namespace: str) -> None:
    await flux.client.create(gitrepo("bad", namespace, "https://"))
    stalled = await flux.wait(API, "GitRepository", "bad", namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    assert condition(stalled, "Stalled")["reason"] == "URLInvalid"
    assert condition(stalled, "Ready")["reason"] == "URLInvalid"
    assert stalled["status"]["observedGeneration"] == stalled["metadata"]["generation"]


async def test_recovery_after_the_git_server_comes_back(flux: Flux, server: GitServer,
                                                        namespace: str) -> None:
    server.make_repo("app", {"a": "1"})
    server.down()
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"), timeout="5s"))
    failed = await flux.wait(API, "GitRepository", "app", namespace,
                             lambda o: condition(o, "FetchFailed").get("status") == "True")
    assert condition(failed, "FetchFailed")["reason"] == "GitOperationFailed"
    server.up()
    await flux.wait(API, "GitRepository", "app", namespace, ready, within=30)


@pytest.mark.parametrize("flux_overrides", [{"git": {"max_object_size": 4096}}],
                         indirect=True)
async def test_a_git_object_over_the_configured_limit_fails_the_fetch(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"deploy/app.yaml": "kind: ConfigMap\n",
                             "big.bin": "x" * 10_000})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    failed = await flux.wait(API, "GitRepository", "app", namespace,
                             lambda o: condition(o, "FetchFailed").get("status") == "True")
    fetch = condition(failed, "FetchFailed")
    assert fetch["reason"] == "GitOperationFailed"
    assert "over fluxd's 4096 bytes limit for one Git object ([git] max_object_size)" \
        in fetch["message"]
    assert not (failed.get("status") or {}).get("artifact")


async def test_ignore_rules_and_sourceignore(flux: Flux, server: GitServer,
                                             namespace: str) -> None:
    server.make_repo("app", {"deploy/a.yaml": "a", "deploy/secret.enc": "x",
                             "docs/guide.md": "g", ".sourceignore": "docs/\n",
                             "logo.png": "p"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"),
                                     ignore="*.enc\n"))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    # any user pattern replaces Flux's default exclusions: logo.png stays
    assert set(files_in(flux, obj)) == {"deploy/a.yaml", "logo.png", ".sourceignore"}
    assert obj["status"]["observedIgnore"] == "*.enc\n"


async def test_include_copies_another_repository_and_follows_its_changes(
        flux: Flux, server: GitServer, namespace: str) -> None:
    shared = server.make_repo("shared", {"base/kustomization.yaml": "resources: []\n"})
    server.make_repo("app", {"app.yaml": "a"})
    await flux.client.create(gitrepo("shared", namespace, server.repo_url("shared")))
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"), include=[
        {"repository": {"name": "shared"}, "fromPath": "base", "toPath": "vendor/base"}]))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    assert set(files_in(flux, obj)) == {"app.yaml", "vendor/base/kustomization.yaml"}
    commit(shared, {"base/extra.yaml": "e"}, "extra")
    await request(flux, "shared", namespace, "1")
    updated = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        ready(o) and "vendor/base/extra.yaml" in files_in(flux, o)))
    assert len(updated["status"]["includedArtifacts"]) == 1


async def test_missing_include_is_include_unavailable(flux: Flux, server: GitServer,
                                                      namespace: str) -> None:
    server.make_repo("app", {"app.yaml": "a"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"),
                                     include=[{"repository": {"name": "nope"}}]))
    obj = await flux.wait(API, "GitRepository", "app", namespace,
                          lambda o: condition(o, "IncludeUnavailable").get("status") == "True")
    assert condition(obj, "Ready")["status"] == "False"


async def test_deleting_removes_artifacts_and_the_finalizer(flux: Flux, server: GitServer,
                                                            namespace: str) -> None:
    server.make_repo("app", {"a": "1"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    stored = flux.storage / obj["status"]["artifact"]["path"]
    assert stored.exists()
    await flux.client.delete(API, "GitRepository", "app", namespace)
    async with asyncio.timeout(20):
        while True:
            try:
                await flux.get(API, "GitRepository", "app", namespace)
            except NotFound:
                break
            await asyncio.sleep(0.1)
    assert not stored.exists()


# --- hostile repositories (issue #10) ---------------------------------------------------


async def warnings(flux: Flux, namespace: str, name: str) -> list[dict[str, Any]]:
    events = await flux.client.list_all("v1", "Event", namespace)
    return [e for e in events.items if e.get("type") == "Warning"
            and e["involvedObject"]["name"] == name]


async def test_submodule_path_outside_checkout_fails_the_reconcile_and_writes_nothing(
        flux: Flux, server: GitServer, namespace: str, tmp_path: Path) -> None:
    repo = server.make_repo("app", {"a.yaml": "v: 1\n"})
    lib = server.make_repo("lib", {"pwned.yaml": "written outside\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"),
                                     recurseSubmodules=True))
    first = await flux.wait(API, "GitRepository", "app", namespace, ready)
    # the reported attack: `..` trees and a .gitmodules path climbing out of the checkout
    escape = tmp_path / "escape"
    escape.mkdir()
    parts = [p.encode() for p in (escape / "sub").parts if p != "/"]
    node: Any = Gitlink(head(lib))
    for part in reversed(parts):
        node = {part: node}
    for _ in range(16):
        node = {b"..": node}
    path = "../" * 16 + "/".join(p.decode() for p in parts)
    commit_raw_tree(repo, {b"a.yaml": "v: 2\n", b".gitmodules": (
        f'[submodule "x"]\n\tpath = {path}\n\turl = {server.repo_url("lib")}\n'), **node})
    await request(flux, "app", namespace, "attack")
    failed = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "attack"
        and condition(o, "FetchFailed").get("status") == "True"))
    assert list(escape.iterdir()) == []
    fetch = condition(failed, "FetchFailed")
    assert fetch["reason"] == "GitOperationFailed"
    assert "invalid path '..' in the commit's tree" in fetch["message"]
    assert condition(failed, "Ready")["status"] == "False"
    assert condition(failed, "Ready")["message"] == fetch["message"]
    # what was delivered before stays delivered
    assert failed["status"]["artifact"] == first["status"]["artifact"]
    assert (flux.storage / first["status"]["artifact"]["path"]).exists()
    assert any("invalid path '..'" in e["message"]
               for e in await warnings(flux, namespace, "app"))


async def test_submodule_on_another_origin_never_gets_the_password(
        flux: Flux, tmp_path: Path, namespace: str) -> None:
    secret = BasicAuth("gitea", "parent-only-token")
    with GitServer(tmp_path / "parent", auth=secret) as parent, \
            GitServer(tmp_path / "other", auth=secret) as other:
        app = parent.make_repo("app", {"a.yaml": "a"})
        lib = other.make_repo("lib", {"lib.yaml": "l"})
        add_submodule(app, "vendor/lib", lib, other.repo_url("lib"))
        await flux.client.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "git-auth", "namespace": namespace}, "data": {
            "username": base64.b64encode(b"gitea").decode(),
            "password": base64.b64encode(secret.password.encode()).decode()}})
        await flux.client.create(gitrepo("app", namespace, parent.repo_url("app"),
                                         secretRef={"name": "git-auth"},
                                         recurseSubmodules=True))
        failed = await flux.wait(API, "GitRepository", "app", namespace,
                                 lambda o: condition(o, "FetchFailed").get("status") == "True")
        fetch = condition(failed, "FetchFailed")
        assert fetch["reason"] == "GitOperationFailed"
        assert "submodule 'vendor/lib'" in fetch["message"]
        assert condition(failed, "Ready")["status"] == "False"
        assert secret.password not in json.dumps(failed["status"])
        assert other.stats.requests
        assert {r.authorization for r in other.stats.requests} == {None}


async def test_a_branch_name_that_is_not_utf8_does_not_stop_delivery(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"a.yaml": "v: 1\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    await flux.wait(API, "GitRepository", "app", namespace, ready)
    raw_ref(repo, b"refs/heads/caf\xe9", head(repo, "main"))
    commit(repo, {"a.yaml": "v: 2\n"}, "bump to v2")
    await request(flux, "app", namespace, "after-bad-branch")
    updated = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "after-bad-branch" and ready(o)))
    assert updated["status"]["artifact"]["revision"] == f"main@sha1:{head(repo, 'main')}"
    assert files_in(flux, updated)["a.yaml"] == b"v: 2\n"


# --- expansion and timeouts (issue #10, follow-up of finding 1) -------------------------


def git_work_running() -> list[str]:
    """The threads now running fluxd's Git code (their innermost such function)."""
    found = []
    for frame in sys._current_frames().values():
        walk: FrameType | None = frame
        while walk is not None:
            if walk.f_code.co_filename.endswith(("source/git.py", "source/gitpack.py")):
                found.append(walk.f_code.co_name)
                break
            walk = walk.f_back
    return found


@pytest.mark.parametrize("flux_overrides", [{"git": {"max_checkout_entries": 1000}}],
                         indirect=True)
@pytest.mark.parametrize("path", ["archive", "checkout"])
async def test_a_tree_bomb_fails_the_reconcile_at_the_entry_limit_and_keeps_the_artifact(
        flux: Flux, server: GitServer, namespace: str, path: str) -> None:
    repo = server.make_repo("app", {"a.yaml": "v: 1\n"})
    # recurseSubmodules takes the checkout on disk; without, the tarball is made from
    # the Git objects
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app"),
                                     recurseSubmodules=path == "checkout"))
    first = await flux.wait(API, "GitRepository", "app", namespace, ready)
    node: dict[bytes, Any] = {b"leaf.yaml": "x: 1\n"}
    for _ in range(6):  # a million files from seven trees and one blob
        node = {b"d%d" % i: node for i in range(10)}
    commit_raw_tree(repo, {b"a.yaml": "v: 2\n", **node})
    await request(flux, "app", namespace, "bomb")
    failed = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "bomb"
        and condition(o, "FetchFailed").get("status") == "True"))
    fetch = condition(failed, "FetchFailed")
    assert fetch["reason"] == "GitOperationFailed"
    assert "more than 1000 entries" in fetch["message"]
    assert "([git] max_checkout_entries)" in fetch["message"]
    assert condition(failed, "Ready")["status"] == "False"
    assert failed["status"]["artifact"] == first["status"]["artifact"]
    stored = sorted(p.name for p in (flux.storage / "gitrepository" / namespace / "app").iterdir())
    assert stored == [Path(first["status"]["artifact"]["path"]).name]
    assert any("max_checkout_entries" in e["message"]
               for e in await warnings(flux, namespace, "app"))


async def test_git_work_past_the_timeout_is_stopped_before_the_reconcile_ends(
        flux: Flux, tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a server that sends the pack 4 KiB every 10 ms: no read ever times out
    with GitServer(tmp_path / "slow", trickle=(4096, 0.01)) as slow:
        repo = slow.make_repo("app", {"a.yaml": "v: 1\n"})
        await flux.client.create(gitrepo("app", namespace, slow.repo_url("app"),
                                         timeout="1s"))
        first = await flux.wait(API, "GitRepository", "app", namespace, ready)
        commit(repo, {"big.bin": random.Random(5).randbytes(16 << 20)}, "16 MiB")
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        await request(flux, "app", namespace, "slow")
        failed = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
            o["status"].get("lastHandledReconcileAt") == "slow"
            and condition(o, "FetchFailed").get("status") == "True"),
            # while Git works, past spec.timeout and fluxd's grace for the thread
            jump=1 + TIMEOUT_GRACE, jump_while=lambda: bool(git_work_running()))
        # the thread was told to stop, and had stopped, before the reconcile ended
        assert git_work_running() == []
        assert list((tmp_path / "tmp").iterdir()) == []
        assert condition(failed, "FetchFailed")["message"] == \
            "git operation timed out after 1s"
        assert failed["status"]["artifact"] == first["status"]["artifact"]


class StoppableWork:
    """Blocking work that runs until told to stop (for at most ``bound`` seconds), then
    fails as Git work does; ``ended`` is set once it has returned."""

    def __init__(self, bound: float = 30) -> None:
        self.stop = threading.Event()
        self.started = threading.Event()
        self.ended = threading.Event()
        self.bound = bound

    def __call__(self) -> str:
        try:
            self.started.set()
            if not self.stop.wait(self.bound):
                return "ran to its end"
            raise git.Cancelled
        finally:
            self.ended.set()


async def test_work_past_its_limit_on_the_clock_is_stopped_and_awaited() -> None:
    clock = FakeClock()
    work = StoppableWork()
    failed: list[BaseException] = []

    async def caller() -> None:
        try:
            await run_stoppable(work, stop=work.stop, clock=clock, limit=60)
        except git.Cancelled as exc:
            failed.append(exc)
            assert work.ended.is_set()

    async with asyncio.TaskGroup() as group:
        running = group.create_task(caller())
        await asyncio.to_thread(work.started.wait, 10)
        clock.advance(59)
        await asyncio.sleep(0)
        assert not work.stop.is_set() and not running.done()
        clock.advance(1)
    assert len(failed) == 1


async def test_a_cancelled_caller_stops_its_work_and_awaits_its_end() -> None:
    work = StoppableWork()
    running = asyncio.get_running_loop().create_future()  # the caller's outcome

    async def caller() -> None:
        try:
            await run_stoppable(work, stop=work.stop, clock=FakeClock(), limit=60)
        except asyncio.CancelledError:
            # the work had ended before the cancellation reached the caller
            running.set_result(work.ended.is_set())
            raise

    async with asyncio.TaskGroup() as group:
        task = group.create_task(caller())
        await asyncio.to_thread(work.started.wait, 10)
        task.cancel()
    assert await running is True
    assert work.stop.is_set()


async def test_work_that_ends_in_time_is_returned_and_its_timer_dropped() -> None:
    clock = FakeClock()
    work = StoppableWork(bound=0)
    assert await run_stoppable(work, stop=work.stop, clock=clock, limit=60) == \
        "ran to its end"
    clock.advance(120)
    assert not work.stop.is_set()
