"""The chart's CustomResourceDefinitions, applied by fluxd before helm runs
(helm-controller ``internal/action/crds.go``): helm's CLI only creates missing CRDs on
install and never touches them on upgrade, so Flux skips helm's CRD handling and applies
the chart's ``crds/`` itself, with a policy:

- ``Skip``: nothing is applied;
- ``Create``: the CRDs the cluster lacks are created, existing ones are left alone;
- ``CreateReplace``: missing ones are created, existing ones replaced with the chart's.

Each CRD gets the origin labels ``helm.toolkit.fluxcd.io/name|namespace`` of its
HelmRelease, is written by server-side apply as Helm's field manager (``fluxd.ssa``),
and is waited for until Established (at most a minute, as Flux). The helm action then
runs with ``--skip-crds``.

Only the chart's own ``crds/`` directory is read (``*.yaml``, ``*.yml``, ``*.json``, as
Helm selects them); the archive is unpacked with the bounded, path-checked extractor
and every file is size-bounded and parsed with the safe YAML loader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxd import ssa
from fluxd.clock import Clock
from fluxd.controllers.helm.action import CRDPolicy
from fluxd.helmchart import Limits, MetadataError, archive_files
from fluxd.kube.errors import KubeError, NotFound
from fluxd.kustomize.kyaml import Unsupported, load_documents

Obj = dict[str, Any]

FIELD_MANAGER = "helm"
NAME_LABEL = "helm.toolkit.fluxcd.io/name"
NAMESPACE_LABEL = "helm.toolkit.fluxcd.io/namespace"
CRD_DIR = "crds"
_EXTENSIONS = (".yaml", ".yml", ".json")
#: how long Flux waits for the CRDs to be recognised
WAIT_TIMEOUT = 60.0


class CRDError(Exception):
    """The chart's CRDs could not be read or applied; the message says which."""


def read_crds(archive: Path, *, limits: Limits | None = None) -> list[Obj]:
    """The CustomResourceDefinitions in the chart archive's ``crds/`` directory, files in
    name order, read from the archive's stream (nothing unpacked). Blocks: run it in a
    thread."""
    limits = limits or Limits()
    try:
        files = archive_files(archive, limits, _crd_file)
    except (MetadataError, OSError) as exc:
        raise CRDError(f"cannot read the chart archive: {exc}") from None
    found: list[Obj] = []
    for name in sorted(files):
        try:
            docs = load_documents(files[name])
        except Unsupported as exc:
            raise CRDError(f"failed to parse CustomResourceDefinitions from {name}: "
                           f"{exc}") from None
        for doc in docs:
            if not isinstance(doc, dict) or not _is_crd(doc):
                raise CRDError(f"failed to parse CustomResourceDefinitions from {name}: "
                               "not a CustomResourceDefinition")
            found.append(doc)
    return found


def _crd_file(name: str) -> bool:
    directory, _, file = name.partition("/")
    return directory == CRD_DIR and "/" not in file and file.endswith(_EXTENSIONS)


def _is_crd(doc: Mapping[str, Any]) -> bool:
    return doc.get("kind") == "CustomResourceDefinition" and \
        str(doc.get("apiVersion") or "").startswith("apiextensions.k8s.io/") and \
        bool((doc.get("metadata") or {}).get("name"))


async def apply_crds(client: ssa.KubeAPI, chart_archive: Path, policy: CRDPolicy, *,
                     name: str, namespace: str, clock: Clock,
                     limits: Limits | None = None,
                     crds: Sequence[Obj] | None = None) -> ssa.ChangeSet:
    """Apply the chart's CRDs by ``policy`` (see the module docstring) for the
    HelmRelease ``namespace/name``; the change set says what was created, configured
    or left alone. ``CRDError`` when the chart or the cluster refuses."""
    if policy == "Skip":
        return ssa.ChangeSet()
    if policy not in ("Create", "CreateReplace"):
        raise CRDError(f"invalid CRD policy '{policy}', valid values are 'Skip', 'Create' "
                       "or 'CreateReplace'")
    if crds is None:
        crds = await asyncio.to_thread(read_crds, chart_archive, limits=limits)
    if not crds:
        return ssa.ChangeSet()
    manager = ssa.ResourceManager(client=client, owner=FIELD_MANAGER,
                                  owner_labels={NAME_LABEL: name, NAMESPACE_LABEL: namespace},
                                  clock=clock)
    result = ssa.ChangeSet()
    wanted = crds
    if policy == "Create":
        wanted = []
        for crd in crds:
            meta = ssa.ObjMeta.of(crd, namespaced=False)
            try:
                await client.get(str(crd["apiVersion"]), meta.kind, meta.name)
            except NotFound:
                wanted.append(crd)
                continue
            except KubeError as exc:
                raise CRDError(f"failed to get CustomResourceDefinition {meta.name}: "
                               f"{exc.message}") from exc
            version = str(crd["apiVersion"]).rpartition("/")[2]
            result.entries.append(ssa.ChangeSetEntry(meta, version, ssa.Action.SKIPPED))
    if not wanted:
        return result
    try:
        applied = await manager.apply_all_staged(wanted, wait_timeout=WAIT_TIMEOUT)
    except ssa.WaitError as exc:
        raise CRDError(f"failed to wait for CustomResourceDefinition(s): {exc}") from exc
    except (ssa.ApplyError, KubeError) as exc:
        verb = "create" if policy == "Create" else "update"
        raise CRDError(f"failed to {verb} CustomResourceDefinition(s): {exc}") from exc
    result.extend(applied)
    return result


__all__ = ["CRDError", "CRDPolicy", "apply_crds", "read_crds"]
