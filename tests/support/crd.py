"""A schema-less CustomResourceDefinition for tests that need a new kind."""

from __future__ import annotations

from typing import Any


def thing_crd(group: str, *versions: str) -> dict[str, Any]:
    """Kind ``Thing`` (plural ``things``) in ``group``, served at ``versions`` (the first
    stored), with any fields kept."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"things.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": "Thing", "plural": "things"},
                     "versions": [{"name": v, "served": True, "storage": i == 0,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object",
                                       "x-kubernetes-preserve-unknown-fields": True}}}
                                  for i, v in enumerate(versions)]}}
