"""The ``fluxd`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fluxd import config
from fluxd import logging as fluxlog
from fluxd.config import Settings

if TYPE_CHECKING:
    from fluxd.app import ControllersFactory

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
                        help="TOML config file (see config.example.toml); default "
                             f"$FLUXD_CONFIG, else {config.DEFAULT_CONFIG_PATH} if it exists")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the controllers against a cluster")
    run.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, "
                                          "else in-cluster)")
    run.add_argument("--kube-context", help="kubeconfig context")
    run.add_argument("--kube-api-qps", type=float,
                     help="optional client-side cap on requests per second (default 0: "
                          "none, the API server's priority and fairness decides)")
    run.add_argument("--kube-api-burst", type=int,
                     help="burst of the client-side cap (only with a cap; default 300)")
    run.add_argument("--metrics-addr",
                     help="address of /metrics, /healthz, /readyz (default 0.0.0.0:8080)")
    run.add_argument("--log-encoding", choices=["json", "console"])
    run.add_argument("--enable-leader-election", action=argparse.BooleanOptionalAction,
                     default=None, help="elect a leader on a Lease (default on)")
    run.add_argument("--watch-label-selector",
                     help="only reconcile objects matching this selector (sharding)")

    devrun = sub.add_parser(
        "dev", help="run fluxd against an embedded development cluster (no leader election, "
                    "console logs)")
    devrun.add_argument("--port", type=int, help="port of the dev cluster (default 6443)")
    devrun.add_argument("--kubeconfig", type=Path,
                        help="where to write the kubeconfig (default .fluxd/kubeconfig)")
    devrun.add_argument("--metrics-addr",
                        help="address of /metrics, /healthz, /readyz (default 127.0.0.1:8080)")

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
    demo = sub.add_parser(
        "demo", help="GitOps end to end: a dev cluster, fluxd and a local example repository "
                     "(logs at warning level unless --log-level is given)")
    demo.add_argument("--port", type=int, help="port of the dev cluster (default 6443)")
    demo.add_argument("--kubeconfig", type=Path,
                      help="where to write the kubeconfig (default .fluxd/kubeconfig); the "
                           "demo's repository and artifacts go to demo/ beside it")
    demo.add_argument("--metrics-addr",
                      help="address of /metrics, /healthz, /readyz (default 127.0.0.1:0, a "
                           "free port)")
    demo.add_argument("--once", action="store_true",
                      help="make one commit once everything is Ready, exit when it is applied")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Flags given on the command line, as settings (they win over file and env)."""
    if args.command == "run":
        wanted = {
            "kube": {"kubeconfig": args.kubeconfig, "context": args.kube_context,
                     "qps": args.kube_api_qps, "burst": args.kube_api_burst},
            "server": {"metrics_address": args.metrics_addr},
            "log": {"encoding": args.log_encoding},
            "leader_election": {"enabled": args.enable_leader_election},
            "watch": {"label_selector": args.watch_label_selector},
        }
    elif args.command == "dev":
        wanted = {
            "devcluster": {"port": args.port, "kubeconfig": args.kubeconfig},
            "server": {"metrics_address": args.metrics_addr or "127.0.0.1:8080"},
            "log": {"encoding": "console"},
            "leader_election": {"enabled": False},
            "storage": {"path": ".fluxd/storage", "address": "127.0.0.1:9090"},
        }
    elif args.command == "demo":
        wanted = {
            "devcluster": {"port": args.port, "kubeconfig": args.kubeconfig},
            "server": {"metrics_address": args.metrics_addr or "127.0.0.1:0"},
            "log": {"level": args.log_level or "warning"},
        }
    else:
        wanted = {"devcluster": {
            "host": getattr(args, "host", None), "port": args.port,
            "kubeconfig": args.kubeconfig, "ready_delay": getattr(args, "ready_delay", None),
            "watch_history": getattr(args, "watch_history", None)}}
    wanted.setdefault("log", {}).setdefault("level", args.log_level)
    return {group: given for group, values in wanted.items()
            if (given := {k: v for k, v in values.items() if v is not None})}


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        path: Path = args.config
        return path
    if os.environ.get("FLUXD_CONFIG"):
        return Path(os.environ["FLUXD_CONFIG"])
    return config.DEFAULT_CONFIG_PATH if config.DEFAULT_CONFIG_PATH.is_file() else None


async def _dev_cluster(settings: Settings) -> int:
    from fluxd.app import tune_gc
    from fluxd.devcluster.runner import DevCluster

    tune_gc()
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


def main(argv: list[str] | None = None, *,
         controllers: ControllersFactory | None = None) -> int:
    """The command line; ``controllers`` replaces the controllers ``run`` builds."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["helm-post-render"]:
        # hidden: helm's post-renderer plugin runs it once per install or upgrade, so it
        # loads no settings and imports only the post-renderer
        from fluxd.controllers.helm import postrender

        return postrender.run_command(given[1:], sys.stdin.buffer, sys.stdout, sys.stderr)
    args = _parser().parse_args(argv)
    path = _config_path(args)
    overrides = _overrides(args)
    try:
        settings = config.load(path, **overrides)
    except (OSError, ValueError) as exc:
        print(f"fluxd: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command in ("run", "dev"):
        from fluxd import app

        run = app.run_dev if args.command == "dev" else app.run
        return asyncio.run(run(settings, config_path=path, overrides=overrides,
                               controllers=controllers or app.flux_controllers))
    fluxlog.setup(settings.log.level, "console")
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
