"""HelmRelease values composed from ConfigMaps, Secrets and inline values as Flux composes
them (against the cluster fixture), and the config digest Flux writes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fluxd.api.helm import HelmReleaseSpec
from fluxd.clock import SystemClock
from fluxd.controllers.helm.values import (
    MAX_VALUES_BYTES,
    ValuesError,
    compose,
    config_digest,
    read_values,
)
from fluxd.kube import KubeClient
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(), kubeconfig=str(cluster.kubeconfig),
                                        field_manager="fluxd-tests") as connected:
        yield connected


def config_map(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace}, "data": data}))


def secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))


def spec(values_from: list[dict[str, Any]], values: Any = None) -> HelmReleaseSpec:
    return HelmReleaseSpec.model_validate({
        "interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "chart"},
        "valuesFrom": values_from, "values": values})


async def test_references_merge_in_order_and_inline_values_merge_last(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    config_map(cluster, namespace, "values",
               {"values.yaml": "flat: value\nnested:\n  configuration: value\nkeep: 1\n"})
    secret(cluster, namespace, "values", {"values.yaml": "flat:\n  nested: value\nnested: value\n"})
    composed = await compose(client, namespace, spec(
        [{"kind": "ConfigMap", "name": "values"}, {"kind": "Secret", "name": "values"}],
        {"other": "values", "keep": 2}))
    assert composed == {"flat": {"nested": "value"}, "nested": "value", "other": "values",
                        "keep": 2}


async def test_a_target_path_wins_over_later_references_and_inline_values(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    # upstream's "target path precedence over all": the path's value is written into the
    # inline values' own list, so the final merge keeps it
    config_map(cluster, namespace, "values", {"values.yaml": (
        "flat: value\nnested:\n  configuration: [one, two, three]\n")})
    secret(cluster, namespace, "values", {"key": "value"})
    composed = await compose(client, namespace, spec(
        [{"kind": "Secret", "name": "values", "valuesKey": "key",
          "targetPath": "nested.configuration[0]"},
         {"kind": "ConfigMap", "name": "values"}],
        {"nested": {"configuration": ["list", "item", "option"]}}))
    assert composed == {"flat": "value",
                        "nested": {"configuration": ["value", "item", "option"]}}


async def test_a_target_path_at_the_root_loses_to_an_inline_value_as_upstream(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    secret(cluster, namespace, "single", {"tag": "v2"})
    composed = await compose(client, namespace, spec(
        [{"kind": "Secret", "name": "single", "valuesKey": "tag", "targetPath": "tag"},
         {"kind": "Secret", "name": "single", "valuesKey": "tag", "targetPath": "image.tag"}],
        {"tag": "v1", "image": {"repository": "app"}}))
    assert composed == {"tag": "v1", "image": {"repository": "app", "tag": "v2"}}


async def test_target_path_values_are_typed_unless_quoted_or_literal(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    config_map(cluster, namespace, "single", {
        "bool": "true", "quoted": '"true"', "list": "{a,b}", "toml": "[x]\nk = 1, 2\n"})
    composed = await compose(client, namespace, spec([
        {"kind": "ConfigMap", "name": "single", "valuesKey": "bool", "targetPath": "a.bool"},
        {"kind": "ConfigMap", "name": "single", "valuesKey": "quoted",
         "targetPath": "a.quoted"},
        {"kind": "ConfigMap", "name": "single", "valuesKey": "list", "targetPath": "a.list"},
        {"kind": "ConfigMap", "name": "single", "valuesKey": "toml",
         "targetPath": r"files.config\.toml", "literal": True},
    ]))
    assert composed == {"a": {"bool": True, "quoted": "true", "list": ["a", "b"]},
                        "files": {"config.toml": "[x]\nk = 1, 2\n"}}


async def test_optional_references_tolerate_a_missing_object_or_key(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    config_map(cluster, namespace, "present", {"other": "x: 1"})
    composed = await compose(client, namespace, spec([
        {"kind": "Secret", "name": "absent", "optional": True},
        {"kind": "ConfigMap", "name": "present", "optional": True},
    ], {"inline": True}))
    assert composed == {"inline": True}


async def test_a_missing_object_or_key_fails_with_upstreams_message(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    config_map(cluster, namespace, "present", {"other": "x: 1"})
    with pytest.raises(ValuesError) as missing:
        await compose(client, namespace, spec([{"kind": "Secret", "name": "absent"}]))
    assert str(missing.value) == (
        f"could not resolve Secret chart values reference '{namespace}/absent' with key "
        "'values.yaml': secrets \"absent\" not found")
    with pytest.raises(ValuesError) as no_key:
        await compose(client, namespace, spec([{"kind": "ConfigMap", "name": "present"}]))
    assert str(no_key.value) == (
        f"could not resolve ConfigMap chart values reference '{namespace}/present' with key "
        "'values.yaml': key not found")


async def test_invalid_yaml_and_bad_target_values_fail_naming_the_reference(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    config_map(cluster, namespace, "bad", {"values.yaml": "a: b: c\n", "scalar": "\ninvalid",
                                           "single": "{a,b"})
    with pytest.raises(ValuesError, match=r"'values.yaml': error converting YAML to JSON: "
                                          r"yaml: line 1: mapping values"):
        await compose(client, namespace, spec([{"kind": "ConfigMap", "name": "bad"}]))
    with pytest.raises(ValuesError, match="cannot unmarshal string into Go value"):
        await compose(client, namespace, spec(
            [{"kind": "ConfigMap", "name": "bad", "valuesKey": "scalar"}]))
    with pytest.raises(ValuesError, match="'single': list must terminate with '}'"):
        await compose(client, namespace, spec(
            [{"kind": "ConfigMap", "name": "bad", "valuesKey": "single", "targetPath": "x"}]))


def test_values_are_read_with_go_yaml_v2_scalars_and_go_numbers() -> None:
    # go-yaml v2 reads the key y as a boolean, which the JSON round trip makes "true"
    assert read_values(b"a: yes\nb: 017\nc: 2021-01-02\nd: 3.0\ne: 12345678901234567890\n"
                       b"base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2\n1: int key\n") == {
        "a": True, "b": 15, "c": "2021-01-02", "d": 3, "e": 12345678901234567890.0,
        "base": {"x": 1}, "merged": {"x": 1, "true": 2}, "1": "int key"}
    assert read_values(b"") == {} and read_values(b"~\n") == {}


def test_alias_bombs_oversized_data_and_infinities_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
        for i in range(8))
    with pytest.raises(ValuesError, match="excessive aliasing"):
        read_values(bomb.encode())
    with pytest.raises(ValuesError, match="exceed the limit"):
        read_values(b"a: " + b"x" * MAX_VALUES_BYTES)
    with pytest.raises(ValuesError, match=r"unsupported value: \+Inf"):
        read_values(b"a: .inf\n")


# Digests computed by Flux's own code path: fluxcd/pkg chartutil.DigestValues (go-yaml
# v2.4.0 encoder over sigs.k8s.io/yaml's JSONObjectToYAMLObject, keys sorted, sha256)
# run in Go over the same values.
GO_DIGESTS = [
    ({}, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ({"a": 1, "b": "x"},
     "sha256:b704028b53a27fe0fcac73875d1f7534b4dd9aee6e0cfdd5292d8d00bbedd8ae"),
    ({"f": 1.5, "g": 1e21, "h": 1e-7, "i": 1234567.5, "j": -0.0, "k": 123456789012, "l": 0.1,
      "m": 123456.5, "n": 1e20, "o": 2.5e-5, "p": 0.0001, "q": 1.2345678901234567e-300},
     "sha256:264f5054c82ef587362e5ac39fff1f4a26bc43ec88207b0546008ff5e423f1c3"),
    ({"multi": "line1\nline2\n", "multi2": "a\n  b", "multi3": "trailing \nspace",
      "multi4": "\nlead", "multi5": "x\n\n\n", "multi6": " lead\nx"},
     "sha256:9071ddc402e79d7539fb37238d7f6b7994a2384f55deca7b158bebe72e3b3de2"),
    ({"long": "word " * 40, "longq": "yes " * 30 + ": x", "longnospace": "x" * 200},
     "sha256:390e3269d9ca43861d0c817d76f8e129d1af4cf2f195faf8ec3d8f2e047fd6ac"),
    ({"key with spaces": 1, "yes": 2, "1": 3, "multi\nkey": 4, "k" * 130: 5, "": 6, "-": 7},
     "sha256:b3163c40ede294d36fde80febd6031ef3248a0c3592965ddd5ce2b746020a3c2"),
    ({"B": 1, "a": 2, "_": 3, "Z": 4, "é": 5, "~": 6},
     "sha256:7d3986eb817dad379047f30b548db675d5060aa7bee38d43c112087beb6b07d8"),
]
QUOTING = {"s": [
    "yes", "no", "on", "off", "y", "n", "true", "null", "~", "", "1", "0x1F", "017", "1_000",
    "1.5", ".5", ".inf", "1e3", "2021-01-02", "2021-02-30", "2021-1-2T3:04:05Z",
    "2021-01-02 10:00:00", "1:20", "<<", "-", "- a", "a: b", "#x", "x #y", " lead", "trail ",
    "@at", "`bt", "!bang", "&amp", "*star", "%pct", "'sq", '"dq', "{b", "[b", "a,b", "?q",
    "? q", "|p", ">g", "ünïcödé", "tab\there", "nul\x00", "bell\x07", "\u2028ls",
    "emoji 😀", "0o17", "+1", "-1.5e+3", "99999999999999999999", "0xFFFFFFFFFFFFFFFFFF",
    "9223372036854775808", "18446744073709551616", "-9223372036854775809"]}


@pytest.mark.parametrize(("values", "digest"), GO_DIGESTS)
def test_the_config_digest_matches_fluxs_bytes(values: dict[str, Any], digest: str) -> None:
    assert config_digest(values) == digest


def test_strings_are_quoted_where_go_yaml_quotes_them() -> None:
    assert config_digest(QUOTING) == (
        "sha256:935f1bdc971b6f9cc20211a1321f2158d33f2a2c07388033de0065eea114a38e")
