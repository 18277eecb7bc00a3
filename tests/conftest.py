"""The one cluster fixture, and the helpers that drive real clients against it.

``cluster`` is session-wide. With ``FLUXD_TEST_KUBECONFIG`` set it is that real cluster;
otherwise fluxd's development API server runs in a thread of its own (with its own event
loop), so tests drive it from subprocesses (kubectl, helm) and from their own loops
(kubernetes_asyncio) exactly as they would a remote server. Every test that writes uses
a namespace of its own (``namespace``) and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fluxd.devcluster.runner import DevCluster
from fluxd.tools import find_tool

REAL_KUBECONFIG = os.environ.get("FLUXD_TEST_KUBECONFIG", "")


def tool(name: str) -> str:
    """A tool binary: next to the running interpreter (.venv/bin), else on PATH."""
    found = find_tool(name)
    if not found:
        pytest.fail(f"{name} not found: run the README's test command, which installs it")
    return found


@dataclass
class ServerThread:
    """A dev cluster on a private event loop in a daemon thread."""

    options: dict[str, Any] = field(default_factory=dict)
    dev: DevCluster | None = None
    loop: asyncio.AbstractEventLoop | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> DevCluster:
        self._thread = threading.Thread(target=self._main, name="devcluster", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("dev cluster did not start in 30 s")
        if self._error is not None:
            raise self._error
        assert self.dev is not None
        return self.dev

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with DevCluster.run(**self.options) as dev:
            self.dev = dev
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def call_async(self, fn: Any, *args: Any, timeout: float = 30) -> Any:
        """Await ``fn(*args)`` on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)


@dataclass
class Cluster:
    kubeconfig: Path
    #: the in-process dev server, None against a real cluster
    server: ServerThread | None

    @property
    def is_dev(self) -> bool:
        return self.server is not None

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(extra or {})
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([tool("kubectl"), *args], input=input, capture_output=True,
                              text=True, env=self.env(), timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)


def start_dev_cluster(tmp: Path, **options: Any) -> tuple[ServerThread, Path]:
    options.setdefault("ready_delay", 0.3)
    thread = ServerThread(options)
    dev = thread.start()
    path = dev.write_kubeconfig(tmp / "kubeconfig")
    return thread, path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if REAL_KUBECONFIG:
        yield Cluster(Path(REAL_KUBECONFIG), None)
        return
    thread, path = start_dev_cluster(tmp_path_factory.mktemp("devcluster"))
    try:
        yield Cluster(path, thread)
    finally:
        thread.stop()


@pytest.fixture
def dev_only(cluster: Cluster) -> None:
    """Skip on a real cluster: the test exercises the development server itself or
    relies on what only it does (the ``devcluster.fluxd.io/simulate`` and ``ready-after``
    annotations, its options)."""
    if not cluster.is_dev:
        pytest.skip("needs the development server (its simulation or options)")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                        check=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ours(task: asyncio.Task[Any]) -> bool:
    # anyio's pytest runner drives each fixture step and test from a task of its own
    return not getattr(task.get_coro(), "__qualname__", "").startswith("TestRunner.")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test runs under ``no_leaked_tasks``."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "no_leaked_tasks")


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves a task of its own running."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before
              if not t.done() and t is not asyncio.current_task() and _ours(t)]
    assert leaked == [], f"tasks left running: {leaked}"
