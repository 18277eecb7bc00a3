"""The defaults a real API server's defaulting adds to built-in kinds on create and update.

Contract: ``apply_defaults(group, kind, obj)`` returns a fresh dict (the input is never
mutated and shares no mutable part with the result) holding ``obj`` plus the fields the
Kubernetes defaulting functions (``SetDefaults_*``) would fill in for that kind. A default
never replaces a value the object has; a field counts as unset when it is missing or
``null`` (and, for the plain string fields Go defaults on its zero value, when it is ``""``).
The one exception is the namespace label ``kubernetes.io/metadata.name``, which the real
server forces to the namespace's name, so it is set, not defaulted.

Kinds handled: core Namespace, Secret, Service, Pod, PersistentVolumeClaim; apps
Deployment, StatefulSet, DaemonSet, ReplicaSet; batch Job, CronJob. Every pod spec those
carry (``.spec``, ``.spec.template.spec``, ``.spec.jobTemplate.spec.template.spec``) gets the
PodSpec and container defaults. Any other kind is returned as an unchanged copy.

A Secret's ``stringData`` is merged into ``data`` here too (the real server does it in
the Secret's conversion): it is write-only.

Not done here: anything that needs allocation or a controller (``spec.clusterIP``,
node ports, a Job's generated selector and labels, service-account admission).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fluxd.jsonvalue import clone

__all__ = ["apply_defaults", "image_pull_policy", "qos_class"]

Obj = dict[str, Any]


def apply_defaults(group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``obj`` with the server-side defaults for ``group``/``kind`` added."""
    result: Obj = clone(obj)
    handler = _HANDLERS.get((group, kind))
    if handler is not None:
        handler(result)
    return result


# --------------------------------------------------------------------------- helpers


def _is_unset(value: Any, default: Any) -> bool:
    # Go's defaulting treats a plain string's zero value as unset, so "" is defaulted for
    # string defaults; 0 and False are real values (they are pointers in the Go types).
    return value is None or (isinstance(default, str) and value == "")


def _default(target: Obj, key: str, value: Any) -> None:
    """Set ``target[key]`` to (a copy of) ``value`` unless it already has a value."""
    if _is_unset(target.get(key), value):
        target[key] = clone(value)


def _child(target: Obj, key: str) -> Obj:
    """``target[key]`` as a dict, created (or replacing a ``null``) when missing."""
    value = target.get(key)
    if not isinstance(value, dict):
        value = {}
        target[key] = value
    return value


def _existing(target: Any, *path: str) -> Obj | None:
    """The dict at ``path`` under ``target``, or None when any step is missing."""
    node = target
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def _dicts(value: Any) -> list[Obj]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --------------------------------------------------------------------------- pod spec


def image_pull_policy(image: str | None) -> str:
    """``Always`` for a ``:latest`` or untagged image, else ``IfNotPresent`` (as the server)."""
    if not image:
        return "Always"
    if "@" in image:  # pinned by digest: never moves
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]  # a registry host:port colon is not a tag
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    _default(probe, "timeoutSeconds", 1)
    _default(probe, "periodSeconds", 10)
    _default(probe, "successThreshold", 1)
    _default(probe, "failureThreshold", 3)
    http = probe.get("httpGet")
    if isinstance(http, dict):
        _default(http, "scheme", "HTTP")


