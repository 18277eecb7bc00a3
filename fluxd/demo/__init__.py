"""``fluxd demo``: a GitOps loop end to end on one machine.

It starts the development API server and fluxd's controllers, serves a fresh working copy
of ``examples/gitops`` (a Flux repository for the cluster ``eu-west``) from a local Git
HTTP server, bootstraps it with a GitRepository and a root Kustomization, reports progress
until every Kustomization is Ready, shows what landed with ``kubectl get``, and then
applies each commit made to the working copy within seconds.

``session`` tells the story; ``repository`` (the working copy), ``gitserver`` (dulwich's
smart HTTP server), ``progress`` (readiness as pure functions) and ``kubectl`` serve it.
"""

from __future__ import annotations

from fluxd.demo.session import run_demo

__all__ = ["run_demo"]
