"""fluxd.controllers.source.helmindex: Helm repository indexes checked as Flux loads them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fluxd.controllers.source.helmindex import InvalidIndex, load_index
from tests.conftest import tool
from tests.support.helmrepo import HelmCLI, large_index, write_chart

INDEX = b"""\
apiVersion: v1
entries:
  podinfo:
  - name: podinfo
    version: 6.0.0
    urls: [https://charts.example.com/podinfo-6.0.0.tgz]
  - name: podinfo
    version: 6.10.0
  - name: podinfo
    version: 6.2.0-rc.1
  - name: podinfo
    version: 6.2.0
  redis:
  - name: redis
    version: 1.0.0
generated: "2024-01-01T00:00:00Z"
"""


def versions(data: bytes, chart: str) -> list[str]:
    return [v["version"] for v in load_index(data, keep={chart}).entries[chart]]


def test_a_valid_index_is_counted_and_kept_charts_come_back_newest_first() -> None:
    index = load_index(INDEX, keep={"podinfo"})
    assert (index.api_version, index.charts, index.versions, index.skipped) == ("v1", 2, 5, 0)
    assert list(index.entries) == ["podinfo"]
    assert [v["version"] for v in index.entries["podinfo"]] == [
        "6.10.0", "6.2.0", "6.2.0-rc.1", "6.0.0"]
    assert index.entries["podinfo"][-1]["urls"] == ["https://charts.example.com/podinfo-6.0.0.tgz"]
    assert index.entries["podinfo"][0]["apiVersion"] == "v1"  # Flux's default


def test_chart_versions_failing_helm_checks_are_skipped_not_fatal() -> None:
    data = b"""\
apiVersion: v1
entries:
  app:
  - {name: app, version: 1.0.0}
  - {name: app, version: not-semver}
  - {name: app}
  - {version: 2.0.0}
  - {name: sub/app, version: 3.0.0}
  - {name: app, version: 4.0.0, type: plugin}
  - {name: app, version: 5.0.0, dependencies: [{name: db, alias: "bad alias!"}]}
  - {name: app, version: 6.0.0, maintainers: [null]}
  - null
"""
    index = load_index(data, keep={"app"})
    assert (index.versions, index.skipped) == (1, 7)
    assert [v["version"] for v in index.entries["app"]] == ["1.0.0"]


def test_scalars_read_into_strings_keep_their_text() -> None:
    data = b"apiVersion: v1\nentries:\n  app:\n  - {name: app, version: 1.10}\n"
    assert versions(data, "app") == ["1.10"]


@pytest.mark.parametrize(("data", "error"), [
    (b"", "empty index.yaml file"),
    (b"# nothing but a comment\n", "no API version specified"),
    (b"entries: {}\n", "no API version specified"),
    (b"apiVersion: ''\n", "no API version specified"),
    (b"- apiVersion: v1\n", "the index is not a mapping"),
    (b"apiVersion: v1\nentries: [a, b]\n", "entries is not a mapping"),
    (b"apiVersion: v1\nentries:\n  app: {name: app}\n", "entries.app is not a list"),
    (b"apiVersion: v1\nentries:\n  app: [just-a-string]\n", "entries.app[0] is not a chart"),
    (b"apiVersion: v1\napiVersion: v2\n", 'mapping key "apiVersion" already defined'),
    (b"apiVersion: v1\nentries:\n  a: []\n  a: []\n", 'mapping key "a" already defined'),
    (b"apiVersion: v1\nentries:\n  app: *nowhere\n", "unknown anchor"),
    (b"apiVersion: v1\nentries:\n  app: [{name: {a: b}}]\n",
     "entries.app[0].name: cannot read dict as a string"),
    (b"apiVersion: [v1]\n", "apiVersion: cannot read list as a string"),
])
def test_indexes_flux_refuses_are_refused_with_helms_words(data: bytes, error: str) -> None:
    with pytest.raises(InvalidIndex, match=re.escape(error)):
        load_index(data)


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(InvalidIndex) as caught:
        load_index(b"apiVersion: v1\nentries:\n  app: [\n")
    assert str(caught.value).startswith("error converting YAML to JSON: yaml: line 4: ")
    assert "\n" not in str(caught.value)


def test_anchors_aliases_and_merge_keys_work_as_in_yaml() -> None:
    data = b"""\
apiVersion: v1
entries:
  app:
  - &base {name: app, version: 1.0.0, description: shared}
  - <<: *base
    version: 2.0.0
  copy: &versions
  - {name: copy, version: 0.1.0}
  again: *versions
"""
    index = load_index(data, keep={"app", "again"})
    assert [(v["version"], v["description"]) for v in index.entries["app"]] == [
        ("2.0.0", "shared"), ("1.0.0", "shared")]
    assert [v["version"] for v in index.entries["again"]] == ["0.1.0"]
    assert (index.charts, index.versions) == (3, 4)


def test_a_json_index_loads_like_a_yaml_one() -> None:
    data = json.dumps({"apiVersion": "v1", "entries": {
        "app": [{"name": "app", "version": "1.0.0"}, {"name": "app", "version": "1.1.0"}]}})
    assert versions(data.encode(), "app") == ["1.1.0", "1.0.0"]


def test_only_the_first_document_counts() -> None:
    data = b"apiVersion: v1\nentries: {}\n---\nthis: [is not even valid\n"
    assert load_index(data).api_version == "v1"


def test_an_index_written_by_helm_repo_index_loads(tmp_path: Path) -> None:
    helm = HelmCLI(tool("helm"), tmp_path / "home")
    repo = tmp_path / "repo"
    for version in ("0.1.0", "0.2.0", "0.10.0"):
        helm.package(write_chart(tmp_path / "src", "demo", version), repo)
    index = load_index(helm.index(repo, "https://charts.example.com").read_bytes(),
                       keep={"demo"})
    assert [v["version"] for v in index.entries["demo"]] == ["0.10.0", "0.2.0", "0.1.0"]
    assert index.entries["demo"][0]["urls"] == ["https://charts.example.com/demo-0.10.0.tgz"]


def test_a_large_index_is_counted_without_keeping_it() -> None:
    data = large_index(2 * 1024 * 1024)
    index = load_index(data)
    assert index.versions == index.charts * 50 and index.entries == {}
