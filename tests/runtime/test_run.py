"""``fluxd run`` as a process: readiness, SIGHUP reloads, graceful SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(cluster: Cluster, namespace: str, port: int, selector: str, *,
                kustomize: int, qps: str = "50") -> str:
    return f"""
[kube]
kubeconfig = "{cluster.kubeconfig}"
qps = {qps}

[server]
metrics_address = "127.0.0.1:{port}"

[concurrency]
kustomize = {kustomize}

[watch]
label_selector = "{selector}"
runtime_namespace = "{namespace}"

[leader_election]
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "0.2s"

[shutdown]
grace_period = "30s"
"""


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def sample(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(check: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def process(cluster: Cluster, namespace: str, tmp_path: Path
            ) -> Iterator[tuple[subprocess.Popen[str], Path, int, str]]:
    port = free_port()
    selector = f"fluxd-test={uuid.uuid4().hex[:8]}"
    path = tmp_path / "fluxd.toml"
    path.write_text(config_text(cluster, namespace, port, selector, kustomize=2))
    log = (tmp_path / "fluxd.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.runtime.lease_app", "--config",
                             str(path), "run"], stdout=log, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    try:
        yield proc, path, port, selector
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def test_run_reloads_on_sighup_and_finishes_in_flight_work_on_sigterm(
        cluster: Cluster, namespace: str,
        process: tuple[subprocess.Popen[str], Path, int, str], tmp_path: Path) -> None:
    proc, path, port, selector = process
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: fetch(base + "/readyz")[0] == 200, "/readyz")
    assert fetch(base + "/healthz") == (200, "ok")

    def metric(name: str, **labels: str) -> float | None:
        return sample(fetch(base + "/metrics")[1], name, **labels)

    wait_until(lambda: metric("leader_election_master_status") == 1, "leadership",
               within=90)
    assert metric("controller_runtime_max_concurrent_reconciles", controller="lease") == 2

    # a valid change applies at once
    path.write_text(config_text(cluster, namespace, port, selector, kustomize=7))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: metric("fluxd_config_reloads_total", result="success") == 1, "reload")
    assert metric("controller_runtime_max_concurrent_reconciles", controller="lease") == 7

    # an invalid file is refused and the running configuration stays
    path.write_text(config_text(cluster, namespace, port, selector, kustomize=3, qps="-1"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: metric("fluxd_config_reloads_total", result="failure") == 1,
               "failed reload")
    assert metric("controller_runtime_max_concurrent_reconciles", controller="lease") == 7
    assert proc.poll() is None

    # an in-flight reconcile finishes before the process exits 0
    key, value = selector.split("=")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "slow", "namespace": namespace, "labels": {key: value},
                          "annotations": {"test.fluxd.io/sleep": "3"}},
             "spec": {"holderIdentity": "nobody"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(lease))
    wait_until(lambda: metric("controller_runtime_active_workers", controller="lease") == 1,
               "the reconcile to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    done = cluster.kubectl_json("get", "configmap", "done-slow", "-n", namespace)
    assert done["data"]["holder"] == "nobody"
    log = (tmp_path / "fluxd.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    reload_line = next(x for x in lines if x["msg"] == "configuration reloaded")
    assert reload_line["applied"] == ["concurrency.kustomize"]
    failed = next(x for x in lines if x["msg"].startswith("configuration reload failed"))
    assert "qps" in failed["error"]
    # the lease was released on the way out
    lease_list = cluster.kubectl_json("get", "leases", "-n", namespace)
    holders = {i["metadata"]["name"]: i["spec"].get("holderIdentity") for i in
               lease_list["items"]}
    assert any(name.startswith("fluxd-leader-election") and not holder
               for name, holder in holders.items())


def spawn(path: Path, log_path: Path) -> subprocess.Popen[str]:
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.runtime.lease_app", "--config",
                             str(path), "run"], stdout=log, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    log.close()
    return proc


def test_two_processes_one_leader_and_a_killed_leader_is_replaced(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    selector = f"fluxd-test={uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[str]] = []
    ports = [free_port(), free_port()]
    try:
        for n, port in enumerate(ports):
            path = tmp_path / f"fluxd-{n}.toml"
            path.write_text(config_text(cluster, namespace, port, selector, kustomize=2))
            procs.append(spawn(path, tmp_path / f"fluxd-{n}.log"))

        def leading(port: int) -> float | None:
            return sample(fetch(f"http://127.0.0.1:{port}/metrics")[1],
                          "leader_election_master_status")

        wait_until(lambda: sorted(leading(p) or 0 for p in ports) == [0, 1], "one leader")
        for port in ports:  # the standby is ready too: it stands by
            wait_until(lambda p=port: fetch(f"http://127.0.0.1:{p}/readyz")[0] == 200,
                       "readiness")
        time.sleep(1)
        assert sorted(leading(p) or 0 for p in ports) == [0, 1]
        leader = 0 if leading(ports[0]) == 1 else 1
        procs[leader].kill()  # no release: the standby must wait for expiry
        killed = time.monotonic()
        wait_until(lambda: leading(ports[1 - leader]) == 1, "the standby to lead", within=15)
        assert time.monotonic() - killed <= 3 + 1.5  # lease 3 s, retry 0.2 s, slack
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_a_process_that_loses_its_lease_exits_non_zero(
        cluster: Cluster, namespace: str,
        process: tuple[subprocess.Popen[str], Path, int, str]) -> None:
    proc, _, port, _ = process
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: sample(fetch(base + "/metrics")[1],
                              "leader_election_master_status") == 1, "leadership",
               within=90)
    leases = cluster.kubectl_json("get", "leases", "-n", namespace)["items"]
    name = next(i["metadata"]["name"] for i in leases
                if i["metadata"]["name"].startswith("fluxd-leader-election"))
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        # another writer takes the lease, again and again
        cluster.kubectl("patch", "lease", name, "-n", namespace, "--type", "merge", "-p",
                        json.dumps({"spec": {"holderIdentity": "usurper",
                                             "renewTime": "2030-01-01T00:00:00.000000Z"}}),
                        check=False)
        time.sleep(0.1)
    assert proc.wait(10) == 1


@pytest.mark.parametrize(("setting", "env"), [
    ("watch.runtime_namespace", "FLUXD_WATCH__RUNTIME_NAMESPACE"),
    ("leader_election.namespace", "FLUXD_LEADER_ELECTION__NAMESPACE"),
])
def test_a_process_whose_lease_namespace_does_not_exist_exits_non_zero_naming_it(
        cluster: Cluster, tmp_path: Path, setting: str, env: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    groups: dict[str, dict[str, str]] = {
        "kube": {"kubeconfig": str(cluster.kubeconfig)},
        "server": {"metrics_address": f"127.0.0.1:{free_port()}"},
        "watch": {"label_selector": f"fluxd-test={uuid.uuid4().hex[:8]}"},
        "leader_election": {}}
    group, _, key = setting.partition(".")
    groups[group][key] = missing
    path = tmp_path / "fluxd.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
                            for name, keys in groups.items()))
    proc = spawn(path, tmp_path / "fluxd.log")
    try:
        code = proc.wait(60)  # at once, not after retries
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = (tmp_path / "fluxd.log").read_text()
    assert code == 1, log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [x for x in lines if x["level"] == "error"]
    assert [x["msg"] for x in errors] == ["unable to start manager"], log
    reason = errors[0]["error"]
    assert f'the leader election Lease namespace "{missing}" does not exist' in reason
    assert setting in reason and env in reason
    assert "Traceback" not in log
