"""OCIRepository end to end: the real manager, the cluster fixture, a real registry."""

from __future__ import annotations

import base64
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import SystemClock
from fluxd.oci.artifact import Metadata
from fluxd.oci.auth import Credentials, Keychain
from fluxd.oci.client import RegistryClient
from tests.controllers.conftest import Flux, condition
from tests.support.registry import Registry, RegistryUnavailable, ensure_registry

pytestmark = pytest.mark.anyio

API = "source.toolkit.fluxcd.io/v1"
USER, PASSWORD = "flux-user", "s3cr3t-Pa55word"


def start(root: Path, **options: Any) -> Registry:
    try:
        ensure_registry()
    except RegistryUnavailable as exc:
        pytest.fail(f"{exc}; the Makefile's test target installs it")
    return Registry(root, **options).start()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = start(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


async def push(address: str, repo: str, tag: str, files: dict[str, str], *,
               credentials: Credentials | None = None) -> str:
    keychain = (Keychain.static(address, credentials.username, credentials.password)
                if credentials else None)
    async with RegistryClient(registry=address, clock=SystemClock(),
                              keychain=keychain) as client:
        return await client.push_artifact(
            repo, tag, files, metadata=Metadata(source="https://gitea.example/org/app.git",
                                                revision=f"main@sha1:{'a' * 40}"))


def ocirepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "OCIRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "insecure": True, **spec}}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def files_in(flux: Flux, obj: dict[str, Any]) -> dict[str, bytes]:
    with tarfile.open(flux.storage / obj["status"]["artifact"]["path"]) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


async def test_tag_semver_and_digest_refs(flux: Flux, registry: Registry,
                                          namespace: str) -> None:
    url = f"oci://{registry.address}/manifests/app"
    first = await push(registry.address, "manifests/app", "v1.0.0",
                       {"deploy/cm.yaml": "v: 1\n", "logo.png": "p"})
    second = await push(registry.address, "manifests/app", "v1.1.0",
                        {"deploy/cm.yaml": "v: 2\n"})
    await push(registry.address, "manifests/app", "v2.0.0-rc.1", {"deploy/cm.yaml": "rc\n"})
    await flux.client.create(ocirepo("by-tag", namespace, url, ref={"tag": "v1.0.0"}))
    await flux.client.create(ocirepo("by-semver", namespace, url, ref={"semver": "1.x"}))
    await flux.client.create(ocirepo("by-digest", namespace, url, ref={"digest": first}))
    tagged = await flux.wait(API, "OCIRepository", "by-tag", namespace, ready)
    assert tagged["status"]["artifact"]["revision"] == f"v1.0.0@{first}"
    assert set(files_in(flux, tagged)) == {"deploy/cm.yaml"}  # default exclusions apply
    meta = tagged["status"]["artifact"]["metadata"]
    assert meta["org.opencontainers.image.revision"] == f"main@sha1:{'a' * 40}"
    ranged = await flux.wait(API, "OCIRepository", "by-semver", namespace, ready)
    assert ranged["status"]["artifact"]["revision"] == f"v1.1.0@{second}"
    assert files_in(flux, ranged)["deploy/cm.yaml"] == b"v: 2\n"
    pinned = await flux.wait(API, "OCIRepository", "by-digest", namespace, ready)
    assert pinned["status"]["artifact"]["revision"] == first
    events = await flux.client.list_all("v1", "Event", namespace)
    new = [e for e in events.items if e["reason"] == "NewArtifact"
           and e["involvedObject"]["name"] == "by-tag"]
    assert [e["message"] for e in new] == [
        f"stored artifact with revision 'v1.0.0@{first}' from '{url}'"]


async def test_unchanged_digest_keeps_the_artifact_and_a_new_push_replaces_it(
        flux: Flux, registry: Registry, namespace: str) -> None:
    url = f"oci://{registry.address}/manifests/latest"
    await push(registry.address, "manifests/latest", "latest", {"a.yaml": "1"})
    await flux.client.create(ocirepo("app", namespace, url))
    first = await flux.wait(API, "OCIRepository", "app", namespace, ready)
    await flux.client.merge_patch(API, "OCIRepository", "app", {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "1"}}}, namespace)
    again = await flux.wait(API, "OCIRepository", "app", namespace,
                            lambda o: o["status"].get("lastHandledReconcileAt") == "1")
    assert again["status"]["artifact"] == first["status"]["artifact"]
    digest = await push(registry.address, "manifests/latest", "latest", {"a.yaml": "2"})
    await flux.client.merge_patch(API, "OCIRepository", "app", {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "2"}}}, namespace)
    changed = await flux.wait(API, "OCIRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "2" and ready(o)))
    assert changed["status"]["artifact"]["revision"] == f"latest@{digest}"
    assert files_in(flux, changed)["a.yaml"] == b"2"
    # a torn file (writes are not fsync'ed) fails its digest check and is fetched again
    path = flux.storage / changed["status"]["artifact"]["path"]
    good = path.read_bytes()
    path.write_bytes(good[:-7])
    await flux.client.merge_patch(API, "OCIRepository", "app", {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "3"}}}, namespace)
    mended = await flux.wait(API, "OCIRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "3" and ready(o)))
    assert mended["status"]["artifact"]["digest"] == changed["status"]["artifact"]["digest"]
    assert path.read_bytes() == good
    events = await flux.client.list_all("v1", "Event", namespace)
    assert any(e["reason"] == "ArtifactVerificationFailed" for e in events.items)


async def test_copy_operation_stores_the_layer_as_is(flux: Flux, registry: Registry,
                                                     namespace: str) -> None:
    url = f"oci://{registry.address}/manifests/copy"
    await push(registry.address, "manifests/copy", "v1", {"a.yaml": "x"})
    await flux.client.create(ocirepo("copy", namespace, url, ref={"tag": "v1"},
                                     layerSelector={"operation": "copy"}))
    obj = await flux.wait(API, "OCIRepository", "copy", namespace, ready)
    assert obj["status"]["artifact"]["path"].endswith(".tgz")
    assert obj["status"]["observedLayerSelector"] == {"operation": "copy"}


async def test_registry_credentials_from_a_dockerconfigjson_secret(
        flux: Flux, tmp_path: Path, namespace: str) -> None:
    reg = start(tmp_path / "private", users={USER: PASSWORD})
    try:
        await push(reg.address, "private/app", "v1", {"a.yaml": "1"},
                   credentials=Credentials(username=USER, password=PASSWORD))
        url = f"oci://{reg.address}/private/app"

        async def secret(password: str) -> None:
            auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
            config = {"auths": {reg.address: {"auth": auth}}}
            await flux.client.apply({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "regcred", "namespace": namespace},
                "data": {".dockerconfigjson": base64.b64encode(
                    json.dumps(config).encode()).decode()}})

        await secret("wrong")
        await flux.client.create(ocirepo("private", namespace, url, ref={"tag": "v1"},
                                         secretRef={"name": "regcred"}))
        failed = await flux.wait(API, "OCIRepository", "private", namespace,
                                 lambda o: condition(o, "FetchFailed").get("status") == "True")
        assert condition(failed, "FetchFailed")["reason"] == "AuthenticationFailed"
        assert "wrong" not in json.dumps(failed["status"])
        await secret(PASSWORD)
        await flux.client.merge_patch(API, "OCIRepository", "private", {"metadata": {
            "annotations": {"reconcile.fluxcd.io/requestedAt": "fixed"}}}, namespace)
        await flux.wait(API, "OCIRepository", "private", namespace, ready)
    finally:
        reg.stop()


