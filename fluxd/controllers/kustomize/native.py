"""The native build: Flux's kustomization generated or merged, then kustomize's build,
both in memory from the artifact's snapshot (no extraction, no kubectl process).

``build_native(snapshot, path, spec)`` does what Flux's kustomize generator does before
kustomize runs (as ``build.generate`` does on disk): an existing kustomization file in
``spec.path`` is read (``build.parse_kustomization``), otherwise one is generated from
the directory walk — every ``*.yaml``/``*.yml`` file and every sub-directory holding a
kustomization file, in ``filepath.Walk`` order —, the spec's ``targetNamespace``,
``namePrefix``, ``nameSuffix``, ``patches``, ``components`` and ``images`` are merged in
(``build._merge_spec``), and ``fluxd.kustomize.engine.build`` builds the result.

It raises ``fluxd.kustomize.kyaml.Unsupported(reason)`` — the caller then runs the real
kustomize, whose result or error is the one users see — for ``spec.decryption``, a path
outside the artifact or not a directory, anything Flux's generator refuses, anything
the engine does not reproduce exactly, and (reason ``unexpected …``) a defect of the
engine itself. ``tests/controllers/kustomize/test_native.py``
and ``tests/kustomize/test_engine.py`` hold the output equal to ``kubectl kustomize``'s.

The order is kustomize's ``legacy`` sort (``sort_key``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxd.artifacts.snapshot import Snapshot
from fluxd.controllers.kustomize import build as flux
from fluxd.kustomize import engine
from fluxd.kustomize.engine import KUSTOMIZATION_FILES, sort_key
from fluxd.kustomize.kyaml import Unsupported, load_kustomization

__all__ = ["Unsupported", "base_directory", "build_native", "sort_key"]

Obj = dict[str, Any]

_MAX_WALK_DEPTH = 128


def base_directory(path: str) -> str | None:
    """``spec.path`` as a snapshot directory ("" for the root); None when it would leave
    the artifact (the slow path reports that)."""
    joined = posixpath.normpath(posixpath.join("/", path or "."))
    if not joined.startswith("/"):
        return None
    return joined.lstrip("/")


def _walk(snapshot: Snapshot, base: str) -> list[str]:
    """Flux's directory walk: the manifests and kustomization directories under
    ``base``, relative to it, in ``filepath.Walk`` order (names sorted, depth first),
    kustomization directories not entered."""
    found: list[str] = []

    def walk(directory: str, relative: str, depth: int) -> None:
        if depth > _MAX_WALK_DEPTH:
            raise Unsupported("a directory tree too deep")
        dirs, files = snapshot.listdir(directory)
        prefix = f"{directory}/" if directory else ""
        for name, is_dir in sorted([(d, True) for d in dirs] + [(f, False) for f in files]):
            if is_dir:
                _, inner = snapshot.listdir(prefix + name)
                if any(kfile in inner for kfile in KUSTOMIZATION_FILES):
                    found.append(relative + name)
                else:
                    walk(prefix + name, f"{relative}{name}/", depth + 1)
                continue
            if flux._manifest_name(name):
                found.append(relative + name)

    walk(base, "", 0)
    return found


def _kustomization(snapshot: Snapshot, base: str, spec: Mapping[str, Any]) -> Obj:
    """Flux's kustomization for ``spec`` in ``base``: read or generated, spec merged."""
    _, names = snapshot.listdir(base)
    existing = [name for name in KUSTOMIZATION_FILES if name in names]
    try:
        if len(existing) > 1:
            raise Unsupported("several kustomization files")  # kustomize refuses them
        if existing:
            data = snapshot.files[posixpath.join(base, existing[0])]
            load_kustomization(data)  # refuses what go-yaml refuses (duplicate keys, …)
            kustomization = flux.parse_kustomization(data)
            if not kustomization.get("resources"):
                # kustomize refuses an "empty" kustomization; Flux makes it not so
                kustomization["buildMetadata"] = ["originAnnotations"]
        else:
            kustomization = flux.kustomization_listing(_walk(snapshot, base))

        def exists(component: str) -> bool:
            path = posixpath.normpath(posixpath.join(base, component))
            if path == ".." or path.startswith("../"):
                raise Unsupported("a component outside the artifact")
            return path in snapshot.files or snapshot.is_dir("" if path == "." else path)

        flux._merge_spec(kustomization, spec, Path(base), exists=exists)
    except (flux.BuildError, UnicodeDecodeError) as exc:
        raise Unsupported(f"Flux's generator fails: {exc}") from None
    return kustomization


def build_native(snapshot: Snapshot, path: str, spec: Mapping[str, Any]) -> list[Obj]:
    """The objects kustomize would build for ``spec`` from the snapshot; ``Unsupported``
    when the real kustomize must do it (see the module docstring)."""
    if spec.get("decryption"):
        raise Unsupported("spec.decryption")
    base = base_directory(path)
    if base is None or not snapshot.is_dir(base):
        raise Unsupported("spec.path is not a directory in the artifact")
    try:
        return engine.build(snapshot, base, _kustomization(snapshot, base, spec))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError,
            RecursionError) as exc:
        # a defect here must not fail what the real kustomize builds
        raise Unsupported(f"unexpected {type(exc).__name__} in the native build: "
                          f"{exc}") from exc
