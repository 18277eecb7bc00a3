"""Drift detection and correction of a release's objects (helm-controller
``internal/action/diff.go``, ``internal/reconcile/correct_cluster_drift.go``).

- ``detect`` reads the objects of the release manifest (hooks excluded), gives them the
  metadata Helm gives every object it makes (``app.kubernetes.io/managed-by: Helm``,
  ``meta.helm.sh/release-name|namespace``) and the release namespace when they are
  namespaced and have none, and dry-runs each with server-side apply (force) as Helm's
  own field manager ``helm``. An object the cluster lacks is drift to create; one whose
  dry-run differs from the live object (``fluxd.ssa.object_diff``) is drift to update.
  An object labelled or annotated ``helm.toolkit.fluxcd.io/driftDetection: disabled`` in
  the manifest, or whose ignore rule names the root path ``""``, is excluded; the ignore
  rules' paths are left out of the comparison. A Secret's values never appear in a
  report.
- ``correct`` creates the missing objects (server-side apply as ``helm``) and patches the
  drifted ones with the JSON patch of their diff (so ignored fields stay as they are),
  each failure collected rather than raised.
- ``DriftHooks`` adapts both to ``release.AtomicRelease(detect_drift=, correct_drift=)``,
  acting as the HelmRelease's service account when it has one, and sends Flux's
  ``DriftCorrected``/``DriftCorrectionFailed`` events.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from fluxd import ssa
from fluxd.api.helm import HelmReleaseSpec
from fluxd.clock import Clock
from fluxd.controllers.helm import state as st
from fluxd.controllers.helm.release import action_timeout
from fluxd.controllers.helm.storage import Release, StorageError
from fluxd.kube.errors import Invalid, KubeError, NotFound
from fluxd.kube.mapping import Mapping as RESTMapping

log = logging.getLogger("fluxd.helm")

Obj = dict[str, Any]

#: the field manager Helm's CLI writes with (``kube.ManagedFieldsManager`` in helm's main)
FIELD_MANAGER = "helm"
#: label or annotation that leaves an object out of drift detection
DRIFT_DETECTION_KEY = "helm.toolkit.fluxcd.io/driftDetection"
DRIFT_DETECTION_DISABLED = "disabled"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
RELEASE_NAME_ANNOTATION = "meta.helm.sh/release-name"
RELEASE_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
JSON_PATCH = "application/json-patch+json"

DRIFT_CORRECTED = "DriftCorrected"
DRIFT_CORRECTION_FAILED = "DriftCorrectionFailed"


class KubeAPI(ssa.KubeAPI, Protocol):
    """What drift detection needs of ``fluxd.kube.KubeClient``."""

    def impersonate(self, namespace: str, service_account: str) -> KubeAPI: ...


class DriftType(StrEnum):
    NONE = "none"
    CREATE = "create"
    UPDATE = "update"
    EXCLUDE = "exclude"


@dataclass(frozen=True)
class ObjectDrift:
    """One object of the release compared with the cluster."""

    meta: ssa.ObjMeta
    type: DriftType
    #: the desired object (normalised, with Helm's metadata)
    desired: Obj = field(repr=False)
    #: RFC 6902 operations from the live object to the dry-run (``oldValue`` kept);
    #: a Secret's values masked
    operations: tuple[Obj, ...] = field(default=(), repr=False)
    #: the same operations unmasked: what ``correct`` patches with (never shown)
    patch: tuple[Obj, ...] = field(default=(), repr=False, compare=False)

    @property
    def subject(self) -> str:
        """Flux's ``Kind/namespace/name`` (the namespace empty when cluster-scoped)."""
        return f"{self.meta.kind}/{self.meta.namespace}/{self.meta.name}"

    def summary(self) -> str:
        if self.type is DriftType.CREATE:
            return f"{self.subject} removed"
        if self.type is DriftType.EXCLUDE:
            return f"{self.subject} excluded"
        if self.type is DriftType.NONE:
            return f"{self.subject} unchanged"
        counts = {"add": 0, "replace": 0, "remove": 0}
        for op in self.operations:
            counts[str(op.get("op"))] = counts.get(str(op.get("op")), 0) + 1
        return (f"{self.subject} changed ({counts['add']} additions, "
                f"{counts['replace']} changes, {counts['remove']} removals)")


