"""``fluxd demo``: the embedded demo.

Starts the development API server, applies an example namespace and Deployment with the
installed ``kubectl`` (a real client, as a user would), waits for the simulated rollout,
shows the objects, and explains how to point your own kubectl at the cluster. It then
keeps serving until interrupted (or exits at once with ``--once``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from fluxd.config import Settings
from fluxd.devcluster.runner import DevCluster

EXAMPLE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: fluxd-demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: fluxd-demo
  labels: {app: podinfo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: podinfo}
  template:
    metadata:
      labels: {app: podinfo}
    spec:
      containers:
      - name: podinfo
        image: ghcr.io/stefanprodan/podinfo:6.7.0
        ports:
        - {name: http, containerPort: 9898}
---
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  namespace: fluxd-demo
spec:
  selector: {app: podinfo}
  ports:
  - {name: http, port: 80, targetPort: http}
"""


def find_tool(name: str, configured: str | None = None) -> str:
    """A tool binary: the configured path, else next to this Python (a venv), else PATH."""
    if configured:
        return configured
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install it or run `make demo`, which does")
    return found


async def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> int:
    print(f"\n$ kubectl {' '.join(args)}", flush=True)
    proc = await asyncio.create_subprocess_exec(
        kubectl, *args, stdin=asyncio.subprocess.PIPE if stdin else None,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    try:
        async with asyncio.timeout(120):
            await proc.communicate(stdin.encode() if stdin else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        print(f"kubectl {args[0]} timed out", file=sys.stderr)
        return 1
    return proc.returncode or 0


async def run_demo(settings: Settings, *, once: bool) -> int:
    kubectl = find_tool("kubectl", settings.tools.kubectl)
    stop = asyncio.Event()
    cfg = settings.devcluster
    async with DevCluster.run(host=cfg.host, port=cfg.port, ready_delay=cfg.ready_delay,
                              history_size=cfg.watch_history) as dev:
        path = dev.write_kubeconfig(cfg.kubeconfig).resolve()
        print(f"fluxd development API server (in memory, not for production) at {dev.url}")
        steps = [
            ("apply", "-f", "-"),
            ("rollout", "status", "deployment/podinfo", "-n", "fluxd-demo", "--timeout=60s"),
            ("get", "namespaces"),
            ("get", "deployments,services,configmaps", "-n", "fluxd-demo", "-o", "wide"),
        ]
        for step in steps:
            code = await _kubectl(kubectl, path, *step,
                                  stdin=EXAMPLE if step[0] == "apply" else None)
            if code != 0:
                return code
        print(f"""
The dev cluster is running. Point your own kubectl at it:

    export KUBECONFIG={path}
    kubectl get deployments -A

It is a development server: everything is in memory and goes when it stops.""", flush=True)
        if once:
            return 0
        print("Press Ctrl-C to stop.", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    return 0
