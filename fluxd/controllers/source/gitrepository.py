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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fluxd.api.source import API_VERSION, GitRepositorySpec
from fluxd.artifacts.bus import SourceKey
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.artifacts.ignore import source_matcher
from fluxd.artifacts.storage import ArchiveError, ArtifactRecord
from fluxd.clock import Clock, rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source import git
from fluxd.controllers.source.reconciler import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    SourceRun,
    StepError,
)
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Step
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
    def of(cls, spec: GitRepositorySpec) -> Inputs:
        return cls(ignore=spec.ignore, include=[i.to_json() for i in spec.include or []],
                   sparse=list(spec.sparse_checkout or []),
                   submodules=bool(spec.recurse_submodules))

    def observed_in(self, status: Obj) -> bool:
        return (status.get("observedIgnore") == self.ignore
                and list(status.get("observedInclude") or []) == self.include
                and list(status.get("observedSparseCheckout") or []) == self.sparse
                and bool(status.get("observedRecurseSubmodules")) == self.submodules)


@dataclass
class GitRun(SourceRun[GitRepositorySpec]):
    """What the GitRepository steps hand each other."""

    #: ``spec.timeout`` in seconds
    timeout: float = 60.0
    auth: git.Auth = field(default_factory=git.Auth)
    inputs: Inputs | None = None
    #: (include spec, its artifact now) pairs
    includes: list[tuple[Obj, Obj]] = field(default_factory=list)
    #: the commit the ref resolves to
    head: git.Head | None = None
    #: the stored artifact was built from ``head`` and the same inputs
    unchanged: bool = False
    #: the reconcile's temporary directory (removed when the steps are over)
    work: Path = field(default_factory=Path)
    #: the checkout in ``tree``, when includes or submodules need one on disk
    checkout: git.Checkout | None = None

    @property
    def tree(self) -> Path:
        return self.work / "tree"