async def test_missing_tag_fails_and_a_bad_reference_stalls(flux: Flux, registry: Registry,
                                                            namespace: str) -> None:
    await push(registry.address, "manifests/x", "v1", {"a": "1"})
    await flux.client.create(ocirepo("missing", namespace,
                                     f"oci://{registry.address}/manifests/x",
                                     ref={"tag": "nope"}))
    failed = await flux.wait(API, "OCIRepository", "missing", namespace,
                             lambda o: condition(o, "FetchFailed").get("status") == "True")
    assert condition(failed, "FetchFailed")["reason"] == "OCIArtifactPullFailed"
    await flux.client.create(ocirepo("bad", namespace, "oci://Bad Host/x"))
    stalled = await flux.wait(API, "OCIRepository", "bad", namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    assert condition(stalled, "Stalled")["reason"] == "URLInvalid"


async def test_the_semver_filter_is_a_go_regular_expression(flux: Flux, registry: Registry,
                                                            namespace: str) -> None:
    url = f"oci://{registry.address}/manifests/filtered"
    for tag in ("v1.0.0", "v1.2.0", "v2.0.0"):
        await push(registry.address, "manifests/filtered", tag, {"cm.yaml": f"v: {tag}\n"})
    # \Q…\E is Go's (Python's re refuses it)
    await flux.client.create(ocirepo("quoted", namespace, url,
                                     ref={"semver": ">=1.0.0", "semverFilter": r"^\Qv1.\E"}))
    done = await flux.wait(API, "OCIRepository", "quoted", namespace, ready)
    assert done["status"]["artifact"]["revision"].startswith("v1.2.0@sha256:")
    # lookahead is Python's (Go refuses it): the filter stalls the object, as in Flux
    await flux.client.create(ocirepo("lookahead", namespace, url,
                                     ref={"semver": ">=1.0.0", "semverFilter": "^v(?=1)"}))
    stalled = await flux.wait(API, "OCIRepository", "lookahead", namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    assert condition(stalled, "Stalled")["reason"] == "InvalidSemverFilter"
    assert "failed to compile regex '^v(?=1)'" in condition(stalled, "Stalled")["message"]


async def test_a_failed_pull_gives_ready_its_reason_and_message_while_retrying(
        flux: Flux, registry: Registry, namespace: str) -> None:
    await push(registry.address, "manifests/y", "v1", {"a": "1"})
    await flux.client.create(ocirepo("missing", namespace,
                                     f"oci://{registry.address}/manifests/y",
                                     ref={"tag": "nope"}))
    failed = await flux.wait(API, "OCIRepository", "missing", namespace,
                             lambda o: condition(o, "FetchFailed").get("status") == "True")
    # Flux's order: the failing step's condition before Reconciling (still building)
    fetch = condition(failed, "FetchFailed")
    assert (condition(failed, "Ready")["reason"], condition(failed, "Ready")["message"]) == (
        fetch["reason"], fetch["message"]) == ("OCIArtifactPullFailed", fetch["message"])
    assert condition(failed, "Reconciling")["reason"] == "ProgressingWithRetry"
    assert condition(failed, "Reconciling")["message"] == "building artifact"


async def test_a_torn_artifact_pulled_again_is_no_new_artifact(
        flux: Flux, registry: Registry, namespace: str) -> None:
    url = f"oci://{registry.address}/manifests/torn"
    await push(registry.address, "manifests/torn", "v1", {"a.yaml": "1"})
    await flux.client.create(ocirepo("torn", namespace, url, ref={"tag": "v1"}))
    first = await flux.wait(API, "OCIRepository", "torn", namespace, ready)
    path = flux.storage / first["status"]["artifact"]["path"]
    good = path.read_bytes()
    path.write_bytes(good[:-7])
    await flux.client.merge_patch(API, "OCIRepository", "torn", {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": "torn"}}}, namespace)
    mended = await flux.wait(API, "OCIRepository", "torn", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "torn" and ready(o)))
    assert mended["status"]["artifact"]["digest"] == first["status"]["artifact"]["digest"]
    assert mended["status"]["url"] == mended["status"]["artifact"]["url"]
    assert path.read_bytes() == good
    events = await flux.client.list_all("v1", "Event", namespace)
    new = [e for e in events.items if e["reason"] == "NewArtifact"]
    assert [e.get("count", 1) for e in new] == [1]  # the same digest: not announced again
