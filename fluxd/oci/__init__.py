"""OCI registries: Flux's artifacts in and out of them.

* :mod:`fluxd.oci.artifact` — media types, descriptors, manifests and Flux's artifact
  format (building layers, selecting layers and platforms, revision strings);
* :mod:`fluxd.oci.auth` — credentials (docker config Secrets) and the bearer-token flow;
* :mod:`fluxd.oci.client` — the distribution API client: references, tags, resolve,
  manifests, verified blob downloads, and pushes.

Nothing here knows Kubernetes: Secrets arrive as plain mappings.
"""
