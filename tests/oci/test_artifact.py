"""Flux's artifact format: layers, manifests, metadata and what source-controller reads."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from fluxd.artifacts.ignore import default_matcher, read_patterns
from fluxd.oci.artifact import (
    CREATED_ANNOTATION,
    FLUX_CONFIG_MEDIA_TYPE,
    OCI_MANIFEST,
    REVISION_ANNOTATION,
    SOURCE_ANNOTATION,
    ArtifactError,
    Descriptor,
    LayerType,
    Metadata,
    Platform,
    build_layer,
    compute_digest,
    config_blob,
    digest_from_revision,
    image_manifest,
    parse_digest,
    revision,
    select_layer,
    select_platform,
    static_media_type,
)


def make_tree(root: Path) -> Path:
    (root / "apps" / "web").mkdir(parents=True)
    (root / "apps" / "web" / "deploy.yaml").write_text("kind: Deployment\n")
    (root / "apps" / "notes.md").write_text("notes\n")
    (root / "top.yaml").write_text("kind: Namespace\n")
    (root / "link.yaml").symlink_to(root / "top.yaml")
    return root


def names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.getnames()


def test_a_tree_becomes_the_same_layer_every_time_without_symlinks(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    first = build_layer(source, tmp_path / "one.tgz")
    (source / "top.yaml").touch()  # times do not count
    second = build_layer(source, tmp_path / "two.tgz")
    assert first.digest == second.digest and first.size == second.size
    blob = (tmp_path / "one.tgz").read_bytes()
    assert first.digest == compute_digest(blob)
    assert first.diff_id == compute_digest(gzip.decompress(blob))
    assert names(blob) == ["apps", "apps/notes.md", "apps/web", "apps/web/deploy.yaml",
                           "top.yaml"]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        member = tar.getmember("top.yaml")
    assert (member.uid, member.gid, member.mtime, member.uname) == (0, 0, 0, "")


def test_ignore_rules_leave_paths_out_of_the_layer(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    ignore = default_matcher(read_patterns("*.md\n"))
    built = build_layer(source, tmp_path / "l.tgz", ignore=ignore)
    assert "apps/notes.md" not in names(built.path.read_bytes())


def test_a_mapping_and_a_single_file_make_tarball_layers(tmp_path: Path) -> None:
    from_map = build_layer({"b/c.txt": "c", "a.txt": b"a"}, tmp_path / "m.tgz")
    assert names(from_map.path.read_bytes()) == ["a.txt", "b", "b/c.txt"]
    single = tmp_path / "only.yaml"
    single.write_text("x: 1\n")
    assert names(build_layer(single, tmp_path / "s.tgz").path.read_bytes()) == ["only.yaml"]
    with pytest.raises(ArtifactError, match="invalid file name"):
        build_layer({"../escape": "x"}, tmp_path / "bad.tgz")


def test_a_static_layer_is_the_file_itself(tmp_path: Path) -> None:
    source = tmp_path / "chart.tgz"
    source.write_bytes(b"\x1f\x8bnot really")
    built = build_layer(source, tmp_path / "out", layer_type=LayerType.STATIC)
    assert built.path.read_bytes() == source.read_bytes()
    assert built.digest == built.diff_id == compute_digest(source.read_bytes())
    assert static_media_type() == "application/vnd.cncf.flux.content.v1"
    assert static_media_type("tgz") == "application/vnd.cncf.flux.content.v1.tgz"


def test_manifests_and_configs_are_compact_json_in_go_containerregistry_order() -> None:
    config = Descriptor(media_type=FLUX_CONFIG_MEDIA_TYPE, digest="sha256:" + "1" * 64, size=2)
    layer = Descriptor(media_type="x", digest="sha256:" + "2" * 64, size=3)
    body = image_manifest(config, [layer], annotations={"k": "v"})
    assert body.startswith(b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode())
    assert list(json.loads(body)) == ["schemaVersion", "mediaType", "config", "layers",
                                      "annotations"]
    assert json.loads(body)["layers"][0] == {"mediaType": "x", "size": 3,
                                             "digest": "sha256:" + "2" * 64}
    assert json.loads(config_blob(["sha256:" + "3" * 64]))["rootfs"] == {
        "type": "layers", "diff_ids": ["sha256:" + "3" * 64]}


def test_metadata_always_writes_the_three_annotations_and_reads_them_back() -> None:
    meta = Metadata(created="2026-01-01T00:00:00Z", source="https://x/y", revision="v1@sha1:a",
                    annotations={"team": "web"})
    annotations = meta.to_annotations()
    assert annotations == {CREATED_ANNOTATION: "2026-01-01T00:00:00Z",
                           SOURCE_ANNOTATION: "https://x/y", REVISION_ANNOTATION: "v1@sha1:a",
                           "team": "web"}
    back = Metadata.from_annotations(annotations)
    assert (back.created, back.source, back.revision) == (meta.created, meta.source,
                                                          meta.revision)
    assert Metadata().to_annotations() == {CREATED_ANNOTATION: "", SOURCE_ANNOTATION: "",
                                           REVISION_ANNOTATION: ""}


def test_the_layer_is_chosen_by_media_type_or_else_the_first() -> None:
    manifest = {"layers": [
        {"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip", "size": 1,
         "digest": "sha256:" + "a" * 64},
        {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "size": 2,
         "digest": "sha256:" + "b" * 64}]}
    assert select_layer(manifest).size == 1
    assert select_layer(manifest, "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
                        ).size == 2
    with pytest.raises(ArtifactError, match="failed to find layer with media type 'x'"):
        select_layer(manifest, "x")
    with pytest.raises(ArtifactError, match="no layers found in artifact"):
        select_layer({"layers": []})


def test_an_index_entry_is_chosen_by_platform() -> None:
    def entry(arch: str, variant: str = "") -> dict[str, object]:
        platform = {"os": "linux", "architecture": arch}
        if variant:
            platform["variant"] = variant
        return {"mediaType": OCI_MANIFEST, "size": 1, "digest": "sha256:" + "c" * 64,
                "platform": platform}
    index = {"manifests": [entry("arm", "v6"), entry("arm", "v7"), entry("amd64")]}
    assert select_platform(index).platform == Platform(architecture="amd64")
    chosen = select_platform(index, Platform(architecture="arm", variant="v7"))
    assert chosen.platform == Platform(architecture="arm", variant="v7")
    with pytest.raises(ArtifactError, match="no manifest for platform linux/s390x"):
        select_platform(index, Platform(architecture="s390x"))


def test_revisions_join_tag_and_digest_and_split_back() -> None:
    digest = "sha256:" + "d" * 64
    assert revision("6.5.0", digest) == f"6.5.0@{digest}"
    assert revision(None, digest) == digest
    assert digest_from_revision(f"6.5.0@{digest}") == digest
    assert digest_from_revision(digest) == digest
    assert parse_digest(digest) == ("sha256", "d" * 64)
    for bad in ("sha256:" + "D" * 64, "sha256:abc", "md5:" + "0" * 32, "nodigest"):
        with pytest.raises(ArtifactError):
            parse_digest(bad)
