"""Helm's release storage, read in-process: the releases of a HelmRelease without a helm run.

Helm (the ``secrets`` driver, Flux's default) keeps every revision of a release in a Secret
``sh.helm.release.v1.<name>.v<version>`` of type ``helm.sh/release.v1`` in the storage
namespace, labelled ``owner=helm, name=<name>, status=<status>, version=<version>``; its
``release`` key holds base64(gzip(JSON)) — base64 once more on the wire. ``ReleaseStorage``
reads them (never writes: only helm does) so a reconcile can decide "in sync" with no
subprocess:

- ``latest`` lists the release's Secrets as metadata only (PartialObjectMetadataList, a
  few hundred bytes each), takes the highest ``version`` label and GETs that one Secret:
  the cost stays one small list and one object however long the history is;
- ``history`` lists the Secrets whole and decodes each; ``get`` reads one revision.

Everything read is hostile until decoded: the encoded data, the gzip stream (inflated
with a limit, never whole) and the JSON are bounded by ``max_release_bytes``; anything
malformed — bad base64, not gzip, a bomb, bad JSON, a wrong type, name or version — is a
``StorageError`` naming the Secret. Payloads above ``INLINE_DECODE_BYTES`` are decoded
in a worker thread.

``Release.digest`` is Flux's snapshot digest: sha256 of Go's JSON encoding of Flux's
``Observation`` of the release (name, version, info, chart metadata, config, manifest,
the hooks but the test hooks, namespace, and the OCI digest when there is one, then a
newline). The stored JSON is Go's encoding of the same Helm structs, so the digest is
rebuilt from the stored values kept as written (key order of structs, number text), with
Go's escaping (``<``, ``>``, ``&``, U+2028/9) and Go's sorted keys for the values map.
``snapshot`` makes a ``status.history`` entry as Flux fills it, ``retain`` truncates the
history as Flux's ``Snapshots.Truncate`` does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fluxd.api.helm import Snapshot, TestHookStatus
from fluxd.kube import NotFound
from fluxd.kustomize.kyaml import Unsupported, load_documents

SECRET_TYPE = "helm.sh/release.v1"
#: the apiVersion of the snapshots made here: Flux's mark for digests of Helm 4 releases
SNAPSHOT_API_VERSION = "v2"
#: Flux's cap on a history with no successful release (``defaultMaxHistory``)
DEFAULT_MAX_HISTORY = 5
#: the largest release read, before and after inflating (a Secret holds at most ~1 MiB;
#: 16 MiB of JSON is far beyond any real chart and still refuses a bomb)
MAX_RELEASE_BYTES = 16 << 20
#: payloads (encoded) above this size are decoded in a worker thread
INLINE_DECODE_BYTES = 64 << 10

PENDING = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})
TEST_EVENT = "test"
PHASE_FAILED = "Failed"

_METADATA_LIST = ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,"
                  "application/json")
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZERO_TIME = "0001-01-01T00:00:00Z"
#: Helm's release name rule (``chartutil.ValidateReleaseName``) plus its 53 characters
_RELEASE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


class StorageError(Exception):
    """A release in storage that cannot be read: its Secret is malformed or hostile."""


class StorageClient(Protocol):
    """What ``ReleaseStorage`` uses of ``fluxd.kube.KubeClient``."""

    async def request(self, method: str, path: str, *,
                      query: list[tuple[str, str]] | None = ..., body: Any = ...,
                      content_type: str = ..., accept: str = ...) -> Any: ...


@dataclass(frozen=True)
class Hook:
    """A hook of a release and its last run (RFC 3339 times as helm wrote them)."""

    name: str
    kind: str
    path: str
    events: tuple[str, ...]
    manifest: str
    last_started: str | None
    last_completed: str | None
    phase: str | None

    @property
    def is_test(self) -> bool:
        return TEST_EVENT in self.events


@dataclass(frozen=True)
class Release:
    """One revision of a release as helm stored it."""

    name: str
    namespace: str
    version: int
    status: str
    chart_name: str
    chart_version: str
    app_version: str
    config: dict[str, Any] = field(repr=False)
    manifest: str = field(repr=False)
    hooks: tuple[Hook, ...] = field(repr=False)
    description: str
    first_deployed: str | None
    last_deployed: str | None
    deleted: str | None
    #: Flux's digest of this revision without an OCI digest (see ``digest_for``)
    digest: str
    #: the Observation's JSON, less the OCI digest and the closing "}\n"
    _observed: bytes = field(repr=False, compare=False)

    @property
    def pending(self) -> bool:
        """A helm action on it never finished (Flux: the release is locked)."""
        return self.status in PENDING

    def digest_for(self, oci_digest: str | None) -> str:
        """Flux's digest with the snapshot's OCI digest in it, as Flux verifies one."""
        if not oci_digest:
            return self.digest
        tail = f',"ociDigest":{_go_string(oci_digest)}}}\n'.encode()
        return "sha256:" + hashlib.sha256(self._observed + tail).hexdigest()

    def matches(self, snap: Snapshot) -> bool:
        """``snap`` was taken of this very revision (Flux's ``VerifyReleaseObject`` with
        the target check): same name, namespace and version, and the same digest."""
        return ((snap.name, snap.namespace, snap.version)
                == (self.name, self.namespace, self.version)
                and snap.digest == self.digest_for(snap.oci_digest))

    def test_hooks(self) -> dict[str, TestHookStatus]:
        """The test hooks by name, with their last run (Flux's ``TestHooksFromRelease``)."""
        return {h.name: TestHookStatus(last_started=_time(h.last_started),
                                       last_completed=_time(h.last_completed),
                                       phase=h.phase)
                for h in self.hooks if h.is_test}

    def has_been_tested(self) -> bool:
        """A test hook of this revision has been started."""
        return any(h.is_test and h.last_started is not None for h in self.hooks)

    def has_test_in_phase(self, phase: str) -> bool:
        return any(h.is_test and h.phase == phase for h in self.hooks)

    def objects(self) -> list[dict[str, Any]]:
        """The objects of the manifest (hooks excluded), for the inventory."""
        try:
            docs = load_documents(self.manifest.encode())
        except Unsupported as exc:
            raise StorageError(f"release {self.namespace}/{self.name}.v{self.version}: "
                               f"manifest not readable: {exc}") from None
        return [d for d in docs if isinstance(d, dict)]


class ReleaseStorage:
    """The releases in Helm's storage, read through the API (see the module docstring)."""

    def __init__(self, client: StorageClient, *,
                 max_release_bytes: int = MAX_RELEASE_BYTES) -> None:
        self._client = client
        self._max = max_release_bytes

    async def latest(self, namespace: str, name: str) -> Release | None:
        """The highest revision of release ``name``, or None when there is none."""
        _check(namespace, name)
        listed = await self._client.request(
            "GET", _secrets(namespace),
            query=[("labelSelector", f"owner=helm,name={name}")], accept=_METADATA_LIST)
        best = 0
        for item in _items(listed):
            labels = (item.get("metadata") or {}).get("labels") or {}
            text = labels.get("version")
            if isinstance(text, str) and _VERSION.fullmatch(text):
                best = max(best, int(text))
        if best == 0:
            return None
        found = await self.get(namespace, name, best)
        if found is None:
            # pruned between the list and the get, or labelled without the Secret name
            # helm gives it: decide from the whole history, as helm's Last does
            history = await self.history(namespace, name)
            return history[-1] if history else None
        return found

    async def history(self, namespace: str, name: str) -> list[Release]:
        """Every stored revision of release ``name``, the oldest first."""
        _check(namespace, name)
        listed = await self._client.request(
            "GET", _secrets(namespace), query=[("labelSelector", f"owner=helm,name={name}")])
        secrets = _items(listed)
        size = sum(len(str((s.get("data") or {}).get("release") or "")) for s in secrets)
        if size > INLINE_DECODE_BYTES:
            releases = await asyncio.to_thread(self._decode_all, secrets)
        else:
            releases = self._decode_all(secrets)
        releases.sort(key=lambda r: r.version)
        for release in releases:
            if release.name != name:
                raise StorageError(f"release {namespace}/{name}: Secret labelled for it holds "
                                   f"release {release.name!r}")
        return releases

    async def get(self, namespace: str, name: str, version: int) -> Release | None:
        """Revision ``version`` of release ``name``, or None when it is not stored."""
        _check(namespace, name)
        if not 0 < version < 10**10:
            raise ValueError(f"release version out of range: {version}")
        key = f"sh.helm.release.v1.{name}.v{version}"
        try:
            secret = await self._client.request("GET", f"{_secrets(namespace)}/{key}")
        except NotFound:
            return None
        if not isinstance(secret, Mapping):
            raise StorageError(f"Secret {namespace}/{key}: not an object")
        encoded = (secret.get("data") or {}).get("release") if isinstance(
            secret.get("data"), Mapping) else None
        if isinstance(encoded, str) and len(encoded) > INLINE_DECODE_BYTES:
            release = await asyncio.to_thread(decode, secret, max_bytes=self._max)
        else:
            release = decode(secret, max_bytes=self._max)
        if (release.name, release.version) != (name, version):
            raise StorageError(f"Secret {namespace}/{key} holds release "
                               f"{release.name}.v{release.version}")
        return release

    async def unlock(self, namespace: str, release: Release) -> None:
        """Mark a release left ``pending-*`` failed, as Flux's ``Unlock`` does through
        Helm's storage: the stored release's status and description, and the Secret's
        ``status`` label, in one update guarded by the Secret's resourceVersion. The
        only write fluxd makes to Helm's storage outside a helm run."""
        _check(namespace, release.name)
        key = f"sh.helm.release.v1.{release.name}.v{release.version}"
        path = f"{_secrets(namespace)}/{key}"
        secret = await self._client.request("GET", path)
        if not isinstance(secret, Mapping):
            raise StorageError(f"Secret {namespace}/{key}: not an object")
        where = f"Secret {namespace}/{key}"
        current = decode(secret, max_bytes=self._max)
        if not current.pending:
            return
        payload = _payload(secret, self._max, where)
        raw = json.loads(payload, parse_float=_Number, parse_constant=_no_constant)
        info = _object(raw.get("info"), "info")
        info["status"] = "failed"
        info["description"] = f"Release unlocked from stale '{current.status}' state"
        encoded = base64.b64encode(gzip.compress(_go(raw).encode(), mtime=0)).decode()
        updated = dict(secret)
        meta = dict(updated.get("metadata") or {})
        meta["labels"] = {**(meta.get("labels") or {}), "status": "failed"}
        updated["metadata"] = meta
        updated["data"] = {**(secret.get("data") or {}),
                           "release": base64.b64encode(encoded.encode()).decode()}
        await self._client.request("PUT", path, body=updated)

    def _decode_all(self, secrets: list[Mapping[str, Any]]) -> list[Release]:
        return [decode(s, max_bytes=self._max) for s in secrets]


def decode(secret: Mapping[str, Any], *, max_bytes: int = MAX_RELEASE_BYTES) -> Release:
    """The release a Helm storage Secret holds; ``StorageError`` on anything malformed."""
    meta = secret.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    where = f"Secret {meta.get('namespace', '')}/{meta.get('name', '')}"
    if secret.get("type") != SECRET_TYPE:
        raise StorageError(f"{where}: type {secret.get('type')!r} is not {SECRET_TYPE!r}")
    payload = _payload(secret, max_bytes, where)
    try:
        raw = json.loads(payload, parse_float=_Number, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise StorageError(f"{where}: release is not JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise StorageError(f"{where}: release is not a JSON object")
    try:
        return _release(raw, where)
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise StorageError(f"{where}: malformed release: {str(exc)[:200]}") from None


def snapshot(release: Release, *, config_digest: str, oci_digest: str | None = None,
             action: str | None = None, with_test_hooks: bool = False) -> Snapshot:
    """The ``status.history`` entry Flux records for ``release`` (``ObservedToSnapshot``).
    ``with_test_hooks`` records its test hooks too, as Flux does after a test run (an
    empty map then says "tested, no tests")."""
    return Snapshot(
        api_version=SNAPSHOT_API_VERSION, digest=release.digest_for(oci_digest),
        name=release.name, namespace=release.namespace, version=release.version,
        status=release.status, action=action, chart_name=release.chart_name,
        chart_version=release.chart_version, app_version=release.app_version or None,
        config_digest=config_digest,
        first_deployed=_time(release.first_deployed) or _EPOCH_ZERO,
        last_deployed=_time(release.last_deployed) or _EPOCH_ZERO,
        deleted=_time(release.deleted),
        test_hooks=release.test_hooks() if with_test_hooks else None,
        oci_digest=oci_digest or None)


def retain(history: Sequence[Snapshot], *, ignore_tests: bool = False,
           max_without_success: int = DEFAULT_MAX_HISTORY) -> list[Snapshot]:
    """Flux's ``Snapshots.Truncate(ignoreTests)``: newest first, the snapshots down to and
    including the previous successful one (``deployed`` or ``superseded``, and — unless
    ``ignore_tests`` — without a test in phase Failed); without one, the newest
    ``max_without_success``."""
    ordered = sorted(history, key=lambda s: s.version, reverse=True)
    if len(ordered) < 2:
        return ordered
    for i, snap in enumerate(ordered[1:], start=1):
        if snap.status in ("deployed", "superseded") and (
                ignore_tests or not any(h.phase == PHASE_FAILED
                                        for h in (snap.test_hooks or {}).values())):
            return ordered[:i + 1]
    return ordered[:max_without_success]


# --- decoding --------------------------------------------------------------------------

class _Number(float):
    """A JSON number with a fraction or exponent, keeping the text Go wrote."""

    text: str

    def __new__(cls, text: str) -> _Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_EPOCH_ZERO = datetime(1, 1, 1, tzinfo=UTC)


def _payload(secret: Mapping[str, Any], max_bytes: int, where: str) -> bytes:
    """The release JSON a storage Secret holds, decoded and inflated within bounds."""
    data = secret.get("data")
    encoded = data.get("release") if isinstance(data, Mapping) else None
    if not isinstance(encoded, str) or not encoded:
        raise StorageError(f"{where}: no data.release")
    # two base64 layers (the API's and helm's): 16/9 of the payload, and some slack
    if len(encoded) > max_bytes * 16 // 9 + 16:
        raise StorageError(f"{where}: release larger than {max_bytes} bytes")
    try:
        payload = base64.b64decode(base64.b64decode(encoded, validate=True), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StorageError(f"{where}: release is not base64: {exc}") from None
    if payload[:3] == _GZIP_MAGIC:
        return _gunzip(payload, max_bytes, where)
    if len(payload) > max_bytes:  # helm before 3 wrote JSON without gzip
        raise StorageError(f"{where}: release larger than {max_bytes} bytes")
    return payload


def _gunzip(payload: bytes, max_bytes: int, where: str) -> bytes:
    """Inflate every gzip member (as Go's reader does), never past ``max_bytes``."""
    out = bytearray()
    rest = payload
    try:
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise StorageError(f"{where}: release inflates beyond {max_bytes} bytes")
            if not inflater.eof:
                raise StorageError(f"{where}: release gzip stream is truncated")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise StorageError(f"{where}: release is not gzip: {exc}") from None
    return bytes(out)


def _release(raw: dict[str, Any], where: str) -> Release:
    info = _object(raw.get("info"), "info")
    chart = _object(raw.get("chart"), "chart")
    meta = _object(chart.get("metadata"), "chart.metadata")
    config = raw.get("config")
    if config is None:
        config = {}
    config = _object(config, "config")
    hooks_raw = raw.get("hooks") or []
    if not isinstance(hooks_raw, list):
        raise TypeError("hooks is not a list")
    hooks = tuple(_hook(_object(h, "hook")) for h in hooks_raw)
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 10**10:
        raise ValueError(f"version {version!r} is not a revision number")
    name = _string(raw.get("name"), "name")
    namespace = _string(raw.get("namespace"), "namespace")
    manifest = _string(raw.get("manifest", ""), "manifest")
    # Flux's Observation, field for field, less the OCI digest (see Release.digest_for)
    kept = [h for h in hooks_raw if TEST_EVENT not in (h.get("events") or [])]
    observed = "".join((
        '{"name":', _go(name), ',"version":', str(version), ',"info":', _go(info),
        ',"chartMetadata":', _go(meta), ',"config":', _go(_sorted(config)) if config else "null",
        ',"manifest":', _go(manifest), ',"hooks":', _go(kept) if kept else "null",
        ',"namespace":', _go(namespace))).encode("utf-8", "surrogatepass")
    return Release(
        name=name, namespace=namespace, version=version,
        status=_string(info.get("status", ""), "info.status"),
        chart_name=_string(meta.get("name", ""), "chart.metadata.name"),
        chart_version=_string(meta.get("version", ""), "chart.metadata.version"),
        app_version=_string(meta.get("appVersion", ""), "chart.metadata.appVersion"),
        config=config, manifest=manifest, hooks=hooks,
        description=_string(info.get("description", ""), "info.description"),
        first_deployed=_stamp(info.get("first_deployed"), "info.first_deployed"),
        last_deployed=_stamp(info.get("last_deployed"), "info.last_deployed"),
        deleted=_stamp(info.get("deleted"), "info.deleted"),
        digest="sha256:" + hashlib.sha256(observed + b"}\n").hexdigest(),
        _observed=observed)


def _hook(raw: Mapping[str, Any]) -> Hook:
    run = _object(raw.get("last_run") or {}, "hook.last_run")
    events = raw.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise TypeError("hook events are not strings")
    return Hook(name=_string(raw.get("name", ""), "hook.name"),
                kind=_string(raw.get("kind", ""), "hook.kind"),
                path=_string(raw.get("path", ""), "hook.path"),
                events=tuple(events),
                manifest=_string(raw.get("manifest", ""), "hook.manifest"),
                last_started=_stamp(run.get("started_at"), "hook.last_run.started_at"),
                last_completed=_stamp(run.get("completed_at"), "hook.last_run.completed_at"),
                phase=_string(run.get("phase", ""), "hook.last_run.phase") or None)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _stamp(value: Any, what: str) -> str | None:
    """A Go time as written, None for Go's zero time or none at all."""
    if value is None or value == "" or value == _ZERO_TIME:
        return None
    text = _string(value, what)
    if _time(text) is None:
        raise ValueError(f"{what} is not an RFC 3339 time")
    return text


def _time(text: str | None) -> datetime | None:
    if not text or len(text) > 64:
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.astimezone(UTC)


# --- Go's JSON encoding, for the digest --------------------------------------------------

def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_GO_ESCAPES)


def _go(value: Any) -> str:
    """``value`` as Go's ``json.Encoder`` writes it (HTML-safe), keys in their order."""
    if isinstance(value, str):
        return _go_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, _Number):
        return value.text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_string(k)}:{_go(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_go(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _sorted(value: Any) -> Any:
    """Maps with their keys sorted, as Go writes a ``map[string]interface{}``."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _check(namespace: str, name: str) -> None:
    if not (len(namespace) <= 63 and _NAMESPACE.fullmatch(namespace)):
        raise ValueError(f"invalid namespace: {namespace[:80]!r}")
    if not (len(name) <= 53 and _RELEASE_NAME.fullmatch(name)):
        raise ValueError(f"invalid release name: {name[:80]!r}")


def _secrets(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


def _items(listed: Any) -> list[Mapping[str, Any]]:
    items = listed.get("items") if isinstance(listed, Mapping) else None
    return [i for i in items or [] if isinstance(i, Mapping)]


__all__ = ["DEFAULT_MAX_HISTORY", "MAX_RELEASE_BYTES", "SECRET_TYPE", "SNAPSHOT_API_VERSION",
           "Hook", "Release", "ReleaseStorage", "StorageClient", "StorageError", "decode",
           "retain", "snapshot"]
