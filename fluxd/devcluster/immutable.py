"""Fields of built-in kinds that an update may not change, refused as the real server does.

``update_errors(group, kind, new, old)`` returns the 422 causes (type, field, message) a
kube-apiserver's update validation gives for:

- a ConfigMap or Secret whose stored object says ``immutable: true``: ``immutable`` may
  not be unset and ``data`` (and a ConfigMap's ``binaryData``) may not change;
- a Secret's ``type``, which never changes;
- an RBAC RoleBinding's or ClusterRoleBinding's ``roleRef``;
- the ``spec.selector`` of apps/v1 Deployments, ReplicaSets and DaemonSets.

Values in messages are printed the way Go's ``%#v`` prints the API types, since that is
what clients (and tools matching on them, such as Flux's force-recreate) see.
"""

from __future__ import annotations

from typing import Any

from fluxd.gotext import quote

Cause = tuple[str, str, str]

_IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"
_APPS_SELECTOR_KINDS = frozenset({"Deployment", "ReplicaSet", "DaemonSet"})


def update_errors(group: str, kind: str, new: dict[str, Any],
                  old: dict[str, Any]) -> list[Cause]:
    if group == "" and kind in ("ConfigMap", "Secret"):
        return _config_errors(kind, new, old)
    if group == "rbac.authorization.k8s.io" and kind in ("RoleBinding", "ClusterRoleBinding"):
        return _role_ref_errors(new, old)
    if group == "apps" and kind in _APPS_SELECTOR_KINDS:
        return _selector_errors(new, old)
    return []


def _empty_is_absent(value: Any) -> Any:
    return value or None


def _config_errors(kind: str, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    if kind == "Secret":
        old_type, new_type = old.get("type") or "Opaque", new.get("type") or "Opaque"
        if new_type != old_type:
            causes.append(("FieldValueInvalid", "type",
                           f"Invalid value: {quote(str(new_type))}: field is immutable"))
    if old.get("immutable") is not True:
        return causes
    if new.get("immutable") is not True:
        causes.append(("FieldValueForbidden", "immutable", f"Forbidden: {_IMMUTABLE_WHEN_SET}"))
    fields = ("data", "binaryData") if kind == "ConfigMap" else ("data",)
    for name in fields:
        if _empty_is_absent(new.get(name)) != _empty_is_absent(old.get(name)):
            causes.append(("FieldValueForbidden", name, f"Forbidden: {_IMMUTABLE_WHEN_SET}"))
    return causes


def _role_ref_errors(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    ref = new.get("roleRef") or {}
    if ref == (old.get("roleRef") or {}):
        return []
    shown = (f"rbac.RoleRef{{APIGroup:{quote(str(ref.get('apiGroup') or ''))}, "
             f"Kind:{quote(str(ref.get('kind') or ''))}, "
             f"Name:{quote(str(ref.get('name') or ''))}}}")
    return [("FieldValueInvalid", "roleRef", f"Invalid value: {shown}: cannot change roleRef")]


def _selector_errors(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    selector = (new.get("spec") or {}).get("selector")
    if _same_selector(selector, (old.get("spec") or {}).get("selector")):
        return []
    return [("FieldValueInvalid", "spec.selector",
             f"Invalid value: {_go_label_selector(selector)}: field is immutable")]


def _same_selector(a: Any, b: Any) -> bool:
    """Semantic equality as apimachinery has it: a nil and an empty map or list agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_selector(a.get(k), b.get(k)) for k in a.keys() | b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_selector(x, y) for x, y in zip(a, b, strict=True))
    if a in (None, {}, []) and b in (None, {}, []):
        return True
    return bool(a == b)


def _go_strings(value: Any) -> str:
    if value is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(quote(str(v)) for v in value) + "}"


def _go_label_selector(selector: Any) -> str:
    """``%#v`` of a ``*metav1.LabelSelector`` as the validation message prints it."""
    if not isinstance(selector, dict):
        return "null"
    labels = selector.get("matchLabels")
    if labels is None:
        shown_labels = "map[string]string(nil)"
    else:
        shown_labels = "map[string]string{" + ", ".join(
            f"{quote(str(k))}:{quote(str(v))}" for k, v in sorted(labels.items())) + "}"
    exprs = selector.get("matchExpressions")
    if exprs is None:
        shown_exprs = "[]v1.LabelSelectorRequirement(nil)"
    else:
        shown_exprs = "[]v1.LabelSelectorRequirement{" + ", ".join(
            f"v1.LabelSelectorRequirement{{Key:{quote(str(e.get('key') or ''))}, "
            f"Operator:{quote(str(e.get('operator') or ''))}, "
            f"Values:{_go_strings(e.get('values'))}}}"
            for e in exprs if isinstance(e, dict)) + "}"
    return f"v1.LabelSelector{{MatchLabels:{shown_labels}, MatchExpressions:{shown_exprs}}}"
