"""kustomize's build, in process, for the shapes real repositories use.

The engine reads an artifact's files from memory and reproduces ``kustomize build``
exactly, or says it cannot (the caller then runs the real kustomize). Pure: no I/O
beyond the files handed in, no clock, no Kubernetes client.

``engine`` (the build: resources, bases, components, the transformer order, hashes, name
references, legacy order) drives ``generator`` (ConfigMap/Secret generators and the
content hash), ``transform`` (labels, annotations, images, replicas), ``identity``
(namespace, prefix/suffix, name references and kustomize's id bookkeeping) and
``patch`` (strategic merge and JSON 6902 patches, target selection); ``kyaml`` reads
YAML as kustomize does. Each raises ``kyaml.Unsupported(reason)`` for what it does not
reproduce.
"""
