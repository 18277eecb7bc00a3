"""Kubernetes RBAC authorization (``rbac.authorization.k8s.io/v1``) over plain dicts.

Pure functions, no I/O: the caller hands in the requesting user, the request's
attributes and an ``RBACSource`` that lists Roles, RoleBindings, ClusterRoles and
ClusterRoleBindings as their JSON dicts.

- ``authorize`` answers allow / deny the way the real API server's authorizer chain
  does: members of ``system:masters`` are allowed everything; otherwise a request is
  allowed when some rule reachable through a binding that names the user matches it.
  ClusterRoleBindings are consulted first, then RoleBindings of the request's
  namespace. Non-resource requests (``/version``) are only granted via
  ClusterRoleBindings. ClusterRoles with an ``aggregationRule`` are resolved on the fly
  (no aggregation controller needs to have run).
- ``forbidden_message`` builds the exact text of the server's 403 Status message.
- ``rules_for`` lists the rules in effect for a user in a namespace, as
  SelfSubjectRulesReview reports them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fluxd.gotext import quote
from fluxd.selector import SelectorError, from_label_selector

__all__ = [
    "Attributes",
    "Decision",
    "RBACSource",
    "UserInfo",
    "authorize",
    "forbidden_message",
    "rules_for",
    "service_account_username",
    "split_service_account_username",
]

MASTERS_GROUP = "system:masters"
AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
_SA_USER_PREFIX = "system:serviceaccount:"
_SA_GROUP_PREFIX = "system:serviceaccounts:"

Rule = Mapping[str, Any]


def service_account_username(namespace: str, name: str) -> str:
    return f"{_SA_USER_PREFIX}{namespace}:{name}"


def split_service_account_username(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ``system:serviceaccount:<ns>:<name>`` user, else None."""
    if not username.startswith(_SA_USER_PREFIX):
        return None
    parts = username[len(_SA_USER_PREFIX) :].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()

    @classmethod
    def for_request(cls, user: str, groups: Iterable[str] = ()) -> UserInfo:
        """The user as the server sees it after authentication / impersonation.

        Service accounts get their two ``system:serviceaccounts`` groups; everyone gets
        ``system:authenticated`` except the anonymous user (``system:unauthenticated``
        instead) and a caller that already claims ``system:unauthenticated``.
        """
        result = list(dict.fromkeys(groups))
        sa = split_service_account_username(user)
        if sa is not None:
            for group in (SERVICE_ACCOUNTS_GROUP, _SA_GROUP_PREFIX + sa[0]):
                if group not in result:
                    result.append(group)
        if user == ANONYMOUS_USER:
            if UNAUTHENTICATED_GROUP not in result:
                result.append(UNAUTHENTICATED_GROUP)
        elif AUTHENTICATED_GROUP not in result and UNAUTHENTICATED_GROUP not in result:
            result.append(AUTHENTICATED_GROUP)
        return cls(user, tuple(result))


@dataclass(frozen=True)
class Attributes:
    verb: str
    namespace: str
    api_group: str
    resource: str
    subresource: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True


