"""Label and field selectors of list and watch requests, matched against plain dicts.

Label selectors are ``fluxd.selector``'s (Kubernetes' whole syntax); one that does not
parse is a 400 with the real server's message. Field selectors support ``=``, ``==``
and ``!=`` over ``metadata.name`` and ``metadata.namespace`` for every kind, plus the
few kind-specific fields real servers index (event ``involvedObject.*``, pod
``status.phase``/``spec.nodeName``, secret ``type``); anything else is rejected with
the server's "field label not supported" error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fluxd import selector
from fluxd.devcluster.errors import ApiError, bad_request
from fluxd.selector import Selector


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_labels(text: str) -> Selector:
    """The ``labelSelector`` of a request; a 400 ``ApiError`` when it does not parse."""
    try:
        return selector.parse(text or "")
    except selector.SelectorError as exc:
        raise bad_request(str(exc)) from None


def labels_match(labels: Selector, obj: Mapping[str, Any]) -> bool:
    return labels.matches((obj.get("metadata") or {}).get("labels"))


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_KIND_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "events"): (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    ),
    ("", "pods"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                   "spec.serviceAccountName", "status.phase", "status.podIP"),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("batch", "jobs"): ("status.successful",),
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    if path == "source":
        return str(((obj.get("source") or {}).get("component")) or "")
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


FieldMatcher = Callable[[Mapping[str, Any]], bool]


def parse_fields(text: str, storage: tuple[str, str]) -> FieldMatcher:
    allowed = _COMMON_FIELDS + _KIND_FIELDS.get(storage, ())
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if m.group(1) not in allowed:
            raise ApiError(400, f'field label not supported: {m.group(1)}')
        terms.append((m.group(1), m.group(2) == "!=", m.group(3).strip()))

    def match(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) != negate for path, negate, value in terms)

    return match
