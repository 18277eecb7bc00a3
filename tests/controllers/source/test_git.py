"""GitRepository's Git layer against a real git smart-HTTP server (and sshd)."""

from __future__ import annotations

import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.controllers.source.git import (
    Auth,
    AuthenticationFailed,
    Cancelled,
    GitError,
    Ref,
    Remote,
    URLInvalid,
    origin,
    sparse_filter,
    submodule_url,
)
from tests.support.gitserver import (
    BasicAuth,
    BearerAuth,
    File,
    Gitlink,
    GitServer,
    SshGitServer,
    add_submodule,
    branch,
    commit,
    commit_raw_tree,
    ensure_sshd,
    head,
    raw_ref,
    tag,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


@pytest.fixture
def repo(server: GitServer):  # type: ignore[no-untyped-def]
    repo = server.make_repo("app", {"deploy/app.yaml": "kind: ConfigMap\n",
                                    "README.md": "hello\n",
                                    "run.sh": File(b"#!/bin/sh\n", "100755")})
    return repo


def checkout(server: GitServer, ref: Ref, dest: Path, **kw: object):  # type: ignore[no-untyped-def]
    with Remote(server.repo_url("app")) as remote:
        resolved = remote.resolve(ref)
        return resolved, remote.checkout(resolved, dest, **kw)  # type: ignore[arg-type]


def test_default_branch_is_master_and_missing_is_an_error(server: GitServer, repo: object,
                                                          tmp_path: Path) -> None:
    with Remote(server.repo_url("app")) as remote, pytest.raises(GitError, match="master"):
        remote.resolve(Ref())


def test_branch_checkout_gives_flux_revision_and_files(server: GitServer, repo: object,
                                                       tmp_path: Path) -> None:
    resolved, done = checkout(server, Ref(branch="main"), tmp_path / "out")
    sha = head(repo, "main")  # type: ignore[arg-type]
    assert resolved.revision == f"main@sha1:{sha}" == done.revision
    assert done.commit == sha
    assert (tmp_path / "out/deploy/app.yaml").read_text() == "kind: ConfigMap\n"
    assert (tmp_path / "out/run.sh").stat().st_mode & 0o111
    assert not (tmp_path / "out/.git").exists()


def test_tags_lightweight_and_annotated_resolve_to_the_commit(server: GitServer, repo: object,
                                                              tmp_path: Path) -> None:
    sha = head(repo, "main")  # type: ignore[arg-type]
    tag(repo, "v1.0.0")  # type: ignore[arg-type]
    tag(repo, "v1.1.0", annotated=True, message="release 1.1")  # type: ignore[arg-type]
    for name in ("v1.0.0", "v1.1.0"):
        resolved, done = checkout(server, Ref(tag=name), tmp_path / name)
        assert resolved.revision == f"{name}@sha1:{sha}"
        assert done.commit == sha


def test_semver_picks_the_highest_matching_tag(server: GitServer, repo: object,
                                               tmp_path: Path) -> None:
    for name in ("v1.0.0", "v1.2.0", "v2.0.0-rc.1", "not-semver"):
        commit(repo, {"VERSION": name}, f"release {name}")  # type: ignore[arg-type]
        tag(repo, name)  # type: ignore[arg-type]
    resolved, _ = checkout(server, Ref(semver=">=1.0.0 <2.0.0"), tmp_path / "a")
    assert resolved.revision.startswith("v1.2.0@sha1:")
    assert (tmp_path / "a/VERSION").read_text() == "v1.2.0"
    with Remote(server.repo_url("app")) as remote, \
            pytest.raises(GitError, match=r"no match found for semver: >=3\.0\.0"):
        remote.resolve(Ref(semver=">=3.0.0"))


def test_tag_is_checked_before_semver_as_in_flux_code(server: GitServer, repo: object) -> None:
    tag(repo, "v1.0.0")  # type: ignore[arg-type]
    commit(repo, {"x": "2"}, "two")  # type: ignore[arg-type]
    tag(repo, "v2.0.0")  # type: ignore[arg-type]
    with Remote(server.repo_url("app")) as remote:
        assert remote.resolve(Ref(tag="v1.0.0", semver="*")).revision.startswith("v1.0.0@")


def test_name_and_commit_refs(server: GitServer, repo: object, tmp_path: Path) -> None:
    first = head(repo, "main")  # type: ignore[arg-type]
    branch(repo, "feature")  # type: ignore[arg-type]
    commit(repo, {"x": "2"}, "second on feature", branch="feature")  # type: ignore[arg-type]
    feature = head(repo, "feature")  # type: ignore[arg-type]
    resolved, done = checkout(server, Ref(name="refs/heads/feature"), tmp_path / "n")
    assert resolved.revision == f"refs/heads/feature@sha1:{feature}"
    resolved, done = checkout(server, Ref(commit=first), tmp_path / "c")
    assert resolved.revision == f"sha1:{first}" and done.commit == first
    assert not (tmp_path / "c/x").exists()
    resolved, done = checkout(server, Ref(branch="feature", commit=feature), tmp_path / "bc")
    assert resolved.revision == f"feature@sha1:{feature}"
    assert done.subject == "second on feature"


def test_sparse_checkout_keeps_only_the_listed_dirs(server: GitServer, repo: object,
                                                    tmp_path: Path) -> None:
    _, _ = checkout(server, Ref(branch="main"), tmp_path / "s", sparse=["./deploy"])
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["deploy"]
    keep = sparse_filter(["./deploy/", "charts"])
    assert keep("deploy") and keep("deploy/a.yaml") and keep("charts/x/y")
    assert not keep("README.md") and not keep("deployments")


def test_submodules_are_checked_out_when_asked(server: GitServer, repo: object,
                                               tmp_path: Path) -> None:
    lib = server.make_repo("lib", {"lib.txt": "library\n"})
    add_submodule(repo, "vendor/lib", lib, server.repo_url("lib"))  # type: ignore[arg-type]
    _, _ = checkout(server, Ref(branch="main"), tmp_path / "plain")
    assert (tmp_path / "plain/vendor/lib").is_dir()
    assert not (tmp_path / "plain/vendor/lib/lib.txt").exists()
    _, _ = checkout(server, Ref(branch="main"), tmp_path / "deep", submodules=True)
    assert (tmp_path / "deep/vendor/lib/lib.txt").read_text() == "library\n"


def test_basic_and_bearer_auth_good_and_bad(tmp_path: Path) -> None:
    with GitServer(tmp_path / "basic", auth=BasicAuth("gitea-user", "s3cret")) as srv:
        srv.make_repo("app", {"a": "1"})
        with Remote(srv.repo_url("app"), Auth(username="gitea-user", password="s3cret")) as r:
            assert r.resolve(Ref(branch="main")).revision.startswith("main@sha1:")
        with Remote(srv.repo_url("app"), Auth(username="gitea-user", password="nope")) as r:
            with pytest.raises(AuthenticationFailed) as err:
                r.resolve(Ref(branch="main"))
            assert "nope" not in str(err.value) and err.value.reason == "AuthenticationFailed"
    with GitServer(tmp_path / "bearer", auth=BearerAuth("tok-123")) as srv:
        srv.make_repo("app", {"a": "1"})
        with Remote(srv.repo_url("app"), Auth(bearer_token="tok-123")) as r:
            r.checkout(r.resolve(Ref(branch="main")), tmp_path / "b")
        with Remote(srv.repo_url("app"), Auth(bearer_token="wrong")) as r, \
                pytest.raises(AuthenticationFailed):
            r.resolve(Ref(branch="main"))


def test_credentials_in_the_url_never_reach_error_messages(tmp_path: Path) -> None:
    with GitServer(tmp_path / "r", auth=BasicAuth("u", "pw")) as srv:
        url = srv.repo_url("missing", username="u", password="hunter2")
        with Remote(url) as remote, pytest.raises(GitError) as err:
            remote.resolve(Ref(branch="main"))
        assert "hunter2" not in str(err.value)


def test_invalid_urls_are_url_invalid() -> None:
    for url in ("git@github.com:org/repo.git", "file:///tmp/repo", "https://", "ftp://x/y"):
        with pytest.raises(URLInvalid):
            Remote(url)


def test_unreachable_server_is_a_git_operation_failure(server: GitServer, repo: object) -> None:
    server.down()
    try:
        with Remote(server.repo_url("app"), timeout=5) as remote, pytest.raises(GitError) as e:
            remote.resolve(Ref(branch="main"))
        assert e.value.reason == "GitOperationFailed"
    finally:
        server.up()
    with Remote(server.repo_url("app")) as remote:
        assert remote.resolve(Ref(branch="main")).commit


def test_ls_remote_alone_fetches_no_pack(server: GitServer, repo: object) -> None:
    server.stats.reset()
    with Remote(server.repo_url("app")) as remote:
        remote.resolve(Ref(branch="main"))
    assert server.stats.packs_sent("app") == 0


# dulwich does not close the SSH subprocess pipes of a refused handshake
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ssh_with_identity_and_known_hosts(tmp_path: Path) -> None:
    try:
        ensure_sshd()
    except Exception as exc:  # the message says what to install
        pytest.fail(f"sshd is needed for this test: {exc}")
    with SshGitServer(tmp_path / "ssh-repos", tmp_path / "ssh") as srv:
        srv.make_repo("app", {"a.txt": "over ssh\n"})
        auth = Auth(identity=srv.identity.read_bytes(), known_hosts=srv.known_hosts.read_bytes())
        with Remote(srv.repo_url("app"), auth) as remote:
            done = remote.checkout(remote.resolve(Ref(branch="main")), tmp_path / "out")
        assert (tmp_path / "out/a.txt").read_text() == "over ssh\n"
        assert done.revision.startswith("main@sha1:")
        unknown = Auth(identity=srv.identity.read_bytes(),
                       known_hosts=b"localhost ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"
                                   b"7RAKwLQnXyh1xTLzCL9wZPvqkJUaqGuT4PQkDNDZcl\n")
        with Remote(srv.repo_url("app"), unknown) as remote, pytest.raises(GitError):
            remote.resolve(Ref(branch="main"))
        with Remote(srv.repo_url("app"), Auth(identity=srv.identity.read_bytes())) as remote, \
                pytest.raises(GitError, match="known_hosts is required"):
            remote.resolve(Ref(branch="main"))


def test_archive_from_git_objects_equals_archiving_the_checkout(
        server: GitServer, tmp_path: Path) -> None:
    from fluxd.artifacts.ignore import source_matcher
    from fluxd.artifacts.storage import ArtifactStore
    from fluxd.clock import SystemClock

    repo = server.make_repo("mixed", {
        "deploy/app.yaml": "a", "deploy/.sourceignore": "*.tmp\n!keep.tmp\n",
        "deploy/x.tmp": "x", "deploy/keep.tmp": "k", "vendor/lib/x.go": "package x",
        ".sourceignore": "vendor/\n!vendor/lib/keep.go\n", "vendor/lib/keep.go": "keep",
        "logo.png": "png", "run.sh": File(b"#!/bin/sh\n", "100755"),
        "link": File(b"deploy/app.yaml", "120000"), ".github/workflows/ci.yml": "ci",
        "z/deep/er/file.yaml": "deep"})
    lib = server.make_repo("lib", {"lib.txt": "l"})
    add_submodule(repo, "ext/lib", lib, server.repo_url("lib"))
    store = ArtifactStore(tmp_path / "store", clock=SystemClock(), advertised="localhost")
    for spec_ignore, sparse in ((None, None), ("*.yaml\n", None), (None, ["deploy", "z"])):
        with Remote(server.repo_url("mixed")) as remote:
            resolved = remote.resolve(Ref(branch="main"))
            work = tmp_path / f"w{spec_ignore is None}{sparse is None}"
            _, direct = remote.archive(resolved, work, store=store, kind="gitrepository",
                                       namespace="a", name="direct", spec_ignore=spec_ignore,
                                       sparse=sparse)
            done = remote.checkout(resolved, work / "tree", sparse=sparse)
        on_disk = store.archive("gitrepository", "a", "disk", work / "tree",
                                f"{done.commit}.tar.gz",
                                ignore=source_matcher(work / "tree", spec_ignore))
        assert direct.digest == on_disk.digest and direct.size == on_disk.size


def test_a_branch_that_moves_during_the_fetch_is_a_git_error_to_retry(
        server: GitServer, repo: object, tmp_path: Path) -> None:
    with Remote(server.repo_url("app")) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        commit(repo, {"README.md": "moved on\n"})  # type: ignore[arg-type]
        with pytest.raises(GitError, match="moved on during the fetch"):
            remote.checkout(resolved, tmp_path / "out")


# --- hostile repositories (issue #10) ---------------------------------------------------


def escaping_submodule(target: Path, gitlink: Gitlink, url: str,
                       depth: int = 16) -> dict[bytes, Any]:
    """The reported attack as tree entries: a ``.gitmodules`` path climbing out of any
    checkout (``depth`` times ``..``) down to ``target``, and crafted ``..`` trees, then
    ``target``'s directory names, that lead a tree lookup of that path to the gitlink."""
    parts = [p for p in target.parts if p != "/"]
    node: Any = gitlink
    for part in reversed(parts):
        node = {part.encode(): node}
    for _ in range(depth):
        node = {b"..": node}
    path = "../" * depth + "/".join(parts)
    return {b".gitmodules": gitmodules(path, url), **node}


def gitmodules(path: str, url: str) -> str:
    return f'[submodule "lib"]\n\tpath = {path}\n\turl = {url}\n'


def test_submodule_path_outside_checkout_is_refused(server: GitServer, repo: Any,
                                                    tmp_path: Path) -> None:
    # the reported attack: `..` trees that a lookup follows, and a .gitmodules path on them
    lib = server.make_repo("lib", {"pwned.txt": "written outside\n"})
    (tmp_path / "escape").mkdir()
    commit_raw_tree(repo, {b"README.md": "hello\n", **escaping_submodule(
        tmp_path / "escape/sub", Gitlink(head(lib)), server.repo_url("lib"))})
    with pytest.raises(GitError, match=r"invalid path '\.\.' in the commit's tree") as err:
        checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)
    assert err.value.reason == "GitOperationFailed"
    assert list((tmp_path / "escape").iterdir()) == []


