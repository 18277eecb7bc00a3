"""RBAC authorizer: real rbac.authorization.k8s.io/v1 semantics over plain dicts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from fluxd.devcluster.rbac import (
    Attributes,
    Decision,
    UserInfo,
    authorize,
    forbidden_message,
    rules_for,
    split_service_account_username,
)

Obj = dict[str, Any]


@dataclass
class Store:
    """In-memory RBACSource."""

    objects: list[Obj] = field(default_factory=list)

    def add(self, *objs: Obj) -> Store:
        self.objects.extend(objs)
        return self

    def _of(self, kind: str, namespace: str | None = None) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]

    def roles(self, namespace: str) -> Iterable[Obj]:
        return self._of("Role", namespace)

    def role_bindings(self, namespace: str) -> Iterable[Obj]:
        return self._of("RoleBinding", namespace)

    def cluster_roles(self) -> Iterable[Obj]:
        return self._of("ClusterRole")

    def cluster_role_bindings(self) -> Iterable[Obj]:
        return self._of("ClusterRoleBinding")


def rule(
    verbs: list[str],
    resources: list[str],
    groups: list[str] | None = None,
    names: list[str] | None = None,
) -> Obj:
    r: Obj = {
        "verbs": verbs,
        "apiGroups": groups if groups is not None else [""],
        "resources": resources,
    }
    if names is not None:
        r["resourceNames"] = names
    return r


def role(name: str, namespace: str, *rules: Obj) -> Obj:
    return {
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": list(rules),
    }


def cluster_role(
    name: str, *rules: Obj, labels: dict[str, str] | None = None, selectors: list[Obj] | None = None
) -> Obj:
    obj: Obj = {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}
    if labels:
        obj["metadata"]["labels"] = labels
    if selectors is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return obj


def user(name: str) -> Obj:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def group(name: str) -> Obj:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def service_account(name: str, namespace: str | None = None) -> Obj:
    s: Obj = {"kind": "ServiceAccount", "name": name}
    if namespace is not None:
        s["namespace"] = namespace
    return s


def role_binding(name: str, namespace: str, ref_kind: str, ref_name: str, *subjects: Obj) -> Obj:
    return {
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref_name},
        "subjects": list(subjects),
    }


def cluster_role_binding(name: str, ref_name: str, *subjects: Obj) -> Obj:
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": ref_name,
        },
        "subjects": list(subjects),
    }


def can(
    store: Store,
    who: UserInfo,
    verb: str,
    resource: str,
    namespace: str = "",
    group_: str = "",
    subresource: str = "",
    name: str = "",
) -> bool:
    attrs = Attributes(verb, namespace, group_, resource, subresource, name)
    return authorize(who, attrs, store).allowed


def can_path(store: Store, who: UserInfo, verb: str, path: str) -> bool:
    attrs = Attributes(verb, "", "", "", path=path, resource_request=False)
    return authorize(who, attrs, store).allowed


ALICE = UserInfo.for_request("alice")
SA = UserInfo.for_request("system:serviceaccount:ns:sa")


# --- users -----------------------------------------------------------------------------


def test_for_request_adds_authenticated_group_after_the_given_groups() -> None:
    assert UserInfo.for_request("alice", ["devs"]).groups == ("devs", "system:authenticated")


def test_for_request_gives_service_accounts_their_groups() -> None:
    assert SA.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    )


def test_for_request_does_not_duplicate_groups() -> None:
    info = UserInfo.for_request("alice", ["system:authenticated", "devs", "devs"])
    assert info.groups == ("system:authenticated", "devs")


def test_anonymous_user_is_unauthenticated_not_authenticated() -> None:
    assert UserInfo.for_request("system:anonymous").groups == ("system:unauthenticated",)


def test_malformed_service_account_names_are_plain_users() -> None:
    assert split_service_account_username("system:serviceaccount:ns") is None
    assert split_service_account_username("system:serviceaccount:ns:a:b") is None
    assert split_service_account_username("system:serviceaccount::sa") is None
    assert UserInfo.for_request("system:serviceaccount:ns").groups == ("system:authenticated",)


# --- system:masters --------------------------------------------------------------------


def test_system_masters_may_do_anything_even_with_no_bindings() -> None:
    admin = UserInfo.for_request("admin", ["system:masters"])
    assert authorize(admin, Attributes("delete", "", "", "nodes", name="n1"), Store()) == (
        Decision(True, "")
    )
    assert can_path(Store(), admin, "get", "/anything")


def test_nobody_else_is_allowed_anything_without_bindings() -> None:
    assert authorize(ALICE, Attributes("get", "ns", "", "pods", name="p"), Store()) == (
        Decision(False, "")
    )


# --- bindings --------------------------------------------------------------------------


def test_cluster_role_binding_grants_its_role_in_every_namespace_and_cluster_wide() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get", "list"], ["pods", "namespaces"])),
        cluster_role_binding("alice-reads", "reader", user("alice")),
    )
    assert can(store, ALICE, "list", "pods", "a")
    assert can(store, ALICE, "list", "pods", "b")
    assert can(store, ALICE, "list", "pods")
    assert can(store, ALICE, "get", "namespaces", name="a")
    assert not can(store, ALICE, "delete", "pods", "a", name="p")


def test_allow_reason_names_the_cluster_role_binding_role_and_subject() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("alice-reads", "reader", user("bob"), user("alice")),
    )
    decision = authorize(ALICE, Attributes("get", "ns", "", "pods", name="p"), store)
    assert decision == Decision(
        True,
        'RBAC: allowed by ClusterRoleBinding "alice-reads" of ClusterRole "reader" to User "alice"',
    )


def test_role_binding_grants_its_role_only_in_its_own_namespace() -> None:
    store = Store().add(
        role("editor", "ns", rule(["update"], ["configmaps"])),
        role_binding("alice-edits", "ns", "Role", "editor", user("alice")),
    )
    assert can(store, ALICE, "update", "configmaps", "ns", name="c")
    assert not can(store, ALICE, "update", "configmaps", "other", name="c")
    assert not can(store, ALICE, "update", "configmaps", name="c")


def test_role_binding_reaches_a_role_of_its_own_namespace_only() -> None:
    store = Store().add(
        role("editor", "elsewhere", rule(["update"], ["configmaps"])),
        role_binding("alice-edits", "ns", "Role", "editor", user("alice")),
    )
    assert not can(store, ALICE, "update", "configmaps", "ns", name="c")


def test_role_binding_to_a_cluster_role_grants_it_only_within_the_namespace() -> None:
    store = Store().add(
        cluster_role("view", rule(["get", "list"], ["*"])),
        role_binding("view", "ns", "ClusterRole", "view", user("alice")),
    )
    assert can(store, ALICE, "list", "secrets", "ns")
    assert not can(store, ALICE, "list", "secrets", "other")
    assert not can(store, ALICE, "list", "nodes")


def test_allow_reason_for_a_role_binding_qualifies_names_with_the_namespace() -> None:
    store = Store().add(
        role("r", "ns", rule(["get"], ["pods"])),
        role_binding("rb", "ns", "Role", "r", service_account("sa")),
    )
    decision = authorize(SA, Attributes("get", "ns", "", "pods", name="p"), store)
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "rb/ns" of Role "r" to ServiceAccount "sa/ns"'
    )


def test_group_subjects_match_members_of_the_group() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("devs-read", "reader", group("devs")),
    )
    assert can(store, UserInfo.for_request("carol", ["devs"]), "get", "pods", "ns", name="p")
    assert not can(store, ALICE, "get", "pods", "ns", name="p")


def test_authenticated_group_binding_applies_to_every_for_request_user() -> None:
    store = Store().add(
        cluster_role("discovery", {"verbs": ["get"], "nonResourceURLs": ["/version"]}),
        cluster_role_binding("discovery", "discovery", group("system:authenticated")),
    )
    assert can_path(store, ALICE, "get", "/version")
    assert not can_path(store, UserInfo("raw-alice"), "get", "/version")


def test_service_account_subject_matches_the_service_account_user() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("sa-reads", "reader", service_account("sa", "ns")),
    )
    assert can(store, SA, "get", "pods", "any", name="p")
    assert not can(
        store,
        UserInfo.for_request("system:serviceaccount:other:sa"),
        "get",
        "pods",
        "any",
        name="p",
    )


def test_unqualified_service_account_subject_defaults_to_the_binding_namespace() -> None:
    store = Store().add(
        role("r", "ns", rule(["get"], ["pods"])),
        role_binding("rb", "ns", "Role", "r", service_account("sa")),
    )
    assert can(store, SA, "get", "pods", "ns", name="p")


def test_unqualified_service_account_subject_ignores_same_named_accounts_elsewhere() -> None:
    store = Store().add(
        role("r", "other", rule(["get"], ["pods"])),
        role_binding("rb", "other", "Role", "r", service_account("sa")),
    )
    # The subject means system:serviceaccount:other:sa, not ns:sa.
    assert not can(store, SA, "get", "pods", "other", name="p")


def test_unqualified_service_account_subject_of_a_cluster_role_binding_matches_nobody() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("sa-reads", "reader", service_account("sa")),
    )
    assert not can(store, SA, "get", "pods", "ns", name="p")


def test_service_account_can_be_bound_in_another_namespace_explicitly() -> None:
    store = Store().add(
        role("r", "other", rule(["get"], ["pods"])),
        role_binding("rb", "other", "Role", "r", service_account("sa", "ns")),
    )
    assert can(store, SA, "get", "pods", "other", name="p")


def test_a_user_subject_named_like_a_service_account_matches_it() -> None:
    store = Store().add(
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("x", "reader", user("system:serviceaccount:ns:sa")),
    )
    assert can(store, SA, "get", "pods", "ns", name="p")


def test_binding_to_a_missing_role_grants_nothing_and_says_why() -> None:
    store = Store().add(
        cluster_role_binding("dangling", "gone", user("alice")),
        role_binding("dangling", "ns", "Role", "gone-too", user("alice")),
    )
    decision = authorize(ALICE, Attributes("get", "ns", "", "pods", name="p"), store)
    assert decision == Decision(
        False,
        'RBAC: [clusterrole.rbac.authorization.k8s.io "gone" not found, '
        'role.rbac.authorization.k8s.io "gone-too" not found]',
    )


def test_missing_role_reason_is_not_bracketed_when_single() -> None:
    store = Store().add(cluster_role_binding("dangling", "gone", user("alice")))
    decision = authorize(ALICE, Attributes("get", "", "", "nodes"), store)
    assert decision.reason == 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'


def test_missing_roles_of_bindings_for_other_users_are_not_reported() -> None:
    store = Store().add(cluster_role_binding("dangling", "gone", user("bob")))
    assert authorize(ALICE, Attributes("get", "", "", "nodes"), store) == Decision(False, "")


def test_cluster_role_binding_cannot_reference_a_role() -> None:
    store = Store().add(
        role("r", "ns", rule(["get"], ["pods"])),
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bad"},
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [user("alice")],
        },
    )
    assert not can(store, ALICE, "get", "pods", "ns", name="p")


def test_a_later_binding_can_allow_after_a_dangling_one() -> None:
    store = Store().add(
        cluster_role_binding("dangling", "gone", user("alice")),
        cluster_role("reader", rule(["get"], ["pods"])),
        cluster_role_binding("ok", "reader", user("alice")),
    )
    decision = authorize(ALICE, Attributes("get", "ns", "", "pods", name="p"), store)
    assert decision.allowed
    assert decision.reason.startswith('RBAC: allowed by ClusterRoleBinding "ok"')


# --- rule matching ---------------------------------------------------------------------


def test_wildcard_verbs_groups_and_resources_match_everything() -> None:
    store = Store().add(
        cluster_role("all", rule(["*"], ["*"], ["*"])),
        cluster_role_binding("all", "all", user("alice")),
    )
    assert can(store, ALICE, "deletecollection", "widgets", "ns", "example.com")
    assert can(store, ALICE, "patch", "deployments", "ns", "apps", "scale", "web")


def test_api_group_must_match() -> None:
    store = Store().add(
        cluster_role("apps", rule(["get"], ["deployments"], ["apps"])),
        cluster_role_binding("apps", "apps", user("alice")),
    )
    assert can(store, ALICE, "get", "deployments", "ns", "apps", name="d")
    assert not can(store, ALICE, "get", "deployments", "ns", "extensions", name="d")
    assert not can(store, ALICE, "get", "deployments", "ns", "", name="d")


def test_a_resource_rule_does_not_cover_its_subresources() -> None:
    store = Store().add(
        cluster_role("r", rule(["get", "update"], ["deployments"], ["apps"])),
        cluster_role_binding("r", "r", user("alice")),
    )
    assert can(store, ALICE, "update", "deployments", "ns", "apps", name="d")
    assert not can(store, ALICE, "update", "deployments", "ns", "apps", "status", "d")


@pytest.mark.parametrize(
    ("entry", "resource", "subresource", "allowed"),
    [
        ("pods/log", "pods", "log", True),
        ("pods/log", "pods", "exec", False),
        ("pods/log", "pods", "", False),
        ("pods/log", "services", "log", False),
        ("*/status", "deployments", "status", True),
        ("*/status", "pods", "status", True),
        ("*/status", "pods", "log", False),
        ("*/status", "pods", "", False),
        ("pods/*", "pods", "log", True),
        ("pods/*", "pods", "exec", True),
        ("pods/*", "pods", "", False),
        ("pods/*", "services", "proxy", False),
        ("*", "pods", "exec", True),
        ("*", "pods", "", True),
    ],
)
def test_subresource_rules_match_only_their_own_forms(
    entry: str, resource: str, subresource: str, allowed: bool
) -> None:
    store = Store().add(
        cluster_role("r", rule(["get"], [entry])),
        cluster_role_binding("r", "r", user("alice")),
    )
    assert can(store, ALICE, "get", resource, "ns", "", subresource, "p") is allowed


def test_resource_names_limit_a_rule_to_the_named_objects() -> None:
    store = Store().add(
        role("r", "ns", rule(["get", "update", "delete"], ["configmaps"], names=["a", "b"])),
        role_binding("rb", "ns", "Role", "r", user("alice")),
    )
    assert can(store, ALICE, "get", "configmaps", "ns", name="a")
    assert can(store, ALICE, "delete", "configmaps", "ns", name="b")
    assert not can(store, ALICE, "get", "configmaps", "ns", name="c")


@pytest.mark.parametrize("verb", ["list", "watch", "create", "deletecollection"])
def test_requests_without_a_name_never_match_a_rule_with_resource_names(verb: str) -> None:
    store = Store().add(
        role("r", "ns", rule([verb], ["configmaps"], names=["a"])),
        role_binding("rb", "ns", "Role", "r", user("alice")),
    )
    assert not can(store, ALICE, verb, "configmaps", "ns")


def test_empty_resource_names_mean_any_name() -> None:
    store = Store().add(
        role("r", "ns", rule(["list"], ["configmaps"], names=[])),
        role_binding("rb", "ns", "Role", "r", user("alice")),
    )
    assert can(store, ALICE, "list", "configmaps", "ns")


def test_resource_names_apply_to_subresources_too() -> None:
    store = Store().add(
        role("r", "ns", rule(["patch"], ["deployments/scale"], ["apps"], names=["web"])),
        role_binding("rb", "ns", "Role", "r", user("alice")),
    )
    assert can(store, ALICE, "patch", "deployments", "ns", "apps", "scale", "web")
    assert not can(store, ALICE, "patch", "deployments", "ns", "apps", "scale", "api")


def test_verbs_match_exactly() -> None:
    store = Store().add(
        cluster_role("r", rule(["get"], ["pods"])),
        cluster_role_binding("r", "r", user("alice")),
    )
    assert not can(store, ALICE, "list", "pods", "ns")
    assert not can(store, ALICE, "GET", "pods", "ns", name="p")


def test_impersonate_is_an_ordinary_verb() -> None:
    store = Store().add(
        cluster_role("imp", rule(["impersonate"], ["users"], names=["bob"])),
        cluster_role_binding("imp", "imp", user("alice")),
    )
    assert can(store, ALICE, "impersonate", "users", name="bob")
    assert not can(store, ALICE, "impersonate", "users", name="root")


# --- non-resource URLs -----------------------------------------------------------------


def test_non_resource_urls_match_exactly_or_by_trailing_star_prefix() -> None:
    store = Store().add(
        cluster_role("urls", {"verbs": ["get"], "nonResourceURLs": ["/version", "/apis/*"]}),
        cluster_role_binding("urls", "urls", user("alice")),
    )
    assert can_path(store, ALICE, "get", "/version")
    assert not can_path(store, ALICE, "get", "/version/extra")
    assert can_path(store, ALICE, "get", "/apis/apps/v1")
    assert can_path(store, ALICE, "get", "/apis/")
    assert not can_path(store, ALICE, "get", "/apis")
    assert not can_path(store, ALICE, "post", "/version")


def test_star_non_resource_url_and_star_verb_match_any_path() -> None:
    store = Store().add(
        cluster_role("urls", {"verbs": ["*"], "nonResourceURLs": ["*"]}),
        cluster_role_binding("urls", "urls", user("alice")),
    )
    assert can_path(store, ALICE, "post", "/anything/at/all")


def test_non_resource_urls_are_not_granted_through_role_bindings() -> None:
    store = Store().add(
        cluster_role("urls", {"verbs": ["get"], "nonResourceURLs": ["*"]}),
        role_binding("urls", "ns", "ClusterRole", "urls", user("alice")),
    )
    attrs = Attributes("get", "ns", "", "", path="/version", resource_request=False)
    assert not authorize(ALICE, attrs, store).allowed


def test_resource_rules_do_not_match_non_resource_requests_and_vice_versa() -> None:
    store = Store().add(
        cluster_role(
            "mixed",
            rule(["get"], ["*"], ["*"]),
            {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
        ),
        cluster_role_binding("mixed", "mixed", user("alice")),
    )
    assert not can_path(store, ALICE, "get", "/version")
    assert can_path(store, ALICE, "get", "/healthz")
    assert can(store, ALICE, "get", "healthz", name="x")


# --- aggregation -----------------------------------------------------------------------


def aggregated_store(*selectors: Obj) -> Store:
    return Store().add(
        cluster_role("agg", rule(["get"], ["configmaps"]), selectors=list(selectors)),
        cluster_role(
            "view-pods",
            rule(["list"], ["pods"]),
            labels={"aggregate-to-view": "true", "tier": "core"},
        ),
        cluster_role(
            "view-widgets",
            rule(["list"], ["widgets"], ["example.com"]),
            labels={"aggregate-to-view": "true", "tier": "extra"},
        ),
        cluster_role("unrelated", rule(["delete"], ["nodes"]), labels={"other": "x"}),
        cluster_role_binding("agg", "agg", user("alice")),
    )


def test_aggregated_cluster_role_has_the_rules_of_every_matching_cluster_role() -> None:
    store = aggregated_store({"matchLabels": {"aggregate-to-view": "true"}})
    assert can(store, ALICE, "list", "pods", "ns")
    assert can(store, ALICE, "list", "widgets", "ns", "example.com")
    assert not can(store, ALICE, "delete", "nodes", name="n")


def test_aggregated_cluster_role_keeps_its_own_listed_rules() -> None:
    store = aggregated_store({"matchLabels": {"aggregate-to-view": "true"}})
    assert can(store, ALICE, "get", "configmaps", "ns", name="c")


def test_aggregation_matches_any_of_several_selectors() -> None:
    store = aggregated_store({"matchLabels": {"tier": "core"}}, {"matchLabels": {"other": "x"}})
    assert can(store, ALICE, "list", "pods", "ns")
    assert can(store, ALICE, "delete", "nodes", name="n")
    assert not can(store, ALICE, "list", "widgets", "ns", "example.com")


@pytest.mark.parametrize(
    ("expression", "pods", "widgets", "nodes"),
    [
        ({"key": "tier", "operator": "In", "values": ["core"]}, True, False, False),
        ({"key": "tier", "operator": "NotIn", "values": ["core"]}, False, True, True),
        ({"key": "tier", "operator": "Exists"}, True, True, False),
        ({"key": "tier", "operator": "DoesNotExist"}, False, False, True),
        ({"key": "tier", "operator": "Bogus"}, False, False, False),
    ],
)
def test_aggregation_selectors_support_match_expressions(
    expression: Obj, pods: bool, widgets: bool, nodes: bool
) -> None:
    store = aggregated_store({"matchExpressions": [expression]})
    assert can(store, ALICE, "list", "pods", "ns") is pods
    assert can(store, ALICE, "list", "widgets", "ns", "example.com") is widgets
    assert can(store, ALICE, "delete", "nodes", name="n") is nodes


def test_match_labels_and_match_expressions_must_all_hold() -> None:
    store = aggregated_store(
        {
            "matchLabels": {"aggregate-to-view": "true"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["core"]}],
        }
    )
    assert not can(store, ALICE, "list", "pods", "ns")
    assert can(store, ALICE, "list", "widgets", "ns", "example.com")


def test_aggregation_is_transitive_and_survives_cycles() -> None:
    store = Store().add(
        cluster_role("top", selectors=[{"matchLabels": {"into": "top"}}]),
        cluster_role(
            "middle",
            rule(["get"], ["secrets"]),
            labels={"into": "top"},
            selectors=[{"matchLabels": {"into": "middle"}}],
        ),
        cluster_role(
            "leaf",
            rule(["list"], ["pods"]),
            labels={"into": "middle"},
            selectors=[{"matchLabels": {"into": "top"}}],
        ),
        cluster_role_binding("top", "top", user("alice")),
    )
    assert can(store, ALICE, "get", "secrets", "ns", name="s")
    assert can(store, ALICE, "list", "pods", "ns")


def test_aggregated_rules_are_listed_once_each() -> None:
    store = Store().add(
        cluster_role("agg", rule(["list"], ["pods"]), selectors=[{"matchLabels": {"a": "1"}}]),
        cluster_role("one", rule(["list"], ["pods"]), labels={"a": "1"}),
        cluster_role("two", rule(["list"], ["pods"]), rule(["get"], ["pods"]), labels={"a": "1"}),
        cluster_role_binding("agg", "agg", user("alice")),
    )
    assert rules_for(ALICE, "", store) == [rule(["list"], ["pods"]), rule(["get"], ["pods"])]


# --- rules_for -------------------------------------------------------------------------


def test_rules_for_lists_cluster_wide_then_namespace_rules_for_the_user() -> None:
    store = Store().add(
        cluster_role("c", rule(["get"], ["nodes"])),
        cluster_role_binding("c", "c", user("alice")),
        role("r", "ns", rule(["list"], ["pods"])),
        role_binding("r", "ns", "Role", "r", user("alice")),
        role_binding("bob", "ns", "ClusterRole", "c", user("bob")),
    )
    assert rules_for(ALICE, "ns", store) == [rule(["get"], ["nodes"]), rule(["list"], ["pods"])]
    assert rules_for(ALICE, "", store) == [rule(["get"], ["nodes"])]
    assert rules_for(ALICE, "other", store) == [rule(["get"], ["nodes"])]


def test_rules_for_returns_copies() -> None:
    store = Store().add(
        cluster_role("c", rule(["get"], ["nodes"])),
        cluster_role_binding("c", "c", user("alice")),
    )
    rules_for(ALICE, "", store)[0]["verbs"].append("delete")
    assert not can(store, ALICE, "delete", "nodes", name="n")


def test_rules_for_system_masters_includes_everything() -> None:
    admin = UserInfo.for_request("admin", ["system:masters"])
    assert rules_for(admin, "ns", Store()) == [
        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
        {"verbs": ["*"], "nonResourceURLs": ["*"]},
    ]


def test_rules_for_skips_bindings_to_missing_roles() -> None:
    store = Store().add(cluster_role_binding("dangling", "gone", user("alice")))
    assert rules_for(ALICE, "ns", store) == []


# --- forbidden messages ----------------------------------------------------------------


def test_forbidden_message_for_a_named_object_in_a_group() -> None:
    attrs = Attributes("get", "ns", "apps", "deployments", name="web")
    assert forbidden_message(SA, attrs) == (
        'deployments.apps "web" is forbidden: User "system:serviceaccount:ns:sa" cannot get '
        'resource "deployments" in API group "apps" in the namespace "ns"'
    )


def test_forbidden_message_for_a_list_in_a_namespace() -> None:
    attrs = Attributes("list", "ns", "", "pods")
    assert forbidden_message(UserInfo("x"), attrs) == (
        'pods is forbidden: User "x" cannot list resource "pods" in API group "" '
        'in the namespace "ns"'
    )


def test_forbidden_message_at_the_cluster_scope() -> None:
    attrs = Attributes("list", "", "", "namespaces")
    assert forbidden_message(UserInfo("x"), attrs) == (
        'namespaces is forbidden: User "x" cannot list resource "namespaces" in API group "" '
        "at the cluster scope"
    )


def test_forbidden_message_for_a_named_core_object_at_the_cluster_scope() -> None:
    attrs = Attributes("delete", "", "", "nodes", name="n1")
    assert forbidden_message(UserInfo("x"), attrs) == (
        'nodes "n1" is forbidden: User "x" cannot delete resource "nodes" in API group "" '
        "at the cluster scope"
    )


def test_forbidden_message_for_a_subresource_names_it_only_in_the_detail() -> None:
    attrs = Attributes("patch", "ns", "apps", "deployments", "scale", "web")
    assert forbidden_message(UserInfo("x"), attrs) == (
        'deployments.apps "web" is forbidden: User "x" cannot patch resource '
        '"deployments/scale" in API group "apps" in the namespace "ns"'
    )


def test_forbidden_message_for_a_non_resource_path() -> None:
    attrs = Attributes("get", "", "", "", path="/foo", resource_request=False)
    assert forbidden_message(UserInfo("x"), attrs) == 'forbidden: User "x" cannot get path "/foo"'


def test_forbidden_message_appends_a_deny_reason_when_given() -> None:
    store = Store().add(cluster_role_binding("dangling", "gone", user("x")))
    attrs = Attributes("list", "ns", "", "pods")
    decision = authorize(UserInfo("x"), attrs, store)
    assert forbidden_message(UserInfo("x"), attrs, decision.reason) == (
        'pods is forbidden: User "x" cannot list resource "pods" in API group "" '
        'in the namespace "ns": RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
    )


def test_forbidden_message_quotes_like_go() -> None:
    attrs = Attributes("get", "ns", "", "configmaps", name='we"ird\\\n')
    assert forbidden_message(UserInfo("x"), attrs).startswith(
        'configmaps "we\\"ird\\\\\\n" is forbidden'
    )
