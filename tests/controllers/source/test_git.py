"""GitRepository's Git layer against a real git smart-HTTP server (and sshd)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxd.controllers.source.git import (
    Auth,
    AuthenticationFailed,
    GitError,
    Ref,
    Remote,
    URLInvalid,
    sparse_filter,
)
from tests.support.gitserver import (
    BasicAuth,
    BearerAuth,
    File,
    GitServer,
    SshGitServer,
    add_submodule,
    branch,
    commit,
    ensure_sshd,
    head,
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
