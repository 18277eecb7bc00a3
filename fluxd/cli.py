"""The ``fluxd`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

DEV_CLUSTER_HELP = """\
Run fluxd's development Kubernetes API server.

It is a DEVELOPMENT server: every object lives in memory and is gone when it stops, there
is no kubelet (workload status is simulated), and it is not meant for production. It
speaks enough of the Kubernetes API for kubectl, helm and kubernetes_asyncio to work
against it, over TLS with a throw-away CA and an admin bearer token written into the
kubeconfig.

Workload simulation: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, Pods,
PVCs and LoadBalancer Services get a realistic status after --ready-delay seconds.
Annotate an object with devcluster.fluxd.io/simulate=fail to make it fail instead
(ProgressDeadlineExceeded, Job Failed, Pod Failed), or with
devcluster.fluxd.io/ready-after=<duration> to change its delay.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxd",
                                     description="Flux v2 GitOps toolkit in one process.")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev-cluster", help="run the development Kubernetes API server",
                         description=DEV_CLUSTER_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dev.add_argument("--port", type=int, default=6443, help="port to listen on (0 = any free)")
    dev.add_argument("--kubeconfig", type=Path, default=Path(".fluxd/kubeconfig"),
                     help="where to write the kubeconfig for this server")
    dev.add_argument("--ready-delay", type=float, default=1.0,
                     help="seconds before simulated workloads become ready")
    dev.add_argument("--watch-history", type=int, default=10_000,
                     help="changes kept for watches; older resourceVersions get 410 Gone")
    return parser


async def _dev_cluster(args: argparse.Namespace) -> int:
    from fluxd.devcluster.runner import DevCluster

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with DevCluster.run(host=args.host, port=args.port, ready_delay=args.ready_delay,
                              history_size=args.watch_history) as dc:
        path = dc.write_kubeconfig(args.kubeconfig)
        print(f"fluxd development API server (in memory, not for production) at {dc.url}",
              flush=True)
        print(f"kubeconfig: {path}\n  export KUBECONFIG={path.resolve()}", flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "dev-cluster":
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_dev_cluster(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
