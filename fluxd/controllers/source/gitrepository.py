"""The GitRepository reconciler: a Git ref in, a reproducible tarball artifact out.

The driver has Flux's shape: fetch from the cache → finalize if deleting → ensure the
finalizer → stop if suspended → steps (storage, source, include, artifact) → always, in a
shielded final step, summarise the conditions and patch the status.

- **storage**: a recorded artifact whose file is missing (a restart on an empty volume)
  is not data loss: the source is fetched again.
- **source**: one ls-remote resolves the ref; if the revision and the inputs that shape
  the artifact (ignore rules, includes, sparse dirs, submodules) are what the stored
  artifact was built from, nothing is fetched. Otherwise a shallow fetch and checkout in a
  worker thread, bounded by ``spec.timeout`` on the injected clock: past it (or when the
  reconcile is cancelled) the thread is told to stop and is awaited; it ends at its next
  chunk, object or tree entry, its temporary files with it.
- **include**: other GitRepositories' artifacts are extracted (safely) into ``toPath``;
  a missing one sets ``IncludeUnavailable``.
- **artifact**: the tree is archived (``.sourceignore`` + ``spec.ignore`` rules), stored
  atomically, recorded in ``status.artifact`` and published on the artifact bus, so
  consumers reconcile at once; old artifacts are garbage-collected.

Failures set Flux's conditions and reasons (``FetchFailed``/``AuthenticationFailed``,
``GitOperationFailed``; ``URLInvalid`` stalls) and Warning events; a new artifact emits
``NewArtifact`` with the commit subject. No credential ever reaches a message.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fluxd.artifacts.bus import SourceKey
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.artifacts.ignore import source_matcher
from fluxd.artifacts.storage import ArchiveError, ArtifactRecord
from fluxd.clock import Clock, rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source import git
from fluxd.controllers.source.driver import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    StepError,
)
from fluxd.runtime import conditions as cond
from fluxd.runtime.reconcile import StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.source.gitrepository")

__all__ = ["CONTROLLER", "KIND", "GitRepositoryReconciler"]

KIND = "GitRepository"
STORAGE_KIND = "gitrepository"
INCLUDE_UNAVAILABLE = "IncludeUnavailable"
SOURCE_VERIFIED = "SourceVerified"
#: Flux's summarize order for GitRepository (gitRepositoryReadyCondition): a failure's own
#: condition gives Ready its reason and message before Stalled and Reconciling do
OWNED = (STORAGE_FAILED, FETCH_FAILED, INCLUDE_UNAVAILABLE, ARTIFACT_OUTDATED,
         ARTIFACT_IN_STORAGE, SOURCE_VERIFIED, cond.STALLED, cond.RECONCILING, cond.READY)
NEGATIVE = (FETCH_FAILED, INCLUDE_UNAVAILABLE, STORAGE_FAILED, ARTIFACT_OUTDATED)

Obj = dict[str, Any]
T = TypeVar("T")
#: how long past ``spec.timeout`` the reconcile waits before stopping the Git work: the
#: work's own socket timeouts (``spec.timeout``) get to report first
TIMEOUT_GRACE = 5.0


@dataclass
class Inputs:
    """What the artifact is built from, besides the revision (the ``observed*`` fields)."""

    ignore: str | None
    include: list[Obj]
    sparse: list[str]
    submodules: bool

    @classmethod
    def of(cls, spec: Obj) -> Inputs:
        return cls(ignore=spec.get("ignore"), include=list(spec.get("include") or []),
                   sparse=list(spec.get("sparseCheckout") or []),
                   submodules=bool(spec.get("recurseSubmodules")))

    def observed_in(self, status: Obj) -> bool:
        return (status.get("observedIgnore") == self.ignore
                and list(status.get("observedInclude") or []) == self.include
                and list(status.get("observedSparseCheckout") or []) == self.sparse
                and bool(status.get("observedRecurseSubmodules")) == self.submodules)


class GitRepositoryReconciler(SourceReconciler):
    KIND = KIND
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    def _remote(self, url: str, auth: git.Auth, timeout: float,
                cancelled: threading.Event) -> git.Remote:
        limits = self.settings.git
        return git.Remote(url, auth, timeout, max_object_size=limits.max_object_size,
                          max_fetch_size=limits.max_fetch_size,
                          max_checkout_size=limits.max_checkout_size,
                          max_checkout_entries=limits.max_checkout_entries,
                          cancelled=cancelled)

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> NewArtifact | None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        ns, name = meta.get("namespace", ""), meta["name"]
        if spec.get("serviceAccountName") and spec.get("provider") not in ("azure", "aws"):
            raise StallingError("serviceAccountName can only be set when provider is 'azure' "
                                "or 'aws'", reason="InvalidProviderConfiguration")
        if spec.get("provider") not in (None, "generic"):
            raise StallingError(f"provider '{spec.get('provider')}' is not supported by fluxd",
                                reason="InvalidProviderConfiguration")
        if spec.get("verify"):
            raise StallingError("commit signature verification (spec.verify) is not "
                                "supported by fluxd yet", reason="VerificationError")
        stored = patcher.get_field("artifact")
        have_file = bool(stored) and await self.artifact_intact(obj, stored)
        if stored and not have_file:
            patcher.mark_false(ARTIFACT_IN_STORAGE, "NoArtifact",
                               "artifact file is missing from storage or fails its digest "
                               "check: fetching it again")
        timeout = parse_duration(spec.get("timeout", "60s"))
        auth = await self._auth(ns, spec)
        ref = git.Ref.from_spec(spec.get("ref"))
        inputs = Inputs.of(spec)
        includes = self._includes(obj, inputs, patcher)

        def resolve(cancelled: threading.Event) -> git.Head:
            with self._remote(spec.get("url", ""), auth, timeout, cancelled) as remote:
                return remote.resolve(ref)

        head = await self._git(resolve, timeout)
        included = [artifact for _, artifact in includes]
        unchanged = (have_file and stored.get("revision") == head.revision
                     and inputs.observed_in(patcher.status)
                     and _same_includes(patcher.get_field("includedArtifacts"), included))
        patcher.delete_condition(FETCH_FAILED)
        if unchanged:
            patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded",
                              f"stored artifact for revision '{head.revision}'")
            patcher.delete_condition(ARTIFACT_OUTDATED)
            await self.recorder.event(obj, reason="ArtifactUpToDate",
                                      message=f"artifact up-to-date with remote revision: "
                                              f"'{head.revision}'", trace=True)
            return None
        if stored:
            patcher.mark_true(ARTIFACT_OUTDATED, "NewRevision",
                              f"new upstream revision '{head.revision}'")
        patcher.mark_reconciling("Progressing",
                                 f"building artifact: new upstream revision '{head.revision}'")
        url = spec.get("url", "")
        with tempfile.TemporaryDirectory(prefix="fluxd-gitrepo-") as tmp:
            work = Path(tmp)
            if not includes and not inputs.submodules:
                # the fast path: the tarball straight from the Git objects
                def fetch_and_archive(
                        cancelled: threading.Event) -> tuple[git.Checkout, ArtifactRecord]:
                    with self._remote(url, auth, timeout, cancelled) as remote:
                        return remote.archive(head, work, store=self.store, kind=STORAGE_KIND,
                                              namespace=ns, name=name,
                                              spec_ignore=inputs.ignore,
                                              sparse=inputs.sparse or None)

                done, record = await self._archive(fetch_and_archive, timeout)
            else:
                def fetch(cancelled: threading.Event) -> git.Checkout:
                    with self._remote(url, auth, timeout, cancelled) as remote:
                        return remote.checkout(head, work / "tree",
                                               sparse=inputs.sparse or None,
                                               submodules=inputs.submodules)

                done = await self._git(fetch, timeout)
                await self._copy_includes(includes, work / "tree")

                def archive(_cancelled: threading.Event) -> tuple[git.Checkout, ArtifactRecord]:
                    # reads a checkout already within the [git] limits; not stopped early
                    matcher = source_matcher(work / "tree", inputs.ignore)
                    return done, self.store.archive(
                        STORAGE_KIND, ns, name, work / "tree", f"{done.commit}.tar.gz",
                        ignore=matcher, revision=done.revision)

                done, record = await self._archive(archive, timeout)
        artifact = {"path": record.path, "url": record.url, "revision": done.revision,
                    "digest": record.digest, "lastUpdateTime": rfc3339(record.last_update_time),
                    "size": record.size}
        changed = not stored or stored.get("digest") != record.digest
        patcher.set_field("artifact", artifact)
        patcher.set_field("includedArtifacts", included or None)
        patcher.set_field("observedIgnore", inputs.ignore)
        patcher.set_field("observedInclude", inputs.include or None)
        patcher.set_field("observedSparseCheckout", inputs.sparse or None)
        patcher.set_field("observedRecurseSubmodules", inputs.submodules or None)
        message = f"stored artifact for revision '{done.revision}'"
        patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded", message)
        for stale in (ARTIFACT_OUTDATED, STORAGE_FAILED, cond.RECONCILING):
            patcher.delete_condition(stale)
        await self.gc(obj, record.path)
        if not changed:
            return None
        return NewArtifact(f"stored artifact for commit '{done.subject}'", done.revision,
                           record.digest)

    # --- helpers ----------------------------------------------------------------------

    async def _archive(self, work: Callable[[threading.Event], T], limit: float) -> T:
        """Run Git and/or archive work; storage failures are StorageOperationFailed."""
        try:
            return await self._git(work, limit)
        except (ArchiveError, OSError) as exc:
            raise StepError(f"failed to archive artifact: {exc}",
                            reason="ArchiveOperationFailed",
                            condition=STORAGE_FAILED) from exc

    async def _git(self, work: Callable[[threading.Event], T], limit: float) -> T:
        """Run blocking Git work in a thread; ``limit`` (spec.timeout) bounds it. ``work``
        gets the event that stops it (``git.Remote.cancelled``)."""
        cancelled = threading.Event()
        try:
            return await run_stoppable(functools.partial(work, cancelled), stop=cancelled,
                                       clock=self.clock, limit=limit + TIMEOUT_GRACE)
        except git.URLInvalid as exc:
            raise StallingError(str(exc), reason=exc.reason) from exc
        except git.GitError as exc:
            if cancelled.is_set():
                raise StepError(f"git operation timed out after {limit:g}s",
                                reason="GitOperationFailed", condition=FETCH_FAILED) from exc
            raise StepError(str(exc), reason=exc.reason, condition=FETCH_FAILED) from exc

    async def _auth(self, namespace: str, spec: Obj) -> git.Auth:
        ref = (spec.get("secretRef") or {}).get("name")
        if not ref:
            return git.Auth()
        data = self.secret_data(await self.secret(namespace, ref))
        try:
            return git.Auth.from_secret(data)
        except git.GitError as exc:
            raise StepError(str(exc), reason=exc.reason, condition=FETCH_FAILED) from exc

    def _includes(self, obj: Obj, inputs: Inputs,
                  patcher: StatusPatcher) -> list[tuple[Obj, Obj]]:
        """(include spec, its artifact now) pairs; IncludeUnavailable if one is missing."""
        ns = obj["metadata"].get("namespace", "")
        found: list[tuple[Obj, Obj]] = []
        for include in inputs.include:
            name = (include.get("repository") or {}).get("name", "")
            other = self.informer.get(ns, name)
            artifact = ((other or {}).get("status") or {}).get("artifact")
            latest = self.bus.last(SourceKey(KIND, ns, name))
            if other is not None and latest is not None and (
                    not artifact or artifact.get("digest") != latest.digest):
                # the bus is ahead of the cache right after the included repo's update
                artifact = {"path": str(latest.path.relative_to(self.store.root)),
                            "url": latest.url, "revision": latest.revision,
                            "digest": latest.digest,
                            "lastUpdateTime": rfc3339(self.clock.now())}
            if other is None or not artifact:
                message = (f"could not get resource for include '{name}': not found"
                           if other is None else f"no artifact available for include '{name}'")
                patcher.mark_true(INCLUDE_UNAVAILABLE, "NotFound" if other is None
                                  else "NoArtifact", message)
                raise StepError(message, reason="IncludeUnavailable",
                                condition=INCLUDE_UNAVAILABLE)
            found.append((include, artifact))
        patcher.delete_condition(INCLUDE_UNAVAILABLE)
        return found

    async def _copy_includes(self, includes: list[tuple[Obj, Obj]], tree: Path) -> None:
        """Copy each included artifact's ``fromPath`` to ``toPath`` (default: its name)."""
        for spec, artifact in includes:
            await asyncio.to_thread(self._copy_include, spec, artifact, tree)

    def _copy_include(self, spec: Obj, artifact: Obj, tree: Path) -> None:
        root = tree.resolve()
        to_path = spec.get("toPath") or (spec.get("repository") or {}).get("name", "")
        from_path = (spec.get("fromPath") or "").strip("/")
        target = (tree / to_path).resolve()
        if target == root or not target.is_relative_to(root):
            raise StallingError(f"include toPath '{to_path}' must be a directory inside "
                                "the artifact", reason="InvalidPath")
        with tempfile.TemporaryDirectory(prefix="fluxd-include-") as tmp:
            out = Path(tmp) / "x"
            try:
                extract_tarball(self.store.local_path(artifact["path"]), out)
            except (ExtractError, OSError) as exc:
                raise StepError(f"failed to extract include '{to_path}': {exc}",
                                reason="IncludeUnavailable",
                                condition=INCLUDE_UNAVAILABLE) from exc
            source = (out / from_path).resolve() if from_path else out
            if not source.is_relative_to(out.resolve()) or not source.is_dir():
                raise StepError(f"include fromPath '{from_path}' is not a directory of "
                                "the included artifact", reason="IncludeUnavailable",
                                condition=INCLUDE_UNAVAILABLE)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target)


