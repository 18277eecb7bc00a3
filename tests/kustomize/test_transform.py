"""fluxd.kustomize.transform against real ``kubectl kustomize`` (kustomize v5.7.1).

Every case writes the input objects and a kustomization holding one transformer's field to a
temporary directory, builds it with kubectl, and expects the function to turn the same
objects (read as kustomize reads them) into the same output in kustomize's legacy order —
or, where kustomize fails, to raise ``Unsupported``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize.native import sort_key
from fluxd.kustomize.kyaml import Unsupported, load_documents
from fluxd.kustomize.transform import (
    add_annotations,
    add_labels,
    set_images,
    set_replicas,
)
from tests.conftest import tool

Obj = dict[str, Any]
Transform = Callable[[list[Obj]], None]

DIGEST = "sha256:" + "0123456789abcdef" * 4


def kustomize_build(kustomization: Obj, objects: list[Obj]) -> list[Obj] | None:
    """kubectl kustomize over ``objects`` with the kustomization's fields; None if it fails."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        # JSON is YAML whose strings are never read as anything else
        (root / "objects.yaml").write_text("\n---\n".join(json.dumps(obj) for obj in objects))
        (root / "kustomization.yaml").write_text(
            json.dumps({"resources": ["objects.yaml"], **kustomization}))
        run = subprocess.run([tool("kubectl"), "kustomize", directory], capture_output=True,
                             timeout=60, check=False)
    return load_documents(run.stdout) if run.returncode == 0 else None


def native_build(objects: list[Obj], transform: Transform) -> list[Obj] | None:
    """The transform over the objects as kustomize reads them, in legacy order; None if
    it raises Unsupported."""
    read = load_documents("\n---\n".join(json.dumps(obj) for obj in objects).encode())
    try:
        transform(read)
    except Unsupported:
        return None
    for each in read:
        # kustomize's build (not a transformer) drops an empty or null annotations map
        if not each["metadata"].get("annotations", True):
            del each["metadata"]["annotations"]
    return sorted(read, key=sort_key)


def assert_as_kustomize(kustomization: Obj, objects: list[Obj], transform: Transform) -> None:
    assert native_build(objects, transform) == kustomize_build(kustomization, objects)


def obj(kind: str, name: str, api_version: str = "v1", **fields: Any) -> Obj:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}


def pod_template(*images: str) -> Obj:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": f"c{i}", "image": image}
                                    for i, image in enumerate(images)]}}


#: one of each kind the default field specs name, and a few they do not
WORKLOADS = [
    obj("Deployment", "deploy", "apps/v1",
        spec={"selector": {"matchLabels": {"app": "web"}}, "template": pod_template("nginx")}),
    obj("Deployment", "bare-deploy", "apps/v1"),
    obj("StatefulSet", "sts", "apps/v1", spec={
        "template": pod_template("nginx:1.25"),
        "volumeClaimTemplates": [{"metadata": {"name": "data"}}, {"spec": {}}]}),
    obj("DaemonSet", "ds", "apps/v1", spec={"template": {"spec": {}}}),
    obj("ReplicaSet", "rs", "apps/v1", spec={}),
    obj("ReplicationController", "rc", spec={"template": pod_template("busybox")}),
    obj("Job", "job", "batch/v1", spec={"template": pod_template("busybox")}),
    obj("CronJob", "cron", "batch/v1", spec={"schedule": "* * * * *", "jobTemplate": {
        "spec": {"selector": {"matchLabels": {"x": "1"}}, "template": pod_template("busybox")}}}),
    obj("Service", "svc", spec={"ports": [{"port": 80}]}),
    obj("Service", "headless"),
    obj("Pod", "pod", spec={"containers": [{"name": "c", "image": "nginx"}]}),
    obj("ConfigMap", "config", data={"key": "value"}),
    obj("PodDisruptionBudget", "pdb", "policy/v1", spec={"selector": {"matchLabels": {}}}),
    obj("NetworkPolicy", "netpol", "networking.k8s.io/v1", spec={
        "podSelector": {"matchLabels": {"a": "b"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {}}}, {"podSelector": {}},
                              {"namespaceSelector": {}}]}, {"from": None}],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"c": "d"}}}]}]}),
    obj("Foo", "custom", "example.com/v1", spec={"template": {"metadata": {"labels": {}}},
                                                 "selector": {"matchLabels": {}}}),
    obj("Deployment", "old-deploy", "extensions/v1beta1", spec={"template": {}}),
    obj("StatefulSet", "other-sts", "example.com/v1", spec={"template": {}}),
]


# --- labels ---------------------------------------------------------------------------------

