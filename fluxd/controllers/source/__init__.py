"""source-controller: GitRepository (and, as they are built, HelmRepository, HelmChart,
OCIRepository) producing artifacts in the store and on the artifact bus."""
