"""fluxd's OCI client against a real distribution registry on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fluxd.clock import FakeClock
from fluxd.oci.artifact import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    FLUX_CONFIG_MEDIA_TYPE,
    FLUX_CONTENT_MEDIA_TYPE,
    HELM_CHART_CONTENT_MEDIA_TYPE,
    HELM_CONFIG_MEDIA_TYPE,
    OCI_INDEX,
    OCI_MANIFEST,
    REVISION_ANNOTATION,
    SOURCE_ANNOTATION,
    Descriptor,
    LayerType,
    Metadata,
    Platform,
    image_manifest,
    revision,
    select_layer,
)
from fluxd.oci.auth import Keychain
from fluxd.oci.client import (
    BlobTooLargeError,
    ConnectionFailedError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestUnknownError,
    NameUnknownError,
    Reference,
    RegistryClient,
    UnauthorizedError,
    tls_context,
)
from tests.conftest import tool
from tests.oci.conftest import PASSWORD, USER
from tests.support.registry import TagPager, free_port, sha256_digest

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

TREE = {
    "deploy/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n",
    "deploy/nested/values.yaml": "replicas: 2\n",
    "README.md": "# demo\n",
}
META = Metadata(created="2026-01-01T00:00:00Z", source="https://github.com/org/repo",
                revision="main@sha1:0123456789abcdef0123456789abcdef01234567")


def client_for(address: str, clock: FakeClock, **options: Any) -> RegistryClient:
    return RegistryClient(registry=address, clock=clock, timeout=20, **options)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def tar_members(blob: bytes) -> dict[str, tuple[int, bytes | None]]:
    out: dict[str, tuple[int, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            out[member.name] = (member.mode, data.read() if data else None)
    return out


class RequestLog:
    """The requests a session sent, as ``(method, path)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.config = aiohttp.TraceConfig()
        self.config.on_request_start.append(self._record)

    async def _record(self, session: Any, context: Any,
                      params: aiohttp.TraceRequestStartParams) -> None:
        self.sent.append((params.method, params.url.path))


@pytest.fixture
def tag_pager(registry: Any) -> Iterator[TagPager]:
    with TagPager(registry.url, default_page=2) as pager:
        yield pager


# -- push and pull -------------------------------------------------------------------------

