"""Flux's helm-controller: HelmReleases installed, upgraded, tested, remediated and
uninstalled by the real ``helm`` binary.

What enqueues a HelmRelease, besides its own spec changes and reconcile requests:

* a new artifact of its chart source (its HelmChart, OCIRepository) on the artifact bus,
  at once — unless it is Ready at that revision already;
* a HelmRelease it depends on becoming Ready, or Ready at a new chart version (cache index
  on ``dependsOn``), at once — Flux polls every 30 s; the requeue stays as a fallback;
* a change to a ConfigMap or Secret it takes values from, when that object matches
  ``[watch] configs_label_selector`` (``reconcile.fluxcd.io/watch=Enabled``; watched
  metadata-only: their data is never cached).

The package also runs the loopback API proxy every helm process talks through
(``fluxd.kube.proxy``), as a service entered before the controllers start and left after
they stop, and gives helm a private home (plugins, cache) for the life of the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluxd.controllers.context import Contribution, ControllerContext


def controllers(context: ControllerContext) -> list[Contribution]:
    """The HelmRelease controller and the services it needs. Imported on use: the
    post-render command helm starts for every install imports this package, and must
    stay light."""
    from fluxd.controllers.helm import controller
    return controller.controllers(context)


__all__ = ["controllers"]
