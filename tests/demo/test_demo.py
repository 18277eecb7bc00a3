"""`fluxd demo`: the GitOps demo end to end, and its pieces."""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.clock import SystemClock
from fluxd.controllers.source.chartbuild import HelmCLI
from fluxd.demo import charts, gitserver, progress, repository, session
from fluxd.tools import find_tool
from tests.support.cli import fluxd

KUSTOMIZATIONS = ("flux-system", "network", "security", "apps")
APPLIED = re.compile(r"^applied (main@sha1:[0-9a-f]{40}) in (\d+\.\d\d)s$", re.M)
RELEASE = "podinfo/cache"


def test_demo_applies_the_example_repository_and_then_a_commit_that_upgrades_a_helm_release(
        tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    started = time.monotonic()
    done = fluxd("demo", "--once", "--port", "0", "--kubeconfig", str(kubeconfig), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    first = re.search(r"every Kustomization is Ready at (main@sha1:[0-9a-f]{40})", out)
    assert first is not None, out
    for name in KUSTOMIZATIONS:
        assert f"flux-system/{name}" in out
        assert re.search(rf"Kustomization +flux-system/{name} +Ready: Applied revision: "
                         rf"{first.group(1)}", out), name
    assert re.search(r"served as a Helm repository at http://127\.0\.0\.1:\d+$", out, re.M)
    assert re.search(r"HelmRepository +podinfo/platform-charts +Ready: stored artifact", out)
    assert re.search(rf"HelmRelease +{RELEASE} +Ready: Helm install succeeded for release "
                     rf"{RELEASE}\.v1 with chart cache@0\.1\.0", out)
    assert (f"HelmRelease {RELEASE}: revision 1 of release {RELEASE} deployed "
            "(chart cache@0.1.0, install)") in out
    assert "$ kubectl get kustomizations,gitrepositories -A" in out
    assert "$ kubectl get helmreleases,helmrepositories -A" in out
    assert "helmrelease.helm.toolkit.fluxcd.io/cache" in out
    assert "deployment.apps/podinfo" in out and "configmap/podinfo-config" in out
    assert "deployment.apps/cache" in out and "configmap/cache-config" in out
    applied = APPLIED.search(out)
    assert applied is not None, out
    assert applied.group(1) != first.group(1)
    assert float(applied.group(2)) < 30
    after = out[applied.end():]
    assert re.search(rf"HelmRelease +{RELEASE} +Ready: Helm upgrade succeeded for release "
                     rf"{RELEASE}\.v2 with chart cache@0\.1\.0", out)
    assert (f"HelmRelease {RELEASE}: revision 2 of release {RELEASE} deployed "
            "(chart cache@0.1.0, upgrade)") in after
    assert "$ helm history cache -n podinfo --max 5" in after
    assert re.search(r"^1\s+.*\ssuperseded\s+cache-0\.1\.0\s.*Install complete", after, re.M)
    assert re.search(r"^2\s+.*\sdeployed\s+cache-0\.1\.0\s.*Upgrade complete", after, re.M)
    assert f"export KUBECONFIG={kubeconfig.resolve()}" in out
    assert re.search(r"http://127\.0\.0\.1:\d+/metrics", out)
    assert f"cd {tmp_path.resolve() / 'demo' / 'repo'}" in out
    assert "not for production" in out
    assert time.monotonic() - started < 60


def _read_lines(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines, read by a thread so the test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _wait_for(lines: queue.Queue[str], pattern: str, seen: list[str], *,
              within: float) -> re.Match[str]:
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"{pattern!r} not printed within {within}s:\n{''.join(seen)}")


def test_demo_applies_a_commit_made_while_it_runs_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fluxd", "demo", "--port", "0",
                             "--kubeconfig", str(tmp_path / "kubeconfig")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines, reader = _read_lines(proc)
    seen: list[str] = []
    try:
        _wait_for(lines, "Press Ctrl-C to stop", seen, within=40)
        repo = tmp_path / "demo" / "repo"
        config = repo / "clusters" / "eu-west" / "apps" / "configmap.yaml"
        config.write_text(config.read_text().replace("Hello from", "Greetings from"))
        subprocess.run(["git", "-C", str(repo), "commit", "--quiet", "--no-verify", "-am",
                        "greet"], check=True, timeout=30)
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                             timeout=30, capture_output=True, text=True).stdout.strip()
        _wait_for(lines, f"new commit {sha[:7]}: reconciling", seen, within=10)
        _wait_for(lines, rf"^applied main@sha1:{sha} in \d+\.\d\ds$", seen, within=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_an_object_is_applied_when_ready_for_its_generation_at_the_revision() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
             "message": "Applied revision: main@sha1:aaa"}
    obj: dict[str, Any] = {
        "kind": "Kustomization", "metadata": {"generation": 2},
        "status": {"observedGeneration": 2, "conditions": [ready],
                   "lastAppliedRevision": "main@sha1:aaa"}}
    assert progress.applied_at(obj, "main@sha1:aaa")
    assert not progress.applied_at(obj, "main@sha1:bbb")
    assert not progress.applied_at({**obj, "metadata": {"generation": 3}}, "main@sha1:aaa")
    unready = {**obj, "status": {**obj["status"], "conditions": [{**ready, "status": "False"}]}}
    assert not progress.applied_at(unready, "main@sha1:aaa")
    source = {"kind": "GitRepository", "metadata": {"generation": 1},
              "status": {"observedGeneration": 1, "conditions": [ready],
                         "artifact": {"revision": "main@sha1:aaa"}}}
    assert progress.applied_at(source, "main@sha1:aaa")


def _kustomization(name: str, revision: str, *children: str) -> dict[str, Any]:
    entries = [{"id": f"flux-system_{c}_kustomize.toolkit.fluxcd.io_Kustomization", "v": "v1"}
               for c in children]
    entries.append({"id": "podinfo_podinfo_apps_Deployment", "v": "v1"})
    return {"kind": "Kustomization",
            "metadata": {"namespace": "flux-system", "name": name, "generation": 1},
            "status": {"observedGeneration": 1, "lastAppliedRevision": revision,
                       "inventory": {"entries": entries},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def test_a_commit_is_applied_when_the_root_and_every_kustomization_it_made_are() -> None:
    root = _kustomization("flux-system", "r2", "network", "apps")
    network = _kustomization("network", "r2")
    apps = _kustomization("apps", "r1")
    assert progress.not_applied([root, network, apps], root="flux-system/flux-system",
                                revision="r2") == ["flux-system/apps"]
    assert progress.not_applied([root, network], root="flux-system/flux-system",
                                revision="r2") == ["flux-system/apps"]
    assert progress.not_applied([root, network, _kustomization("apps", "r2")],
                                root="flux-system/flux-system", revision="r2") == []
    assert progress.not_applied([], root="flux-system/flux-system", revision="r2") == [
        "flux-system/flux-system"]


def test_the_reporter_says_each_change_of_an_objects_ready_condition_once() -> None:
    reporter = progress.Reporter()
    waiting = {"kind": "Kustomization", "metadata": {"namespace": "ns", "name": "apps"},
               "status": {"conditions": [{"type": "Ready", "status": "False",
                                          "reason": "DependencyNotReady",
                                          "message": "dependency 'ns/security' is not ready"}]}}
    ready = {**waiting, "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
         "message": "Applied revision: main@sha1:aaa"}]}}
    first = reporter.lines([waiting], elapsed=0.5)
    assert len(first) == 1
    assert "ns/apps" in first[0]
    assert "DependencyNotReady: dependency 'ns/security' is not ready" in first[0]
    assert reporter.lines([waiting], elapsed=1.0) == []
    assert reporter.lines([{"kind": "Kustomization", "metadata": {"name": "new"}}],
                          elapsed=1.2) == []
    (line,) = reporter.lines([ready], elapsed=1.5)
    assert line.startswith("[  1.5s] Kustomization")
    assert line.endswith("Ready: Applied revision: main@sha1:aaa")