def test_common_labels_reach_metadata_templates_and_selectors() -> None:
    labels = {"app.kubernetes.io/part-of": "shop", "tier": "1"}
    assert_as_kustomize({"commonLabels": labels}, WORKLOADS, lambda objects: add_labels(
        objects, labels, include_selectors=True, include_templates=False))


@pytest.mark.parametrize(("include_selectors", "include_templates"), [
    (False, False), (False, True), (True, False), (True, True)])
def test_a_labels_entry_reaches_what_its_flags_include(
        include_selectors: bool, include_templates: bool) -> None:
    pairs = {"team": "blue", "on": "true"}
    entry = {"pairs": pairs, "includeSelectors": include_selectors,
             "includeTemplates": include_templates}
    assert_as_kustomize({"labels": [entry]}, WORKLOADS, lambda objects: add_labels(
        objects, pairs, include_selectors=include_selectors,
        include_templates=include_templates))


@pytest.mark.parametrize("fields", [
    [{"path": "spec/extra/labels", "create": True}],
    [{"path": "spec/extra/labels", "kind": "Foo", "create": True},
     {"path": "spec/volumeClaimTemplates[]/spec/labels", "create": True}],
    [{"path": "spec/template/metadata/labels", "group": "example.com"}],
    [{"path": "spec/example.com\\/labels", "create": True}],  # "\\/": a slash in a name
    [{"path": "spec/volumeClaimTemplates[]", "kind": "StatefulSet"}],  # not a map
    [{"path": "spec/volumeClaimTemplates[]/metadata", "kind": "StatefulSet",
      "version": "v1"}],
    # a custom spec for one kind takes the default's place: only Foo gets metadata labels
    [{"path": "metadata/labels", "kind": "Foo", "create": True}],
    [{"path": "metadata/labels", "kind": "Foo"}],  # kustomize: conflicting fieldspecs
    [{"path": "spec/template/metadata/labels", "kind": "Deployment"}],
])
@pytest.mark.parametrize("include_templates", [False, True])
def test_a_labels_entry_merges_its_fields_ahead_of_the_defaults(
        fields: list[Obj], include_templates: bool) -> None:
    pairs = {"team": "blue"}
    entry = {"pairs": pairs, "fields": fields, "includeTemplates": include_templates}
    assert_as_kustomize({"labels": [entry]}, WORKLOADS, lambda objects: add_labels(
        objects, pairs, include_selectors=False, include_templates=include_templates,
        fields=fields))


