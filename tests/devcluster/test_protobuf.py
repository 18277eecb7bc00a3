"""Protobuf request bodies decode into the JSON a JSON client would have sent.

Inputs come from a tiny encoder below that writes fields the way Go's generated
marshallers do (field numbers taken from Kubernetes' generated.proto files), plus golden
byte strings derived by hand from those definitions.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.clock import go_duration
from fluxd.devcluster import protobuf
from fluxd.devcluster.protobuf import SUPPORTED_KINDS, ProtobufError, decode

# --- a minimal protobuf encoder -------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative ints go on the wire as 64-bit two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def blob(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return blob(number, text.encode())


def integer(number: int, n: int) -> bytes:
    return tag(number, 0) + varint(n)


def boolean(number: int, flag: bool) -> bytes:
    return integer(number, int(flag))


def message(number: int, *parts: bytes) -> bytes:
    return blob(number, b"".join(parts))


def entry(number: int, key: str, value: bytes) -> bytes:
    """One map<string, X> entry: key = 1, value = 2."""
    return message(number, string(1, key), value)


def quantity(number: int, text: str) -> bytes:
    return message(number, string(1, text))


def int_or_string(number: int, value: int | str) -> bytes:
    if isinstance(value, int):
        return message(number, integer(1, 0), integer(2, value), string(3, ""))
    return message(number, integer(1, 1), integer(2, 0), string(3, value))


def seconds(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def timestamp(number: int, secs: int, nanos: int = 0) -> bytes:
    return message(number, integer(1, secs), integer(2, nanos))


def object_meta(name: str = "", namespace: str = "", *extra: bytes) -> bytes:
    """ObjectMeta as Go writes it: every non-pointer field, even empty ones."""
    return message(
        1,
        string(1, name), string(2, ""), string(3, namespace), string(4, ""), string(5, ""),
        string(6, ""), integer(7, 0), message(8),  # creationTimestamp: zero Time
        *extra,
    )


def envelope(api_version: str, kind: str, *raw: bytes) -> bytes:
    """k8s\\x00 + runtime.Unknown{typeMeta, raw, contentEncoding "", contentType ""}."""
    return (
        protobuf.MAGIC
        + message(1, string(1, api_version), string(2, kind))
        + blob(2, b"".join(raw))
        + string(3, "")
        + string(4, "")
    )


# --- golden bytes, derived by hand from the .proto definitions ------------------------------

GOLDEN_NAMESPACE = (
    b"k8s\x00"
    b"\x0a\x0f"  # Unknown.typeMeta (1), 15 bytes
    b"\x0a\x02v1"  # . apiVersion (1)
    b"\x12\x09Namespace"  # . kind (2)
    b"\x12\x0c"  # Unknown.raw (2), 12 bytes
    b"\x0a\x06\x0a\x04demo"  # . Namespace.metadata (1) {name (1) "demo"}
    b"\x12\x00"  # . spec (2) {} - Go always writes non-pointer messages
    b"\x1a\x00"  # . status (3) {}
    b"\x1a\x00"  # Unknown.contentEncoding (3) ""
    b"\x22\x00"  # Unknown.contentType (4) ""
)

GOLDEN_LEASE = (
    b"k8s\x00"
    b"\x0a\x1f"  # typeMeta, 31 bytes
    b"\x0a\x16coordination.k8s.io/v1"
    b"\x12\x05Lease"
    b"\x12\x25"  # raw, 37 bytes
    b"\x0a\x08\x0a\x06leader"  # . metadata {name "leader"}
    b"\x12\x19"  # . spec (2), 25 bytes
    b"\x0a\x06node-a"  # .. holderIdentity (1)
    b"\x10\x0f"  # .. leaseDurationSeconds (2) = 15
    b"\x22\x0b"  # .. renewTime (4) MicroTime, 11 bytes
    b"\x08\xa5\xeb\xdc\xca\x06"  # ... seconds (1) = 1767323045 (2026-01-02T03:04:05Z)
    b"\x10\x80\x94\xef\x3a"  # ... nanos (2) = 123456000
    b"\x28\x00"  # .. leaseTransitions (5) = 0, a *int32 set to zero
    b"\x1a\x00\x22\x00"  # contentEncoding, contentType
)

# What `kubectl auth can-i create pods -n default` sends, marshalled as Go does.
GOLDEN_SSAR = (
    b"k8s\x00"
    b"\x0a\x32"  # typeMeta, 50 bytes
    b"\x0a\x17authorization.k8s.io/v1"
    b"\x12\x17SelfSubjectAccessReview"
    b"\x12\x3f"  # raw, 63 bytes
    b"\x0a\x10"  # . metadata (1): every non-pointer ObjectMeta field, all empty
    b"\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00"
    b"\x12\x21"  # . spec (2), 33 bytes
    b"\x0a\x1f"  # .. resourceAttributes (1), 31 bytes
    b"\x0a\x07default"  # ... namespace (1)
    b"\x12\x06create"  # ... verb (2)
    b"\x1a\x00\x22\x00"  # ... group (3), version (4)
    b"\x2a\x04pods"  # ... resource (5)
    b"\x32\x00\x3a\x00"  # ... subresource (6), name (7)
    b"\x1a\x08"  # . status (3): allowed, reason, evaluationError, denied
    b"\x08\x00\x12\x00\x1a\x00\x20\x00"
    b"\x1a\x00\x22\x00"
)


def test_golden_namespace_decodes_with_empty_spec_and_status() -> None:
    assert decode(GOLDEN_NAMESPACE) == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"},
        "spec": {}, "status": {},
    }


def test_golden_lease_keeps_micro_time_and_a_zero_pointer() -> None:
    assert decode(GOLDEN_LEASE) == {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "node-a", "leaseDurationSeconds": 15,
            "renewTime": "2026-01-02T03:04:05.123456Z", "leaseTransitions": 0,
        },
    }


def test_golden_self_subject_access_review_matches_kubectls_json() -> None:
    assert decode(GOLDEN_SSAR) == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {
            "namespace": "default", "verb": "create", "resource": "pods",
        }},
        "status": {"allowed": False},
    }


def test_the_test_encoder_reproduces_the_golden_bytes() -> None:
    assert envelope("v1", "Namespace", message(1, string(1, "demo")), message(2),
                    message(3)) == GOLDEN_NAMESPACE


# --- core/v1 ----------------------------------------------------------------------------------


def test_a_secret_with_binary_data_becomes_base64() -> None:
    body = envelope(
        "v1", "Secret",
        object_meta("creds", "default"),
        entry(2, "key.bin", blob(2, b"\x00\xff\x10binary")),
        entry(2, "empty", blob(2, b"")),
        string(3, "Opaque"),
        entry(4, "plain", string(2, "text")),
        boolean(5, False),
    )
    assert decode(body) == {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default", "creationTimestamp": None},
        "data": {"key.bin": base64.b64encode(b"\x00\xff\x10binary").decode(), "empty": ""},
        "type": "Opaque",
        "stringData": {"plain": "text"},
        "immutable": False,
    }


def test_a_helm_release_secret_round_trips_its_payload() -> None:
    payload = b"H4sIAAAAAAAA/" * 1000
    body = envelope(
        "v1", "Secret",
        object_meta("sh.helm.release.v1.demo.v1", "default",
                    entry(11, "owner", string(2, "helm")),
                    entry(11, "status", string(2, "deployed"))),
        entry(2, "release", blob(2, payload)),
        string(3, "helm.sh/release.v1"),
    )
    obj = decode(body)
    assert base64.b64decode(obj["data"]["release"]) == payload
    assert obj["metadata"]["labels"] == {"owner": "helm", "status": "deployed"}


def test_a_config_map_keeps_text_and_binary_data_apart() -> None:
    body = envelope(
        "v1", "ConfigMap", object_meta("cfg"),
        entry(2, "app.conf", string(2, "a=1\n")),
        entry(3, "logo.png", blob(2, b"\x89PNG")),
    )
    obj = decode(body)
    assert obj["data"] == {"app.conf": "a=1\n"}
    assert obj["binaryData"] == {"logo.png": base64.b64encode(b"\x89PNG").decode()}
    assert "immutable" not in obj


def test_a_service_account_lists_its_secrets_and_pull_secrets() -> None:
    body = envelope(
        "v1", "ServiceAccount", object_meta("builder", "ci"),
        message(2, string(1, "Secret"), string(3, "token")),
        message(3, string(1, "registry")),
        boolean(4, True),
    )
    assert decode(body) == {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "builder", "namespace": "ci", "creationTimestamp": None},
        "secrets": [{"kind": "Secret", "name": "token"}],
        "imagePullSecrets": [{"name": "registry"}],
        "automountServiceAccountToken": True,
    }


def test_a_core_event_from_a_client_go_recorder_decodes() -> None:
    first = seconds(2026, 3, 4, 5, 6, 7)
    body = envelope(
        "v1", "Event",
        object_meta("web.17a", "default"),
        message(2, string(1, "Pod"), string(2, "default"), string(3, "web"), string(4, "u-1"),
                string(5, "v1"), string(6, "42"), string(7, "spec.containers{app}")),
        string(3, "Pulled"), string(4, "Image pulled"),
        message(5, string(1, "kubelet"), string(2, "node-1")),
        timestamp(6, first), timestamp(7, first + 60),
        integer(8, 2), string(9, "Normal"),
        message(10),  # eventTime: zero MicroTime
        string(12, ""), string(14, "kubelet"), string(15, "node-1"),
    )
    assert decode(body) == {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.17a", "namespace": "default", "creationTimestamp": None},
        "involvedObject": {
            "kind": "Pod", "namespace": "default", "name": "web", "uid": "u-1",
            "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{app}",
        },
        "reason": "Pulled", "message": "Image pulled",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2026-03-04T05:06:07Z", "lastTimestamp": "2026-03-04T05:07:07Z",
        "count": 2, "type": "Normal", "eventTime": None,
        "reportingComponent": "kubelet", "reportingInstance": "node-1",
    }


def test_a_core_event_series_carries_a_micro_time() -> None:
    body = envelope(
        "v1", "Event", object_meta("e"),
        message(11, integer(1, 3), timestamp(2, seconds(2026, 1, 1), 5_000)),
    )
    assert decode(body)["series"] == {
        "count": 3, "lastObservedTime": "2026-01-01T00:00:00.000005Z",
    }


def test_a_service_keeps_named_and_numbered_target_ports() -> None:
    body = envelope(
        "v1", "Service", object_meta("web", "default"),
        message(
            2,
            message(1, string(1, "http"), string(2, "TCP"), integer(3, 80),
                    int_or_string(4, "http"), integer(5, 0)),
            message(1, string(1, "metrics"), string(2, "TCP"), integer(3, 9090),
                    int_or_string(4, 9091), integer(5, 30001)),
            entry(2, "app", string(2, "web")),
            string(3, ""), string(4, "NodePort"), string(7, "None"),
            string(17, "SingleStack"), string(19, "IPv4"),
        ),
        message(3, message(1)),
    )
    assert decode(body)["spec"] == {
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
            {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9091,
             "nodePort": 30001},
        ],
        "selector": {"app": "web"}, "type": "NodePort", "sessionAffinity": "None",
        "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
    }
    assert decode(body)["status"] == {"loadBalancer": {}}


# --- the pod spec tree ------------------------------------------------------------------------


def container(*parts: bytes) -> bytes:
    """A Container (field 2 of PodSpec) with its non-pointer ResourceRequirements."""
    return message(2, *parts)


def pod_spec(*parts: bytes) -> bytes:
    return message(2, *parts)


def volume(name: str, source: bytes) -> bytes:
    """PodSpec.volumes (1): Volume{name (1), volumeSource (2)}."""
    return message(1, string(1, name), message(2, source))


def local_ref(name: str) -> bytes:
    """An embedded LocalObjectReference (field 1 of configMap/secret sources)."""
    return message(1, string(1, name))


def test_a_pod_spec_decodes_volumes_of_every_common_source() -> None:
    spec = pod_spec(
        volume("cfg", message(19, local_ref("app-config"),
                              message(2, string(1, "a"), string(2, "a.txt"), integer(3, 0o400)),
                              integer(3, 420))),
        volume("sec", message(6, string(1, "tls"), boolean(4, True))),
        volume("tmp", message(2, string(1, "Memory"), quantity(2, "64Mi"))),
        volume("data", message(10, string(1, "data-pvc"), boolean(2, False))),
        volume("host", message(1, string(1, "/var/log"), string(2, "Directory"))),
        volume("info", message(16, message(1, string(1, "labels"), message(
            2, string(1, "v1"), string(2, "metadata.labels"))))),
        volume("token", message(26,
                                message(1, message(4, string(1, "vault"), integer(2, 3600),
                                                   string(3, "token"))),
                                message(1, message(3, local_ref("extra"))))),
    )
    volumes = decode(envelope("v1", "Pod", object_meta("p"), spec))["spec"]["volumes"]
    assert volumes == [
        {"name": "cfg", "configMap": {
            "name": "app-config", "items": [{"key": "a", "path": "a.txt", "mode": 256}],
            "defaultMode": 420}},
        {"name": "sec", "secret": {"secretName": "tls", "optional": True}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}},
        {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
        ]}},
        {"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 3600,
                                     "path": "token"}},
            {"configMap": {"name": "extra"}},
        ]}},
    ]


def test_a_container_decodes_env_ports_resources_and_probes() -> None:
    ctr = container(
        string(1, "app"), string(2, "nginx:1.27"), string(3, "nginx"), string(4, "-g"),
        string(4, "daemon off;"), string(5, ""),
        message(6, string(1, "http"), integer(2, 0), integer(3, 8080), string(4, "TCP"),
                string(5, "")),
        message(7, string(1, "MODE"), string(2, "prod")),
        message(7, string(1, "PASSWORD"), string(2, ""), message(
            3, message(4, message(1, string(1, "db")), string(2, "password"),
                       boolean(3, False)))),
        message(7, string(1, "NODE"), message(3, message(1, string(1, "v1"),
                                                         string(2, "spec.nodeName")))),
        message(8, entry(1, "memory", quantity(2, "256Mi")), entry(2, "cpu", quantity(2, "100m"))),
        message(9, string(1, "cfg"), boolean(2, True), string(3, "/etc/app"), string(4, "")),
        message(10, message(1, message(2, string(1, "/healthz"), int_or_string(2, 8080),
                                       string(3, ""), string(4, "HTTP"))),
                integer(2, 5), integer(3, 1), integer(4, 10), integer(5, 1), integer(6, 3)),
        message(11, message(1, message(3, int_or_string(1, "http"), string(2, ""))),
                integer(2, 0)),
        message(22, message(1, message(4, integer(1, 9000), string(2, "ready")))),
        message(19, string(1, "APP_"), message(2, message(1, string(1, "env")))),
        string(14, "IfNotPresent"), string(20, "File"), string(13, "/dev/termination-log"),
        boolean(16, False), boolean(18, False),
    )
    obj = decode(envelope("apps/v1", "Deployment", object_meta("web"),
                          message(2, message(3, object_meta(), pod_spec(ctr)))))
    assert obj["spec"]["template"]["spec"]["containers"] == [{
        "name": "app", "image": "nginx:1.27", "command": ["nginx"],
        "args": ["-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "MODE", "value": "prod"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {
                "name": "db", "key": "password", "optional": False}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
        ],
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m"}},
        "volumeMounts": [{"name": "cfg", "readOnly": True, "mountPath": "/etc/app"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "initialDelaySeconds": 5, "timeoutSeconds": 1, "periodSeconds": 10,
            "successThreshold": 1, "failureThreshold": 3,
        },
        "readinessProbe": {"tcpSocket": {"port": "http"}},
        "startupProbe": {"grpc": {"port": 9000, "service": "ready"}},
        "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "env"}}],
        "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File",
        "terminationMessagePath": "/dev/termination-log",
    }]


def test_a_deployment_keeps_replicas_zero_and_its_strategy() -> None:
    body = envelope(
        "apps/v1", "Deployment", object_meta("web", "default"),
        message(
            2,
            integer(1, 0),
            message(2, entry(1, "app", string(2, "web"))),
            message(3, object_meta("", "", entry(11, "app", string(2, "web"))),
                    pod_spec(container(string(1, "app"), string(2, "nginx"), message(8)))),
            message(4, string(1, "RollingUpdate"),
                    message(2, int_or_string(1, 0), int_or_string(2, "25%"))),
            integer(5, 0), integer(6, 10), boolean(7, False), integer(9, 600),
        ),
        message(3, integer(1, 0), integer(2, 0), message(6, string(1, "Available"),
                                                         string(2, "True"), message(6),
                                                         timestamp(7, seconds(2026, 1, 1)))),
    )
    assert decode(body) == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": None},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
                "spec": {"containers": [{"name": "app", "image": "nginx", "resources": {}}]},
            },
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {"conditions": [{"type": "Available", "status": "True",
                                   "lastUpdateTime": None,
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }


def test_pod_security_affinity_tolerations_and_spread_decode() -> None:
    spec = pod_spec(
        integer(4, 0),  # terminationGracePeriodSeconds: *int64 set to 0
        entry(7, "disk", string(2, "ssd")),
        message(14, integer(2, 0), boolean(3, True),
                blob(4, varint(3) + varint(1000) + varint(5)),  # packed supplementalGroups
                integer(5, 2000), message(10, string(1, "RuntimeDefault"))),
        message(15, string(1, "registry")),
        message(18,
                message(1, message(1, message(1, message(
                    1, string(1, "zone"), string(2, "In"), string(3, "a"), string(3, "b"))))),
                message(3, message(2, integer(1, 50), message(
                    2, message(1, entry(1, "app", string(2, "web"))),
                    string(3, "kubernetes.io/hostname"))))),
        message(22, string(1, "gpu"), string(2, "Exists"), string(3, ""),
                string(4, "NoExecute"), integer(5, 300)),
        message(23, string(1, "10.0.0.1"), string(2, "db.local")),
        message(33, integer(1, 1), string(2, "zone"), string(3, "ScheduleAnyway"),
                message(4, entry(1, "app", string(2, "web")))),
        message(36, string(1, "linux")),
        container(string(1, "app"), message(8), message(15, message(1, string(2, "ALL")),
                                                        boolean(7, False), integer(4, 1000)),
                  message(12, message(2, message(4, integer(1, 5))))),
    )
    got = decode(envelope("v1", "Pod", object_meta("p"), spec, message(3)))["spec"]
    assert got["terminationGracePeriodSeconds"] == 0
    assert got["nodeSelector"] == {"disk": "ssd"}
    assert got["securityContext"] == {
        "runAsUser": 0, "runAsNonRoot": True, "supplementalGroups": [3, 1000, 5],
        "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert got["imagePullSecrets"] == [{"name": "registry"}]
    assert got["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 50, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"app": "web"}},
                "topologyKey": "kubernetes.io/hostname"}}]},
    }
    assert got["tolerations"] == [
        {"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]
    assert got["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["db.local"]}]
    assert got["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}}}]
    assert got["os"] == {"name": "linux"}
    assert got["containers"] == [{
        "name": "app", "resources": {},
        "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsUser": 1000,
                            "allowPrivilegeEscalation": False},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    }]


def test_repeated_numbers_decode_packed_or_unpacked() -> None:
    rule = message(25, string(1, "Restart"), message(2, string(1, "In"), integer(2, 42),
                                                      integer(2, -1)))
    packed = message(25, string(1, "Restart"),
                     message(2, string(1, "In"), blob(2, varint(42) + varint(-1))))
    for ctr_rule in (rule, packed):
        spec = pod_spec(container(string(1, "app"), ctr_rule))
        got = decode(envelope("v1", "Pod", object_meta("p"), spec))
        assert got["spec"]["containers"][0]["restartPolicyRules"] == [
            {"action": "Restart", "exitCodes": {"operator": "In", "values": [42, -1]}}]


def test_a_pod_template_spec_and_its_status_decode() -> None:
    status = message(3, string(1, "Running"), string(6, "10.1.0.5"),
                     message(12, string(1, "10.1.0.5")),
                     timestamp(7, seconds(2026, 2, 3)),
                     message(8, string(1, "app"), message(2, message(2, timestamp(
                         1, seconds(2026, 2, 3, 0, 0, 1)))), boolean(4, True), integer(5, 0)))
    got = decode(envelope("v1", "Pod", object_meta("p"), pod_spec(), status))
    assert got["status"] == {
        "phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
        "startTime": "2026-02-03T00:00:00Z",
        "containerStatuses": [{"name": "app", "state": {
            "running": {"startedAt": "2026-02-03T00:00:01Z"}}, "ready": True,
            "restartCount": 0}],
    }
    template = decode(envelope("v1", "PodTemplate", object_meta("t"),
                               message(2, object_meta(), pod_spec(string(3, "Never")))))
    assert template["template"] == {"metadata": {"creationTimestamp": None},
                                    "spec": {"restartPolicy": "Never"}}


# --- other groups -----------------------------------------------------------------------------


def test_a_job_and_a_cron_job_decode_their_basics() -> None:
    job_spec = message(2, integer(1, 1), integer(2, 1), integer(7, 0),
                       message(6, object_meta(), pod_spec(string(3, "Never"))),
                       integer(8, 100), boolean(10, False))
    job = decode(envelope("batch/v1", "Job", object_meta("once"), job_spec, message(3)))
    assert job["spec"] == {
        "parallelism": 1, "completions": 1, "backoffLimit": 0,
        "template": {"metadata": {"creationTimestamp": None},
                     "spec": {"restartPolicy": "Never"}},
        "ttlSecondsAfterFinished": 100, "suspend": False,
    }
    assert job["status"] == {}
    cron = decode(envelope(
        "batch/v1", "CronJob", object_meta("nightly"),
        message(2, string(1, "0 3 * * *"), string(3, "Forbid"), boolean(4, False),
                message(5, object_meta(), job_spec), integer(6, 3), integer(7, 1),
                string(8, "UTC")),
        message(3, timestamp(4, seconds(2026, 1, 1, 3))),
    ))
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["timeZone"] == "UTC"
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert cron["status"] == {"lastScheduleTime": "2026-01-01T03:00:00Z"}


def test_a_lease_from_leader_election_decodes() -> None:
    acquired = seconds(2026, 5, 6, 7, 8, 9)
    body = envelope(
        "coordination.k8s.io/v1", "Lease", object_meta("fluxd-leader", "flux-system"),
        message(2, string(1, "pod-1_abc"), integer(2, 15), timestamp(3, acquired, 0),
                timestamp(4, acquired + 2, 999_999_999), integer(5, 3)),
    )
    assert decode(body)["spec"] == {
        "holderIdentity": "pod-1_abc", "leaseDurationSeconds": 15,
        "acquireTime": "2026-05-06T07:08:09.000000Z",
        "renewTime": "2026-05-06T07:08:11.999999Z", "leaseTransitions": 3,
    }


def test_an_events_v1_event_decodes() -> None:
    body = envelope(
        "events.k8s.io/v1", "Event", object_meta("x.1", "default"),
        timestamp(2, seconds(2026, 1, 2, 3, 4, 5), 6_000),
        string(4, "fluxd/kustomize-controller"), string(5, "fluxd-0"), string(6, "Reconcile"),
        string(7, "Succeeded"), message(8, string(1, "Kustomization"), string(3, "apps")),
        string(10, "applied"), string(11, "Normal"),
        message(12), message(13), message(14), integer(15, 0),
    )
    assert decode(body) == {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "x.1", "namespace": "default", "creationTimestamp": None},
        "eventTime": "2026-01-02T03:04:05.000006Z",
        "reportingController": "fluxd/kustomize-controller", "reportingInstance": "fluxd-0",
        "action": "Reconcile", "reason": "Succeeded",
        "regarding": {"kind": "Kustomization", "name": "apps"},
        "note": "applied", "type": "Normal", "deprecatedSource": {},
        "deprecatedFirstTimestamp": None, "deprecatedLastTimestamp": None,
    }


def test_access_reviews_decode_selectors_and_extra() -> None:
    attrs = message(1, string(1, "default"), string(2, "list"), string(5, "pods"),
                    message(8, string(1, ""), message(2, string(1, "spec.nodeName"),
                                                     string(2, "In"), string(3, "n1"))),
                    message(9, string(1, "app=web")))
    sar = decode(envelope(
        "authorization.k8s.io/v1", "SubjectAccessReview", object_meta(),
        message(2, attrs, string(3, "alice"), string(4, "devs"), string(4, "ops"),
                entry(5, "scopes", message(2, string(1, "a"), string(1, "b"))),
                entry(5, "none", message(2)), string(6, "u-1")),
        message(3, boolean(1, False)),
    ))
    assert sar["spec"] == {
        "resourceAttributes": {
            "namespace": "default", "verb": "list", "resource": "pods",
            "fieldSelector": {"requirements": [
                {"key": "spec.nodeName", "operator": "In", "values": ["n1"]}]},
            "labelSelector": {"rawSelector": "app=web"},
        },
        "user": "alice", "groups": ["devs", "ops"],
        "extra": {"scopes": ["a", "b"], "none": []}, "uid": "u-1",
    }
    local = decode(envelope("authorization.k8s.io/v1", "LocalSubjectAccessReview",
                            object_meta("", "team"),
                            message(2, message(2, string(1, "/healthz"), string(2, "get")))))
    assert local["kind"] == "LocalSubjectAccessReview"
    assert local["spec"] == {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}


def test_a_self_subject_rules_review_and_self_subject_review_decode() -> None:
    rules = decode(envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview",
                            object_meta(), message(2, string(1, "default")),
                            message(3, boolean(3, False), string(4, ""))))
    assert rules["spec"] == {"namespace": "default"}
    assert rules["status"] == {"incomplete": False}
    review = decode(envelope("authentication.k8s.io/v1", "SelfSubjectReview", object_meta(),
                             message(2, message(1, string(1, "bob"), string(3, "system:a")))))
    assert review["status"] == {"userInfo": {"username": "bob", "groups": ["system:a"]}}


def test_a_token_request_uses_the_json_name_uid() -> None:
    body = envelope("authentication.k8s.io/v1", "TokenRequest", object_meta(),
                    message(2, string(1, "api"), message(3, string(1, "Pod"),
                                                         string(2, "v1"), string(3, "p"),
                                                         string(4, "u-9")),
                            integer(4, 3600)),
                    message(3, string(1, ""), message(2)))
    assert decode(body)["spec"] == {
        "audiences": ["api"], "expirationSeconds": 3600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u-9"},
    }


def test_a_scale_keeps_zero_replicas() -> None:
    body = envelope("autoscaling/v1", "Scale", object_meta("web", "default"),
                    message(2, integer(1, 0)), message(3, integer(1, 2), string(2, "app=web")))
    got = decode(body)
    assert got["spec"] == {"replicas": 0}
    assert got["status"] == {"replicas": 2, "selector": "app=web"}


@pytest.mark.parametrize("api_version", ["v1", "meta.k8s.io/v1", "apps/v1"])
def test_delete_options_decode_policy_and_preconditions(api_version: str) -> None:
    body = envelope(
        api_version, "DeleteOptions",
        integer(1, 0), message(2, string(1, "u-1"), string(2, "")),
        string(4, "Foreground"), string(5, "All"),
    )
    assert decode(body) == {
        "apiVersion": api_version, "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": ""},
        "propagationPolicy": "Foreground", "dryRun": ["All"],
    }


def test_object_meta_decodes_owners_managed_fields_and_maps() -> None:
    managed = message(
        17, string(1, "kubectl-client-side-apply"), string(2, "Update"), string(3, "v1"),
        timestamp(4, seconds(2026, 1, 1, 12)), string(6, "FieldsV1"),
        message(7, blob(1, b'{"f:data":{".":{},"f:key":{}}}')), string(8, ""),
    )
    meta = object_meta(
        "cfg", "default",
        timestamp(9, seconds(2026, 1, 2)), integer(10, 30),
        entry(11, "app", string(2, "web")),
        entry(12, "note", string(2, "")),
        message(13, string(1, "Deployment"), string(3, "web"), string(4, "u-1"),
                string(5, "apps/v1"), boolean(6, True), boolean(7, False)),
        string(14, "example.com/cleanup"),
        managed,
    )
    got = decode(envelope("v1", "ConfigMap", meta))["metadata"]
    assert got == {
        "name": "cfg", "namespace": "default", "creationTimestamp": None,
        "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 30,
        "labels": {"app": "web"}, "annotations": {"note": ""},
        "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": "u-1",
                             "apiVersion": "apps/v1", "controller": True,
                             "blockOwnerDeletion": False}],
        "finalizers": ["example.com/cleanup"],
        "managedFields": [{
            "manager": "kubectl-client-side-apply", "operation": "Update",
            "apiVersion": "v1", "time": "2026-01-01T12:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:key": {}}},
        }],
    }


def test_every_supported_kind_decodes_from_an_empty_object() -> None:
    required = {
        ("v1", "Namespace"), ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "ServiceAccount"),
        ("v1", "Event"), ("v1", "Service"), ("v1", "Pod"), ("apps/v1", "Deployment"),
        ("batch/v1", "Job"), ("batch/v1", "CronJob"), ("coordination.k8s.io/v1", "Lease"),
        ("events.k8s.io/v1", "Event"), ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
        ("authorization.k8s.io/v1", "SubjectAccessReview"),
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview"),
        ("authentication.k8s.io/v1", "SelfSubjectReview"), ("v1", "DeleteOptions"),
        ("meta.k8s.io/v1", "DeleteOptions"), ("autoscaling/v1", "Scale"),
    }
    assert required <= SUPPORTED_KINDS
    for api_version, kind in sorted(SUPPORTED_KINDS):
        assert decode(envelope(api_version, kind)) == {"apiVersion": api_version, "kind": kind}


# --- wire-format behaviour ------------------------------------------------------------------


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    noise = (integer(99, 7) + tag(98, 1) + b"\x00" * 8 + tag(97, 5) + b"\x00" * 4
             + string(96, "future") + message(95, string(1, "nested")))
    body = envelope("v1", "Namespace",
                    message(1, string(1, "demo"), noise), noise,
                    message(2, string(1, "kubernetes"), noise))
    assert decode(body) == {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "demo"}, "spec": {"finalizers": ["kubernetes"]}}


def test_zero_values_of_non_pointer_fields_are_omitted_like_json_omitempty() -> None:
    body = envelope("v1", "Service", object_meta("web"),
                    message(2, string(3, ""), string(4, ""), integer(12, 0), boolean(13, False),
                            boolean(20, False)))
    assert decode(body)["spec"] == {"allocateLoadBalancerNodePorts": False}


def test_negative_integers_are_sign_extended() -> None:
    body = envelope("v1", "Pod", object_meta("p"),
                    pod_spec(integer(25, -5), integer(5, -(2**40))))
    spec = decode(body)["spec"]
    assert spec["priority"] == -5
    assert spec["activeDeadlineSeconds"] == -(2**40)


def test_invalid_utf8_is_replaced_as_go_json_does() -> None:
    body = envelope("v1", "Namespace", message(1, blob(1, b"bad\xffname")))
    assert decode(body)["metadata"]["name"] == "bad\ufffdname"


def test_a_map_entry_without_a_value_gets_the_empty_value() -> None:
    body = envelope("v1", "ConfigMap", object_meta("c"), message(2, string(1, "k")))
    assert decode(body)["data"] == {"k": ""}


def test_go_duration_strings_match_time_duration() -> None:
    render = go_duration
    assert [render(n) for n in (0, 1, 1_500, 2_000_000, 90 * 10**9, 3600 * 10**9,
                                3_723_500_000_000, -1_500_000)] == [
        "0s", "1ns", "1.5µs", "2ms", "1m30s", "1h0m0s", "1h2m3.5s", "-1.5ms"]


def test_a_one_megabyte_secret_decodes_quickly() -> None:
    payload = bytes(range(256)) * 4096
    body = envelope("v1", "Secret", object_meta("big", "default"),
                    entry(2, "blob", blob(2, payload)), string(3, "Opaque"))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        obj = decode(body)
        best = min(best, time.perf_counter() - start)
    assert base64.b64decode(obj["data"]["blob"]) == payload
    assert best < 0.05


# --- errors -----------------------------------------------------------------------------------


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ProtobufError, match=r'"Widget".*"example\.com/v1"'):
        decode(envelope("example.com/v1", "Widget"))


def test_a_body_without_the_magic_prefix_is_refused() -> None:
    with pytest.raises(ProtobufError, match="k8s"):
        decode(b'{"kind": "Namespace"}')


def test_a_body_without_a_kind_is_refused() -> None:
    with pytest.raises(ProtobufError, match="kind"):
        decode(protobuf.MAGIC + message(1, string(1, "v1")))


def test_an_encoded_content_encoding_is_refused() -> None:
    body = protobuf.MAGIC + message(1, string(1, "v1"), string(2, "Namespace")) + string(3, "gzip")
    with pytest.raises(ProtobufError, match="gzip"):
        decode(body)


def test_every_truncation_of_a_body_fails_cleanly_or_decodes() -> None:
    body = GOLDEN_SSAR
    for cut in range(len(body)):
        with contextlib.suppress(ProtobufError):
            decode(body[:cut])


@pytest.mark.parametrize("cut", [5, 12, 60, len(GOLDEN_LEASE) - 8])
def test_a_body_cut_inside_a_field_is_reported_as_truncated(cut: int) -> None:
    with pytest.raises(ProtobufError, match="truncated"):
        decode(GOLDEN_LEASE[:cut])


def test_a_known_field_with_the_wrong_wire_type_is_corrupt() -> None:
    body = envelope("apps/v1", "Deployment", message(2, string(1, "three")))
    with pytest.raises(ProtobufError, match="replicas"):
        decode(body)


def test_an_overlong_varint_is_corrupt() -> None:
    body = envelope("v1", "Namespace", tag(99, 0) + b"\xff" * 11 + b"\x01")
    with pytest.raises(ProtobufError, match="varint"):
        decode(body)


def test_fields_v1_that_is_not_json_is_corrupt() -> None:
    body = envelope("v1", "Namespace", object_meta("n", "", message(
        17, message(7, blob(1, b"{not json")))))
    with pytest.raises(ProtobufError, match="fieldsV1"):
        decode(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_magic_only_raise_protobuf_error(junk: bytes) -> None:
    with contextlib.suppress(ProtobufError):
        decode(protobuf.MAGIC + junk)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=4, max_value=len(GOLDEN_SSAR) - 1), st.integers(0, 255))
def test_a_corrupted_byte_only_raises_protobuf_error(position: int, value: int) -> None:
    body = bytearray(GOLDEN_SSAR)
    body[position] = value
    with contextlib.suppress(ProtobufError):
        decode(bytes(body))


# --- the descriptor tables agree with the Kubernetes OpenAPI models --------------------------


def test_every_json_name_and_type_matches_the_kubernetes_openapi_models() -> None:
    models = pytest.importorskip("kubernetes_asyncio.client.models")
    alias = {
        "CoreEvent": "CoreV1Event", "EventsEvent": "EventsV1Event",
        "EventSeries": "CoreV1EventSeries", "ResourceClaim": "CoreV1ResourceClaim",
        "TokenRequest": "AuthenticationV1TokenRequest",
    }
    same_shape = {("EventsEvent", "series")}  # events/v1 has its own, identical EventSeries
    scalar = {
        protobuf._STR: "str", protobuf._BYTES: "str", protobuf._I32: "int",
        protobuf._I64: "int", protobuf._BOOL: "bool", protobuf._F64: "float",
        protobuf._TIME: "datetime", protobuf._MICRO: "datetime", protobuf._QTY: "str",
        protobuf._IOS: "object", protobuf._FIELDS: "object", protobuf._RAW: "object",
        protobuf._EXTRA: "list[str]",
    }

    def model(name: str) -> str:
        return alias.get(name, "V1" + name)

    def flat(msg: Any) -> list[tuple[str, int, Any, int]]:
        out: list[tuple[str, int, Any, int]] = []
        for json_name, kind, sub, flags in msg.fields.values():
            out.extend(flat(sub) if kind == protobuf._INLINE else
                       [(json_name, kind, sub, flags)])
        return out

    checked = 0
    for name, msg in protobuf._MESSAGES.items():
        cls = getattr(models, model(name), None)
        if cls is None:  # inline-only helpers such as VolumeSource have no model
            continue
        by_json = {v: k for k, v in cls.attribute_map.items()}
        for json_name, kind, sub, flags in flat(msg):
            assert json_name in by_json, f"{name}.{json_name} is not a Kubernetes field"
            if (name, json_name) in same_shape:
                continue
            base = scalar.get(kind) or model(sub.name)
            want = (f"list[{base}]" if flags & protobuf._REPEATED else
                    f"dict(str, {base})" if flags & protobuf._MAP else base)
            assert cls.openapi_types[by_json[json_name]] == want, f"{name}.{json_name}"
            checked += 1
    assert checked > 400


def test_doubles_decode_from_fixed64() -> None:
    # No supported kind carries a double today; exercise the path through a private table.
    msg = protobuf._compile({"T": {1: "ratio f64", 2: "samples [f64]"}})["T"]
    raw = (tag(1, 1) + struct.pack("<d", 0.5)
           + blob(2, struct.pack("<d", 1.0) + struct.pack("<d", 2.5)))
    assert protobuf._decode_message(raw, 0, len(raw), msg, 0) == {
        "ratio": 0.5, "samples": [1.0, 2.5]}