def test_the_scripted_change_replaces_exactly_one_quoted_value() -> None:
    text = 'data:\n  MESSAGE: "hi"\n  COLOR: "#34577c" \n'
    assert repository.set_value(text, "COLOR", "#2f855a") == \
        'data:\n  MESSAGE: "hi"\n  COLOR: "#2f855a" \n'
    with pytest.raises(repository.DemoError, match="COLOUR"):
        repository.set_value(text, "COLOUR", "x")
    example = repository.EXAMPLE / repository.SCRIPTED_FILE
    assert repository.SCRIPTED_VALUE in repository.set_value(
        example.read_text(), repository.SCRIPTED_KEY, repository.SCRIPTED_VALUE)


def test_the_demo_clears_only_a_state_directory_it_made(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    repository.prepare_state(state)
    (state / "repo").mkdir()
    repository.prepare_state(state)
    assert not (state / "repo").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(repository.DemoError, match="not made by `fluxd demo`"):
        repository.prepare_state(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_without_its_checkout_the_demo_says_where_to_run_it(tmp_path: Path) -> None:
    with pytest.raises(repository.DemoError, match="make demo"):
        repository.example_dir(tmp_path / "examples" / "gitops")
    assert repository.example_dir() == repository.EXAMPLE


def test_metrics_are_advertised_on_loopback_for_an_any_address_listener() -> None:
    assert session.metrics_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/metrics"
    assert session.metrics_url("127.0.0.1", 41000) == "http://127.0.0.1:41000/metrics"
    assert session.metrics_url("::1", 9) == "http://[::1]:9/metrics"


def test_the_git_server_serves_the_working_copy_read_only(tmp_path: Path) -> None:
    git = shutil.which("git")
    assert git is not None
    repo = repository.create(repository.EXAMPLE, tmp_path / "repo", git_binary=git)

    async def clone_and_push() -> tuple[str, subprocess.CompletedProcess[str]]:
        async with gitserver.serve(repo.path) as url:
            clone = tmp_path / "clone"
            await asyncio.to_thread(subprocess.run, ["git", "clone", "--quiet", "--depth", "1",
                                                      url, str(clone)], check=True, timeout=30)
            pushed = await asyncio.to_thread(
                subprocess.run, ["git", "-C", str(clone), "push", "--quiet", url,
                                 "HEAD:refs/heads/other"], capture_output=True, text=True,
                timeout=30, check=False)
            return url, pushed

    url, pushed = asyncio.run(clone_and_push())
    assert url.startswith("http://127.0.0.1:") and url.endswith("/gitops.git")
    cloned = tmp_path / "clone" / repository.SCRIPTED_FILE
    assert cloned.read_text() == (repository.EXAMPLE / repository.SCRIPTED_FILE).read_text()
    assert pushed.returncode != 0 and "403" in pushed.stderr
    assert repo.head() == repository.WorkingRepo(repo.path, git).head()


def _release(generation: int, observed: int, ready: str, *history: dict[str, Any]
             ) -> dict[str, Any]:
    return {"kind": "HelmRelease",
            "metadata": {"namespace": "podinfo", "name": "cache", "generation": generation},
            "status": {"observedGeneration": observed, "history": list(history),
                       "conditions": [{"type": "Ready", "status": ready}]}}


def test_a_helm_release_counts_as_applied_when_ready_for_its_generation() -> None:
    assert progress.releases_not_ready([_release(2, 2, "True")]) == []
    assert progress.releases_not_ready([_release(3, 2, "True")]) == ["podinfo/cache"]
    assert progress.releases_not_ready([_release(2, 2, "False")]) == ["podinfo/cache"]
    assert progress.releases_not_ready([_kustomization("apps", "r1")]) == []


def test_the_latest_release_of_a_helm_release_is_the_first_in_its_history() -> None:
    newest = {"name": "cache", "namespace": "podinfo", "version": 2, "status": "deployed",
              "chartName": "cache", "chartVersion": "0.1.0", "action": "upgrade"}
    older = {**newest, "version": 1, "status": "superseded", "action": "install"}
    release = _release(2, 2, "True", newest, older)
    assert progress.latest_release(release) == newest
    assert progress.latest_release(_release(1, 1, "False")) is None
    assert progress.describe_release(newest) == (
        "revision 2 of release podinfo/cache deployed (chart cache@0.1.0, upgrade)")
    assert progress.describe_release({**older, "action": None}) == (
        "revision 1 of release podinfo/cache superseded (chart cache@0.1.0)")


def test_the_chart_repositorys_url_reaches_the_example_through_the_cluster_settings() -> None:
    objects = session.bootstrap_objects("http://git", "http://charts")
    (settings,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert settings["metadata"] == {"name": session.SETTINGS, "namespace": session.NAMESPACE}
    assert settings["data"] == {session.CHART_REPOSITORY_VARIABLE: "http://charts"}
    cluster = repository.EXAMPLE / "clusters" / "eu-west"
    apps = yaml.safe_load((cluster / "flux-system" / "apps.yaml").read_text())
    assert {"kind": "ConfigMap", "name": session.SETTINGS} in \
        apps["spec"]["postBuild"]["substituteFrom"]
    helm_repository = yaml.safe_load((cluster / "apps" / "chart-repository.yaml").read_text())
    assert helm_repository["spec"]["url"] == f"${{{session.CHART_REPOSITORY_VARIABLE}}}"


def test_an_index_lists_each_charts_versions_newest_first() -> None:
    index = charts.index_document(
        [({"name": "cache", "version": "0.1.0"}, "cache-0.1.0.tgz", "aa"),
         ({"name": "cache", "version": "0.2.0"}, "cache-0.2.0.tgz", "bb"),
         ({"name": "app", "version": "1.0.0"}, "app-1.0.0.tgz", "cc")],
        generated="2025-01-01T00:00:00Z")
    assert index["apiVersion"] == "v1"
    assert list(index["entries"]) == ["app", "cache"]
    assert [e["version"] for e in index["entries"]["cache"]] == ["0.2.0", "0.1.0"]
    assert index["entries"]["cache"][0] == {
        "name": "cache", "version": "0.2.0", "urls": ["cache-0.2.0.tgz"], "digest": "bb",
        "created": "2025-01-01T00:00:00Z"}


def test_the_example_charts_are_published_as_a_repository_helm_pulls_from(
        tmp_path: Path) -> None:
    git = shutil.which("git")
    helm = find_tool("helm")
    assert git is not None and helm is not None
    repo = repository.create(repository.EXAMPLE, tmp_path / "repo", git_binary=git)
    home = tmp_path / "helm-home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}

    (tmp_path / "pulled").mkdir()

    async def publish_and_pull() -> tuple[list[charts.Published], str]:
        clock = SystemClock()
        published = await charts.publish(repo.path, tmp_path / "charts",
                                         helm=HelmCLI(helm, clock))
        async with charts.serve(tmp_path / "charts", clock=clock) as url:
            done = await asyncio.to_thread(
                subprocess.run, [helm, "pull", "cache", "--repo", url, "--version", "0.1.x",
                                 "--destination", str(tmp_path / "pulled")],
                env=env, check=False, timeout=60, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        return published, url

    published, url = asyncio.run(publish_and_pull())
    assert url.startswith("http://127.0.0.1:")
    assert [(p.name, p.version, p.archive.name) for p in published] == [
        ("cache", "0.1.0", "cache-0.1.0.tgz")]
    pulled = tmp_path / "pulled" / "cache-0.1.0.tgz"
    assert pulled.read_bytes() == published[0].archive.read_bytes()
    index = yaml.safe_load((tmp_path / "charts" / charts.INDEX).read_text())
    (entry,) = index["entries"]["cache"]
    assert entry["urls"] == ["cache-0.1.0.tgz"] and entry["appVersion"] == "7.4.2"


def test_a_repository_without_charts_publishes_an_empty_index(tmp_path: Path) -> None:
    helm = find_tool("helm")
    assert helm is not None
    (tmp_path / "repo" / "charts" / "notes").mkdir(parents=True)
    published = asyncio.run(charts.publish(tmp_path / "repo", tmp_path / "out",
                                           helm=HelmCLI(helm, SystemClock())))
    assert published == []
    index = yaml.safe_load((tmp_path / "out" / charts.INDEX).read_text())
    assert index["entries"] == {}
