"""GitRepository's Git layer over HTTPS: a real git server behind TLS on 127.0.0.1, with a
throw-away CA, basic auth and client certificates, through ``Remote`` and the manager."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.controllers.source.git import (
    Auth,
    AuthenticationFailed,
    Checkout,
    GitError,
    Head,
    Ref,
    Remote,
)
from tests.controllers.conftest import Flux, condition
from tests.support.gitserver import (
    BasicAuth,
    GitServer,
    Repo,
    add_submodule,
    git,
    head,
)
from tests.support.pki import CertificateAuthority

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

API = "source.toolkit.fluxcd.io/v1"
USER, PASSWORD = "gitea-user", "gta-s3cret-over-tls"
FILES = {"deploy/app.yaml": "kind: ConfigMap\n", "README.md": "over https\n"}


@pytest.fixture
def https(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "https", tls=True) as srv:
        srv.make_repo("app", FILES)
        yield srv


@pytest.fixture
def https_basic(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "https-basic", tls=True, auth=BasicAuth(USER, PASSWORD)) as srv:
        srv.make_repo("app", FILES)
        yield srv


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "mtls", tls=True, client_ca=True) as srv:
        srv.make_repo("app", FILES)
        yield srv


def fetch(url: str, auth: Auth, dest: Path) -> tuple[Head, Checkout]:
    """Resolve ``main`` and check it out into ``dest``, as the reconciler does."""
    with Remote(url, auth, timeout=10) as remote:
        resolved = remote.resolve(Ref(branch="main"))
        return resolved, remote.checkout(resolved, dest)


def refused(url: str, auth: Auth) -> GitError:
    """The error resolving ``main`` fails with."""
    with Remote(url, auth, timeout=10) as remote, pytest.raises(GitError) as err:
        remote.resolve(Ref(branch="main"))
    return err.value


def app_head(server: GitServer) -> str:
    return head(Repo("app", server.root / "app.git"))


# --- Remote -----------------------------------------------------------------------------


def test_a_remote_trusting_the_servers_ca_resolves_and_checks_out_over_https(
        https: GitServer, tmp_path: Path) -> None:
    url = https.repo_url("app")
    assert url.startswith("https://127.0.0.1:")
    resolved, done = fetch(url, Auth(ca_pem=https.ca_pem), tmp_path / "out")
    sha = app_head(https)
    assert resolved.revision == f"main@sha1:{sha}" == done.revision
    assert done.commit == sha
    assert (tmp_path / "out/deploy/app.yaml").read_text() == "kind: ConfigMap\n"
    assert (tmp_path / "out/README.md").read_text() == "over https\n"
    assert https.stats.packs_sent("app") == 1


def test_a_remote_without_the_ca_fails_certificate_verification_and_leaks_no_credentials(
        https_basic: GitServer) -> None:
    url = https_basic.repo_url("app", username=USER, password="url-password-42")
    error = refused(url, Auth(username=USER, password=PASSWORD))
    message = str(error)
    assert "certificate verify failed" in message
    assert error.reason == "GitOperationFailed"
    assert not isinstance(error, AuthenticationFailed)
    assert PASSWORD not in message and "url-password-42" not in message
    # the handshake failed: no request, so no credentials, ever reached the server
    assert https_basic.stats.requests == []


def test_a_remote_trusting_a_different_ca_is_refused(https: GitServer) -> None:
    stranger = CertificateAuthority.create("some other CA")
    error = refused(https.repo_url("app"), Auth(ca_pem=stranger.ca_pem))
    assert "certificate verify failed" in str(error)
    assert https.stats.requests == []


def test_basic_auth_over_tls_accepts_the_right_password_and_refuses_a_wrong_one(
        https_basic: GitServer, tmp_path: Path) -> None:
    url = https_basic.repo_url("app")
    _, done = fetch(url, Auth(username=USER, password=PASSWORD, ca_pem=https_basic.ca_pem),
                    tmp_path / "out")
    assert done.commit == app_head(https_basic)
    assert {r.user for r in https_basic.stats.select(status=200)} == {USER}
    error = refused(url, Auth(username=USER, password="wrong-pw", ca_pem=https_basic.ca_pem))
    assert isinstance(error, AuthenticationFailed)
    assert "wrong-pw" not in str(error)


def test_mutual_tls_with_the_client_certificate_and_key_checks_out(
        mtls: GitServer, tmp_path: Path) -> None:
    auth = Auth(ca_pem=mtls.ca_pem, cert_pem=mtls.client_cert_pem,
                key_pem=mtls.client_key_pem)
    _, done = fetch(mtls.repo_url("app"), auth, tmp_path / "out")
    assert done.commit == app_head(mtls)
    assert (tmp_path / "out/README.md").read_text() == "over https\n"
    assert mtls.stats.requests
    assert {r.client_cert for r in mtls.stats.requests} == {"fluxd-test-client"}


def test_mutual_tls_without_a_client_certificate_is_refused(mtls: GitServer) -> None:
    refused(mtls.repo_url("app"), Auth(ca_pem=mtls.ca_pem))
    assert mtls.stats.requests == []


def test_mutual_tls_with_a_client_certificate_from_another_ca_is_refused(
        mtls: GitServer) -> None:
    cert, key = CertificateAuthority.create("intruder CA").issue("intruder", client=True)
    refused(mtls.repo_url("app"), Auth(ca_pem=mtls.ca_pem, cert_pem=cert, key_pem=key))
    assert mtls.stats.requests == []


def test_a_tls_server_taken_down_fails_fetches_and_serves_again_once_up(
        https: GitServer) -> None:
    auth = Auth(ca_pem=https.ca_pem)
    https.down()
    try:
        error = refused(https.repo_url("app"), auth)
        assert error.reason == "GitOperationFailed"
    finally:
        https.up()
    with Remote(https.repo_url("app"), auth, timeout=10) as remote:
        assert remote.resolve(Ref(branch="main")).commit == app_head(https)


def test_submodules_over_https_are_fetched_with_the_same_ca(https: GitServer,
                                                            tmp_path: Path) -> None:
    lib = https.make_repo("lib", {"lib.txt": "library\n"})
    parent = https.make_repo("parent", {"a.txt": "a\n"})
    add_submodule(parent, "vendor/lib", lib, https.repo_url("lib"))
    with Remote(https.repo_url("parent"), Auth(ca_pem=https.ca_pem), timeout=10) as remote:
        remote.checkout(remote.resolve(Ref(branch="main")), tmp_path / "deep", submodules=True)
    assert (tmp_path / "deep/vendor/lib/lib.txt").read_text() == "library\n"


def test_the_git_cli_clones_over_mutual_tls_with_the_servers_client_env(
        mtls: GitServer, tmp_path: Path) -> None:
    git("clone", "--quiet", mtls.repo_url("app"), tmp_path / "clone", env=mtls.client_env())
    assert (tmp_path / "clone/README.md").read_text() == "over https\n"
    ca_only = {"GIT_SSL_CAINFO": mtls.client_env()["GIT_SSL_CAINFO"]}
    done = git("ls-remote", mtls.repo_url("app"), env=ca_only, check=False, timeout=30)
    assert done.returncode != 0


# --- the manager ------------------------------------------------------------------------


def gitrepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"},
                     "timeout": "10s", **spec}}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def secret(flux: Flux, namespace: str, name: str, data: dict[str, bytes]) -> None:
    await flux.client.apply({"apiVersion": "v1", "kind": "Secret",
                             "metadata": {"name": name, "namespace": namespace},
                             "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


async def test_a_gitrepository_whose_secret_has_the_ca_and_basic_auth_becomes_ready(
        flux: Flux, https_basic: GitServer, namespace: str) -> None:
    await secret(flux, namespace, "git-tls", {"ca.crt": https_basic.ca_pem,
                                              "username": USER.encode(),
                                              "password": PASSWORD.encode()})
    await flux.client.create(gitrepo("app", namespace, https_basic.repo_url("app"),
                                     secretRef={"name": "git-tls"}))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    sha = app_head(https_basic)
    assert obj["status"]["artifact"]["revision"] == f"main@sha1:{sha}"
    assert condition(obj, "Ready")["message"] == f"stored artifact for revision 'main@sha1:{sha}'"
    assert (flux.storage / obj["status"]["artifact"]["path"]).is_file()
    assert {r.user for r in https_basic.stats.select(status=200)} == {USER}


async def test_a_gitrepository_whose_secret_lacks_the_ca_fails_then_recovers_once_added(
        flux: Flux, https_basic: GitServer, namespace: str) -> None:
    creds = {"username": USER.encode(), "password": PASSWORD.encode()}
    await secret(flux, namespace, "git-tls", creds)
    await flux.client.create(gitrepo("app", namespace, https_basic.repo_url("app"),
                                     secretRef={"name": "git-tls"}))
    failed = await flux.wait(API, "GitRepository", "app", namespace,
                             lambda o: condition(o, "FetchFailed").get("status") == "True")
    assert condition(failed, "FetchFailed")["reason"] == "GitOperationFailed"
    assert "certificate verify failed" in condition(failed, "FetchFailed")["message"]
    assert condition(failed, "Ready")["status"] == "False"
    assert PASSWORD not in json.dumps(failed["status"])
    await secret(flux, namespace, "git-tls", {**creds, "ca.crt": https_basic.ca_pem})
    await flux.client.merge_patch(API, "GitRepository", "app", {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "ca-added"}}}, namespace)
    fixed = await flux.wait(API, "GitRepository", "app", namespace, ready)
    assert not condition(fixed, "FetchFailed")


async def test_a_gitrepository_whose_secret_has_a_client_certificate_becomes_ready(
        flux: Flux, mtls: GitServer, namespace: str) -> None:
    await secret(flux, namespace, "git-mtls", {"ca.crt": mtls.ca_pem,
                                               "tls.crt": mtls.client_cert_pem,
                                               "tls.key": mtls.client_key_pem})
    await flux.client.create(gitrepo("app", namespace, mtls.repo_url("app"),
                                     secretRef={"name": "git-mtls"}))
    obj = await flux.wait(API, "GitRepository", "app", namespace, ready)
    assert obj["status"]["artifact"]["revision"] == f"main@sha1:{app_head(mtls)}"
    assert {r.client_cert for r in mtls.stats.requests} == {"fluxd-test-client"}