@dataclass
class DriftReport:
    """The release's objects compared with the cluster (Flux's ``DiffSet``)."""

    release: str
    entries: list[ObjectDrift] = field(default_factory=list)
    #: objects that could not be compared (the comparison went on without them)
    errors: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[ObjectDrift]:
        """The objects to create or update."""
        return [e for e in self.entries if e.type in (DriftType.CREATE, DriftType.UPDATE)]

    @property
    def summary(self) -> str:
        """One line per object removed, changed or excluded (Flux's
        ``SummarizeDiffSet``); "" when nothing drifted."""
        if not self.changes:
            return ""
        shown = (DriftType.CREATE, DriftType.UPDATE, DriftType.EXCLUDE)
        return "\n".join(e.summary() for e in self.entries if e.type in shown)

    def brief(self) -> str:
        """Flux's ``SummarizeDiffSetBrief``: ``removed: x, changed: y, excluded: z``."""
        count = {t: sum(1 for e in self.entries if e.type is t) for t in DriftType}
        return (f"removed: {count[DriftType.CREATE]}, changed: {count[DriftType.UPDATE]}, "
                f"excluded: {count[DriftType.EXCLUDE]}")


class DriftError(Exception):
    """The cluster state could not be compared with the release."""


# --- detection ------------------------------------------------------------------------------

def ignore_rules(spec: HelmReleaseSpec) -> list[ssa.IgnoreRule]:
    detection = spec.drift_detection
    return [ssa.IgnoreRule(tuple(rule.paths),
                           rule.target.to_json() if rule.target is not None else None)
            for rule in (detection.ignore if detection else None) or []]


def timeout_of(spec: HelmReleaseSpec) -> float:
    """``spec.timeout`` (Flux bounds the correction by it), else 5m."""
    return action_timeout(spec, "")


async def detect(client: ssa.KubeAPI, release: Release, spec: HelmReleaseSpec, *,
                 clock: Clock) -> DriftReport:
    """Compare the release's objects with the cluster (see the module docstring);
    ``DriftError`` when no object could be compared and some failed, or when it took
    longer than the release's timeout."""
    report = DriftReport(f"{release.namespace}/{release.name}.v{release.version}")
    rules = ignore_rules(spec)
    for rule in rules:
        try:
            rule.check()
        except ValueError as exc:
            raise DriftError(f"failed to create ignore rule selector: {exc}") from exc
    try:
        objects = release.objects()
    except StorageError as exc:
        raise DriftError(f"failed to read objects from release manifest: {exc}") from exc
    try:
        async with clock.timeout(timeout_of(spec)):
            for obj in objects:
                try:
                    found = await _compare(client, release, obj, rules)
                except (KubeError, ssa.ResourceError, ValueError) as exc:
                    report.errors.append(_error_text(obj, exc))
                    continue
                if found is not None:
                    report.entries.append(found)
    except TimeoutError:
        raise DriftError("timed out comparing the release with the cluster state") from None
    if report.errors and not report.changes:
        raise DriftError("\n".join(report.errors))
    report.entries.sort(key=lambda e: ssa.sort_key(e.meta))
    return report


def with_helm_metadata(obj: Mapping[str, Any], release: Release) -> Obj:
    """A normalised copy of ``obj`` with the metadata Helm sets on what it creates."""
    out = ssa.normalize(obj)
    meta = out.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise ValueError("object metadata is not a mapping")
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY_LABEL: "Helm"}
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           RELEASE_NAME_ANNOTATION: release.name,
                           RELEASE_NAMESPACE_ANNOTATION: release.namespace}
    return out


