"""A chart for release tests: objects whose outcome a test switches with values.

``write_release_chart`` extends ``helmrepo.write_chart`` (Chart.yaml, values.yaml and the
ConfigMap ``<release>`` holding ``.Values.greeting``) with:

- a Deployment ``<release>-app``; ``readyAfter`` (a Go duration) delays its readiness on
  the dev cluster, ``failDeployment: true`` makes it fail;
- a ``helm.sh/hook: test`` Pod ``<release>-smoke``; ``failTest: true`` makes it fail;
- with ``hook=True``, a ``pre-install,pre-upgrade`` hook Job ``<release>-migrate``;
  ``failHook: true`` makes it fail;
- with ``crd=True``, a CRD in ``crds/`` (``widgets.<name>.fluxd.test``).

Failure and delay use the dev cluster's annotations (``fluxd.devcluster.simulate``).
``package_chart`` packages a chart directory with the real helm (``HelmCLI.package``).
"""

from __future__ import annotations

from pathlib import Path

from fluxd.devcluster.simulate import DELAY_ANNOTATION, FAIL_ANNOTATION
from tests.support.helmrepo import HelmCLI, write_chart

VALUES = """\
readyAfter: ""
failDeployment: false
failTest: false
failHook: false
"""


def _simulation(value: str, indent: int) -> str:
    """The annotations a template adds for the values that ask for them."""
    pad = " " * indent
    return (f"{pad}{{{{- if .Values.{value} }}}}\n"
            f"{pad}{FAIL_ANNOTATION}: fail\n"
            f"{pad}{{{{- end }}}}\n")


DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Release.Name }}}}-app
  annotations:
    fluxd.test/chart: "{{{{ .Chart.Version }}}}"
{_simulation("failDeployment", 4)}\
    {{{{- with .Values.readyAfter }}}}
    {DELAY_ANNOTATION}: {{{{ . | quote }}}}
    {{{{- end }}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {{{{ .Release.Name }}}}}}
  template:
    metadata:
      labels: {{app: {{{{ .Release.Name }}}}}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        args: ["sleep", "3600"]
"""

TEST_POD = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {{{{ .Release.Name }}}}-smoke
  annotations:
    helm.sh/hook: test
{_simulation("failTest", 4)}\
spec:
  restartPolicy: Never
  containers:
  - name: smoke
    image: busybox:1.36
    args: ["true"]
"""

HOOK_JOB = f"""\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{{{ .Release.Name }}}}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{_simulation("failHook", 4)}\
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1.36
        args: ["true"]
"""


def crd(name: str) -> str:
    group = f"{name}.fluxd.test"
    return f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def write_release_chart(parent: Path, name: str = "greeter", version: str = "0.1.0", *,
                        app_version: str = "1.0.0", hook: bool = False,
                        crd_file: bool = False) -> Path:
    """The chart directory ``parent/<name>-<version>``."""
    chart = write_chart(parent, name, version, app_version=app_version)
    with (chart / "values.yaml").open("a") as values:
        values.write(VALUES)
    templates = chart / "templates"
    (templates / "deployment.yaml").write_text(DEPLOYMENT)
    (templates / "test-pod.yaml").write_text(TEST_POD)
    if hook:
        (templates / "hook-job.yaml").write_text(HOOK_JOB)
    if crd_file:
        (chart / "crds").mkdir()
        (chart / "crds" / "widget.yaml").write_text(crd(name))
    return chart


def package_chart(helm: HelmCLI, chart_dir: Path, destination: Path) -> Path:
    """``helm package``: the archive in ``destination``."""
    return helm.package(chart_dir, destination)