class RBACSource(Protocol):
    def roles(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...

    def role_bindings(self, namespace: str) -> Iterable[Mapping[str, Any]]: ...

    def cluster_roles(self) -> Iterable[Mapping[str, Any]]: ...

    def cluster_role_bindings(self) -> Iterable[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: on allow, which binding granted it; on deny, "" or the binding resolution errors
    #: (``RBAC: clusterrole.rbac.authorization.k8s.io "x" not found``) that the real
    #: server appends to the forbidden message
    reason: str = ""


# --- authorization ---------------------------------------------------------------------


def authorize(user: UserInfo, attrs: Attributes, source: RBACSource) -> Decision:
    if MASTERS_GROUP in user.groups:
        # The privileged-group authorizer runs before RBAC and gives no reason.
        return Decision(True, "")
    # Non-resource requests have no namespace, so only cluster-wide bindings apply.
    namespace = attrs.namespace if attrs.resource_request else ""
    errors: list[str] = []
    for grant in _grants(user, namespace, _Resolver(source)):
        if grant.error:
            errors.append(grant.error)
            continue
        if any(_rule_allows(attrs, rule) for rule in grant.rules):
            return Decision(True, f"RBAC: allowed by {grant.description}")
    return Decision(False, f"RBAC: {_aggregate_errors(errors)}" if errors else "")


def rules_for(user: UserInfo, namespace: str, source: RBACSource) -> list[dict[str, Any]]:
    """Rules in effect for ``user`` in ``namespace`` ("" for cluster-wide only).

    Like SelfSubjectRulesReview: privileged-group rules, then ClusterRoleBinding
    rules, then the namespace's RoleBinding rules, each a fresh copy.
    """
    rules: list[dict[str, Any]] = []
    if MASTERS_GROUP in user.groups:
        rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        rules.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
    for grant in _grants(user, namespace, _Resolver(source)):
        rules.extend(copy.deepcopy(dict(rule)) for rule in grant.rules)
    return rules


def forbidden_message(user: UserInfo, attrs: Attributes, reason: str = "") -> str:
    """The API server's 403 message; pass a deny ``Decision.reason`` to append it."""
    if not attrs.resource_request:
        detail = f"User {quote(user.name)} cannot {attrs.verb} path {quote(attrs.path)}"
        prefix = "forbidden"
    else:
        resource = attrs.resource
        if attrs.subresource:
            resource = f"{resource}/{attrs.subresource}"
        detail = (
            f"User {quote(user.name)} cannot {attrs.verb} resource {quote(resource)}"
            f" in API group {quote(attrs.api_group)}"
        )
        if attrs.namespace:
            detail += f" in the namespace {quote(attrs.namespace)}"
        else:
            detail += " at the cluster scope"
        # The qualified resource leaves out the subresource.
        qualified = attrs.resource
        if attrs.api_group:
            qualified = f"{qualified}.{attrs.api_group}"
        if attrs.name:
            qualified = f"{qualified} {quote(attrs.name)}"
        prefix = f"{qualified} is forbidden"
    if reason:
        detail = f"{detail}: {reason}"
    return f"{prefix}: {detail}"


# --- bindings --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    description: str
    rules: Sequence[Rule] = ()
    error: str = ""


def _grants(user: UserInfo, namespace: str, resolver: _Resolver) -> Iterator[_Grant]:
    """Rule sets of the bindings naming ``user``: cluster-wide ones first."""
    for binding in resolver.source.cluster_role_bindings():
        subject = _applying_subject(user, binding.get("subjects"), "")
        if subject is None:
            continue
        ref = _mapping(binding.get("roleRef"))
        kind, role_name = str(ref.get("kind", "")), str(ref.get("name", ""))
        description = (
            f"ClusterRoleBinding {quote(_name(binding))} of {kind} {quote(role_name)}"
            f" to {_describe_subject(subject, '')}"
        )
        yield resolver.resolve(kind, role_name, "", description)
    if not namespace:
        return
    for binding in resolver.source.role_bindings(namespace):
        subject = _applying_subject(user, binding.get("subjects"), namespace)
        if subject is None:
            continue
        ref = _mapping(binding.get("roleRef"))
        kind, role_name = str(ref.get("kind", "")), str(ref.get("name", ""))
        description = (
            f"RoleBinding {quote(_name(binding) + '/' + namespace)} of {kind} {quote(role_name)}"
            f" to {_describe_subject(subject, namespace)}"
        )
        yield resolver.resolve(kind, role_name, namespace, description)


def _applying_subject(user: UserInfo, subjects: Any, namespace: str) -> Rule | None:
    """The first subject of a binding that denotes ``user``."""
    if not isinstance(subjects, list):
        return None
    for subject in subjects:
        if isinstance(subject, Mapping) and _subject_matches(user, subject, namespace):
            return subject
    return None


def _subject_matches(user: UserInfo, subject: Rule, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        # A RoleBinding may name an SA of its own namespace without qualifying it.
        sa_namespace = subject.get("namespace") or namespace
        if not sa_namespace or not name:
            return False
        return user.name == service_account_username(str(sa_namespace), str(name))
    return False


def _describe_subject(subject: Rule, binding_namespace: str) -> str:
    kind, name = str(subject.get("kind", "")), str(subject.get("name", ""))
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or binding_namespace
        return f"{kind} {quote(f'{name}/{sa_namespace}')}"
    return f"{kind} {quote(name)}"


# --- roles -----------------------------------------------------------------------------


class _Resolver:
    """Looks roles up by name, listing each kind at most once per call."""

    def __init__(self, source: RBACSource) -> None:
        self.source = source
        self._cluster_roles: dict[str, Rule] | None = None
        self._roles: dict[str, dict[str, Rule]] = {}
        self._cluster_rules: dict[str, list[Rule]] = {}

    def resolve(self, kind: str, name: str, namespace: str, description: str) -> _Grant:
        if kind == "ClusterRole":
            rules = self.cluster_role_rules(name)
            if rules is None:
                return _Grant(description, error=_not_found("clusterrole", name))
            return _Grant(description, rules)
        if kind == "Role":
            # A ClusterRoleBinding cannot reach a Role: there is no namespace to look in.
            role = self._namespace_roles(namespace).get(name) if namespace else None
            if role is None:
                return _Grant(description, error=_not_found("role", name))
            return _Grant(description, _own_rules(role))
        return _Grant(description, error=f"unsupported role reference kind: {quote(kind)}")

    def cluster_role_rules(self, name: str) -> list[Rule] | None:
        if name not in self._all_cluster_roles():
            return None
        return self._effective_cluster_rules(name, frozenset())

    def _all_cluster_roles(self) -> dict[str, Rule]:
        if self._cluster_roles is None:
            self._cluster_roles = {_name(r): r for r in self.source.cluster_roles()}
        return self._cluster_roles

    def _namespace_roles(self, namespace: str) -> dict[str, Rule]:
        if namespace not in self._roles:
            self._roles[namespace] = {_name(r): r for r in self.source.roles(namespace)}
        return self._roles[namespace]

    def _effective_cluster_rules(self, name: str, visiting: frozenset[str]) -> list[Rule]:
        cached = self._cluster_rules.get(name)
        if cached is not None:
            return cached
        top_level = not visiting
        roles = self._all_cluster_roles()
        role = roles[name]
        rules = _own_rules(role)
        aggregation = role.get("aggregationRule")
        if isinstance(aggregation, Mapping):
            selectors = aggregation.get("clusterRoleSelectors") or []
            rules = list(rules)
            visiting = visiting | {name}
            # Sorted by name, as the aggregation controller does, for a stable order.
            for other_name in sorted(roles):
                # Guard against aggregated roles selecting each other (or themselves).
                if other_name in visiting:
                    continue
                labels = _mapping(_mapping(roles[other_name].get("metadata")).get("labels"))
                if not any(_selector_matches(s, labels) for s in selectors):
                    continue
                for rule in self._effective_cluster_rules(other_name, visiting):
                    if rule not in rules:
                        rules.append(rule)
        if top_level:
            # Only cache results not truncated by cycle protection.
            self._cluster_rules[name] = rules
        return rules


def _own_rules(role: Rule) -> list[Rule]:
    rules = role.get("rules")
    if not isinstance(rules, list):
        return []
    return [rule for rule in rules if isinstance(rule, Mapping)]


def _selector_matches(selector: Any, labels: Mapping[str, Any]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything, an invalid
    one nothing."""
    if not isinstance(selector, Mapping):
        return False
    try:
        return from_label_selector(selector).matches(labels)
    except SelectorError:
        return False


# --- rule matching ---------------------------------------------------------------------


def _rule_allows(attrs: Attributes, rule: Rule) -> bool:
    if not _matches_any(attrs.verb, rule.get("verbs")):
        return False
    if not attrs.resource_request:
        return _url_matches(attrs.path, rule.get("nonResourceURLs"))
    return (
        _matches_any(attrs.api_group, rule.get("apiGroups"))
        and _resource_matches(attrs.resource, attrs.subresource, rule.get("resources"))
        and _name_matches(attrs.name, rule.get("resourceNames"))
    )


def _matches_any(value: str, allowed: Any) -> bool:
    return isinstance(allowed, list) and ("*" in allowed or value in allowed)


def _resource_matches(resource: str, subresource: str, allowed: Any) -> bool:
    if not isinstance(allowed, list):
        return False
    for entry in allowed:
        if not isinstance(entry, str):
            continue
        if entry == "*":
            return True
        rule_resource, slash, rule_subresource = entry.partition("/")
        if not slash:
            # A bare resource never covers its subresources.
            if not subresource and entry == resource:
                return True
            continue
        if (
            subresource
            and rule_resource in ("*", resource)
            and rule_subresource in ("*", subresource)
        ):
            return True
    return False


def _name_matches(name: str, allowed: Any) -> bool:
    if not allowed:
        return True
    # Requests without a name (list, create, deletecollection) cannot be narrowed to
    # named objects, so a rule with resourceNames never covers them.
    return bool(name) and isinstance(allowed, list) and name in allowed


def _url_matches(path: str, allowed: Any) -> bool:
    if not isinstance(allowed, list):
        return False
    for entry in allowed:
        if not isinstance(entry, str):
            continue
        if entry == "*" or entry == path:
            return True
        if entry.endswith("*") and path.startswith(entry[:-1]):
            return True
    return False


# --- helpers ---------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _name(obj: Rule) -> str:
    return str(_mapping(obj.get("metadata")).get("name", ""))


def _not_found(kind: str, name: str) -> str:
    return f"{kind}.rbac.authorization.k8s.io {quote(name)} not found"


def _aggregate_errors(errors: list[str]) -> str:
    # Like apimachinery's error aggregate: duplicates collapse, several are bracketed.
    unique = list(dict.fromkeys(errors))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