def _default_container(container: Obj) -> None:
    _default(container, "imagePullPolicy", image_pull_policy(container.get("image")))
    _default(container, "terminationMessagePath", "/dev/termination-log")
    _default(container, "terminationMessagePolicy", "File")
    _default(container, "resources", {})
    for port in _dicts(container.get("ports")):
        _default(port, "protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(name))
    for env in _dicts(container.get("env")):
        field_ref = _existing(env, "valueFrom", "fieldRef")
        if field_ref is not None:
            _default(field_ref, "apiVersion", "v1")


def _default_volume(volume: Obj) -> None:
    # 0644: the mode the server writes into every projected file source it defaults
    for source in ("secret", "configMap", "projected", "downwardAPI"):
        body = volume.get(source)
        if isinstance(body, dict):
            _default(body, "defaultMode", 420)


def _default_pod_spec(spec: Obj, *, restart_policy: bool = True) -> None:
    if restart_policy:
        _default(spec, "restartPolicy", "Always")
    _default(spec, "terminationGracePeriodSeconds", 30)
    _default(spec, "dnsPolicy", "ClusterFirst")
    _default(spec, "schedulerName", "default-scheduler")
    _default(spec, "securityContext", {})
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            _default_container(container)
    for volume in _dicts(spec.get("volumes")):
        _default_volume(volume)


def _default_template(obj: Obj, *path: str, restart_policy: bool = True) -> None:
    spec = _existing(obj, *path)
    if spec is not None:
        _default_pod_spec(spec, restart_policy=restart_policy)


# --------------------------------------------------------------------------- core


def _namespace(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "finalizers", ["kubernetes"])
    _default(_child(obj, "status"), "phase", "Active")
    name = _existing(obj, "metadata")
    if name is not None and name.get("name"):
        # The server maintains this label itself (it is what namespaceSelectors match on),
        # so it always mirrors the name rather than being a default the client can override.
        _child(name, "labels")["kubernetes.io/metadata.name"] = name["name"]


def _secret(obj: Obj) -> None:
    _default(obj, "type", "Opaque")
    # write-only: the API's conversion of a Secret merges stringData into data (a key in
    # both takes the stringData value) and never stores or returns stringData itself
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _child(obj, "data")
        for key, value in string_data.items():
            if value is None:
                value = ""  # Go decodes a null map value as the empty string
            if isinstance(value, str):
                data[key] = base64.b64encode(value.encode()).decode()


def _service(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "type", "ClusterIP")
    _default(spec, "sessionAffinity", "None")
    for port in _dicts(spec.get("ports")):
        _default(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, "") and "port" in port:
            port["targetPort"] = port["port"]
    kind = spec["type"]
    if kind == "ExternalName":  # a DNS alias: no IPs, so no IP-family or traffic fields
        return
    headless_without_selector = spec.get("clusterIP") == "None" and not spec.get("selector")
    # The server defaults selector-less headless services to RequireDualStack; on a
    # single-stack (IPv4) cluster that still yields just IPv4.
    _default(
        spec,
        "ipFamilyPolicy",
        "RequireDualStack" if headless_without_selector else "SingleStack",
    )
    _default(spec, "ipFamilies", ["IPv4"])
    _default(spec, "internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        _default(spec, "externalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        _default(spec, "allocateLoadBalancerNodePorts", True)


def qos_class(spec: Any) -> str:
    """The pod's QoS class (``BestEffort``, ``Burstable``, ``Guaranteed``) from its resources."""
    containers = [
        *_dicts(spec.get("initContainers") if isinstance(spec, dict) else None),
        *_dicts(spec.get("containers") if isinstance(spec, dict) else None),
    ]
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") if isinstance(container, dict) else None
        resources = resources if isinstance(resources, dict) else {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            # requests default to limits, so a missing request matches the limit
            if limit is None or str(requests.get(name, limit)) != str(limit):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _pod(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "enableServiceLinks", True)
    # SetDefaults_Pod: a container with limits but no request for a resource requests
    # exactly its limit.
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            resources = container.get("resources")
            if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
                requests = _child(resources, "requests")
                for name, quantity in resources["limits"].items():
                    requests.setdefault(name, quantity)
    _default_pod_spec(spec)
    if not obj.get("status"):
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


def _pvc_spec(spec: Obj) -> None:
    _default(spec, "volumeMode", "Filesystem")


def _pvc(obj: Obj) -> None:
    _pvc_spec(_child(obj, "spec"))
    if not obj.get("status"):
        obj["status"] = {"phase": "Pending"}


# --------------------------------------------------------------------------- apps


def _deployment(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    strategy = _child(spec, "strategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxSurge", "25%")
        _default(rolling, "maxUnavailable", "25%")
    _default_template(obj, "spec", "template", "spec")


def _statefulset(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "replicas", 1)
    _default(spec, "podManagementPolicy", "OrderedReady")
    _default(spec, "revisionHistoryLimit", 10)
    strategy = _child(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _default(_child(strategy, "rollingUpdate"), "partition", 0)
    retention = _child(spec, "persistentVolumeClaimRetentionPolicy")
    _default(retention, "whenDeleted", "Retain")
    _default(retention, "whenScaled", "Retain")
    # The claim templates are defaulted as claims, status included, as a real server shows.
    for claim in _dicts(spec.get("volumeClaimTemplates")):
        _pvc_spec(_child(claim, "spec"))
        if not claim.get("status"):
            claim["status"] = {"phase": "Pending"}
    _default_template(obj, "spec", "template", "spec")


def _daemonset(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "revisionHistoryLimit", 10)
    strategy = _child(spec, "updateStrategy")
    _default(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        _default(rolling, "maxUnavailable", 1)
        _default(rolling, "maxSurge", 0)
    _default_template(obj, "spec", "template", "spec")


def _replicaset(obj: Obj) -> None:
    _default(_child(obj, "spec"), "replicas", 1)
    _default_template(obj, "spec", "template", "spec")


# --------------------------------------------------------------------------- batch

_MAX_INT32 = 2**31 - 1


def _job(obj: Obj) -> None:
    spec = _child(obj, "spec")
    # A non-parallel job may leave both unset; completions alone stays unset otherwise
    # (a work-queue job), while parallelism always defaults to 1.
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _default(spec, "parallelism", 1)
    # With a per-index limit the job-wide limit must not trip first.
    _default(spec, "backoffLimit", _MAX_INT32 if spec.get("backoffLimitPerIndex") else 6)
    _default(spec, "completionMode", "NonIndexed")
    _default(spec, "suspend", False)
    _default(
        spec,
        "podReplacementPolicy",
        "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed",
    )
    # restartPolicy stays as given: a Job's pods must say Never or OnFailure themselves, and
    # defaulting Always would only turn "required" into a confusing "unsupported" error.
    _default_template(obj, "spec", "template", "spec", restart_policy=False)


def _cronjob(obj: Obj) -> None:
    spec = _child(obj, "spec")
    _default(spec, "concurrencyPolicy", "Allow")
    _default(spec, "suspend", False)
    _default(spec, "successfulJobsHistoryLimit", 3)
    _default(spec, "failedJobsHistoryLimit", 1)
    # Same as a Job: the job template's pods must choose their restartPolicy.
    _default_template(obj, "spec", "jobTemplate", "spec", "template", "spec", restart_policy=False)


_HANDLERS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "Namespace"): _namespace,
    ("", "Secret"): _secret,
    ("", "Service"): _service,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
}