async def _compare(client: ssa.KubeAPI, release: Release, obj: Mapping[str, Any],
                   rules: Sequence[ssa.IgnoreRule]) -> ObjectDrift | None:
    api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
    name = str((obj.get("metadata") or {}).get("name") or "")
    if not api_version or not kind or not name:
        return None
    desired = with_helm_metadata(obj, release)
    mapping: RESTMapping = await client.mapping(api_version, kind)
    meta = desired["metadata"]
    if mapping.namespaced:
        meta["namespace"] = str(meta.get("namespace") or release.namespace)
    else:
        meta.pop("namespace", None)
    ident = ssa.ObjMeta.of(desired)
    if ssa.any_in_metadata(desired, {DRIFT_DETECTION_KEY: DRIFT_DETECTION_DISABLED}):
        return ObjectDrift(ident, DriftType.EXCLUDE, desired)
    paths = ssa.ignored_paths(rules, desired)
    if any(not tokens for tokens in paths):
        return ObjectDrift(ident, DriftType.EXCLUDE, desired)
    namespace = meta.get("namespace") or None
    try:
        live: Obj | None = await client.get(api_version, kind, name, namespace)
    except NotFound:
        live = None
    try:
        dry = await client.apply(desired, force=True, dry_run=True,
                                 field_manager=FIELD_MANAGER)
    except KubeError as exc:
        raise ssa.ApplyError(f"{ident.subject} dry-run failed: {_masked(kind, exc)}",
                             meta=ident) from None
    if live is None or not (dry.get("metadata") or {}).get("resourceVersion"):
        return ObjectDrift(ident, DriftType.CREATE, desired)
    dry, live = ssa.normalize(dry), copy.deepcopy(live)
    for tokens in paths:
        ssa.remove_path(dry, tokens)
        ssa.remove_path(live, tokens)
    operations = ssa.object_diff(live, dry)
    if not operations:
        return ObjectDrift(ident, DriftType.NONE, desired)
    shown = ssa.mask_secret_patch(operations) if _is_secret(desired) else operations
    return ObjectDrift(ident, DriftType.UPDATE, desired, tuple(shown), tuple(operations))


def _is_secret(obj: Mapping[str, Any]) -> bool:
    return obj.get("apiVersion") == "v1" and obj.get("kind") == "Secret"


def _masked(kind: str, exc: KubeError) -> str:
    """A server's message, without the values it may quote when the object is a Secret
    (Flux's ``maskSensitiveErrData``: only the last part of an Invalid error is kept)."""
    message = exc.message
    if kind == "Secret" and isinstance(exc, Invalid) and ":" in message:
        return message.rpartition(":")[2].strip()
    return message


def _error_text(obj: Mapping[str, Any], exc: Exception) -> str:
    if isinstance(exc, ssa.ResourceError):
        return str(exc)
    meta = obj.get("metadata") or {}
    subject = f"{obj.get('kind')}/{meta.get('namespace') or ''}/{meta.get('name')}"
    if isinstance(exc, KubeError):
        return f"{subject}: {_masked(str(obj.get('kind')), exc)}"
    return f"{subject}: {exc}"


# --- correction -----------------------------------------------------------------------------

async def correct(client: ssa.KubeAPI, report: DriftReport, spec: HelmReleaseSpec, *,
                  clock: Clock) -> str:
    """Correct the drift of ``report``; Flux's event text for it ("" when nothing was
    to correct)."""
    changes, errors = await apply_diff(client, report, spec, clock=clock)
    found = correction_event(report, changes, errors)
    return found[2] if found is not None else ""


async def apply_diff(client: ssa.KubeAPI, report: DriftReport, spec: HelmReleaseSpec, *,
                     clock: Clock) -> tuple[ssa.ChangeSet, list[str]]:
    """Create the missing objects, patch the drifted ones; the change set of what was
    corrected and the failures (Flux's ``ApplyDiff``)."""
    changes = ssa.ChangeSet()
    errors: list[str] = []
    creates = [e for e in report.changes if e.type is DriftType.CREATE]
    updates = [e for e in report.changes if e.type is DriftType.UPDATE]
    try:
        async with clock.timeout(timeout_of(spec)):
            for entry in sorted(creates, key=lambda e: ssa.sort_key(e.meta)):
                try:
                    await client.apply(entry.desired, force=True,
                                       field_manager=FIELD_MANAGER)
                except KubeError as exc:
                    errors.append(f"{entry.subject} creation failure: "
                                  f"{_masked(entry.meta.kind, exc)}")
                    continue
                changes.entries.append(_entry(entry, ssa.Action.CREATED))
            for entry in sorted(updates, key=lambda e: ssa.sort_key(e.meta)):
                try:
                    await _patch(client, entry)
                except KubeError as exc:
                    errors.append(f"{entry.subject} patch failure: "
                                  f"{_masked(entry.meta.kind, exc)}")
                    continue
                changes.entries.append(_entry(entry, ssa.Action.CONFIGURED))
    except TimeoutError:
        errors.append("timed out correcting the cluster state")
    return changes, errors


async def _patch(client: ssa.KubeAPI, entry: ObjectDrift) -> None:
    desired = entry.desired
    mapping = await client.mapping(str(desired["apiVersion"]), entry.meta.kind)
    await client.request("PATCH", mapping.path(entry.meta.namespace or None, entry.meta.name),
                         body=ssa.patch_of(entry.patch), content_type=JSON_PATCH,
                         query=[("fieldManager", FIELD_MANAGER)])


