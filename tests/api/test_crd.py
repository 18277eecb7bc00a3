"""fluxd.api.crd and fluxd.api.meta: CRDs generated from the models are structural, carry
Flux's names and columns, are served by the dev API server with their defaults and
validation, and the committed files in deploy/crds match the models."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pytest
import yaml
from pydantic import Field

from fluxd.api import crd, meta
from fluxd.runtime import conditions
from tests.conftest import ServerThread, start_dev_cluster

REPO = Path(__file__).resolve().parents[2]
GROUP = "example.fluxd.test"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


# --------------------------------------------------------------------------- the example kind


class WidgetSpec(meta.FluxModel):
    """WidgetSpec is the desired state of a widget."""

    url: Annotated[str, Field(pattern=r"^(http|https)://.*$")]
    """URL the widget is fetched from."""
    interval: meta.Duration
    """Interval at which the widget is reconciled."""
    timeout: Annotated[str, Field(pattern=meta.TIMEOUT_PATTERN)] = "60s"
    """Timeout of one fetch."""
    mode: Literal["fast", "slow"] = "fast"
    """Mode of operation."""
    replicas: Annotated[int, Field(ge=0, le=10)] = 1
    """Replicas to run."""
    suspend: bool | None = None
    """Suspend stops the reconciliation."""
    port: meta.IntOrString | None = None
    """Port, by number or name."""
    values: dict[str, Any] | None = None
    """Values of any shape."""
    secret_ref: meta.LocalObjectReference | None = None
    """SecretRef names the Secret with the credentials."""
    depends_on: list[meta.DependencyReference] | None = None
    """DependsOn lists the widgets that must be ready first."""
    kube_config: meta.KubeConfigReference | None = None
    """KubeConfig of a remote cluster."""


class WidgetStatus(meta.ReconcileRequestStatus):
    """WidgetStatus is the observed state of a widget."""

    observed_generation: meta.Int64 | None = None
    """ObservedGeneration is the last generation reconciled."""
    conditions: meta.ConditionList | None = None
    """Conditions of the widget."""
    artifact: meta.Artifact | None = None
    """Artifact of the last successful reconciliation."""
    history: list[meta.HistorySnapshot] | None = None
    """History of the last reconciliations."""


WIDGET = crd.Kind(
    group=GROUP, version="v1", kind="Widget", plural="widgets", spec=WidgetSpec,
    status=WidgetStatus, short_names=("wd",), categories=("all", "fluxcd"),
    printer_columns=(crd.PrinterColumn("URL", ".spec.url"), *crd.FLUX_COLUMNS))


def widget_crd() -> dict[str, Any]:
    return crd.crd([WIDGET])


def widget_schema() -> dict[str, Any]:
    schema: dict[str, Any] = widget_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from nodes(prop, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")


# --------------------------------------------------------------------------- the generated CRD


def test_generated_schema_has_no_references() -> None:
    text = json.dumps(widget_crd())
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text
    assert "title" not in {key for _, node in nodes(widget_schema()) for key in node}


def test_every_schema_node_has_a_type_unless_free_form_or_int_or_string() -> None:
    for path, node in nodes(widget_schema()):
        assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields") or \
            node.get("x-kubernetes-int-or-string"), path


def test_every_object_declares_its_properties_or_keeps_unknown_fields() -> None:
    for path, node in nodes(widget_schema()):
        if node.get("type") == "object" and path != ".metadata":
            assert ("properties" in node) != ("additionalProperties" in node) or \
                node.get("x-kubernetes-preserve-unknown-fields"), path


def test_generated_schema_passes_the_structural_check() -> None:
    assert crd.structural_problems(widget_schema()) == []


def test_structural_check_finds_what_the_api_server_refuses() -> None:
    problems = crd.structural_problems({"type": "object", "properties": {
        "a": {"$ref": "#/x"}, "b": {"type": "object"}, "c": {"type": "array"},
        "d": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}})
    assert problems == [".a: $ref is not allowed", ".a: no type",
                        ".b: object without properties", ".c: array without items",
                        ".d: uniqueItems must not be true"]


def test_crd_carries_flux_names_scope_and_the_status_subresource() -> None:
    doc = widget_crd()
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == f"widgets.{GROUP}"
    assert doc["metadata"]["annotations"] == {"kustomize.toolkit.fluxcd.io/substitute":
                                              "disabled"}
    assert doc["spec"]["names"] == {"kind": "Widget", "listKind": "WidgetList",
                                    "plural": "widgets", "singular": "widget",
                                    "shortNames": ["wd"], "categories": ["all", "fluxcd"]}
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_end_with_flux_age_ready_and_status() -> None:
    columns = widget_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns == [
        {"jsonPath": ".spec.url", "name": "URL", "type": "string"},
        {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        {"jsonPath": '.status.conditions[?(@.type=="Ready")].status', "name": "Ready",
         "type": "string"},
        {"jsonPath": '.status.conditions[?(@.type=="Ready")].message', "name": "Status",
         "type": "string"},
    ]


def test_field_docstrings_become_descriptions() -> None:
    spec = widget_schema()["properties"]["spec"]
    assert spec["description"] == "WidgetSpec is the desired state of a widget."
    assert spec["properties"]["secretRef"]["description"] == (
        "SecretRef names the Secret with the credentials.")
    assert spec["properties"]["secretRef"]["properties"]["name"]["description"] == (
        "Name of the referent.")


def test_multi_line_docstrings_become_one_line_per_paragraph() -> None:
    ready_expr = widget_schema()["properties"]["spec"]["properties"]["dependsOn"]["items"][
        "properties"]["readyExpr"]["description"]
    assert "\n" not in ready_expr and ready_expr.startswith("ReadyExpr is a CEL expression")


def test_json_names_required_fields_and_defaults_follow_the_model() -> None:
    spec = widget_schema()["properties"]["spec"]
    assert spec["required"] == ["interval", "url"]
    props = spec["properties"]
    assert set(props) == {"url", "interval", "timeout", "mode", "replicas", "suspend", "port",
                          "values", "secretRef", "dependsOn", "kubeConfig"}
    assert props["timeout"] == {"default": "60s", "description": "Timeout of one fetch.",
                                "pattern": meta.TIMEOUT_PATTERN, "type": "string"}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
    assert (props["replicas"]["minimum"], props["replicas"]["maximum"]) == (0, 10)
    assert props["suspend"] == {"description": "Suspend stops the reconciliation.",
                                "type": "boolean"}


def test_free_form_values_keep_unknown_fields_and_port_is_int_or_string() -> None:
    props = widget_schema()["properties"]["spec"]["properties"]
    assert props["values"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["values"]["type"] == "object"
    assert props["port"] == {"description": "Port, by number or name.",
                             "x-kubernetes-int-or-string": True}


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conds = widget_schema()["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    assert conds["items"]["required"] == ["lastTransitionTime", "message", "reason", "status",
                                          "type"]
    assert conds["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_status_defaults_to_observed_generation_minus_one() -> None:
    assert widget_schema()["properties"]["status"]["default"] == {"observedGeneration": -1}


def test_kube_config_carries_its_exactly_one_rule() -> None:
    kube = widget_schema()["properties"]["spec"]["properties"]["kubeConfig"]
    rules = [v["rule"] for v in kube["x-kubernetes-validations"]]
    assert rules == ["has(self.configMapRef) || has(self.secretRef)",
                     "!has(self.configMapRef) || !has(self.secretRef)"]


def test_a_recursive_model_is_refused() -> None:
    class Node(meta.FluxModel):
        children: list[Node] | None = None

    with pytest.raises(crd.CRDError, match="recursive"):
        crd.structural(Node)


def test_a_union_of_models_is_refused() -> None:
    class Either(meta.FluxModel):
        ref: meta.LocalObjectReference | meta.SecretKeyReference

    with pytest.raises(crd.CRDError, match="unions"):
        crd.structural(Either)


def test_versions_are_ordered_ga_first_and_need_one_storage_version() -> None:
    beta = crd.Kind(group=GROUP, version="v1beta2", kind="Widget", plural="widgets",
                    spec=WidgetSpec, status=WidgetStatus, short_names=("wd",),
                    categories=("all", "fluxcd"), storage=False)
    doc = crd.crd([beta, WIDGET])
    assert [v["name"] for v in doc["spec"]["versions"]] == ["v1", "v1beta2"]
    with pytest.raises(crd.CRDError, match="storage"):
        crd.crd([WIDGET, crd.Kind(group=GROUP, version="v2", kind="Widget", plural="widgets",
                                  spec=WidgetSpec, short_names=("wd",),
                                  categories=("all", "fluxcd"))])


def test_versions_must_agree_on_names() -> None:
    other = crd.Kind(group=GROUP, version="v2", kind="Widget", plural="widgets",
                     spec=WidgetSpec, storage=False)
    with pytest.raises(crd.CRDError, match="disagree"):
        crd.crd([WIDGET, other])


def test_generated_file_is_named_group_underscore_plural_and_parses_back() -> None:
    files = crd.generate([WIDGET])
    assert list(files) == [f"{GROUP}_widgets.yaml"]
    text = files[f"{GROUP}_widgets.yaml"]
    assert text.startswith(crd.HEADER)
    assert yaml.safe_load(text) == widget_crd()


# --------------------------------------------------------------------------- committed files


def test_committed_crds_match_the_models() -> None:
    problems = crd.diff_against(REPO / "deploy" / "crds")
    assert problems == [], (
        "deploy/crds is out of date; regenerate with "
        "`python -m fluxd.api.crd --out deploy/crds`:\n" + "\n".join(problems))


def test_crd_directory_explains_how_its_files_are_generated() -> None:
    readme = (REPO / "deploy" / "crds" / "README.md").read_text()
    assert "python -m fluxd.api.crd --out deploy/crds" in readme


def test_diff_against_reports_missing_changed_and_unknown_files(tmp_path: Path) -> None:
    assert crd.diff_against(tmp_path, [WIDGET]) == [f"{GROUP}_widgets.yaml: missing"]
    crd.write(tmp_path, [WIDGET])
    assert crd.diff_against(tmp_path, [WIDGET]) == []
    path = tmp_path / f"{GROUP}_widgets.yaml"
    path.write_text(path.read_text().replace("60s", "90s"))
    (tmp_path / "stray.yaml").write_text("kind: Nothing\n")
    assert crd.diff_against(tmp_path, [WIDGET]) == [
        f"{GROUP}_widgets.yaml: differs from the models",
        "stray.yaml: no declared kind generates it"]


def test_write_replaces_stale_generated_files_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hand written\n")
    (tmp_path / "gone_things.yaml").write_text(crd.HEADER + "kind: Old\n")
    (tmp_path / "mine.yaml").write_text("kind: Mine\n")
    written = crd.write(tmp_path, [WIDGET])
    assert [p.name for p in written] == [f"{GROUP}_widgets.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md", f"{GROUP}_widgets.yaml", "mine.yaml"]


def test_command_writes_the_declared_kinds_and_checks_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds"
    assert crd.main(["--out", str(out)]) == 0
    assert crd.main(["--out", str(out), "--check"]) == 0
    (out / "stray.yaml").write_text("kind: Nothing\n")
    assert crd.main(["--out", str(out), "--check"]) == 1
    assert "stray.yaml" in capsys.readouterr().out


# --------------------------------------------------------------------------- shared models


def test_models_speak_flux_json_names_and_rfc3339_seconds() -> None:
    cond = meta.Condition.model_validate({
        "type": "Ready", "status": "True", "observedGeneration": 2,
        "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "Succeeded", "message": ""})
    assert cond.observed_generation == 2
    assert cond.to_json()["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    ref = meta.NamespacedObjectKindReference(kind="Deployment", name="app", api_version="apps/v1")
    assert ref.to_json() == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}


def test_conditions_written_by_the_runtime_validate_as_models() -> None:
    written = conditions.mark_true([], "Ready", "Succeeded", "ok", generation=1, now=T0)
    assert meta.Condition.model_validate(written[0]).to_json() == written[0]


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(pydantic.ValidationError):
        meta.Condition.model_validate({"type": "Ready", "status": "True", "reason": "not ok",
                                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})


def test_dependency_reference_reads_the_short_form() -> None:
    parse = meta.DependencyReference.parse
    assert parse("infra").to_json() == {"name": "infra"}
    assert parse("flux-system/infra").to_json() == {"name": "infra", "namespace": "flux-system"}
    assert parse("ns/app@dep.status.ready == true").to_json() == {
        "name": "app", "namespace": "ns", "readyExpr": "dep.status.ready == true"}


def test_kube_config_needs_exactly_one_of_config_map_or_secret() -> None:
    with pytest.raises(pydantic.ValidationError):
        meta.KubeConfigReference()
    with pytest.raises(pydantic.ValidationError):
        meta.KubeConfigReference.model_validate(
            {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}})
    ref = meta.KubeConfigReference.model_validate({"secretRef": {"name": "kc"}})
    assert ref.secret_key == "value"


def test_values_reference_defaults_its_key_and_checks_its_target_path() -> None:
    ref = meta.ValuesReference(kind="ConfigMap", name="values")
    assert ref.key == "values.yaml" and ref.to_json() == {"kind": "ConfigMap", "name": "values"}
    assert meta.ValuesReference(kind="Secret", name="s", target_path="a.b[0]").target_path
    with pytest.raises(pydantic.ValidationError):
        meta.ValuesReference(kind="Secret", name="s", target_path="a b")
    with pytest.raises(pydantic.ValidationError):
        meta.ValuesReference.model_validate({"kind": "Pod", "name": "s"})


def test_artifact_digest_must_name_its_algorithm() -> None:
    base = {"path": "p", "url": "http://x/p", "revision": "main@sha1:1",
            "lastUpdateTime": "2026-01-01T00:00:00Z"}
    assert meta.Artifact.model_validate({**base, "digest": "sha256:abc"}).digest == "sha256:abc"
    with pytest.raises(pydantic.ValidationError):
        meta.Artifact.model_validate({**base, "digest": "abc"})


# --------------------------------------------------------------------------- dev API server


class Api:
    """Raw HTTPS calls to the dev API server, trusting the CA in its kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = config["users"][0]["user"]["token"]
        self.tls = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())

    def call(self, method: str, path: str, body: Any = None,
             accept: str = "application/json") -> tuple[int, Any]:
        request = urllib.request.Request(
            self.server + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Accept": accept,
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A dev API server of our own, serving the example CRD."""
    server: ServerThread
    server, kubeconfig = start_dev_cluster(tmp_path_factory.mktemp("crd-cluster"))
    try:
        client = Api(kubeconfig)
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        status, body = client.call("POST", crds, widget_crd())
        assert status == 201, body
        # Established (and in discovery) a moment after it is created
        for _ in range(200):
            status, body = client.call("GET", f"{crds}/{body['metadata']['name']}")
            established = {c["type"]: c["status"] for c in body["status"]["conditions"]}
            if established["Established"] == "True":
                break
            time.sleep(0.05)
        assert established["Established"] == "True"
        yield client
    finally:
        server.stop()


WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"


def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": spec}


def test_served_kind_is_discoverable_with_short_names_and_categories(api: Api) -> None:
    status, body = api.call("GET", f"/apis/{GROUP}/v1")
    assert status == 200
    resource = next(r for r in body["resources"] if r["name"] == "widgets")
    assert resource["kind"] == "Widget" and resource["namespaced"] is True
    assert resource["shortNames"] == ["wd"] and resource["categories"] == ["all", "fluxcd"]


def test_server_applies_the_generated_defaults_as_the_model_does(api: Api) -> None:
    spec = {"url": "https://example.com/w", "interval": "1m"}
    status, body = api.call("POST", WIDGETS, widget("defaults", spec))
    assert status == 201, body
    assert body["spec"] == WidgetSpec.model_validate(spec).to_json()
    assert body["spec"]["timeout"] == "60s" and body["spec"]["replicas"] == 1
    assert body["status"] == {"observedGeneration": -1}


def test_server_prunes_unknown_fields_but_keeps_free_form_values(api: Api) -> None:
    spec = {"url": "https://example.com/w", "interval": "1m", "bogus": True,
            "values": {"nested": {"any": ["shape", 1]}}, "port": "http",
            "secretRef": {"name": "creds", "extra": 1}}
    status, body = api.call("POST", WIDGETS, widget("pruned", spec))
    assert status == 201, body
    assert "bogus" not in body["spec"]
    assert body["spec"]["values"] == {"nested": {"any": ["shape", 1]}}
    assert body["spec"]["secretRef"] == {"name": "creds"}
    assert body["spec"]["port"] == "http"


def test_server_rejects_values_the_generated_schema_forbids(api: Api) -> None:
    spec = {"url": "ftp://example.com", "interval": "one minute", "mode": "medium",
            "replicas": 11, "port": 1.5}
    status, body = api.call("POST", WIDGETS, widget("invalid", spec))
    assert status == 422 and body["reason"] == "Invalid"
    fields = sorted(cause["field"] for cause in body["details"]["causes"])
    # "<nil>": the schema has CEL rules, which a blocking error keeps from running
    assert fields == ["<nil>", "spec.interval", "spec.mode", "spec.port", "spec.replicas",
                      "spec.url"]


def test_server_requires_the_required_fields(api: Api) -> None:
    status, body = api.call("POST", WIDGETS, widget("empty", {}))
    assert status == 422
    assert sorted(c["field"] for c in body["details"]["causes"]) == ["<nil>", "spec.interval",
                                                                     "spec.url"]


def test_server_enforces_the_generated_cel_rules(api: Api) -> None:
    spec = {"url": "https://example.com/w", "interval": "1m"}
    status, body = api.call("POST", WIDGETS, widget("nokube", {**spec, "kubeConfig": {}}))
    assert status == 422
    assert [(c["field"], c["message"]) for c in body["details"]["causes"]] == [
        ("spec.kubeConfig", "Invalid value: one of configMapRef or secretRef is required")]
    both = {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}
    status, body = api.call("POST", WIDGETS, widget("both", {**spec, "kubeConfig": both}))
    assert status == 422
    assert "configMapRef and secretRef are mutually exclusive" in body["message"]
    status, body = api.call("POST", WIDGETS, widget("one", {
        **spec, "kubeConfig": {"secretRef": {"name": "kubeconfig"}}}))
    assert status == 201, body


def test_server_accepts_a_status_written_by_the_runtime(api: Api) -> None:
    status, body = api.call("POST", WIDGETS, widget("reported", {
        "url": "https://example.com/w", "interval": "1m"}))
    assert status == 201, body
    conds = conditions.summarize([], generation=1, now=T0, ready_message="ok")
    body["status"] = {"observedGeneration": conditions.observed_generation(
        conds, generation=1, current=-1), "conditions": conds}
    status, updated = api.call("PUT", f"{WIDGETS}/reported/status", body)
    assert status == 200, updated
    assert updated["status"]["conditions"] == conds
    assert updated["status"]["observedGeneration"] == 1


def test_table_shows_the_printer_columns(api: Api) -> None:
    api.call("POST", WIDGETS, widget("table", {"url": "https://example.com/t",
                                               "interval": "1m"}))
    status, body = api.call("GET", f"{WIDGETS}/table",
                            accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert status == 200, body
    assert [c["name"] for c in body["columnDefinitions"]] == [
        "Name", "URL", "Age", "Ready", "Status"]
    assert body["rows"][0]["cells"][:2] == ["table", "https://example.com/t"]
