"""Real helm 4 against the cluster fixture: a release's whole life."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cluster, tool

CHART_YAML = """\
apiVersion: v2
name: greeter
version: 0.1.0
appVersion: "1.0"
"""

VALUES = """\
replicas: 1
greeting: hello
"""

TEMPLATES = {
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-greeter
  labels: {app: greeter}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: greeter, release: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: greeter, release: {{ .Release.Name }}}
    spec:
      containers:
      - name: greeter
        image: busybox:1.36
        args: ["sh", "-c", "echo {{ .Values.greeting }}; sleep 3600"]
""",
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-greeting
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "hook-job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1.36
        args: ["true"]
""",
    "test-pod.yaml": """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-smoke
  annotations:
    helm.sh/hook: test
spec:
  restartPolicy: Never
  containers:
  - name: smoke
    image: busybox:1.36
    args: ["true"]
""",
}


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "greeter"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    (root / "values.yaml").write_text(VALUES)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


def helm(cluster: Cluster, tmp_path: Path, *args: str, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    env = cluster.env({
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    })
    done = subprocess.run([tool("helm"), *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def release_secret(cluster: Cluster, namespace: str, version: int) -> dict[str, object]:
    """Decode a release as helm stores it: base64(gzip(json)) in a Secret's data.release."""
    secret = cluster.kubectl_json("get", "secret", f"sh.helm.release.v1.greet.v{version}",
                                  "-n", namespace)
    assert secret["type"] == "helm.sh/release.v1"
    assert secret["metadata"]["labels"]["owner"] == "helm"
    raw = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    release: dict[str, object] = json.loads(gzip.decompress(raw))
    return release


def test_release_lifecycle(cluster: Cluster, namespace: str, chart: Path, tmp_path: Path) -> None:
    ns = ["--namespace", namespace]
    helm(cluster, tmp_path, "install", "greet", str(chart), *ns, "--wait", "--timeout", "90s")
    assert cluster.kubectl_json("get", "cm", "greet-greeting", "-n", namespace)["data"] == {
        "greeting": "hello"}
    first = release_secret(cluster, namespace, 1)
    assert first["name"] == "greet" and first["version"] == 1
    # the hook Job ran to completion and was deleted by its hook-succeeded policy
    assert cluster.kubectl("get", "job", "greet-migrate", "-n", namespace,
                           check=False).returncode != 0

    helm(cluster, tmp_path, "upgrade", "greet", str(chart), *ns, "--set", "greeting=bonjour",
         "--wait", "--timeout", "90s")
    assert cluster.kubectl_json("get", "cm", "greet-greeting", "-n", namespace)["data"] == {
        "greeting": "bonjour"}

    history = json.loads(helm(cluster, tmp_path, "history", "greet", *ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"),
                                                               (2, "deployed")]

    helm(cluster, tmp_path, "rollback", "greet", "1", *ns, "--wait", "--timeout", "90s")
    assert cluster.kubectl_json("get", "cm", "greet-greeting", "-n", namespace)["data"] == {
        "greeting": "hello"}
    assert release_secret(cluster, namespace, 3)["version"] == 3

    tested = helm(cluster, tmp_path, "test", "greet", *ns, "--timeout", "90s")
    assert "greet-smoke" in tested.stdout and "Succeeded" in tested.stdout

    listed = json.loads(helm(cluster, tmp_path, "list", *ns, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [
        ("greet", "3", "deployed")]

    helm(cluster, tmp_path, "uninstall", "greet", *ns, "--wait", "--timeout", "90s")
    assert json.loads(helm(cluster, tmp_path, "list", *ns, "-o", "json").stdout) == []
    assert cluster.kubectl("get", "deploy", "greet-greeter", "-n", namespace,
                           check=False).returncode != 0
    secrets = cluster.kubectl_json("get", "secrets", "-n", namespace, "-l", "owner=helm")
    assert secrets["items"] == []


def test_failed_hook_fails_the_install(cluster: Cluster, namespace: str, chart: Path,
                                      tmp_path: Path) -> None:
    if not cluster.is_dev:
        pytest.skip("failure is injected with the dev server's simulation annotation")
    hook = chart / "templates" / "hook-job.yaml"
    hook.write_text(hook.read_text().replace(
        "helm.sh/hook-delete-policy", "devcluster.fluxd.io/simulate: fail\n    "
        "helm.sh/hook-delete-policy"))
    done = helm(cluster, tmp_path, "install", "greet", str(chart), "--namespace", namespace,
                "--wait", "--timeout", "60s", check=False)
    assert done.returncode != 0
    assert "greet-migrate" in done.stderr
