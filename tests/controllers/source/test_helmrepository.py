"""HelmRepository end to end: the real manager, the cluster fixture, a static Helm
repository built with the real helm CLI and served over loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.source.helmrepository import human_size
from fluxd.kube import NotFound
from tests.conftest import tool
from tests.controllers.conftest import Flux, condition
from tests.support.helmrepo import (
    BasicAuth,
    HelmCLI,
    HelmRepoServer,
    large_index,
    write_chart,
)
from tests.support.pki import CertificateAuthority

pytestmark = pytest.mark.anyio

API = "source.toolkit.fluxcd.io/v1"
KIND = "HelmRepository"


@pytest.fixture
def helm(tmp_path: Path) -> HelmCLI:
    return HelmCLI(tool("helm"), tmp_path / "helm-home")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HelmRepoServer]:
    with HelmRepoServer(tmp_path / "charts") as srv:
        yield srv


def publish(helm: HelmCLI, server: HelmRepoServer, *charts: tuple[str, str]) -> bytes:
    """Package ``(name, version)`` charts into the server's directory, index it, and
    return the index bytes."""
    work = server.root.parent / "chart-src"
    for name, version in charts:
        helm.package(write_chart(work, name, version), server.root)
    return helm.index(server.root, server.url).read_bytes()


def helmrepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, **spec}}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def fetch_failed(obj: dict[str, Any]) -> bool:
    return condition(obj, "FetchFailed").get("status") == "True"


async def request(flux: Flux, name: str, namespace: str, value: str) -> None:
    await flux.client.merge_patch(API, KIND, name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": value}}}, namespace)


async def handled(flux: Flux, name: str, namespace: str, value: str) -> dict[str, Any]:
    obj: dict[str, Any] = await flux.wait(
        API, KIND, name, namespace,
        lambda o: (o.get("status") or {}).get("lastHandledReconcileAt") == value)
    return obj


async def events(flux: Flux, namespace: str, reason: str) -> list[str]:
    listed = await flux.client.list_all("v1", "Event", namespace)
    return [e["message"] for e in listed.items if e["reason"] == reason]


async def secret(flux: Flux, namespace: str, name: str, data: dict[str, bytes],
                 type_: str = "Opaque") -> None:
    await flux.client.apply({"apiVersion": "v1", "kind": "Secret", "type": type_,
                             "metadata": {"name": name, "namespace": namespace},
                             "data": {k: base64.b64encode(v).decode()
                                      for k, v in data.items()}})


async def gone(flux: Flux, name: str, namespace: str) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                await flux.get(API, KIND, name, namespace)
            except NotFound:
                return
            await asyncio.sleep(0.1)


def test_sizes_read_as_go_units_humansize_writes_them() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 30880, 40898, 1_234_567, 52_428_800)] == [
        "0B", "999B", "1kB", "30.88kB", "40.9kB", "1.235MB", "52.43MB"]


async def test_index_becomes_an_artifact_named_after_its_digest_with_an_index_symlink(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    index = publish(helm, server, ("podinfo", "6.0.0"), ("podinfo", "6.1.0"), ("redis", "1.0.0"))
    seen: list[ArtifactEvent] = []
    unsubscribe = flux.context.artifact_bus.subscribe(seen.append)
    await flux.client.create(helmrepo("podinfo", namespace, server.url))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    unsubscribe()
    artifact = obj["status"]["artifact"]
    hexdigest = sha256(index)
    assert artifact["revision"] == artifact["digest"] == f"sha256:{hexdigest}"
    assert artifact["path"] == f"helmrepository/{namespace}/podinfo/index-{hexdigest}.yaml"
    assert artifact["size"] == len(index)
    stored = flux.storage / artifact["path"]
    assert stored.read_bytes() == index  # an exact copy of what the server sent
    link = stored.with_name("index.yaml")
    assert link.is_symlink() and os.readlink(link) == stored.name
    assert obj["status"]["url"] == artifact["url"].rsplit("/", 1)[0] + "/index.yaml"
    message = f"stored artifact: revision 'sha256:{hexdigest}'"
    assert condition(obj, "Ready")["message"] == message
    assert condition(obj, "ArtifactInStorage") | {"lastTransitionTime": ""} == {
        "type": "ArtifactInStorage", "status": "True", "reason": "Succeeded",
        "message": message, "observedGeneration": 1, "lastTransitionTime": ""}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "finalizers.fluxcd.io" in obj["metadata"]["finalizers"]
    async with aiohttp.ClientSession() as session:
        for url in (artifact["url"], obj["status"]["url"]):
            async with session.get(url) as resp:
                assert await resp.read() == index
    assert [(e.source.kind, e.source.name, e.revision) for e in seen] == [
        ("HelmRepository", "podinfo", artifact["revision"])]
    assert await events(flux, namespace, "NewArtifact") == [
        f"stored fetched index of size {human_size(len(index))} from '{server.url}'"]


async def test_a_changed_index_is_a_new_artifact_and_an_unchanged_one_is_not_stored_again(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("podinfo", namespace, server.url))
    first = await flux.wait(API, KIND, "podinfo", namespace, ready)
    stored = flux.storage / first["status"]["artifact"]["path"]
    inode, fetches = stored.stat().st_ino, server.requests("/index.yaml")

    await request(flux, "podinfo", namespace, "same")
    again = await handled(flux, "podinfo", namespace, "same")
    assert server.requests("/index.yaml") > fetches  # fetched again...
    assert again["status"]["artifact"] == first["status"]["artifact"]  # ...and kept
    assert stored.stat().st_ino == inode  # not rewritten
    assert {p.name for p in stored.parent.iterdir()} == {"index.yaml", stored.name}

    index = publish(helm, server, ("podinfo", "6.1.0"))
    await request(flux, "podinfo", namespace, "new")
    second = await handled(flux, "podinfo", namespace, "new")
    artifact = second["status"]["artifact"]
    assert ready(second) and artifact["revision"] == f"sha256:{sha256(index)}"
    assert (flux.storage / artifact["path"]).read_bytes() == index
    assert os.readlink(stored.with_name("index.yaml")) == f"index-{sha256(index)}.yaml"
    assert len(await events(flux, namespace, "NewArtifact")) == 2


async def test_wrong_credentials_fail_the_fetch_then_recover_once_fixed(
        flux: Flux, helm: HelmCLI, tmp_path: Path, namespace: str) -> None:
    with HelmRepoServer(tmp_path / "private", auth=BasicAuth("helm-user", "s3cret")) as srv:
        publish(helm, srv, ("podinfo", "6.0.0"))
        await secret(flux, namespace, "creds",
                     {"username": b"helm-user", "password": b"wrong-password"})
        await flux.client.create(helmrepo("private", namespace, srv.url,
                                          secretRef={"name": "creds"}))
        failed = await flux.wait(API, KIND, "private", namespace, fetch_failed)
        assert condition(failed, "FetchFailed")["reason"] == "Failed"
        assert condition(failed, "FetchFailed")["message"] == (
            "failed to fetch Helm repository index: failed to cache index to temporary file: "
            f"failed to fetch {srv.url}/index.yaml : 401 Unauthorized")
        assert condition(failed, "Ready")["status"] == "False"
        assert "wrong-password" not in json.dumps(failed)
        assert await events(flux, namespace, "Failed")

        await secret(flux, namespace, "creds", {"username": b"helm-user", "password": b"s3cret"})
        await request(flux, "private", namespace, "fixed")
        fixed = await flux.wait(API, KIND, "private", namespace, ready)
        assert not condition(fixed, "FetchFailed")


async def test_missing_or_incomplete_secrets_are_authentication_failures(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("podinfo", namespace, server.url,
                                      secretRef={"name": "creds"}))
    failed = await flux.wait(API, KIND, "podinfo", namespace, fetch_failed)
    assert condition(failed, "FetchFailed")["reason"] == "AuthenticationFailed"
    assert condition(failed, "Ready")["message"] == (
        f"failed to get authentication secret '{namespace}/creds': secrets \"creds\" not found")

    await secret(flux, namespace, "creds", {"username": b"only-a-user"})
    await request(flux, "podinfo", namespace, "incomplete")
    failed = await handled(flux, "podinfo", namespace, "incomplete")
    assert condition(failed, "FetchFailed")["message"] == (
        "failed to configure Helm client: invalid 'creds' secret data: required fields "
        "'username' and 'password'")

    await secret(flux, namespace, "creds", {})  # neither: anonymous access
    await request(flux, "podinfo", namespace, "anonymous")
    assert ready(await handled(flux, "podinfo", namespace, "anonymous"))


async def test_https_with_a_private_ca_and_a_client_certificate_from_cert_secret_ref(
        flux: Flux, helm: HelmCLI, tmp_path: Path, namespace: str) -> None:
    ca = CertificateAuthority.create()
    with HelmRepoServer(tmp_path / "tls", tls=ca.issue("127.0.0.1", hosts=("127.0.0.1",)),
                        client_ca=ca.ca_pem) as srv:
        publish(helm, srv, ("podinfo", "6.0.0"))
        await flux.client.create(helmrepo("tls", namespace, srv.url))
        failed = await flux.wait(API, KIND, "tls", namespace, fetch_failed)
        assert "CERTIFICATE_VERIFY_FAILED" in condition(failed, "FetchFailed")["message"]

        client = ca.issue("fluxd", client=True)
        await secret(flux, namespace, "tls", {"tls.crt": client.cert, "tls.key": client.key,
                                              "ca.crt": ca.ca_pem}, "kubernetes.io/tls")
        await flux.client.merge_patch(API, KIND, "tls", {"spec": {
            "certSecretRef": {"name": "tls"}}}, namespace)
        obj = await flux.wait(API, KIND, "tls", namespace, ready)
        assert obj["status"]["artifact"]["size"] > 0


async def test_an_unreachable_repository_fails_then_recovers_when_it_is_back(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    server.down()
    await flux.client.create(helmrepo("podinfo", namespace, server.url, timeout="5s"))
    failed = await flux.wait(API, KIND, "podinfo", namespace, fetch_failed)
    assert condition(failed, "FetchFailed")["reason"] == "Failed"
    assert f'Get "{server.url}/index.yaml": ' in condition(failed, "FetchFailed")["message"]
    assert condition(failed, "Reconciling")["reason"] == "ProgressingWithRetry"
    server.up()
    recovered = await flux.wait(API, KIND, "podinfo", namespace, ready)
    assert not condition(recovered, "Reconciling")


async def test_recovering_with_the_stored_index_is_announced_as_succeeded(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    index = publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("podinfo", namespace, server.url, timeout="2s"))
    first = await flux.wait(API, KIND, "podinfo", namespace, ready)
    server.down()
    await request(flux, "podinfo", namespace, "down")
    failed = await handled(flux, "podinfo", namespace, "down")
    assert fetch_failed(failed) and condition(failed, "Ready")["status"] == "False"
    assert failed["status"]["artifact"] == first["status"]["artifact"]  # still served
    server.up()
    recovered = await flux.wait(API, KIND, "podinfo", namespace, ready)
    assert recovered["status"]["artifact"] == first["status"]["artifact"]
    message = f"stored fetched index of size {human_size(len(index))} from '{server.url}'"
    assert await events(flux, namespace, "Succeeded") == [message]
    assert await events(flux, namespace, "NewArtifact") == [message]


async def test_an_index_over_the_size_limit_is_refused(flux: Flux, server: HelmRepoServer,
                                                       namespace: str) -> None:
    flux.context.settings.helm.index_max_size = 4096
    (server.root / "index.yaml").write_bytes(large_index(5000))
    await flux.client.create(helmrepo("big", namespace, server.url))
    failed = await flux.wait(API, KIND, "big", namespace, fetch_failed)
    assert condition(failed, "FetchFailed")["message"] == (
        "failed to fetch Helm repository index: failed to cache index to temporary file: "
        "index exceeds the maximum index file size of 4096 bytes")
    assert not (flux.storage / "helmrepository" / namespace / "big").exists()


async def test_an_invalid_index_is_an_indexation_failure(flux: Flux, server: HelmRepoServer,
                                                         namespace: str) -> None:
    index = server.root / "index.yaml"
    index.write_text("entries: {}\n")
    await flux.client.create(helmrepo("bad", namespace, server.url))
    failed = await flux.wait(API, KIND, "bad", namespace, fetch_failed)
    assert condition(failed, "FetchFailed")["reason"] == "IndexationFailed"
    assert condition(failed, "FetchFailed")["message"] == (
        "failed to load Helm repository from index YAML: failed to load index: "
        "no API version specified")

    index.write_text("apiVersion: v1\nentries:\n  podinfo: [\n")
    await request(flux, "bad", namespace, "syntax")
    failed = await handled(flux, "bad", namespace, "syntax")
    assert condition(failed, "FetchFailed")["message"].startswith(
        "failed to load Helm repository from index YAML: failed to load index: "
        "error converting YAML to JSON: yaml: line ")
    assert not (flux.storage / "helmrepository" / namespace / "bad").exists()


@pytest.mark.parametrize(("url", "message"), [
    ("http://exa mple.com/charts", 'invalid Helm repository URL: parse '
     '"http://exa mple.com/charts": invalid character " " in host name'),
    ("https://charts.example.com:port/", 'invalid Helm repository URL: parse '
     '"https://charts.example.com:port/": invalid port ":port" after host'),
    ("oci://ghcr.io/stefanprodan/charts", "invalid Helm repository URL: 'oci' URL scheme "
     "cannot be used with 'default' HelmRepository type"),
])
async def test_an_unusable_url_stalls(flux: Flux, namespace: str, url: str,
                                      message: str) -> None:
    await flux.client.create(helmrepo("bad", namespace, url))
    stalled = await flux.wait(API, KIND, "bad", namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    for type_ in ("Stalled", "Ready", "FetchFailed"):
        assert (condition(stalled, type_)["reason"], condition(stalled, type_)["message"]) \
            == ("URLInvalid", message), type_
    assert stalled["status"]["observedGeneration"] == stalled["metadata"]["generation"]


async def test_an_oci_repository_is_static_data_without_finalizer_status_or_artifact(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    created = await flux.client.create(helmrepo(
        "oci", namespace, "oci://ghcr.io/stefanprodan/charts", type="oci"))
    assert created["status"] == {"observedGeneration": -1}  # the CRD's default
    publish(helm, server, ("podinfo", "6.0.0"))
    # a default-type neighbour created after it is reconciled after it
    await flux.client.create(helmrepo("after", namespace, server.url))
    await flux.wait(API, KIND, "after", namespace, ready)
    obj = await flux.get(API, KIND, "oci", namespace)
    assert not obj["metadata"].get("finalizers")
    assert not obj.get("status")
    assert not (flux.storage / "helmrepository" / namespace / "oci").exists()


async def test_turning_a_repository_into_oci_removes_its_artifacts_status_and_finalizer(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("podinfo", namespace, server.url))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    directory = (flux.storage / obj["status"]["artifact"]["path"]).parent
    assert directory.is_dir()
    await flux.client.merge_patch(API, KIND, "podinfo", {"spec": {
        "type": "oci", "url": "oci://ghcr.io/stefanprodan/charts"}}, namespace)
    static = await flux.wait(API, KIND, "podinfo", namespace,
                             lambda o: not o.get("status") and not o["metadata"].get(
                                 "finalizers"))
    assert static["spec"]["type"] == "oci"
    assert not directory.exists()


async def test_deleting_removes_the_artifacts_and_the_finalizer(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("podinfo", namespace, server.url))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    stored = flux.storage / obj["status"]["artifact"]["path"]
    assert stored.exists()
    await flux.client.delete(API, KIND, "podinfo", namespace)
    await gone(flux, "podinfo", namespace)
    assert not stored.parent.exists()


async def test_a_20mb_index_is_stored_without_stalling_the_event_loop(
        flux: Flux, server: HelmRepoServer, namespace: str) -> None:
    index = await asyncio.to_thread(large_index, 20 * 1024 * 1024)
    await asyncio.to_thread((server.root / "index.yaml").write_bytes, index)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - start - 0.01)

    async with asyncio.TaskGroup() as group:
        group.create_task(ticker())
        try:
            await flux.client.create(helmrepo("big", namespace, server.url))
            obj = await flux.wait(API, KIND, "big", namespace, ready, within=120)
        finally:
            done.set()
    assert obj["status"]["artifact"]["size"] == len(index)
    assert obj["status"]["artifact"]["revision"] == f"sha256:{sha256(index)}"
    assert len(lags) > 50  # the loop ran the whole time...
    assert max(lags) < 0.1, f"event loop stalled for {max(lags) * 1000:.0f} ms"  # ...freely