def test_labels_replace_existing_values_and_fill_null_maps_the_spec_creates() -> None:
    objects = [
        obj("Deployment", "d", "apps/v1", spec={"selector": None, "template": {
            "metadata": {"labels": None}, "spec": {"affinity": None}}}),
        obj("Deployment", "e", "apps/v1", spec={"template": {"spec": {
            "topologySpreadConstraints": [{"labelSelector": None},
                                          {"labelSelector": {"matchLabels": None}},
                                          {"labelSelector": {"matchLabels": {"a": "x"}}}, {}],
            "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"a": "x"}}}, {"topologyKey": "k"}],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"podAffinityTerm": {"labelSelector": {"matchLabels": {}}}}]}}}}}),
        obj("PodDisruptionBudget", "a", "policy/v1", spec={"selector": None}),
        obj("PodDisruptionBudget", "b", "policy/v1", spec=None),
        obj("PodDisruptionBudget", "c", "policy/v1", spec={"selector": {"matchLabels": None}}),
        obj("Service", "s", spec=None),
        {**obj("ConfigMap", "m"), "metadata": {"name": "m", "labels": {"a": "old", "b": "1"}}},
        {**obj("ConfigMap", "n"), "metadata": {"name": "n", "labels": None}},
    ]
    assert_as_kustomize({"commonLabels": {"a": "new"}}, objects, lambda objects: add_labels(
        objects, {"a": "new"}, include_selectors=True, include_templates=False))


@pytest.mark.parametrize("broken", [
    obj("Service", "scalar-selector", spec={"selector": "app"}),
    obj("Deployment", "scalar-spec", "apps/v1", spec="nothing"),
    {**obj("ConfigMap", "m"), "metadata": {"name": "m", "labels": ["a"]}},
    obj("Deployment", "list-template", "apps/v1", spec={"template": {"metadata": {
        "labels": ["a"]}}}),
])
def test_labels_meeting_a_value_of_the_wrong_kind_are_unsupported(broken: Obj) -> None:
    assert kustomize_build({"commonLabels": {"a": "b"}}, [broken]) is None
    with pytest.raises(Unsupported):
        add_labels([broken], {"a": "b"}, include_selectors=True, include_templates=False)


def test_no_labels_change_nothing() -> None:
    assert_as_kustomize({"commonLabels": {}}, WORKLOADS, lambda objects: add_labels(
        objects, {}, include_selectors=True, include_templates=False))


# --- annotations ----------------------------------------------------------------------------

def test_common_annotations_reach_metadata_and_pod_templates() -> None:
    annotations = {"example.com/owner": "team-a", "note": "yes", "empty": ""}
    objects = [*WORKLOADS,
               {**obj("ConfigMap", "m"), "metadata": {"name": "m", "annotations": None}},
               {**obj("ConfigMap", "n"), "metadata": {"name": "n",
                                                      "annotations": {"note": "old"}}}]
    assert_as_kustomize({"commonAnnotations": annotations}, objects,
                        lambda objects: add_annotations(objects, annotations))


def test_annotations_that_are_not_a_map_are_unsupported() -> None:
    broken = {**obj("ConfigMap", "m"), "metadata": {"name": "m", "annotations": "a"}}
    assert kustomize_build({"commonAnnotations": {"a": "b"}}, [broken]) is None
    with pytest.raises(Unsupported):
        add_annotations([broken], {"a": "b"})


# --- images ---------------------------------------------------------------------------------

REFERENCES = [
    "nginx", "nginx:1.25", f"nginx@{DIGEST}", f"nginx:1.25@{DIGEST}", "nginx-extra:1",
    "docker.io/library/nginx:1.25", "localhost:5000/nginx", "localhost:5000/nginx:2",
    f"localhost:5000/nginx@{DIGEST}", "ghcr.io/org/team/app:v1-rc.2", "busybox",
    "busy/ox:1", "nginx:{{tag}}", "nginx@md5:abc",
]


def pods_with_images() -> list[Obj]:
    return [
        obj("Pod", "pod", spec={
            "containers": [{"name": f"c{i}", "image": ref} for i, ref in enumerate(REFERENCES)],
            "initContainers": [{"name": "init", "image": "nginx:1"}],
            "volumes": [{"name": "v", "image": {"reference": "nginx:3"}}, {"name": "w"}]}),
        obj("Deployment", "deploy", "apps/v1", spec={"template": {"spec": {
            "containers": [{"name": f"c{i}", "image": ref} for i, ref in enumerate(REFERENCES)],
            "initContainers": None,
            "volumes": [{"name": "v", "image": {"reference": "localhost:5000/nginx"}}]}}}),
        obj("Foo", "custom", "example.com/v1", spec={"deep": [{"containers": [
            {"name": "a", "image": "nginx:1"}, None, {"name": "no-image"}],
            "initContainers": {"not": "a list"}}], "containers": "not a list"}),
        obj("CustomResourceDefinition", "crd", "apiextensions.k8s.io/v1",
            spec={"containers": [{"image": "nginx"}]}),
        obj("Job", "job", "batch/v1", spec={"template": {"spec": {"containers": [
            {"name": "c", "image": None}]}}}),
    ]


@pytest.mark.parametrize("image", [
    {"name": "nginx", "newTag": "1.27"},
    {"name": "nginx", "newName": "registry.example.com/mirror/nginx"},
    {"name": "nginx", "digest": DIGEST},
    {"name": "nginx", "newTag": "2", "digest": DIGEST},
    {"name": "nginx", "tagSuffix": "-debug"},
    {"name": "nginx", "newName": "nginx", "tagSuffix": "-x", "newTag": "3"},
    {"name": "localhost:5000/nginx", "newName": "nginx", "newTag": "4"},
    {"name": "docker.io/library/nginx", "newName": "nginx"},
    {"name": "ghcr.io/org/team/app", "digest": DIGEST},
    {"name": "busy.ox", "newTag": "regex"},  # the name is a regular expression
    {"name": "nginx|busybox", "newTag": "either"},
    {"name": "nginx.*", "newTag": "any"},
    {"name": "absent", "newTag": "1"},
    {"name": "", "newTag": "1"},
    {"name": "ngin(x", "newTag": "1"},  # kustomize panics
])
def test_an_image_entry_rewrites_matching_images_as_kustomize_does(image: Obj) -> None:
    assert_as_kustomize({"images": [image]}, pods_with_images(),
                        lambda objects: set_images(objects, [image]))


def test_image_entries_apply_in_order() -> None:
    images = [{"name": "nginx", "newName": "busybox"}, {"name": "busybox", "newTag": "9"},
              {"name": "busybox", "tagSuffix": "-s"}]
    assert_as_kustomize({"images": images}, pods_with_images(),
                        lambda objects: set_images(objects, images))


@pytest.mark.parametrize("container", [{"image": {"name": "nginx"}}, "nginx", ["nginx"]])
def test_a_container_or_image_of_the_wrong_kind_is_unsupported(container: Any) -> None:
    broken = obj("Pod", "p", spec={"containers": [container]})
    assert kustomize_build({"images": [{"name": "nginx", "newTag": "1"}]}, [broken]) is None
    with pytest.raises(Unsupported):
        set_images([broken], [{"name": "nginx", "newTag": "1"}])


# --- replicas -------------------------------------------------------------------------------

def test_replicas_set_the_count_of_the_named_workloads_only() -> None:
    objects = [obj("Deployment", "web", "apps/v1", spec={"replicas": 1}),
               obj("StatefulSet", "web", "apps/v1"),
               obj("ReplicaSet", "web", "apps/v1", spec=None),
               obj("ReplicationController", "web", spec={"replicas": None}),
               obj("Foo", "web", "example.com/v1", spec={}),
               obj("Service", "web"),
               obj("Deployment", "db", "apps/v1", spec={"replicas": 2}),
               obj("Deployment", "cache", "extensions/v1beta1", spec={"replicas": 2})]
    replicas = [{"name": "web", "count": 3}, {"name": "db", "count": 0},
                {"name": "cache", "count": 5}, {"name": "web", "count": 4}]
    assert_as_kustomize({"replicas": replicas}, objects,
                        lambda objects: set_replicas(objects, replicas))


@pytest.mark.parametrize("name", ["absent", "svc"])
def test_replicas_naming_no_workload_are_unsupported(name: str) -> None:
    objects = [obj("Deployment", "web", "apps/v1"), obj("Service", "svc")]
    replicas = [{"name": name, "count": 1}]
    assert kustomize_build({"replicas": replicas}, objects) is None
    with pytest.raises(Unsupported):
        set_replicas(objects, replicas)


def test_replicas_find_a_workload_by_a_previous_name() -> None:
    """After ``namePrefix`` a workload is matched by its old name as well as its new one."""
    objects = [obj("Deployment", "web", "apps/v1"), obj("StatefulSet", "db", "apps/v1")]
    replicas = [{"name": "web", "count": 3}, {"name": "p-db", "count": 2}]
    expected = kustomize_build({"namePrefix": "p-", "replicas": replicas}, objects)
    renamed = load_documents(json.dumps(objects).encode())[0]
    for each in renamed:
        each["metadata"] = {"name": "p-" + each["metadata"]["name"], "annotations": {
            "internal.config.kubernetes.io/previousNames": each["metadata"]["name"],
            "internal.config.kubernetes.io/previousKinds": each["kind"],
            "internal.config.kubernetes.io/previousNamespaces": "default"}}
    set_replicas(renamed, replicas)
    for each in renamed:
        del each["metadata"]["annotations"]
    assert sorted(renamed, key=sort_key) == expected


# --- generated cases ------------------------------------------------------------------------

KEYS = st.sampled_from(["app", "tier", "example.com/team", "a"])
VALUES = st.sampled_from(["web", "db", "1", "true", "", "y"])
STRING_MAPS = st.dictionaries(KEYS, VALUES, max_size=3)
MAYBE_MAP = st.one_of(st.none(), STRING_MAPS)
IMAGES = st.sampled_from(REFERENCES)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    """Maps holding any subset of the fields."""
    return st.fixed_dictionaries({}, optional=fields)


CONTAINERS = st.lists(optional(name=st.just("c"), image=IMAGES), max_size=3)
LABEL_SELECTOR = optional(matchLabels=MAYBE_MAP)
TERMS = st.lists(optional(labelSelector=st.one_of(st.none(), LABEL_SELECTOR),
                          topologyKey=st.just("zone")), max_size=2)
AFFINITY = optional(podAffinity=optional(
    requiredDuringSchedulingIgnoredDuringExecution=TERMS,
    preferredDuringSchedulingIgnoredDuringExecution=st.lists(
        optional(podAffinityTerm=optional(labelSelector=LABEL_SELECTOR)), max_size=2)),
    podAntiAffinity=optional(requiredDuringSchedulingIgnoredDuringExecution=TERMS))
POD_SPEC = optional(containers=st.one_of(st.none(), CONTAINERS),
                    initContainers=st.one_of(st.none(), CONTAINERS),
                    affinity=st.one_of(st.none(), AFFINITY), topologySpreadConstraints=TERMS,
                    volumes=st.lists(optional(image=optional(reference=IMAGES)), max_size=2))
META = optional(labels=MAYBE_MAP, annotations=MAYBE_MAP)
TEMPLATE = optional(metadata=st.one_of(st.none(), META), spec=st.one_of(st.none(), POD_SPEC))
MAYBE_TEMPLATE = st.one_of(st.none(), TEMPLATE)
SELECTOR = st.one_of(st.none(), LABEL_SELECTOR)
REPLICAS = st.one_of(st.none(), st.integers(0, 3))

#: (apiVersion, kind, spec) of the kinds the field specs name and of some they do not
SPECS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "Deployment": ("apps/v1", optional(replicas=REPLICAS, selector=SELECTOR,
                                       template=MAYBE_TEMPLATE)),
    "StatefulSet": ("apps/v1", optional(replicas=REPLICAS, selector=SELECTOR,
                                        template=MAYBE_TEMPLATE, volumeClaimTemplates=st.lists(
                                            optional(metadata=META), max_size=2))),
    "DaemonSet": ("apps/v1", optional(selector=SELECTOR, template=MAYBE_TEMPLATE)),
    "ReplicaSet": ("apps/v1", optional(replicas=REPLICAS, selector=SELECTOR,
                                       template=MAYBE_TEMPLATE)),
    "Job": ("batch/v1", optional(selector=SELECTOR, template=MAYBE_TEMPLATE)),
    "CronJob": ("batch/v1", optional(jobTemplate=optional(
        metadata=META, spec=optional(selector=SELECTOR, template=MAYBE_TEMPLATE)))),
    "Service": ("v1", optional(selector=MAYBE_MAP)),
    "ReplicationController": ("v1", optional(replicas=REPLICAS, selector=MAYBE_MAP,
                                             template=MAYBE_TEMPLATE)),
    "Pod": ("v1", POD_SPEC),
    "ConfigMap": ("v1", st.none()),
    "Foo": ("example.com/v1", optional(template=MAYBE_TEMPLATE, replicas=REPLICAS,
                                       containers=CONTAINERS)),
}


@st.composite
def workloads(draw: st.DrawFn) -> list[Obj]:
    kinds = draw(st.lists(st.sampled_from(sorted(SPECS)), min_size=1, max_size=5))
    objects = []
    for index, kind in enumerate(kinds):
        api_version, spec = SPECS[kind]
        meta = {"name": f"o{index}", **draw(META)}
        made = {"apiVersion": api_version, "kind": kind, "metadata": meta}
        body = draw(spec)
        if body is not None or draw(st.booleans()):
            made["spec"] = body
        objects.append(made)
    return objects


GENERATED = settings(max_examples=30, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(workloads(), STRING_MAPS, st.booleans(), st.booleans(), st.booleans())
def test_generated_labels_match_kustomize(objects: list[Obj], labels: dict[str, str],
                                          common: bool, selectors: bool,
                                          templates: bool) -> None:
    kustomization: Obj = {"commonLabels": labels} if common else {"labels": [{
        "pairs": labels, "includeSelectors": selectors, "includeTemplates": templates}]}
    assert_as_kustomize(kustomization, objects, lambda objects: add_labels(
        objects, labels, include_selectors=common or selectors,
        include_templates=templates and not common))


@GENERATED
@given(workloads(), STRING_MAPS)
def test_generated_annotations_match_kustomize(objects: list[Obj],
                                               annotations: dict[str, str]) -> None:
    assert_as_kustomize({"commonAnnotations": annotations}, objects,
                        lambda objects: add_annotations(objects, annotations))


IMAGE_ENTRIES = st.lists(st.builds(
    lambda name, rest: {"name": name, **rest},
    st.sampled_from(["nginx", "localhost:5000/nginx", "busybox", "ghcr.io/org/team/app"]),
    optional(newName=st.sampled_from(["nginx", "mirror.example.com/nginx"]),
             newTag=st.sampled_from(["2", "v3.1"]), digest=st.just(DIGEST),
             tagSuffix=st.just("-s"))), min_size=1, max_size=3)


@GENERATED
@given(workloads(), IMAGE_ENTRIES)
def test_generated_images_match_kustomize(objects: list[Obj], images: list[Obj]) -> None:
    assert_as_kustomize({"images": images}, objects,
                        lambda objects: set_images(objects, images))


@GENERATED
@given(workloads(), st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["o0", "o1", "o2", "absent"]), "count": st.integers(0, 9)}),
    min_size=1, max_size=3))
def test_generated_replicas_match_kustomize(objects: list[Obj], replicas: list[Obj]) -> None:
    assert_as_kustomize({"replicas": replicas}, objects,
                        lambda objects: set_replicas(objects, replicas))
