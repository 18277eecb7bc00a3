"""The Helm actions of a HelmRelease, run with the real ``helm`` (v4) binary.

``Helm`` runs one action per call — install, upgrade, test, rollback, uninstall — with
the flags helm-controller gives Helm's SDK for the same ``HelmReleaseSpec``
(``internal/action/*.go``), and answers an ``ActionResult``; it never raises for a
failed action. What it guarantees:

- Isolation: helm runs with a private home (cache, config, data, plugins; 0700), a
  minimal environment (no KUBECONFIG, no proxy variables) and ``--kubeconfig`` of the
  given ``HelmConnection``. Values go in on stdin (``-f -``), never on disk or argv.
- Bounds: stdout and stderr are drained concurrently, each keeping its last
  ``max_output`` bytes; a run that outlives its budget (``PHASES`` times the helm
  timeout, for the pre-hooks, the wait and the post-hooks, plus ``margin``) on the
  injected clock has its process group killed and reports so.
- Cancellation: cancelling the awaiting task sends helm SIGTERM and waits up to
  ``stop_timeout`` for it to exit, then kills the group; the ``CancelledError`` goes on.
  helm 4 install and upgrade handle SIGTERM by marking the release failed ("context
  canceled"); test, rollback and uninstall die at once, so a rollback leaves its release
  ``pending-rollback`` (Flux's "Locked" state, which the controller unlocks).
- Masking: every string ``secrets()`` yields is replaced with ``***`` in the output and
  the error.

Flux never uses helm's own remediation (``--rollback-on-failure``): it remediates itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fluxd.api.helm import HelmReleaseSpec, Install, Rollback, Test, Uninstall, Upgrade
from fluxd.clock import Clock, format_duration
from fluxd.config import parse_duration

#: the helm timeout when neither the action nor the HelmRelease sets one
DEFAULT_TIMEOUT = "5m0s"
#: ``spec.maxHistory`` when not set (0 keeps every revision)
DEFAULT_MAX_HISTORY = 5
#: how many helm timeouts one action may use: pre-hooks, the wait, post-hooks
PHASES = 3
#: the most bytes of ``helm get metadata -o json`` read
_METADATA_LIMIT = 1 << 20
#: the longest error message kept for a condition
_ERROR_LIMIT = 4096
_READ_CHUNK = 64 << 10
_REVISION = re.compile(r"^REVISION:\s*(\d+)\s*$", re.MULTILINE)

CRDPolicy = Literal["Skip", "Create", "CreateReplace"]


@dataclass(frozen=True)
class HelmConnection:
    """How a helm process reaches the cluster."""

    kubeconfig: Path
    context: str | None = None


@dataclass(frozen=True)
class ActionResult:
    action: str
    """``install``, ``upgrade``, ``test``, ``rollback`` or ``uninstall``."""
    ok: bool
    returncode: int
    duration: float
    """Seconds, on the injected clock's monotonic time."""
    output: str
    """stdout then stderr, each its tail, masked."""
    error: str
    """The failure in one message for a condition (helm's ``Error:`` lines without the
    prefix), masked; empty on success."""
    revision: int | None = None
    """The release revision helm reported (install and upgrade), when it did."""


# --------------------------------------------------------------------------- flags


def action_timeout(spec: HelmReleaseSpec, own: str | None) -> str:
    """The action's own timeout, else the HelmRelease's, else 5m0s (a Go duration)."""
    return own or spec.timeout or DEFAULT_TIMEOUT


def wait_strategy(spec: HelmReleaseSpec, disable_wait: bool | None) -> str:
    """helm's ``--wait`` value: ``hookOnly`` when the action disables waiting, else
    ``watcher`` (Flux's "poller", the default: kstatus) or ``legacy``."""
    if disable_wait:
        return "hookOnly"
    if spec.wait_strategy is not None and spec.wait_strategy.name == "legacy":
        return "legacy"
    return "watcher"


