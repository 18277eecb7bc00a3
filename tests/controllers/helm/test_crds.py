"""The chart's CRDs applied by policy (Skip, Create, CreateReplace) against the cluster
fixture, from archives packaged by the real helm; hostile archives refused."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fluxd.clock import SystemClock
from fluxd.controllers.helm.crds import CRDError, apply_crds, read_crds
from fluxd.helmchart import Limits
from fluxd.kube import KubeClient, NotFound
from fluxd.ssa import Action
from tests.conftest import Cluster, tool
from tests.support.charts import crd, package_chart, write_release_chart
from tests.support.helmrepo import HelmCLI

pytestmark = pytest.mark.anyio

CRD_API = "apiextensions.k8s.io/v1"


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


@pytest.fixture
def helm_cli(tmp_path: Path) -> HelmCLI:
    return HelmCLI(tool("helm"), tmp_path / "helm-home")


def archive(helm_cli: HelmCLI, tmp_path: Path, name: str, *, short: str = "") -> Path:
    """A packaged chart whose ``crds/`` holds ``widgets.<name>.fluxd.test`` (with
    ``shortNames: [<short>]`` when given) and a README that is no manifest."""
    chart = write_release_chart(tmp_path / f"src-{short or 'plain'}", name, crd_file=True)
    if short:
        text = crd(name).replace("kind: Widget}", f"kind: Widget, shortNames: [{short}]}}")
        (chart / "crds" / "widget.yaml").write_text(text)
    (chart / "crds" / "README.md").write_text("not a manifest")
    out = tmp_path / f"pkg-{short or 'plain'}"
    out.mkdir()
    return package_chart(helm_cli, chart, out)


def unique(namespace: str) -> str:
    return f"c{namespace.replace('-', '')}"[:40]


async def test_create_makes_missing_crds_with_origin_labels_and_leaves_existing_ones(
        kube: KubeClient, helm_cli: HelmCLI, tmp_path: Path, namespace: str) -> None:
    name = unique(namespace)
    crd_name = f"widgets.{name}.fluxd.test"
    first = archive(helm_cli, tmp_path, name)
    changes = await apply_crds(kube, first, "Create", name="app", namespace="team",
                               clock=SystemClock())
    assert [(e.meta.name, e.action) for e in changes] == [(crd_name, Action.CREATED)]
    live = await kube.get(CRD_API, "CustomResourceDefinition", crd_name)
    assert live["metadata"]["labels"] == {"helm.toolkit.fluxcd.io/name": "app",
                                          "helm.toolkit.fluxcd.io/namespace": "team"}
    assert any(c["type"] == "Established" and c["status"] == "True"
               for c in live["status"]["conditions"])

    changed = archive(helm_cli, tmp_path, name, short="wd")
    again = await apply_crds(kube, changed, "Create", name="app", namespace="team",
                             clock=SystemClock())
    assert [(e.meta.name, e.action) for e in again] == [(crd_name, Action.SKIPPED)]
    live = await kube.get(CRD_API, "CustomResourceDefinition", crd_name)
    assert "shortNames" not in live["spec"]["names"]
    await kube.delete(CRD_API, "CustomResourceDefinition", crd_name)


async def test_create_replace_updates_existing_crds(
        kube: KubeClient, helm_cli: HelmCLI, tmp_path: Path, namespace: str) -> None:
    name = unique(namespace) + "r"
    crd_name = f"widgets.{name}.fluxd.test"
    await apply_crds(kube, archive(helm_cli, tmp_path, name), "CreateReplace", name="app",
                     namespace="team", clock=SystemClock())
    changes = await apply_crds(kube, archive(helm_cli, tmp_path, name, short="wd"),
                               "CreateReplace", name="app", namespace="team",
                               clock=SystemClock())
    assert [(e.meta.name, e.action) for e in changes] == [(crd_name, Action.CONFIGURED)]
    live = await kube.get(CRD_API, "CustomResourceDefinition", crd_name)
    assert live["spec"]["names"]["shortNames"] == ["wd"]
    await kube.delete(CRD_API, "CustomResourceDefinition", crd_name)


async def test_skip_applies_nothing(
        kube: KubeClient, helm_cli: HelmCLI, tmp_path: Path, namespace: str) -> None:
    name = unique(namespace) + "s"
    changes = await apply_crds(kube, archive(helm_cli, tmp_path, name), "Skip", name="app",
                               namespace="team", clock=SystemClock())
    assert len(changes) == 0
    with pytest.raises(NotFound):
        await kube.get(CRD_API, "CustomResourceDefinition", f"widgets.{name}.fluxd.test")


def tarball(path: Path, files: dict[str, bytes]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def test_a_chart_without_crds_has_none(tmp_path: Path) -> None:
    chart = tarball(tmp_path / "c.tgz", {"c/Chart.yaml": b"name: c\nversion: 1.0.0\n"})
    assert read_crds(chart) == []


def test_a_manifest_in_crds_that_is_no_crd_is_refused(tmp_path: Path) -> None:
    chart = tarball(tmp_path / "c.tgz", {
        "c/Chart.yaml": b"name: c\nversion: 1.0.0\n",
        "c/crds/cm.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"})
    with pytest.raises(CRDError, match="not a CustomResourceDefinition"):
        read_crds(chart)


def test_unsafe_yaml_and_oversized_files_are_refused(tmp_path: Path) -> None:
    tagged = tarball(tmp_path / "t.tgz", {
        "c/Chart.yaml": b"name: c\nversion: 1.0.0\n",
        "c/crds/x.yaml": b"!!python/object:os.system {}\n"})
    with pytest.raises(CRDError, match="failed to parse"):
        read_crds(tagged)
    big = tarball(tmp_path / "b.tgz", {
        "c/Chart.yaml": b"name: c\nversion: 1.0.0\n",
        "c/crds/x.yaml": b"#" * 2048})
    with pytest.raises(CRDError, match="exceeds"):
        read_crds(big, limits=Limits(file_size=1024))


def test_an_archive_leaving_its_directory_is_refused(tmp_path: Path) -> None:
    # nothing is unpacked, and entry names are checked as Helm checks them
    evil = tarball(tmp_path / "e.tgz", {"chart/../../escape.yaml": b"x: 1\n"})
    with pytest.raises(CRDError, match="illegally references parent directory"):
        read_crds(evil)
    absolute = tarball(tmp_path / "a.tgz", {"chart//etc/crds/x.yaml": b"x: 1\n"})
    with pytest.raises(CRDError, match="absolute paths"):
        read_crds(absolute)


def test_an_archive_inflating_past_its_bound_is_refused(tmp_path: Path) -> None:
    bomb = tarball(tmp_path / "b.tgz", {"chart/crds/big.yaml": b" " * (3 << 20)})
    with pytest.raises(CRDError, match="unpacks to more than"):
        read_crds(bomb, limits=Limits(chart_size=256 << 10, file_size=8 << 20))