@pytest.mark.parametrize("path", ["../escape", "/tmp/escape", "vendor/../../escape",
                                  "./vendor/lib", "vendor/.git", "-vendor", "vendor//lib"])
def test_submodule_path_that_is_not_a_plain_relative_path_is_refused(
        server: GitServer, repo: Any, tmp_path: Path, path: str) -> None:
    lib = server.make_repo("lib", {"lib.txt": "library\n"})
    commit_raw_tree(repo, {b".gitmodules": gitmodules(path, server.repo_url("lib")),
                           b"vendor": {b"lib": Gitlink(head(lib))}})
    with pytest.raises(GitError, match="invalid submodule path") as err:
        checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)
    assert path in str(err.value)


@pytest.mark.parametrize(("name", "shown"), [
    (b"..", ".."), (b".", "."), (b".git", ".git"), (b".GIT", ".GIT"),
    (b"deploy/app.yaml", "deploy/app.yaml"), (b"git~1", "git~1"), (b".git.", ".git."),
    (b".git ", ".git "), (b".gi\xe2\x80\x8ct", ".gi\\u200ct")],
    ids=["dotdot", "dot", "dotgit", "DOTGIT", "slash", "ntfs-short", "ntfs-dot",
         "ntfs-space", "hfs-ignorable"])