def install_crd_policy(spec: HelmReleaseSpec) -> CRDPolicy:
    """``install.crds``; when unset, Skip for the deprecated ``skipCRDs``, else Create."""
    install = spec.install or Install()
    if install.crds is not None:
        return install.crds
    return "Skip" if install.skip_crds else "Create"


def upgrade_crd_policy(spec: HelmReleaseSpec) -> CRDPolicy:
    """``upgrade.crds``; when unset, Create — what Flux's code does (``crdPolicyOrDefault``;
    its API docs say Skip). helm upgrade never touches the chart's CRDs: they are the
    caller's to apply before the upgrade."""
    upgrade = spec.upgrade or Upgrade()
    return upgrade.crds or "Create"


def _waiting(spec: HelmReleaseSpec, disable_wait: bool | None,
             disable_wait_for_jobs: bool | None) -> list[str]:
    strategy = wait_strategy(spec, disable_wait)
    flags = [f"--wait={strategy}"]
    if strategy != "hookOnly" and not disable_wait_for_jobs:
        flags.append("--wait-for-jobs")
    return flags


def _server_side(server_side: bool | None) -> list[str]:
    """Flux forces conflicts whenever it applies server-side; helm refuses
    ``--force-conflicts`` without server-side apply, so "auto" unresolved has none."""
    if server_side is None:
        return ["--server-side=auto"]
    if server_side:
        return ["--server-side=true", "--force-conflicts"]
    return ["--server-side=false"]


def _max_history(spec: HelmReleaseSpec) -> list[str]:
    value = DEFAULT_MAX_HISTORY if spec.max_history is None else spec.max_history
    return [f"--history-max={max(value, 0)}"]


def install_args(spec: HelmReleaseSpec, *, release: str, namespace: str, chart: Path,
                 post_renderer: Sequence[str] = ()) -> list[str]:
    """``helm install`` arguments (values on stdin) as Flux's ``newInstall`` sets the
    SDK."""
    install = spec.install or Install()
    args = ["install", release, str(chart), f"--namespace={namespace}", "--values=-",
            f"--timeout={action_timeout(spec, install.timeout)}", "--hide-notes"]
    args += _waiting(spec, install.disable_wait, install.disable_wait_for_jobs)
    args += _server_side(True if install.server_side_apply is None
                         else install.server_side_apply)
    if not install.disable_take_ownership:
        args.append("--take-ownership")
    if install.disable_hooks:
        args.append("--no-hooks")
    if install.disable_open_api_validation:
        args.append("--disable-openapi-validation")
    if install.disable_schema_validation:
        args.append("--skip-schema-validation")
    if install.replace:
        args.append("--replace")
    # Flux creates the namespace only for a release outside the HelmRelease's own
    if install.create_namespace and spec.target_namespace:
        args.append("--create-namespace")
    # the chart's CRDs are the caller's to apply by the CRD policy, with the origin labels
    # (Flux's applyCRDs): helm only creates missing ones, unlabelled
    args.append("--skip-crds")
    return args + list(post_renderer)


def upgrade_args(spec: HelmReleaseSpec, *, release: str, namespace: str, chart: Path,
                 server_side: bool | None, post_renderer: Sequence[str] = ()) -> list[str]:
    """``helm upgrade`` arguments (values on stdin) as Flux's ``newUpgrade`` sets the
    SDK; ``server_side`` is ``upgrade.serverSideApply`` resolved (None: "auto" left to
    helm)."""
    upgrade = spec.upgrade or Upgrade()
    args = ["upgrade", release, str(chart), f"--namespace={namespace}", "--values=-",
            f"--timeout={action_timeout(spec, upgrade.timeout)}", "--hide-notes"]
    args += _waiting(spec, upgrade.disable_wait, upgrade.disable_wait_for_jobs)
    args += _server_side(server_side)
    args += _max_history(spec)
    args.append("--reuse-values" if upgrade.preserve_values else "--reset-values")
    if not upgrade.disable_take_ownership:
        args.append("--take-ownership")
    if upgrade.disable_hooks:
        args.append("--no-hooks")
    if upgrade.disable_open_api_validation:
        args.append("--disable-openapi-validation")
    if upgrade.disable_schema_validation:
        args.append("--skip-schema-validation")
    if upgrade.force:
        args.append("--force-replace")
    if upgrade.cleanup_on_fail:
        args.append("--cleanup-on-fail")
    return args + list(post_renderer)