async def run_stoppable(work: Callable[[], T], *, stop: threading.Event, clock: Clock,
                        limit: float) -> T:
    """Run blocking ``work`` in a thread (in the caller's context) and return its result
    or raise its error. ``stop`` is set when ``limit`` seconds pass on ``clock`` or when
    the caller is cancelled; ``work`` watches it and ends early. Either way the thread is
    awaited before this returns or raises, so it never outlives the caller: it never
    writes into a temporary directory being removed, nor next to the artifact a later
    reconcile of the same object writes."""

    async def expire() -> None:
        await clock.sleep(limit)
        stop.set()

    thread = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(contextvars.copy_context().run, work))
    try:
        async with asyncio.TaskGroup() as group:
            timer = group.create_task(expire(), name="git operation timeout")
            thread.add_done_callback(lambda _: timer.cancel())
    finally:
        if not thread.done():
            stop.set()
            await _ended(thread)
    return thread.result()


async def _ended(thread: asyncio.Future[Any]) -> None:
    """Wait until ``thread``, told to stop, has ended, even through cancellation: it ends
    at its next check of the event (a read blocked on a silent server, at its socket
    timeout). A cancellation meanwhile is raised once it has ended."""
    interrupted = False
    while not thread.done():
        try:
            await asyncio.wait([thread])  # its outcome stays in it, for the caller
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def _same_includes(old: list[Obj] | None, new: list[Obj]) -> bool:
    return [a.get("digest") for a in old or []] == [a.get("digest") for a in new]