def _entry(entry: ObjectDrift, action: ssa.Action) -> ssa.ChangeSetEntry:
    version = str(entry.desired.get("apiVersion") or "").rpartition("/")[2]
    return ssa.ChangeSetEntry(entry.meta, version, action)


def correction_event(report: DriftReport, changes: ssa.ChangeSet,
                     errors: Sequence[str]) -> tuple[str, str, str] | None:
    """Flux's event for a correction: (type, reason, message); None when nothing was
    corrected and nothing failed."""
    lines = "\n".join(_change_line(e) for e in changes)
    if errors:
        partially = "partially " if len(changes) else ""
        message = f"Failed to {partially}correct cluster state of release " \
                  f"{report.release}:\n" + "\n".join(errors)
        if len(changes):
            message += f"\n\nSuccessful corrections:\n{lines}"
        return "Warning", DRIFT_CORRECTION_FAILED, message
    if len(changes):
        return "Normal", DRIFT_CORRECTED, \
            f"Cluster state of release {report.release} has been corrected:\n{lines}"
    return None


def _change_line(entry: ssa.ChangeSetEntry) -> str:
    meta = entry.meta
    return f"{meta.kind}/{meta.namespace}/{meta.name} {entry.action}"


# --- the atomic release's hooks ---------------------------------------------------------------

EventFn = Callable[[str, str, str, Mapping[str, str]], Awaitable[None]]


class _Request(Protocol):
    """What the hooks read of ``release.ReleaseRequest``."""

    obj: Obj
    spec: HelmReleaseSpec

    def event_metadata(self) -> dict[str, str]: ...


@dataclass
class DriftHooks:
    """``detect_drift``/``correct_drift`` for ``release.AtomicRelease``."""

    client: KubeAPI
    clock: Clock
    #: sends the correction's event (``AtomicRelease.event``'s signature)
    event: EventFn | None = None
    #: the service account to act as when the HelmRelease names none
    default_service_account: str = ""
    logger: logging.Logger = log
    _reports: dict[tuple[str, str], DriftReport] = field(default_factory=dict, init=False)

    def client_for(self, req: _Request) -> KubeAPI:
        account = req.spec.service_account_name or self.default_service_account
        if not account:
            return self.client
        return self.client.impersonate(str(req.obj["metadata"]["namespace"]), account)

    @staticmethod
    def _key(req: _Request) -> tuple[str, str]:
        meta = req.obj["metadata"]
        return str(meta["namespace"]), str(meta["name"])

    async def detect_drift(self, req: _Request, release: Release) -> str:
        """The summary of the drift ("" when none); a failed comparison is a
        ``StateError`` (Flux: "unable to determine cluster state")."""
        try:
            report = await detect(self.client_for(req), release, req.spec, clock=self.clock)
        except DriftError as exc:
            raise st.StateError(f"unable to determine cluster state: {exc}") from exc
        if report.errors:
            self.logger.error("diff of release against cluster state completed with error: "
                              + "; ".join(report.errors))
        if report.changes:
            self._reports[self._key(req)] = report
            self.logger.info(f"detected changes in cluster state ({report.brief()})")
        else:
            self._reports.pop(self._key(req), None)
        return report.summary

    async def correct_drift(self, req: _Request, release: Release) -> str:
        """Correct the drift ``detect_drift`` found (compared again when it is not at
        hand) and send Flux's event; returns the event's message ("" when none)."""
        report = self._reports.pop(self._key(req), None)
        client = self.client_for(req)
        if report is None:
            try:
                report = await detect(client, release, req.spec, clock=self.clock)
            except DriftError as exc:
                raise st.StateError(f"unable to determine cluster state: {exc}") from exc
        changes, errors = await apply_diff(client, report, req.spec, clock=self.clock)
        found = correction_event(report, changes, errors)
        if found is None:
            return ""
        type_, reason, message = found
        if self.event is not None:
            await self.event(type_, reason, message, req.event_metadata())
        (self.logger.error if errors else self.logger.info)(message)
        return message


__all__ = ["DRIFT_CORRECTED", "DRIFT_CORRECTION_FAILED", "DriftError", "DriftHooks",
           "DriftReport", "DriftType", "ObjectDrift", "apply_diff", "correct",
           "correction_event", "detect", "with_helm_metadata"]
