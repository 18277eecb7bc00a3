"""The ``fluxd`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from fluxd import config
from fluxd.config import Settings

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
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config file (see config.example.toml)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev-cluster", help="run the development Kubernetes API server",
                         description=DEV_CLUSTER_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    dev.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, help="port to listen on, 0 = any free (default 6443)")
    dev.add_argument("--kubeconfig", type=Path,
                     help="where to write the kubeconfig (default .fluxd/kubeconfig)")
    dev.add_argument("--ready-delay", type=float,
                     help="seconds before simulated workloads become ready (default 1)")
    dev.add_argument("--watch-history", type=int,
                     help="changes kept for watches; older resourceVersions get 410 Gone "
                          "(default 10000)")
    demo = sub.add_parser("demo", help="run the embedded demo on a development cluster")
    demo.add_argument("--port", type=int, help="port of the dev cluster (default 6443)")
    demo.add_argument("--kubeconfig", type=Path,
                      help="where to write the kubeconfig (default .fluxd/kubeconfig)")
    demo.add_argument("--once", action="store_true",
                      help="exit after the demo instead of serving until interrupted")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "host": getattr(args, "host", None), "port": args.port, "kubeconfig": args.kubeconfig,
        "ready_delay": getattr(args, "ready_delay", None),
        "watch_history": getattr(args, "watch_history", None),
    }
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return config.load(args.config, devcluster=given) if given else config.load(args.config)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"fluxd: invalid configuration: {exc}") from exc


async def _dev_cluster(settings: Settings) -> int:
    from fluxd.devcluster.runner import DevCluster

    dev = settings.devcluster
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with DevCluster.run(host=dev.host, port=dev.port, ready_delay=dev.ready_delay,
                              history_size=dev.watch_history) as dc:
        path = dc.write_kubeconfig(dev.kubeconfig)
        print(f"fluxd development API server (in memory, not for production) at {dc.url}",
              flush=True)
        print(f"kubeconfig: {path}\n  export KUBECONFIG={path.resolve()}", flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings(args)
    if args.command == "demo":
        from fluxd.demo import run_demo

        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run_demo(settings, once=args.once))
        return 0
    if args.command == "dev-cluster":
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_dev_cluster(settings))
    return 2


if __name__ == "__main__":
    sys.exit(main())