async def test_a_pushed_flux_artifact_pulls_back_with_its_layer_config_and_annotations(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", TREE)
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    async with client_for(registry.address, clock) as client:
        digest = await client.push_artifact("flux/podinfo", "v1.0.0", source, metadata=META)
        assert await client.resolve("flux/podinfo", "v1.0.0") == digest
        manifest = await client.manifest("flux/podinfo", "v1.0.0")
        assert manifest.media_type == OCI_MANIFEST
        assert manifest.digest == digest
        assert manifest.content["config"]["mediaType"] == FLUX_CONFIG_MEDIA_TYPE
        assert manifest.content["annotations"] == {
            "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
            SOURCE_ANNOTATION: META.source, REVISION_ANNOTATION: META.revision}
        layer = select_layer(manifest.content)
        assert layer.media_type == FLUX_CONTENT_MEDIA_TYPE
        size = await client.blob("flux/podinfo", layer.digest, tmp_path / "layer.tgz",
                                 max_size=1 << 20)
        config_digest = manifest.content["config"]["digest"]
        await client.blob("flux/podinfo", config_digest, tmp_path / "config.json")
    blob = (tmp_path / "layer.tgz").read_bytes()
    assert size == layer.size == len(blob)
    assert sha256_digest(blob) == layer.digest
    members = tar_members(blob)
    assert {name: data for name, (_, data) in members.items() if data is not None} == {
        **{name: text.encode() for name, text in TREE.items()}, "run.sh": b"#!/bin/sh\n"}
    assert members["deploy"][0] == 0o750 and members["run.sh"][0] == 0o700
    assert members["README.md"][0] == 0o600
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rootfs"]["diff_ids"] == [sha256_digest(gzip.decompress(blob))]
    assert revision("v1.0.0", digest) == f"v1.0.0@{digest}"


async def test_the_same_tree_pushed_twice_has_the_same_digest_and_skips_known_blobs(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    log = RequestLog()
    async with (aiohttp.ClientSession(trace_configs=[log.config]) as session,
          client_for(registry.address, clock, session=session) as client):
        first = await client.push_artifact("flux/repeat", "a", TREE, metadata=META)
        log.sent.clear()
        second = await client.push_artifact("flux/repeat", "b", TREE, metadata=META)
        sent = list(log.sent)
        assert sorted(await client.tags("flux/repeat")) == ["a", "b"]
    assert first == second
    assert [m for m, _ in sent] == ["HEAD", "HEAD", "PUT"]  # both blobs known: no upload


async def test_a_chunked_upload_stores_the_same_artifact_as_a_monolithic_one(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    files = {"big.bin": os.urandom(300_000).hex()}
    log = RequestLog()
    async with (aiohttp.ClientSession(trace_configs=[log.config]) as session,
          client_for(registry.address, clock, session=session) as client):
        chunked = await client.push_artifact("flux/chunked", "v1", files, metadata=META,
                                             chunk_size=64 << 10)
        patches = sum(1 for method, _ in log.sent if method == "PATCH")
        whole = await client.push_artifact("flux/whole", "v1", files, metadata=META)
        layer = select_layer((await client.manifest("flux/chunked", "v1")).content)
        await client.blob("flux/chunked", layer.digest, tmp_path / "layer")
    assert chunked == whole
    assert patches == -(-layer.size // (64 << 10)) and patches > 1
    assert tar_members((tmp_path / "layer").read_bytes())["big.bin"][1] == \
        files["big.bin"].encode()


async def test_a_single_file_pushed_as_a_static_layer_keeps_its_bytes_and_media_type(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    source = tmp_path / "policy.json"
    source.write_bytes(b'{"allow": true}')
    async with client_for(registry.address, clock) as client:
        await client.push_artifact("flux/static", "v1", source, layer_type=LayerType.STATIC,
                                   media_type_ext="json")
        manifest = await client.manifest("flux/static", "v1")
        layer = select_layer(manifest.content, "application/vnd.cncf.flux.content.v1.json")
        await client.blob("flux/static", layer.digest, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b'{"allow": true}'
    assert manifest.content["annotations"]["org.opencontainers.image.created"] == \
        "2026-01-01T00:00:00Z"  # the injected clock's now


# -- resolve, tags and errors --------------------------------------------------------------

async def test_resolve_takes_the_digest_from_a_head_request_alone(
        registry: Any, clock: FakeClock) -> None:
    log = RequestLog()
    async with (aiohttp.ClientSession(trace_configs=[log.config]) as session,
          client_for(registry.address, clock, session=session) as client):
        digest = await client.push_artifact("flux/head", "v2", TREE, metadata=META)
        log.sent.clear()
        assert await client.resolve("flux/head", "v2") == digest
    assert log.sent == [("HEAD", "/v2/flux/head/manifests/v2")]


async def test_resolve_falls_back_to_get_when_head_is_refused(
        registry: Any, clock: FakeClock, tag_pager: TagPager) -> None:
    async with client_for(registry.address, clock) as client:
        digest = await client.push_artifact("flux/nohead", "v1", TREE, metadata=META)
    log = RequestLog()
    # the pager front answers HEAD with 501 and passes GETs through
    async with (aiohttp.ClientSession(trace_configs=[log.config]) as session,
          client_for(tag_pager.address, clock, session=session) as client):
        assert await client.resolve("flux/nohead", "v1") == digest
    assert [m for m, _ in log.sent] == ["HEAD", "GET"]


async def test_tags_are_collected_across_link_header_pages(
        registry: Any, clock: FakeClock, tag_pager: TagPager) -> None:
    names = ["0.1.0", "0.2.0", "1.0.0", "1.1.0", "2.0.0"]
    async with client_for(registry.address, clock) as client:
        for name in names:
            await client.push_artifact("flux/paged", name, {"v": name}, metadata=META)
        assert sorted(await client.tags("flux/paged")) == names  # distribution 2.8: one page
    async with client_for(tag_pager.address, clock) as client:
        assert await client.tags("flux/paged", page_size=2) == names
    assert tag_pager.pages_served == 3


async def test_an_unknown_tag_raises_manifest_unknown_with_the_registry_message(
        registry: Any, clock: FakeClock) -> None:
    async with client_for(registry.address, clock) as client:
        await client.push_artifact("flux/known", "v1", TREE, metadata=META)
        with pytest.raises(ManifestUnknownError) as caught:
            await client.manifest("flux/known", "v9")
        with pytest.raises(ManifestUnknownError):
            await client.resolve("flux/known", "v9")
    assert caught.value.code == "MANIFEST_UNKNOWN" and caught.value.status == 404
    assert "GET /v2/flux/known/manifests/v9: 404" in str(caught.value)
    assert "manifest unknown" in str(caught.value)


async def test_tags_of_an_unknown_repository_raise_name_unknown(
        registry: Any, clock: FakeClock) -> None:
    async with client_for(registry.address, clock) as client:
        with pytest.raises(NameUnknownError, match="NAME_UNKNOWN"):
            await client.tags("flux/never-pushed")


async def test_an_unreachable_registry_raises_connection_failed(clock: FakeClock) -> None:
    async with client_for(f"127.0.0.1:{free_port()}", clock) as client:
        with pytest.raises(ConnectionFailedError, match="cannot connect"):
            await client.tags("flux/x")


# -- verification --------------------------------------------------------------------------

async def test_a_blob_whose_bytes_do_not_match_its_digest_is_rejected_and_not_kept(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    async with client_for(registry.address, clock) as client:
        await client.push_artifact("flux/corrupt", "v1", TREE, metadata=META)
        layer = select_layer((await client.manifest("flux/corrupt", "v1")).content)
        stored = registry.blob_path("flux/corrupt", layer.digest)
        data = bytearray(stored.read_bytes())
        data[-1] ^= 0xFF  # same size, other content
        stored.write_bytes(bytes(data))
        dest = tmp_path / "layer.tgz"
        with pytest.raises(DigestMismatchError, match=layer.digest):
            await client.blob("flux/corrupt", layer.digest, dest)
    assert listing(tmp_path) == []


async def test_a_manifest_fetched_by_digest_is_checked_against_it(
        registry: Any, clock: FakeClock) -> None:
    async with client_for(registry.address, clock) as client:
        digest = await client.push_artifact("flux/mcorrupt", "v1", TREE, metadata=META)
        assert (await client.manifest("flux/mcorrupt", digest)).digest == digest
        stored = registry.blob_path("flux/mcorrupt", digest)
        stored.write_bytes(stored.read_bytes().replace(b'"schemaVersion":2',
                                                       b'"schemaVersion":2 '))
        with pytest.raises(DigestMismatchError):
            await client.manifest("flux/mcorrupt", digest)


async def test_a_blob_over_the_size_limit_is_rejected_before_it_is_written(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    async with client_for(registry.address, clock) as client:
        await client.push_artifact("flux/large", "v1", {"data": os.urandom(50_000).hex()},
                                   metadata=META)
        layer = select_layer((await client.manifest("flux/large", "v1")).content)
        with pytest.raises(BlobTooLargeError, match="over the limit of 1000"):
            await client.blob("flux/large", layer.digest, tmp_path / "x", max_size=1000)
        assert await client.blob("flux/large", layer.digest, tmp_path / "y",
                                 max_size=layer.size) == layer.size
    assert listing(tmp_path) == ["y"]


# -- manifest kinds ------------------------------------------------------------------------

async def push_image(client: RegistryClient, repo: str, *, docker: bool, arch: str) -> Descriptor:
    """A tiny image of either flavour; returns its manifest's descriptor."""
    config_type = ("application/vnd.docker.container.image.v1+json" if docker
                   else "application/vnd.oci.image.config.v1+json")
    layer_type = ("application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                  else "application/vnd.oci.image.layer.v1.tar+gzip")
    layer = await client.push_blob(repo, gzip.compress(f"layer {arch}".encode(), mtime=0),
                                   media_type=layer_type)
    config_json = json.dumps({"architecture": arch, "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config = await client.push_blob(repo, config_json, media_type=config_type)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body = image_manifest(config, [layer], media_type=media_type)
    digest = await client.push_manifest(repo, f"{arch}-{'docker' if docker else 'oci'}",
                                        body, media_type)
    return Descriptor(media_type=media_type, digest=digest, size=len(body),
                      platform=Platform(os="linux", architecture=arch))


@pytest.mark.parametrize("docker", [True, False], ids=["docker-v2", "oci"])
async def test_image_manifests_and_indexes_of_both_flavours_are_read(
        registry: Any, clock: FakeClock, docker: bool) -> None:
    repo = f"images/{'docker' if docker else 'oci'}"
    index_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    async with client_for(registry.address, clock) as client:
        arm = await push_image(client, repo, docker=docker, arch="arm64")
        amd = await push_image(client, repo, docker=docker, arch="amd64")
        index_digest = await client.push_index(repo, "multi", [arm, amd], media_type=index_type)

        single = await client.manifest(repo, arm.digest)
        assert (single.media_type, single.digest) == (arm.media_type, arm.digest)
        assert single.content["config"]["mediaType"].endswith("+json")
        index = await client.manifest(repo, "multi")
        assert (index.media_type, index.digest) == (index_type, index_digest)
        assert [m["digest"] for m in index.content["manifests"]] == [arm.digest, amd.digest]
        assert await client.resolve(repo, "multi") == index_digest
        chosen = await client.image_manifest(repo, "multi")
        assert chosen.digest == amd.digest  # linux/amd64 unless told otherwise
        arm_image = await client.image_manifest(
            repo, "multi", platform=Platform(os="linux", architecture="arm64"))
        assert arm_image.digest == arm.digest


# -- auth ----------------------------------------------------------------------------------

async def test_basic_auth_with_good_credentials_pushes_and_pulls(
        basic_registry: Any, clock: FakeClock) -> None:
    keychain = Keychain.static(basic_registry.address, USER, PASSWORD)
    async with client_for(basic_registry.address, clock, keychain=keychain) as client:
        digest = await client.push_artifact("private/app", "v1", TREE, metadata=META)
        assert await client.resolve("private/app", "v1") == digest
        assert await client.tags("private/app") == ["v1"]


async def test_basic_auth_with_a_wrong_password_is_unauthorized_and_never_echoed(
        basic_registry: Any, clock: FakeClock) -> None:
    keychain = Keychain.static(basic_registry.address, USER, "not-the-Pa55word")
    async with client_for(basic_registry.address, clock, keychain=keychain) as client:
        with pytest.raises(UnauthorizedError) as caught:
            await client.tags("private/app")
        assert "not-the-Pa55word" not in repr(client._auth.keychain)
    text = f"{caught.value} {caught.value!r} {caught.value.registry_message}"
    assert caught.value.code == "UNAUTHORIZED"
    assert "not-the-Pa55word" not in text and USER not in text


async def test_an_anonymous_client_is_refused_by_a_protected_registry(
        basic_registry: Any, clock: FakeClock) -> None:
    async with client_for(basic_registry.address, clock) as client:
        with pytest.raises(UnauthorizedError, match="requires credentials"):
            await client.resolve("private/app", "v1")


async def test_bearer_tokens_come_from_the_realm_and_are_reused_per_scope(
        token_registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    keychain = Keychain.static(token_registry.address, USER, PASSWORD)
    async with client_for(token_registry.address, clock, keychain=keychain) as client:
        digest = await client.push_artifact("team/app", "v1", TREE, metadata=META)
        for _ in range(3):
            manifest = await client.manifest("team/app", "v1")
            await client.resolve("team/app", "v1")
        layer = select_layer(manifest.content)
        await client.blob("team/app", layer.digest, tmp_path / "layer")
        assert manifest.digest == digest
    assert token_registry.token_server.requests == {
        "repository:team/app:pull": 1, "repository:team/app:pull,push": 1}


async def test_an_expired_token_is_fetched_again(
        token_registry: Any, clock: FakeClock) -> None:
    keychain = Keychain.static(token_registry.address, USER, PASSWORD)
    async with client_for(token_registry.address, clock, keychain=keychain) as client:
        await client.push_artifact("team/expiry", "v1", TREE, metadata=META)
        await client.resolve("team/expiry", "v1")
        clock.advance(60)
        await client.resolve("team/expiry", "v1")
        assert token_registry.token_server.requests["repository:team/expiry:pull"] == 1
        clock.advance(61)  # past expires_in=120 less the cache's margin
        await client.resolve("team/expiry", "v1")
    assert token_registry.token_server.requests["repository:team/expiry:pull"] == 2


async def test_a_token_server_refusing_the_password_makes_an_unauthorized_error(
        token_registry: Any, clock: FakeClock) -> None:
    keychain = Keychain.static(token_registry.address, USER, "wrong-Pa55word")
    async with client_for(token_registry.address, clock, keychain=keychain) as client:
        with pytest.raises(UnauthorizedError) as caught:
            await client.tags("team/app")
    message = str(caught.value)
    assert "token request to http://127.0.0.1:" in message and "/token failed with 401" in message
    assert "invalid username or password" in message
    assert "wrong-Pa55word" not in message and "scope" not in message


async def test_credentials_from_a_dockerconfigjson_secret_reach_a_token_registry(
        token_registry: Any, clock: FakeClock) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = {"auths": {f"https://{token_registry.address}/v1/": {"auth": auth}}}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": "regcred"},
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode())
                       .decode()}}
    keychain = Keychain.from_secret(secret)
    async with client_for(token_registry.address, clock, keychain=keychain) as client:
        digest = await client.push_artifact("team/secret", "v1", TREE, metadata=META)
        assert await client.resolve("team/secret", "v1") == digest


async def test_an_identity_token_is_exchanged_with_an_oauth2_refresh_grant(
        token_registry: Any, clock: FakeClock) -> None:
    config = {"auths": {token_registry.address: {"identitytoken": "refresh-0123"}}}
    keychain = Keychain.from_docker_config(json.dumps(config))
    async with client_for(token_registry.address, clock, keychain=keychain) as client:
        digest = await client.push_artifact("team/oauth", "v1", TREE, metadata=META)
        assert await client.resolve("team/oauth", "v1") == digest


async def test_https_with_the_registry_ca_works_and_without_it_is_refused(
        tls_registry: Any, clock: FakeClock) -> None:
    context = tls_context(ca_pem=tls_registry.ca_pem)
    async with client_for(tls_registry.address, clock, ssl_context=context) as client:
        assert str(client.base_url).startswith("https://")
        digest = await client.push_artifact("secure/app", "v1", TREE, metadata=META)
        assert await client.resolve("secure/app", "v1") == digest
    # loopback without a CA means plain HTTP (as go-containerregistry): the TLS port refuses
    async with client_for(tls_registry.address, clock) as client:
        with pytest.raises(ConnectionFailedError, match="HTTP request to an HTTPS server"):
            await client.resolve("secure/app", "v1")
    # HTTPS with only the system CAs: the certificate is not trusted
    async with client_for(tls_registry.address, clock,
                          ssl_context=tls_context()) as client:
        with pytest.raises(ConnectionFailedError, match=r"(?i)certificate"):
            await client.resolve("secure/app", "v1")


# -- helm ----------------------------------------------------------------------------------

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: hello\nversion: 0.3.1\nappVersion: \"1.0\"\n",
    "values.yaml": "greeting: hi\n",
    "templates/configmap.yaml": ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                 "  name: {{ .Release.Name }}\ndata:\n"
                                 "  greeting: {{ .Values.greeting | quote }}\n"),
}


def helm(*args: str, home: Path) -> str:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"),
           "HELM_REGISTRY_CONFIG": str(home / "registry.json"), "NO_PROXY": "*",
           "no_proxy": "*"}
    done = subprocess.run([tool("helm"), *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


async def test_a_chart_pushed_by_helm_is_listed_and_fetched_byte_for_byte(
        registry: Any, clock: FakeClock, tmp_path: Path) -> None:
    chart_dir = write_tree(tmp_path / "hello", CHART)
    helm("package", str(chart_dir), "-d", str(tmp_path / "out"), home=tmp_path / "helm")
    packaged = tmp_path / "out" / "hello-0.3.1.tgz"
    output = helm("push", str(packaged), f"oci://{registry.address}/charts", "--plain-http",
                  home=tmp_path / "helm")
    async with client_for(registry.address, clock) as client:
        assert await client.tags("charts/hello") == ["0.3.1"]
        digest = await client.resolve("charts/hello", "0.3.1")
        manifest = await client.manifest("charts/hello", "0.3.1")
        layer = select_layer(manifest.content, HELM_CHART_CONTENT_MEDIA_TYPE)
        await client.blob("charts/hello", layer.digest, tmp_path / "fetched.tgz",
                          max_size=1 << 20)
        config = manifest.content["config"]
        await client.blob("charts/hello", config["digest"], tmp_path / "config.json")
    assert f"Digest: {digest}" in output
    assert manifest.media_type == OCI_MANIFEST and config["mediaType"] == HELM_CONFIG_MEDIA_TYPE
    assert (tmp_path / "fetched.tgz").read_bytes() == packaged.read_bytes()
    assert json.loads((tmp_path / "config.json").read_text())["version"] == "0.3.1"
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == layer.digest.split(":")[1]


# -- references ----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "registry", "repository", "tag", "digest"), [
    ("oci://localhost:5000/podinfo/manifests:6.5.0", "localhost:5000", "podinfo/manifests",
     "6.5.0", ""),
    ("oci://127.0.0.1:34567/charts/hello", "127.0.0.1:34567", "charts/hello", "", ""),
    ("ghcr.io/stefanprodan/podinfo:latest@sha256:" + "a" * 64, "ghcr.io",
     "stefanprodan/podinfo", "latest", "sha256:" + "a" * 64),
    ("oci://registry.example.com/a/b/c@sha256:" + "0" * 64, "registry.example.com", "a/b/c",
     "", "sha256:" + "0" * 64),
    ("nginx:1.27", "index.docker.io", "library/nginx", "1.27", ""),
    ("docker.io/fluxcd/flux-cli", "index.docker.io", "fluxcd/flux-cli", "", ""),
    ("oci://[::1]:5000/x", "[::1]:5000", "x", "", ""),
])
def test_references_parse_like_go_containerregistry(url: str, registry: str, repository: str,
                                                    tag: str, digest: str) -> None:
    ref = Reference.parse(url)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag,
                                                                   digest)
    assert Reference.parse(ref.url) == ref


@pytest.mark.parametrize("url", [
    "http://ghcr.io/org/repo", "oci://ghcr.io/Org/Repo", "oci://ghcr.io/org/repo:bad:tag",
    "oci://ghcr.io/org/repo@sha256:abc", "oci://ghcr.io/org/repo@md5:" + "0" * 32,
    "oci://ghcr.io/", "oci://bad_host:5000/x",
])
def test_malformed_references_are_rejected(url: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(url)


def test_loopback_registries_use_plain_http_unless_given_tls_and_others_use_https() -> None:
    clock = FakeClock()
    assert str(RegistryClient(registry="localhost:5000", clock=clock).base_url) == \
        "http://localhost:5000"
    assert str(RegistryClient(registry="127.0.0.1:5000", clock=clock,
                              ssl_context=tls_context()).base_url) == "https://127.0.0.1:5000"
    assert str(RegistryClient(registry="ghcr.io", clock=clock).base_url) == "https://ghcr.io"
    assert str(RegistryClient(registry="registry.internal:5000", clock=clock,
                              insecure=True).base_url) == "http://registry.internal:5000"
    assert str(RegistryClient(registry="docker.io", clock=clock).base_url) == \
        "https://registry-1.docker.io"
