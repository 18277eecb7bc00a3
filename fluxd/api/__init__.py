"""Pydantic models of the Flux kinds and their shared types; no I/O. The CRDs in
``deploy/crds`` are generated from them (``fluxd.api.crd``)."""