def test_args(spec: HelmReleaseSpec, *, release: str, namespace: str) -> list[str]:
    """``helm test`` arguments: the timeout and one ``--filter`` per test filter."""
    test = spec.test or Test()
    args = ["test", release, f"--namespace={namespace}",
            f"--timeout={action_timeout(spec, test.timeout)}"]
    for item in test.filters or ():
        args.append(f"--filter={'!' if item.exclude else ''}name={item.name}")
    return args



def rollback_args(spec: HelmReleaseSpec, *, release: str, namespace: str,
                  version: int | None, server_side: bool | None) -> list[str]:
    """``helm rollback`` arguments as Flux's ``newRollback`` sets the SDK; ``version``
    None rolls back to the previous revision."""
    rollback = spec.rollback or Rollback()
    args = ["rollback", release] + ([str(version)] if version is not None else [])
    args += [f"--namespace={namespace}",
             f"--timeout={action_timeout(spec, rollback.timeout)}"]
    args += _waiting(spec, rollback.disable_wait, rollback.disable_wait_for_jobs)
    args += _server_side(server_side)
    args += _max_history(spec)
    if rollback.disable_hooks:
        args.append("--no-hooks")
    if rollback.force:
        args.append("--force-replace")
    if rollback.cleanup_on_fail:
        args.append("--cleanup-on-fail")
    return args


def uninstall_args(spec: HelmReleaseSpec, *, release: str, namespace: str) -> list[str]:
    """``helm uninstall`` arguments as Flux's ``newUninstall`` sets the SDK."""
    uninstall = spec.uninstall or Uninstall()
    args = ["uninstall", release, f"--namespace={namespace}",
            f"--timeout={action_timeout(spec, uninstall.timeout)}",
            f"--wait={wait_strategy(spec, uninstall.disable_wait)}",
            f"--cascade={uninstall.deletion_propagation}"]
    if uninstall.disable_hooks:
        args.append("--no-hooks")
    if uninstall.keep_history:
        args.append("--keep-history")
    return args


