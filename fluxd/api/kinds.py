"""The kinds fluxd serves: the one list the CRD generator and the app read.

Each controller's API module declares its ``Kind``s as a module-level tuple; this function
gathers them. It is a function over constants, not a registry that modules add to at
import time, so what is served never depends on what happened to be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluxd.api.crd import Kind


def all_kinds() -> tuple[Kind, ...]:
    """Every declared kind, one entry per served version (HelmRelease is served
    before its controller reconciles it)."""
    from fluxd.api import helm, kustomize, notification, source

    return (*source.KINDS, *kustomize.KINDS, *helm.KINDS, *notification.KINDS)