@pytest.mark.parametrize("where", ["root", "nested"])
def test_tree_entry_git_refuses_fails_checkout_and_archive(
        server: GitServer, repo: Any, tmp_path: Path, name: bytes, shown: str,
        where: str) -> None:
    from fluxd.artifacts.storage import ArtifactStore
    from fluxd.clock import SystemClock

    bad: dict[bytes, Any] = {name: {b"hooks": {b"post-checkout": "#!/bin/sh\n"}},
                             b"ok.yaml": "a: 1\n"}
    commit_raw_tree(repo, bad if where == "root" else {b"deploy": bad, b"b.yaml": "b"})
    shown = ("" if where == "root" else "deploy/") + shown
    store = ArtifactStore(tmp_path / "store", clock=SystemClock(), advertised="localhost")
    with Remote(server.repo_url("app")) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        with pytest.raises(GitError, match="invalid path") as err:
            remote.checkout(resolved, tmp_path / "out")
        assert f"'{shown}'" in str(err.value)
        with pytest.raises(GitError, match="invalid path"):
            remote.archive(resolved, tmp_path / "work", store=store, kind="gitrepository",
                           namespace="a", name="app", spec_ignore=None)
    assert not list((tmp_path / "store").rglob("*.tar.gz"))
    # nothing of the tree is written once it is found hostile
    assert not (tmp_path / "out").exists()