# --------------------------------------------------------------------------- running


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[:len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _drain(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_READ_CHUNK):
        tail.add(chunk)


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    # helm may exit (a bad flag, a missing chart) before it reads its values
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
    stream.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stream.wait_closed()


def _signal(proc: asyncio.subprocess.Process, signum: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


def _helm_error(stderr: str) -> str:
    """helm's ``Error:`` lines without the prefix; else its last lines that are not
    log records; bounded."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    if not errors:
        errors = [line for line in lines if not line.startswith("level=")][-3:]
    return "; ".join(errors)[:_ERROR_LIMIT]


class Helm:
    """The helm binary, one action at a time per call (calls may run concurrently)."""

    def __init__(self, *, binary: str, clock: Clock, home: Path, max_output: int = 64 * 1024,
                 secrets: Callable[[], Iterable[str]] | None = None,
                 stop_timeout: float = 10.0, margin: float = 60.0) -> None:
        self._binary = binary
        self._clock = clock
        self._home = home
        self._max_output = max_output
        self._secrets = secrets
        self._stop_timeout = stop_timeout
        self._margin = margin
        #: helm processes started, by action (diagnostics; an in-sync release adds none)
        self.runs: collections.Counter[str] = collections.Counter()
        for directory in (home, *self._dirs().values()):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)

    @property
    def plugins(self) -> Path:
        """``HELM_PLUGINS``: where a post-renderer plugin must be installed."""
        return self._home / "plugins"

    def _dirs(self) -> dict[str, Path]:
        return {"HELM_CACHE_HOME": self._home / "cache",
                "HELM_CONFIG_HOME": self._home / "config",
                "HELM_DATA_HOME": self._home / "data",
                "HELM_PLUGINS": self.plugins,
                "TMPDIR": self._home / "tmp"}

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self._home),
               "HELM_DRIVER": "secret"}
        env.update({key: str(path) for key, path in self._dirs().items()})
        return env

    # -- actions -------------------------------------------------------------------

    async def install(self, conn: HelmConnection, *, release: str, namespace: str,
                      chart: Path, values: Mapping[str, Any], spec: HelmReleaseSpec,
                      post_renderer: Sequence[str] = ()) -> ActionResult:
        args = install_args(spec, release=release, namespace=namespace, chart=chart,
                            post_renderer=post_renderer)
        timeout = action_timeout(spec, (spec.install or Install()).timeout)
        return await self._run("install", conn, args, timeout, stdin=_encode(values))

    async def upgrade(self, conn: HelmConnection, *, release: str, namespace: str,
                      chart: Path, values: Mapping[str, Any], spec: HelmReleaseSpec,
                      post_renderer: Sequence[str] = ()) -> ActionResult:
        upgrade = spec.upgrade or Upgrade()
        mode = upgrade.server_side_apply or "auto"
        server_side = mode == "enabled" if mode != "auto" else \
            await self._applied_server_side(conn, release, namespace, None)
        args = upgrade_args(spec, release=release, namespace=namespace, chart=chart,
                            server_side=server_side, post_renderer=post_renderer)
        return await self._run("upgrade", conn, args, action_timeout(spec, upgrade.timeout),
                               stdin=_encode(values))

    async def test(self, conn: HelmConnection, *, release: str, namespace: str,
                   spec: HelmReleaseSpec) -> ActionResult:
        args = test_args(spec, release=release, namespace=namespace)
        return await self._run("test", conn, args,
                               action_timeout(spec, (spec.test or Test()).timeout))

    async def rollback(self, conn: HelmConnection, *, release: str, namespace: str,
                       spec: HelmReleaseSpec, version: int | None = None) -> ActionResult:
        rollback = spec.rollback or Rollback()
        server_side = rollback.server_side_apply
        if server_side is None:  # "auto": as the revision rolled back to was applied
            target = version
            if target is None:
                current = await self._metadata(conn, release, namespace, None)
                revision = current.get("revision") if current else None
                target = revision - 1 if isinstance(revision, int) else None
            if target is not None and target > 0:
                server_side = await self._applied_server_side(conn, release, namespace,
                                                              target)
        args = rollback_args(spec, release=release, namespace=namespace, version=version,
                             server_side=server_side)
        return await self._run("rollback", conn, args,
                               action_timeout(spec, rollback.timeout))

    async def uninstall(self, conn: HelmConnection, *, release: str, namespace: str,
                        spec: HelmReleaseSpec) -> ActionResult:
        args = uninstall_args(spec, release=release, namespace=namespace)
        return await self._run("uninstall", conn, args,
                               action_timeout(spec, (spec.uninstall or Uninstall()).timeout))

    # -- server-side apply "auto" ------------------------------------------------------

    async def _applied_server_side(self, conn: HelmConnection, release: str,
                                   namespace: str, revision: int | None) -> bool | None:
        """Whether that revision (None: the latest) was applied server-side; None when
        it cannot be told (then helm resolves "auto" itself, without forcing)."""
        meta = await self._metadata(conn, release, namespace, revision)
        method = meta.get("applyMethod") if meta else None
        return method == "ssa" if method in ("ssa", "csa") else None

    async def _metadata(self, conn: HelmConnection, release: str, namespace: str,
                        revision: int | None) -> dict[str, Any] | None:
        args = ["get", "metadata", release, f"--namespace={namespace}", "--output=json"]
        if revision is not None:
            args.append(f"--revision={revision}")
        result = await self._run("metadata", conn, args, "1m0s", limit=_METADATA_LIMIT,
                                 phases=1, raw=True)
        if not result.ok:
            return None
        try:
            meta = json.loads(result.output)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    # -- the process -------------------------------------------------------------------

    async def _run(self, action: str, conn: HelmConnection, args: list[str], helm_timeout: str,
                   *, stdin: bytes | None = None, limit: int | None = None,
                   phases: int = PHASES, raw: bool = False) -> ActionResult:
        self.runs[action] += 1
        argv = [self._binary, *args, f"--kubeconfig={conn.kubeconfig}"]
        if conn.context:
            argv.append(f"--kube-context={conn.context}")
        budget = phases * parse_duration(helm_timeout) + self._margin
        out, err = _Tail(limit or self._max_output), _Tail(limit or self._max_output)
        started = self._clock.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=self._env(), cwd=self._home, start_new_session=True,
                stdin=asyncio.subprocess.PIPE if stdin is not None else
                asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            return self._result(action, started, -1, "", "",
                                f"cannot run {self._binary}: {exc.strerror or exc}")
        async with asyncio.TaskGroup() as group:
            group.create_task(_drain(proc.stdout, out))
            group.create_task(_drain(proc.stderr, err))
            if stdin is not None:
                group.create_task(_feed(proc.stdin, stdin))
            timed_out = await self._supervise(proc, budget)
        assert proc.returncode is not None
        if raw:
            return self._result(action, started, proc.returncode, out.text(), "", "",
                                mask=False)
        error = "" if proc.returncode == 0 else _helm_error(err.text()) or \
            f"helm {action} exited with code {proc.returncode}"
        if timed_out:
            error = (f"helm {action} did not finish within {format_duration(budget)} "
                     f"and was stopped" + (f": {error}" if error else ""))
        match = _REVISION.search(out.text())
        return self._result(action, started, proc.returncode, out.text(), err.text(), error,
                            revision=int(match.group(1)) if match else None)

    async def _supervise(self, proc: asyncio.subprocess.Process, budget: float) -> bool:
        """Wait for helm to exit; kill its group at the budget (True) or stop it when
        cancelled. Its group is killed afterwards in any case, so that nothing it
        started (a post-renderer) holds the pipes open."""
        try:
            async with self._clock.timeout(budget):
                await proc.wait()
            return False
        except TimeoutError:
            _signal(proc, signal.SIGKILL, group=True)
            await proc.wait()
            return True
        except asyncio.CancelledError:
            await self._stop(proc)
            raise
        finally:
            _signal(proc, signal.SIGKILL, group=True)

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM helm, give it ``stop_timeout`` to record the release as failed, then
        kill its group; a second cancellation kills at once."""
        _signal(proc, signal.SIGTERM, group=False)
        try:
            async with self._clock.timeout(self._stop_timeout):
                await proc.wait()
        except (TimeoutError, asyncio.CancelledError):
            pass
        _signal(proc, signal.SIGKILL, group=True)
        await asyncio.shield(proc.wait())

    def _result(self, action: str, started: float, returncode: int, stdout: str,
                stderr: str, error: str, *, revision: int | None = None,
                mask: bool = True) -> ActionResult:
        output = stdout + stderr
        if mask:
            output = self._mask(output)[-self._max_output:]
            error = self._mask(error)
        return ActionResult(action=action, ok=returncode == 0 and not error,
                            returncode=returncode,
                            duration=self._clock.monotonic() - started,
                            output=output, error=error, revision=revision)

    def _mask(self, text: str) -> str:
        if self._secrets is None:
            return text
        for secret in sorted({s for s in self._secrets() if s}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _encode(values: Mapping[str, Any]) -> bytes:
    """Values as helm reads a values file: JSON is YAML."""
    return json.dumps(dict(values), ensure_ascii=False, separators=(",", ":")).encode()