@dataclass
class GitRepositoryReconciler(SourceReconciler[GitRepositorySpec, GitRun]):
    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = GitRepositorySpec
    RUN = GitRun
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    def steps(self) -> list[Step[GitRun]]:
        return [self.check_spec, self.reconcile_storage, self.reconcile_source,
                self.reconcile_include, self.reconcile_artifact]

    def run_fields(self, obj: Obj, spec: GitRepositorySpec, started: float) -> dict[str, Any]:
        return {"timeout": parse_duration(spec.timeout), "inputs": Inputs.of(spec)}

    def _remote(self, url: str, auth: git.Auth, timeout: float,
                cancelled: threading.Event) -> git.Remote:
        limits = self.settings.git
        return git.Remote(url, auth, timeout, max_object_size=limits.max_object_size,
                          max_fetch_size=limits.max_fetch_size,
                          max_checkout_size=limits.max_checkout_size,
                          max_checkout_entries=limits.max_checkout_entries,
                          cancelled=cancelled)

    # --- steps ------------------------------------------------------------------------

    async def check_spec(self, run: GitRun) -> None:
        """What fluxd cannot serve stalls the object (retrying cannot help)."""
        spec = run.spec
        if spec.service_account_name and spec.provider not in ("azure", "aws"):
            raise StallingError("serviceAccountName can only be set when provider is 'azure' "
                                "or 'aws'", reason="InvalidProviderConfiguration")
        if spec.provider not in (None, "generic"):
            raise StallingError(f"provider '{spec.provider}' is not supported by fluxd",
                                reason="InvalidProviderConfiguration")
        if spec.verify is not None:
            raise StallingError("commit signature verification (spec.verify) is not "
                                "supported by fluxd yet", reason="VerificationError")

    async def reconcile_source(self, run: GitRun) -> None:
        """Resolve the ref with one ls-remote and read the includes' artifacts; when the
        stored artifact was built from that commit and the same inputs, nothing is
        fetched. Otherwise a checkout is made when includes or submodules need a tree
        on disk (without them the artifact step archives straight from Git)."""
        spec, patcher, inputs = run.spec, run.patcher, run.inputs
        assert inputs is not None
        run.auth = await self._auth(run.namespace, spec)
        run.includes = self._includes(run.obj, inputs, patcher)
        ref = git.Ref.from_spec(spec.ref.to_json() if spec.ref is not None else None)
        auth, timeout = run.auth, run.timeout

        def resolve(cancelled: threading.Event) -> git.Head:
            with self._remote(spec.url, auth, timeout, cancelled) as remote:
                return remote.resolve(ref)

        head = run.head = await self._git(resolve, timeout)
        stored = patcher.get_field("artifact")
        included = [artifact for _, artifact in run.includes]
        run.unchanged = (bool(stored) and stored.get("revision") == head.revision
                         and inputs.observed_in(patcher.status)
                         and _same_includes(patcher.get_field("includedArtifacts"), included))
        patcher.delete_condition(FETCH_FAILED)
        if run.unchanged:
            patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded",
                              f"stored artifact for revision '{head.revision}'")
            patcher.delete_condition(ARTIFACT_OUTDATED)
            # Flux's line for a commit already built (its optimised clone's no-op)
            self.logger.info(f"no changes since last reconcilation: observed revision "
                             f"'{head.revision}'")
            await self.recorder.event(run.obj, reason="ArtifactUpToDate",
                                      message=f"artifact up-to-date with remote revision: "
                                              f"'{head.revision}'", trace=True)
            return
        if stored:
            patcher.mark_true(ARTIFACT_OUTDATED, "NewRevision",
                              f"new upstream revision '{head.revision}'")
        patcher.mark_reconciling("Progressing",
                                 f"building artifact: new upstream revision '{head.revision}'")
        run.work = Path(run.resources.enter_context(
            tempfile.TemporaryDirectory(prefix="fluxd-gitrepo-")))
        if run.includes or inputs.submodules:
            def fetch(cancelled: threading.Event) -> git.Checkout:
                with self._remote(spec.url, auth, timeout, cancelled) as remote:
                    return remote.checkout(head, run.tree, sparse=inputs.sparse or None,
                                           submodules=inputs.submodules)

            run.checkout = await self._git(fetch, timeout)

    async def reconcile_include(self, run: GitRun) -> None:
        """Copy each included artifact's ``fromPath`` to its ``toPath`` in the checkout."""
        if run.checkout is None:
            return
        for spec, artifact in run.includes:
            await asyncio.to_thread(self._copy_include, spec, artifact, run.tree)

    async def reconcile_artifact(self, run: GitRun) -> None:
        """Archive the checkout — or, with no checkout, straight from the Git objects —
        into the store, and record the artifact."""
        if run.unchanged:
            return
        spec, patcher, inputs, head = run.spec, run.patcher, run.inputs, run.head
        assert inputs is not None and head is not None
        ns, name, work, checkout = run.namespace, run.name, run.work, run.checkout
        auth, timeout, includes = run.auth, run.timeout, run.includes
        stored = patcher.get_field("artifact")
        if checkout is None:
            # the fast path: the tarball straight from the Git objects
            def fetch_and_archive(
                    cancelled: threading.Event) -> tuple[git.Checkout, ArtifactRecord]:
                with self._remote(spec.url, auth, timeout, cancelled) as remote:
                    return remote.archive(head, work, store=self.store, kind=STORAGE_KIND,
                                          namespace=ns, name=name, spec_ignore=inputs.ignore,
                                          sparse=inputs.sparse or None)

            done, record = await self._archive(fetch_and_archive, timeout)
        else:
            tree = run.tree

            def archive(_cancelled: threading.Event) -> tuple[git.Checkout, ArtifactRecord]:
                # reads a checkout already within the [git] limits; not stopped early
                matcher = source_matcher(tree, inputs.ignore)
                return checkout, self.store.archive(
                    STORAGE_KIND, ns, name, tree, f"{checkout.commit}.tar.gz",
                    ignore=matcher, revision=checkout.revision)

            done, record = await self._archive(archive, timeout)
        artifact = {"path": record.path, "url": record.url, "revision": done.revision,
                    "digest": record.digest, "lastUpdateTime": rfc3339(record.last_update_time),
                    "size": record.size}
        changed = not stored or stored.get("digest") != record.digest
        patcher.set_field("artifact", artifact)
        patcher.set_field("includedArtifacts", [a for _, a in includes] or None)
        patcher.set_field("observedIgnore", inputs.ignore)
        patcher.set_field("observedInclude", inputs.include or None)
        patcher.set_field("observedSparseCheckout", inputs.sparse or None)
        patcher.set_field("observedRecurseSubmodules", inputs.submodules or None)
        message = f"stored artifact for revision '{done.revision}'"
        patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded", message)
        for stale in (ARTIFACT_OUTDATED, STORAGE_FAILED, cond.RECONCILING):
            patcher.delete_condition(stale)
        await self.gc(run.obj, record.path)
        if changed:
            run.new = NewArtifact(f"stored artifact for commit '{done.subject}'",
                                  done.revision, record.digest)

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

    async def _auth(self, namespace: str, spec: GitRepositorySpec) -> git.Auth:
        if spec.secret_ref is None:
            return git.Auth()
        data = self.secret_data(await self.secret(namespace, spec.secret_ref.name))
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