def nested(leaf: Any, levels: int) -> Any:
    for _ in range(levels):
        leaf = {b"d": leaf}
    return leaf


@pytest.mark.parametrize("shape", ["chain", "shared-shallow-first", "shared-deep-first"])
def test_a_tree_nested_past_the_depth_limit_is_refused(server: GitServer, repo: Any,
                                                       tmp_path: Path, shape: str) -> None:
    from fluxd.controllers.source.git import MAX_TREE_DEPTH

    # one subtree referenced at a shallow and at a deep place counts at the deep one
    shared = nested({b"leaf.yaml": "x"}, 10)
    deep = nested(shared, MAX_TREE_DEPTH - 5)
    tree = {"chain": nested({b"leaf.yaml": "x"}, MAX_TREE_DEPTH + 1),
            "shared-shallow-first": {b"a": shared, b"z": deep},
            "shared-deep-first": {b"a": deep, b"z": shared}}[shape]
    commit_raw_tree(repo, tree)
    with pytest.raises(GitError, match=f"deeper than the {MAX_TREE_DEPTH} levels"):
        checkout(server, Ref(branch="main"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_gitmodules_is_a_git_error(server: GitServer, repo: Any,
                                             tmp_path: Path) -> None:
    commit(repo, {".gitmodules": '[submodule "lib\n\tpath = x\n'})
    with pytest.raises(GitError, match=r"invalid \.gitmodules"):
        checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)


def test_submodule_on_another_origin_never_gets_the_credentials(tmp_path: Path) -> None:
    # even where the same credentials would be accepted, they are not offered
    secret = BasicAuth("gitea-user", "parent-only-s3cret")
    with GitServer(tmp_path / "parent", auth=secret) as parent, \
            GitServer(tmp_path / "other", auth=secret) as other:
        app = parent.make_repo("app", {"a.yaml": "a"})
        lib = other.make_repo("lib", {"lib.txt": "library\n"})
        add_submodule(app, "vendor/lib", lib, other.repo_url("lib"))
        auth = Auth(username=secret.username, password=secret.password)
        with Remote(parent.repo_url("app"), auth) as remote:
            resolved = remote.resolve(Ref(branch="main"))
            with pytest.raises(GitError) as err:
                remote.checkout(resolved, tmp_path / "out", submodules=True)
        assert err.value.reason == "GitOperationFailed"
        assert "submodule 'vendor/lib'" in str(err.value)
        assert "without its credentials" in str(err.value)
        assert secret.password not in str(err.value)
        assert other.stats.requests, "the other origin was asked"
        assert [r.authorization for r in other.stats.requests] == \
            [None] * len(other.stats.requests)
        assert all(r.authorization for r in parent.stats.requests if r.status == 200)


def test_submodule_on_another_origin_is_fetched_anonymously(tmp_path: Path) -> None:
    with GitServer(tmp_path / "parent", auth=BearerAuth("tok-parent")) as parent, \
            GitServer(tmp_path / "other") as other:
        app = parent.make_repo("app", {"a.yaml": "a"})
        lib = other.make_repo("lib", {"lib.txt": "library\n"})
        add_submodule(app, "vendor/lib", lib, other.repo_url("lib"))
        with Remote(parent.repo_url("app"), Auth(bearer_token="tok-parent")) as remote:
            remote.checkout(remote.resolve(Ref(branch="main")), tmp_path / "out",
                            submodules=True)
        assert (tmp_path / "out/vendor/lib/lib.txt").read_text() == "library\n"
        assert {r.authorization for r in other.stats.requests} == {None}


def test_relative_submodule_url_resolves_against_the_parent_and_keeps_credentials(
        tmp_path: Path) -> None:
    secret = BasicAuth("gitea-user", "s3cret")
    with GitServer(tmp_path / "repos", auth=secret) as srv:
        app = srv.make_repo("org/app", {"a.yaml": "a"})
        lib = srv.make_repo("org/lib", {"lib.txt": "library\n"})
        add_submodule(app, "vendor/lib", lib, "../lib.git")
        auth = Auth(username=secret.username, password=secret.password)
        with Remote(srv.repo_url("org/app"), auth) as remote:
            remote.checkout(remote.resolve(Ref(branch="main")), tmp_path / "out",
                            submodules=True)
        assert (tmp_path / "out/vendor/lib/lib.txt").read_text() == "library\n"
        assert srv.stats.count(repo="org/lib", status=200) > 0


def test_submodule_urls_resolve_as_git_does_and_origins_normalise_default_ports() -> None:
    assert submodule_url("https://h/org/app.git", "../lib.git") == "https://h/org/lib.git"
    assert submodule_url("https://h/org/app.git/", "./sub") == "https://h/org/app.git/sub"
    assert submodule_url("ssh://git@h:2222/org/app.git", "../lib.git") == \
        "ssh://git@h:2222/org/lib.git"
    assert submodule_url("https://h/app.git", "https://x/y.git") == "https://x/y.git"
    assert origin("https://Example.com/a") == origin("https://example.com:443/b")
    assert origin("http://h/a") == origin("http://u:p@h:80/b")
    assert origin("ssh://git@h/a") == origin("ssh://h:22/b")
    assert origin("http://h/a") != origin("https://h/a")
    assert origin("http://h:8080/a") != origin("http://h/a")
    assert origin("http://h/a") != origin("http://h.evil/a")


def test_a_redirect_to_another_origin_carries_no_token(tmp_path: Path) -> None:
    with GitServer(tmp_path / "target") as target:
        target.make_repo("app", {"a.yaml": "a"})
        script = tmp_path / "redirect.cgi"
        script.write_text("#!/bin/sh\nprintf 'Status: 302 Found\\r\\nLocation: "
                          f"{target.url}%s?%s\\r\\n\\r\\n' \"$PATH_INFO\" \"$QUERY_STRING\"\n")
        script.chmod(0o755)
        with GitServer(tmp_path / "front", auth=BearerAuth("tok-front"),
                       backend=script) as front:
            with Remote(front.repo_url("app"), Auth(bearer_token="tok-front")) as remote:
                assert remote.resolve(Ref(branch="main")).commit
            assert front.stats.count(status=302) > 0
    assert target.stats.requests
    assert {r.authorization for r in target.stats.requests} == {None}


def test_a_ref_name_that_is_not_utf8_is_skipped(server: GitServer, repo: Any) -> None:
    raw_ref(repo, b"refs/heads/caf\xe9", head(repo))
    raw_ref(repo, b"refs/tags/v1.0.0-\xff", head(repo))
    with Remote(server.repo_url("app")) as remote:
        refs = remote.ls_remote()
        assert refs["refs/heads/main"] == head(repo)
        assert not any(name.startswith(("refs/heads/caf", "refs/tags/v1.0.0-"))
                       for name in refs)
        assert remote.resolve(Ref(branch="main")).commit == head(repo)
        tag(repo, "v1.0.0")
        assert remote.resolve(Ref(semver="*")).revision == f"v1.0.0@sha1:{head(repo)}"


@pytest.mark.parametrize("url", ["ssh://-oProxyCommand=touch%20x/repo.git",
                                 "ssh://-oProxyCommand=x@host/repo.git",
                                 "https://host:99999/repo.git"])
def test_a_url_ssh_would_read_as_an_option_or_a_bad_port_is_url_invalid(url: str) -> None:
    with pytest.raises(URLInvalid):
        Remote(url)


def test_a_submodule_listed_twice_is_checked_out_once(server: GitServer, repo: Any,
                                                      tmp_path: Path) -> None:
    lib = server.make_repo("lib", {"lib.txt": "library\n"})
    add_submodule(repo, "vendor/lib", lib, server.repo_url("lib"))
    add_submodule(repo, "vendor/lib", lib, server.repo_url("lib"))
    checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)
    assert (tmp_path / "out/vendor/lib/lib.txt").read_text() == "library\n"


# --- expansion and cancellation (issue #10, follow-up of finding 1) ---------------------


def tree_bomb(levels: int, leaf: str = "x: 1\n", fanout: int = 10) -> dict[bytes, Any]:
    """``fanout`` entries per level naming the same next-level tree: ``fanout**levels``
    files from ``levels + 1`` trees and one blob."""
    node: dict[bytes, Any] = {b"leaf.yaml": leaf}
    for _ in range(levels):
        node = {b"d%d" % i: node for i in range(fanout)}
    return node


def written(dest: Path) -> tuple[int, int]:
    """(entries, bytes of file contents) under ``dest``."""
    paths = list(dest.rglob("*"))
    return len(paths), sum(p.stat().st_size for p in paths if p.is_file())


def store_at(path: Path) -> Any:
    from fluxd.artifacts.storage import ArtifactStore
    from fluxd.clock import SystemClock

    return ArtifactStore(path, clock=SystemClock(), advertised="localhost")


def test_a_tree_bomb_fails_the_checkout_at_the_entry_limit(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    commit_raw_tree(repo, tree_bomb(6))  # a million paths from 7 trees and one blob
    with Remote(server.repo_url("app"), max_checkout_entries=1000) as remote, \
            pytest.raises(GitError, match=r"more than 1000 entries .*\[git\] "
                                          r"max_checkout_entries\): stopped at 'd0/") as err:
        remote.checkout(remote.resolve(Ref(branch="main")), tmp_path / "out")
    assert err.value.reason == "GitOperationFailed"
    entries, _ = written(tmp_path / "out")
    assert 0 < entries <= 1000  # stopped at the limit: nothing past it


def test_a_tree_bomb_fails_the_archive_at_the_entry_limit_and_stores_nothing(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    commit_raw_tree(repo, tree_bomb(6))
    store = store_at(tmp_path / "store")
    with Remote(server.repo_url("app"), max_checkout_entries=1000) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        for ignore in (None, "*.md\n"):
            with pytest.raises(GitError, match=r"more than 1000 entries .*\[git\] "
                                               r"max_checkout_entries"):
                remote.archive(resolved, tmp_path / "work", store=store, kind="gitrepository",
                               namespace="a", name="app", spec_ignore=ignore)
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_sourceignore_in_every_directory_of_a_tree_bomb_is_read_within_the_limits(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    # every level's tree holds a .sourceignore: the patterns would be read a million times
    node: dict[bytes, Any] = {b".sourceignore": "# nothing\n" * 100}
    for _ in range(6):
        node = {b".sourceignore": "# nothing\n" * 100, **{b"d%d" % i: node
                                                          for i in range(10)}}
    commit_raw_tree(repo, node)
    with Remote(server.repo_url("app"), max_checkout_size=100_000) as remote, \
            pytest.raises(GitError, match=r"expand past 100000 bytes .*\[git\] "
                                          r"max_checkout_size\): stopped at '.*\.sourceignore'"):
        remote.archive(remote.resolve(Ref(branch="main")), tmp_path / "work",
                       store=store_at(tmp_path / "store"), kind="gitrepository",
                       namespace="a", name="app", spec_ignore=None)


def test_file_contents_past_the_size_limit_fail_checkout_and_archive(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    commit_raw_tree(repo, tree_bomb(4, leaf="x" * 1000))  # 10 MB from a 1 kB blob
    store = store_at(tmp_path / "store")
    with Remote(server.repo_url("app"), max_checkout_size=100_000) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        with pytest.raises(GitError, match=r"files expand past 100000 bytes .*\[git\] "
                                           r"max_checkout_size\): stopped at 'd0/"):
            remote.checkout(resolved, tmp_path / "out")
        with pytest.raises(GitError, match=r"\[git\] max_checkout_size"):
            remote.archive(resolved, tmp_path / "work", store=store, kind="gitrepository",
                           namespace="a", name="app", spec_ignore=None)
    _, size = written(tmp_path / "out")
    assert 0 < size <= 100_000
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_tree_exactly_at_the_limits_checks_out_and_one_less_fails(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    # the repo fixture: deploy/, deploy/app.yaml, README.md, run.sh; 16 + 6 + 10 bytes
    store = store_at(tmp_path / "store")
    for entries, size, fails in ((4, 32, False), (3, 32, True), (4, 31, True)):
        with Remote(server.repo_url("app"), max_checkout_entries=entries,
                    max_checkout_size=size) as remote:
            resolved = remote.resolve(Ref(branch="main"))
            dest = tmp_path / f"out-{entries}-{size}"
            if fails:
                with pytest.raises(GitError, match="fluxd's limit for one checkout"):
                    remote.checkout(resolved, dest)
                with pytest.raises(GitError, match="fluxd's limit for one checkout"):
                    remote.archive(resolved, dest.with_suffix(".work"), store=store,
                                   kind="gitrepository", namespace="a", name="app",
                                   spec_ignore=None)
            else:
                remote.checkout(resolved, dest)
                assert written(dest) == (4, 32)
                remote.archive(resolved, dest.with_suffix(".work"), store=store,
                               kind="gitrepository", namespace="a", name="app",
                               spec_ignore=None)


def test_submodules_share_the_checkout_limits_of_their_parent(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    lib = server.make_repo("lib", {"lib.txt": "library\n"})
    add_submodule(repo, "vendor/lib", lib, server.repo_url("lib"))
    # the parent: .gitmodules, README.md, deploy/, deploy/app.yaml, run.sh, vendor/,
    # vendor/lib (the gitlink) = 7 entries; the submodule adds lib.txt
    with Remote(server.repo_url("app"), max_checkout_entries=7) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        remote.checkout(resolved, tmp_path / "plain")
        with pytest.raises(GitError, match=r"submodule 'vendor/lib' .*more than 7 entries"):
            remote.checkout(resolved, tmp_path / "deep", submodules=True)
    assert not (tmp_path / "deep/vendor/lib/lib.txt").exists()


def submodule_chain(server: GitServer, repo: Any, levels: int) -> None:
    """Commits of ``repo`` nesting ``levels`` submodules, each pinning the next commit of
    the same repository (a commit cannot pin itself: its id would have to be in it)."""
    url = server.repo_url("app")
    inner = commit_raw_tree(repo, {b"level.txt": str(levels)})
    for level in range(levels - 1, -1, -1):
        inner = commit_raw_tree(repo, {b".gitmodules": gitmodules("sub", url),
                                       b"sub": Gitlink(inner), b"level.txt": str(level)})


def test_submodules_nest_ten_levels_deep_as_in_flux(server: GitServer, repo: Any,
                                                    tmp_path: Path) -> None:
    from fluxd.controllers.source.git import MAX_SUBMODULE_DEPTH

    submodule_chain(server, repo, MAX_SUBMODULE_DEPTH)
    checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)
    deepest = tmp_path / "out" / "/".join(["sub"] * MAX_SUBMODULE_DEPTH)
    assert (deepest / "level.txt").read_text() == str(MAX_SUBMODULE_DEPTH)


def test_a_submodule_chain_of_the_same_repository_ends_at_the_nesting_limit(
        server: GitServer, repo: Any, tmp_path: Path) -> None:
    from fluxd.controllers.source.git import MAX_SUBMODULE_DEPTH

    submodule_chain(server, repo, MAX_SUBMODULE_DEPTH + 5)
    too_deep = "/".join(["sub"] * (MAX_SUBMODULE_DEPTH + 1))
    with pytest.raises(GitError) as err:
        checkout(server, Ref(branch="main"), tmp_path / "out", submodules=True)
    # named once, at its full path, not wrapped by each level above it
    assert str(err.value) == (f"submodule '{too_deep}' is nested deeper than the "
                              f"{MAX_SUBMODULE_DEPTH} levels of submodules fluxd checks out")
    assert err.value.reason == "GitOperationFailed"


class WatchedEvent(threading.Event):
    """A cancellation event that tells the test once the work has checked it ``after``
    times (so the work is under way), and counts the checks."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.checks = 0
        self.busy = threading.Event()

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks >= self.after:
            self.busy.set()
        return super().is_set()


def run_in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test
            failures.append(exc)

    thread = threading.Thread(target=run, name="git work", daemon=True)
    thread.start()
    return thread, failures


def test_a_checkout_cancelled_from_another_thread_stops_at_the_next_entry(
        server: GitServer, repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit_raw_tree(repo, tree_bomb(6))  # a million files: minutes of writing
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cancelled = WatchedEvent(after=2000)
    with Remote(server.repo_url("app"), cancelled=cancelled) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        thread, failures = run_in_thread(lambda: remote.checkout(resolved, tmp_path / "out"))
        assert cancelled.busy.wait(60), "the checkout did not start"
        cancelled.set()
        at_cancel = cancelled.checks
        thread.join(10)
        assert not thread.is_alive(), "the checkout went on after it was cancelled"
    assert len(failures) == 1 and isinstance(failures[0], Cancelled)
    assert failures[0].reason == "GitOperationFailed"
    # one check after the event was set: the very next entry
    assert cancelled.checks - at_cancel <= 2
    assert list((tmp_path / "tmp").iterdir()) == []  # the fetched pack's directory is gone
    entries, _ = written(tmp_path / "out")
    assert entries < 10_000


def test_a_fetch_cancelled_from_another_thread_stops_at_the_next_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a server that keeps the fetch busy, 4 KiB every 10 ms, with no read ever timing out
    with GitServer(tmp_path / "repos", trickle=(4096, 0.01)) as slow:
        slow.make_repo("app", {"big.bin": File(random.Random(3).randbytes(4 << 20))})
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "tmp").mkdir()
        cancelled = WatchedEvent(after=3)
        with Remote(slow.repo_url("app"), cancelled=cancelled) as remote:
            resolved = remote.resolve(Ref(branch="main"))
            thread, failures = run_in_thread(
                lambda: remote.checkout(resolved, tmp_path / "out"))
            assert cancelled.busy.wait(60), "the fetch did not start"
            cancelled.set()
            at_cancel = cancelled.checks
            thread.join(10)
            assert not thread.is_alive(), "the fetch went on after it was cancelled"
        assert len(failures) == 1 and isinstance(failures[0], Cancelled)
        assert cancelled.checks - at_cancel <= 2
        assert list((tmp_path / "tmp").iterdir()) == []
        assert not (tmp_path / "out").exists()
