"""Decode Kubernetes protobuf request bodies into the JSON dicts a JSON client sends.

Contract: ``decode(body)`` takes a whole ``application/vnd.kubernetes.protobuf`` request
body - the ``k8s\\x00`` magic followed by a ``runtime.Unknown`` envelope - and returns
the object it carries as a JSON-shaped dict with ``apiVersion`` and ``kind`` set, exactly
as ``encoding/json`` would have rendered the same Go struct. Bodies it cannot read raise
``ProtobufError`` (a ``ValueError``) with a short message: an unknown (apiVersion, kind)
names the kind (the server answers 415), a truncated or corrupt body says what broke.

Go's generated marshallers write every non-pointer field, even when empty, and only
pointer fields distinguish "unset" from "zero". To give back what a JSON client sends,
zero-valued scalars are dropped (``omitempty``) unless the descriptor marks the field
with ``?`` (a Go pointer, or a field JSON always writes, like ``containerPort``); nested
messages that are present are always kept (``"spec": {}``), and an empty ``Time`` is
``None`` because that is how Go's JSON renders a zero time.

The descriptors below are hand-written from Kubernetes' ``generated.proto`` files:
message name -> {field number: "jsonName spec"}, where spec (default ``s``) is
``s`` string, ``b`` bytes (base64 in JSON), ``i32``, ``i64``, ``bool``, ``f64``, a
message or well-known type name, ``[x]`` repeated, ``{x}`` map<string, x>, ``^Name`` a
message Go embeds inline (its fields merge into the parent), and a trailing ``?`` keeps
zero values. Unknown field numbers are skipped, as Go does.
"""

from __future__ import annotations

import base64
import json
import struct
from datetime import datetime, timedelta
from typing import Any, Final

from fluxd.clock import go_duration

__all__ = ["MEDIA_TYPE", "SUPPORTED_KINDS", "ProtobufError", "decode"]

MEDIA_TYPE: Final = "application/vnd.kubernetes.protobuf"
MAGIC: Final = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this server can decode."""


# --- descriptor tables --------------------------------------------------------------------

_M: dict[str, dict[int, str]] = {
    # meta/v1
    "ObjectMeta": {
        1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid",
        6: "resourceVersion", 7: "generation i64", 8: "creationTimestamp Time",
        9: "deletionTimestamp Time", 10: "deletionGracePeriodSeconds i64?",
        11: "labels {s}", 12: "annotations {s}", 13: "ownerReferences [OwnerReference]",
        14: "finalizers [s]", 17: "managedFields [ManagedFieldsEntry]",
    },
    "OwnerReference": {
        1: "kind", 3: "name", 4: "uid", 5: "apiVersion", 6: "controller bool?",
        7: "blockOwnerDeletion bool?",
    },
    "ManagedFieldsEntry": {
        1: "manager", 2: "operation", 3: "apiVersion", 4: "time Time", 6: "fieldsType",
        7: "fieldsV1 FieldsV1", 8: "subresource",
    },
    "LabelSelector": {1: "matchLabels {s}", 2: "matchExpressions [LabelSelectorRequirement]"},
    "LabelSelectorRequirement": {1: "key", 2: "operator", 3: "values [s]"},
    "FieldSelectorRequirement": {1: "key", 2: "operator", 3: "values [s]"},
    "Condition": {
        1: "type", 2: "status", 3: "observedGeneration i64", 4: "lastTransitionTime Time",
        5: "reason", 6: "message",
    },
    "DeleteOptions": {
        1: "gracePeriodSeconds i64?", 2: "preconditions Preconditions",
        3: "orphanDependents bool?", 4: "propagationPolicy s?", 5: "dryRun [s]",
        6: "ignoreStoreReadErrorWithClusterBreakingPotential bool?",
    },
    "Preconditions": {1: "uid s?", 2: "resourceVersion s?"},
    # core/v1: simple kinds
    "Namespace": {1: "metadata ObjectMeta", 2: "spec NamespaceSpec", 3: "status NamespaceStatus"},
    "NamespaceSpec": {1: "finalizers [s]"},
    "NamespaceStatus": {1: "phase", 2: "conditions [NamespaceCondition]"},
    "NamespaceCondition": {
        1: "type", 2: "status", 4: "lastTransitionTime Time", 5: "reason", 6: "message",
    },
    "Secret": {
        1: "metadata ObjectMeta", 2: "data {b}", 3: "type", 4: "stringData {s}",
        5: "immutable bool?",
    },
    "ConfigMap": {
        1: "metadata ObjectMeta", 2: "data {s}", 3: "binaryData {b}", 4: "immutable bool?",
    },
    "ServiceAccount": {
        1: "metadata ObjectMeta", 2: "secrets [ObjectReference]",
        3: "imagePullSecrets [LocalObjectReference]", 4: "automountServiceAccountToken bool?",
    },
    "ObjectReference": {
        1: "kind", 2: "namespace", 3: "name", 4: "uid", 5: "apiVersion", 6: "resourceVersion",
        7: "fieldPath",
    },
    "LocalObjectReference": {1: "name"},
    "CoreEvent": {
        1: "metadata ObjectMeta", 2: "involvedObject ObjectReference", 3: "reason",
        4: "message", 5: "source EventSource", 6: "firstTimestamp Time",
        7: "lastTimestamp Time", 8: "count i32", 9: "type", 10: "eventTime MicroTime",
        11: "series EventSeries", 12: "action", 13: "related ObjectReference",
        14: "reportingComponent", 15: "reportingInstance",
    },
    "EventSource": {1: "component", 2: "host"},
    "EventSeries": {1: "count i32?", 2: "lastObservedTime MicroTime"},
    # core/v1: Service
    "Service": {1: "metadata ObjectMeta", 2: "spec ServiceSpec", 3: "status ServiceStatus"},
    "ServiceSpec": {
        1: "ports [ServicePort]", 2: "selector {s}", 3: "clusterIP", 4: "type",
        5: "externalIPs [s]", 7: "sessionAffinity", 8: "loadBalancerIP",
        9: "loadBalancerSourceRanges [s]", 10: "externalName", 11: "externalTrafficPolicy",
        12: "healthCheckNodePort i32", 13: "publishNotReadyAddresses bool",
        14: "sessionAffinityConfig SessionAffinityConfig", 17: "ipFamilyPolicy s?",
        18: "clusterIPs [s]", 19: "ipFamilies [s]", 20: "allocateLoadBalancerNodePorts bool?",
        21: "loadBalancerClass s?", 22: "internalTrafficPolicy s?",
        23: "trafficDistribution s?",
    },
    "ServicePort": {
        1: "name", 2: "protocol", 3: "port i32?", 4: "targetPort IntOrString",
        5: "nodePort i32", 6: "appProtocol s?",
    },
    "SessionAffinityConfig": {1: "clientIP ClientIPConfig"},
    "ClientIPConfig": {1: "timeoutSeconds i32?"},
    "ServiceStatus": {1: "loadBalancer LoadBalancerStatus", 2: "conditions [Condition]"},
    "LoadBalancerStatus": {1: "ingress [LoadBalancerIngress]"},
    "LoadBalancerIngress": {1: "ip", 2: "hostname", 3: "ipMode s?", 4: "ports [PortStatus]"},
    "PortStatus": {1: "port i32?", 2: "protocol", 3: "error s?"},
    # core/v1: Pod
    "Pod": {1: "metadata ObjectMeta", 2: "spec PodSpec", 3: "status PodStatus"},
    "PodTemplate": {1: "metadata ObjectMeta", 2: "template PodTemplateSpec"},
    "PodTemplateSpec": {1: "metadata ObjectMeta", 2: "spec PodSpec"},
    "PodSpec": {
        1: "volumes [Volume]", 2: "containers [Container]", 3: "restartPolicy",
        4: "terminationGracePeriodSeconds i64?", 5: "activeDeadlineSeconds i64?",
        6: "dnsPolicy", 7: "nodeSelector {s}", 8: "serviceAccountName", 9: "serviceAccount",
        10: "nodeName", 11: "hostNetwork bool", 12: "hostPID bool", 13: "hostIPC bool",
        14: "securityContext PodSecurityContext",
        15: "imagePullSecrets [LocalObjectReference]", 16: "hostname", 17: "subdomain",
        18: "affinity Affinity", 19: "schedulerName", 20: "initContainers [Container]",
        21: "automountServiceAccountToken bool?", 22: "tolerations [Toleration]",
        23: "hostAliases [HostAlias]", 24: "priorityClassName", 25: "priority i32?",
        26: "dnsConfig PodDNSConfig", 27: "shareProcessNamespace bool?",
        28: "readinessGates [PodReadinessGate]", 29: "runtimeClassName s?",
        30: "enableServiceLinks bool?", 31: "preemptionPolicy s?", 32: "overhead {Quantity}",
        33: "topologySpreadConstraints [TopologySpreadConstraint]",
        34: "ephemeralContainers [EphemeralContainer]", 35: "setHostnameAsFQDN bool?",
        36: "os PodOS", 37: "hostUsers bool?", 38: "schedulingGates [PodSchedulingGate]",
        39: "resourceClaims [PodResourceClaim]", 40: "resources ResourceRequirements",
        41: "hostnameOverride s?", 43: "schedulingGroup PodSchedulingGroup",
    },
    "Container": {
        1: "name", 2: "image", 3: "command [s]", 4: "args [s]", 5: "workingDir",
        6: "ports [ContainerPort]", 7: "env [EnvVar]", 8: "resources ResourceRequirements",
        9: "volumeMounts [VolumeMount]", 10: "livenessProbe Probe", 11: "readinessProbe Probe",
        12: "lifecycle Lifecycle", 13: "terminationMessagePath", 14: "imagePullPolicy",
        15: "securityContext SecurityContext", 16: "stdin bool", 17: "stdinOnce bool",
        18: "tty bool", 19: "envFrom [EnvFromSource]", 20: "terminationMessagePolicy",
        21: "volumeDevices [VolumeDevice]", 22: "startupProbe Probe",
        23: "resizePolicy [ContainerResizePolicy]", 24: "restartPolicy s?",
        25: "restartPolicyRules [ContainerRestartRule]",
    },
    # EphemeralContainerCommon shares Container's field numbers, so it reuses its table.
    "EphemeralContainer": {1: "- ^Container", 2: "targetContainerName"},
    "ContainerPort": {
        1: "name", 2: "hostPort i32", 3: "containerPort i32?", 4: "protocol", 5: "hostIP",
    },
    "ContainerResizePolicy": {1: "resourceName", 2: "restartPolicy"},
    "ContainerRestartRule": {1: "action", 2: "exitCodes ContainerRestartRuleOnExitCodes"},
    "ContainerRestartRuleOnExitCodes": {1: "operator", 2: "values [i32]"},
    "EnvVar": {1: "name", 2: "value", 3: "valueFrom EnvVarSource"},
    "EnvVarSource": {
        1: "fieldRef ObjectFieldSelector", 2: "resourceFieldRef ResourceFieldSelector",
        3: "configMapKeyRef ConfigMapKeySelector", 4: "secretKeyRef SecretKeySelector",
        5: "fileKeyRef FileKeySelector",
    },
    "ObjectFieldSelector": {1: "apiVersion", 2: "fieldPath"},
    "ResourceFieldSelector": {1: "containerName", 2: "resource", 3: "divisor Quantity"},
    "ConfigMapKeySelector": {1: "- ^LocalObjectReference", 2: "key", 3: "optional bool?"},
    "SecretKeySelector": {1: "- ^LocalObjectReference", 2: "key", 3: "optional bool?"},
    "FileKeySelector": {1: "volumeName", 2: "path", 3: "key", 4: "optional bool?"},
    "EnvFromSource": {
        1: "prefix", 2: "configMapRef ConfigMapEnvSource", 3: "secretRef SecretEnvSource",
    },
    "ConfigMapEnvSource": {1: "- ^LocalObjectReference", 2: "optional bool?"},
    "SecretEnvSource": {1: "- ^LocalObjectReference", 2: "optional bool?"},
    "ResourceRequirements": {
        1: "limits {Quantity}", 2: "requests {Quantity}", 3: "claims [ResourceClaim]",
    },
    "ResourceClaim": {1: "name", 2: "request"},
    "VolumeMount": {
        1: "name", 2: "readOnly bool", 3: "mountPath", 4: "subPath",
        5: "mountPropagation s?", 6: "subPathExpr", 7: "recursiveReadOnly s?",
    },
    "VolumeDevice": {1: "name", 2: "devicePath"},
    "Probe": {
        1: "- ^ProbeHandler", 2: "initialDelaySeconds i32", 3: "timeoutSeconds i32",
        4: "periodSeconds i32", 5: "successThreshold i32", 6: "failureThreshold i32",
        7: "terminationGracePeriodSeconds i64?",
    },
    "ProbeHandler": {
        1: "exec ExecAction", 2: "httpGet HTTPGetAction", 3: "tcpSocket TCPSocketAction",
        4: "grpc GRPCAction",
    },
    "ExecAction": {1: "command [s]"},
    "HTTPGetAction": {
        1: "path", 2: "port IntOrString", 3: "host", 4: "scheme",
        5: "httpHeaders [HTTPHeader]",
    },
    "HTTPHeader": {1: "name", 2: "value s?"},
    "TCPSocketAction": {1: "port IntOrString", 2: "host"},
    "GRPCAction": {1: "port i32?", 2: "service s?"},
    "Lifecycle": {
        1: "postStart LifecycleHandler", 2: "preStop LifecycleHandler", 3: "stopSignal s?",
    },
    "LifecycleHandler": {
        1: "exec ExecAction", 2: "httpGet HTTPGetAction", 3: "tcpSocket TCPSocketAction",
        4: "sleep SleepAction",
    },
    "SleepAction": {1: "seconds i64?"},
    "SecurityContext": {
        1: "capabilities Capabilities", 2: "privileged bool?", 3: "seLinuxOptions SELinuxOptions",
        4: "runAsUser i64?", 5: "runAsNonRoot bool?", 6: "readOnlyRootFilesystem bool?",
        7: "allowPrivilegeEscalation bool?", 8: "runAsGroup i64?", 9: "procMount s?",
        10: "windowsOptions WindowsSecurityContextOptions", 11: "seccompProfile SeccompProfile",
        12: "appArmorProfile AppArmorProfile",
    },
    "PodSecurityContext": {
        1: "seLinuxOptions SELinuxOptions", 2: "runAsUser i64?", 3: "runAsNonRoot bool?",
        4: "supplementalGroups [i64]", 5: "fsGroup i64?", 6: "runAsGroup i64?",
        7: "sysctls [Sysctl]", 8: "windowsOptions WindowsSecurityContextOptions",
        9: "fsGroupChangePolicy s?", 10: "seccompProfile SeccompProfile",
        11: "appArmorProfile AppArmorProfile", 12: "supplementalGroupsPolicy s?",
        13: "seLinuxChangePolicy s?",
    },
    "Capabilities": {1: "add [s]", 2: "drop [s]"},
    "SELinuxOptions": {1: "user", 2: "role", 3: "type", 4: "level"},
    "WindowsSecurityContextOptions": {
        1: "gmsaCredentialSpecName s?", 2: "gmsaCredentialSpec s?", 3: "runAsUserName s?",
        4: "hostProcess bool?",
    },
    "SeccompProfile": {1: "type", 2: "localhostProfile s?"},
    "AppArmorProfile": {1: "type", 2: "localhostProfile s?"},
    "Sysctl": {1: "name", 2: "value"},
    "Affinity": {
        1: "nodeAffinity NodeAffinity", 2: "podAffinity PodAffinity",
        3: "podAntiAffinity PodAntiAffinity",
    },
    "NodeAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution NodeSelector",
        2: "preferredDuringSchedulingIgnoredDuringExecution [PreferredSchedulingTerm]",
    },
    "NodeSelector": {1: "nodeSelectorTerms [NodeSelectorTerm]"},
    "NodeSelectorTerm": {
        1: "matchExpressions [NodeSelectorRequirement]",
        2: "matchFields [NodeSelectorRequirement]",
    },
    "NodeSelectorRequirement": {1: "key", 2: "operator", 3: "values [s]"},
    "PreferredSchedulingTerm": {1: "weight i32?", 2: "preference NodeSelectorTerm"},
    "PodAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm]",
        2: "preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]",
    },
    "PodAntiAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm]",
        2: "preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]",
    },
    "PodAffinityTerm": {
        1: "labelSelector LabelSelector", 2: "namespaces [s]", 3: "topologyKey",
        4: "namespaceSelector LabelSelector", 5: "matchLabelKeys [s]",
        6: "mismatchLabelKeys [s]",
    },
    "WeightedPodAffinityTerm": {1: "weight i32?", 2: "podAffinityTerm PodAffinityTerm"},
    "Toleration": {
        1: "key", 2: "operator", 3: "value", 4: "effect", 5: "tolerationSeconds i64?",
    },
    "HostAlias": {1: "ip", 2: "hostnames [s]"},
    "TopologySpreadConstraint": {
        1: "maxSkew i32?", 2: "topologyKey", 3: "whenUnsatisfiable",
        4: "labelSelector LabelSelector", 5: "minDomains i32?", 6: "nodeAffinityPolicy s?",
        7: "nodeTaintsPolicy s?", 8: "matchLabelKeys [s]",
    },
    "PodDNSConfig": {
        1: "nameservers [s]", 2: "searches [s]", 3: "options [PodDNSConfigOption]",
    },
    "PodDNSConfigOption": {1: "name", 2: "value s?"},
    "PodReadinessGate": {1: "conditionType"},
    "PodOS": {1: "name"},
    "PodSchedulingGate": {1: "name"},
    "PodSchedulingGroup": {1: "podGroupName s?"},
    "PodResourceClaim": {
        1: "name", 3: "resourceClaimName s?", 4: "resourceClaimTemplateName s?",
    },
    # core/v1: volumes (Go embeds VolumeSource in Volume, so JSON flattens it)
    "Volume": {1: "name", 2: "- ^VolumeSource"},
    "VolumeSource": {
        1: "hostPath HostPathVolumeSource", 2: "emptyDir EmptyDirVolumeSource",
        6: "secret SecretVolumeSource", 7: "nfs NFSVolumeSource",
        10: "persistentVolumeClaim PersistentVolumeClaimVolumeSource",
        16: "downwardAPI DownwardAPIVolumeSource", 19: "configMap ConfigMapVolumeSource",
        26: "projected ProjectedVolumeSource", 28: "csi CSIVolumeSource",
        29: "ephemeral EphemeralVolumeSource", 30: "image ImageVolumeSource",
    },
    "HostPathVolumeSource": {1: "path", 2: "type s?"},
    "EmptyDirVolumeSource": {1: "medium", 2: "sizeLimit Quantity"},
    "SecretVolumeSource": {
        1: "secretName", 2: "items [KeyToPath]", 3: "defaultMode i32?", 4: "optional bool?",
    },
    "ConfigMapVolumeSource": {
        1: "- ^LocalObjectReference", 2: "items [KeyToPath]", 3: "defaultMode i32?",
        4: "optional bool?",
    },
    "KeyToPath": {1: "key", 2: "path", 3: "mode i32?"},
    "NFSVolumeSource": {1: "server", 2: "path", 3: "readOnly bool"},
    "PersistentVolumeClaimVolumeSource": {1: "claimName", 2: "readOnly bool"},
    "DownwardAPIVolumeSource": {1: "items [DownwardAPIVolumeFile]", 2: "defaultMode i32?"},
    "DownwardAPIVolumeFile": {
        1: "path", 2: "fieldRef ObjectFieldSelector",
        3: "resourceFieldRef ResourceFieldSelector", 4: "mode i32?",
    },
    "ProjectedVolumeSource": {1: "sources [VolumeProjection]", 2: "defaultMode i32?"},
    "VolumeProjection": {
        1: "secret SecretProjection", 2: "downwardAPI DownwardAPIProjection",
        3: "configMap ConfigMapProjection",
        4: "serviceAccountToken ServiceAccountTokenProjection",
        5: "clusterTrustBundle ClusterTrustBundleProjection",
    },
    "SecretProjection": {
        1: "- ^LocalObjectReference", 2: "items [KeyToPath]", 4: "optional bool?",
    },
    "ConfigMapProjection": {
        1: "- ^LocalObjectReference", 2: "items [KeyToPath]", 4: "optional bool?",
    },
    "DownwardAPIProjection": {1: "items [DownwardAPIVolumeFile]"},
    "ServiceAccountTokenProjection": {1: "audience", 2: "expirationSeconds i64?", 3: "path"},
    "ClusterTrustBundleProjection": {
        1: "name s?", 2: "signerName s?", 3: "labelSelector LabelSelector", 4: "path",
        5: "optional bool?",
    },
    "CSIVolumeSource": {
        1: "driver", 2: "readOnly bool?", 3: "fsType s?", 4: "volumeAttributes {s}",
        5: "nodePublishSecretRef LocalObjectReference",
    },
    "EphemeralVolumeSource": {1: "volumeClaimTemplate PersistentVolumeClaimTemplate"},
    "PersistentVolumeClaimTemplate": {
        1: "metadata ObjectMeta", 2: "spec PersistentVolumeClaimSpec",
    },
    "PersistentVolumeClaimSpec": {
        1: "accessModes [s]", 2: "resources VolumeResourceRequirements", 3: "volumeName",
        4: "selector LabelSelector", 5: "storageClassName s?", 6: "volumeMode s?",
        7: "dataSource TypedLocalObjectReference", 8: "dataSourceRef TypedObjectReference",
        9: "volumeAttributesClassName s?",
    },
    "VolumeResourceRequirements": {1: "limits {Quantity}", 2: "requests {Quantity}"},
    "TypedLocalObjectReference": {1: "apiGroup s?", 2: "kind", 3: "name"},
    "TypedObjectReference": {1: "apiGroup s?", 2: "kind", 3: "name", 4: "namespace s?"},
    "ImageVolumeSource": {1: "reference", 2: "pullPolicy"},
    # core/v1: pod status
    "PodStatus": {
        1: "phase", 2: "conditions [PodCondition]", 3: "message", 4: "reason", 5: "hostIP",
        6: "podIP", 7: "startTime Time", 8: "containerStatuses [ContainerStatus]",
        9: "qosClass", 10: "initContainerStatuses [ContainerStatus]",
        11: "nominatedNodeName", 12: "podIPs [PodIP]",
        13: "ephemeralContainerStatuses [ContainerStatus]", 14: "resize",
        16: "hostIPs [HostIP]", 17: "observedGeneration i64",
    },
    "PodCondition": {
        1: "type", 2: "status", 3: "lastProbeTime Time", 4: "lastTransitionTime Time",
        5: "reason", 6: "message", 7: "observedGeneration i64",
    },
    "PodIP": {1: "ip"},
    "HostIP": {1: "ip"},
    "ContainerStatus": {
        1: "name", 2: "state ContainerState", 3: "lastState ContainerState", 4: "ready bool?",
        5: "restartCount i32?", 6: "image", 7: "imageID", 8: "containerID",
        9: "started bool?", 10: "allocatedResources {Quantity}",
        11: "resources ResourceRequirements", 12: "volumeMounts [VolumeMountStatus]",
        15: "stopSignal s?",
    },
    "ContainerState": {
        1: "waiting ContainerStateWaiting", 2: "running ContainerStateRunning",
        3: "terminated ContainerStateTerminated",
    },
    "ContainerStateWaiting": {1: "reason", 2: "message"},
    "ContainerStateRunning": {1: "startedAt Time"},
    "ContainerStateTerminated": {
        1: "exitCode i32?", 2: "signal i32", 3: "reason", 4: "message", 5: "startedAt Time",
        6: "finishedAt Time", 7: "containerID",
    },
    "VolumeMountStatus": {
        1: "name", 2: "mountPath", 3: "readOnly bool", 4: "recursiveReadOnly s?",
    },
    # apps/v1
    "Deployment": {
        1: "metadata ObjectMeta", 2: "spec DeploymentSpec", 3: "status DeploymentStatus",
    },
    "DeploymentSpec": {
        1: "replicas i32?", 2: "selector LabelSelector", 3: "template PodTemplateSpec",
        4: "strategy DeploymentStrategy", 5: "minReadySeconds i32",
        6: "revisionHistoryLimit i32?", 7: "paused bool", 9: "progressDeadlineSeconds i32?",
    },
    "DeploymentStrategy": {1: "type", 2: "rollingUpdate RollingUpdateDeployment"},
    "RollingUpdateDeployment": {1: "maxUnavailable IntOrString", 2: "maxSurge IntOrString"},
    "DeploymentStatus": {
        1: "observedGeneration i64", 2: "replicas i32", 3: "updatedReplicas i32",
        4: "availableReplicas i32", 5: "unavailableReplicas i32",
        6: "conditions [DeploymentCondition]", 7: "readyReplicas i32",
        8: "collisionCount i32?",
    },
    "DeploymentCondition": {
        1: "type", 2: "status", 4: "reason", 5: "message", 6: "lastUpdateTime Time",
        7: "lastTransitionTime Time",
    },
    "ReplicaSet": {
        1: "metadata ObjectMeta", 2: "spec ReplicaSetSpec", 3: "status ReplicaSetStatus",
    },
    "ReplicaSetSpec": {
        1: "replicas i32?", 2: "selector LabelSelector", 3: "template PodTemplateSpec",
        4: "minReadySeconds i32",
    },
    "ReplicaSetStatus": {
        1: "replicas i32?", 2: "fullyLabeledReplicas i32", 3: "observedGeneration i64",
        4: "readyReplicas i32", 5: "availableReplicas i32",
        6: "conditions [ReplicaSetCondition]",
    },
    "ReplicaSetCondition": {
        1: "type", 2: "status", 3: "lastTransitionTime Time", 4: "reason", 5: "message",
    },
    # autoscaling/v1 (the scale subresource)
    "Scale": {1: "metadata ObjectMeta", 2: "spec ScaleSpec", 3: "status ScaleStatus"},
    # Go omits a zero spec.replicas, but a scale request of 0 must stay visible here.
    "ScaleSpec": {1: "replicas i32?"},
    "ScaleStatus": {1: "replicas i32?", 2: "selector"},
    # batch/v1
    "Job": {1: "metadata ObjectMeta", 2: "spec JobSpec", 3: "status JobStatus"},
    "JobSpec": {
        1: "parallelism i32?", 2: "completions i32?", 3: "activeDeadlineSeconds i64?",
        4: "selector LabelSelector", 5: "manualSelector bool?", 6: "template PodTemplateSpec",
        7: "backoffLimit i32?", 8: "ttlSecondsAfterFinished i32?", 9: "completionMode s?",
        10: "suspend bool?", 11: "podFailurePolicy PodFailurePolicy",
        12: "backoffLimitPerIndex i32?", 13: "maxFailedIndexes i32?",
        14: "podReplacementPolicy s?", 15: "managedBy s?", 16: "successPolicy SuccessPolicy",
    },
    "JobStatus": {
        1: "conditions [JobCondition]", 2: "startTime Time", 3: "completionTime Time",
        4: "active i32", 5: "succeeded i32", 6: "failed i32", 7: "completedIndexes",
        8: "uncountedTerminatedPods UncountedTerminatedPods", 9: "ready i32?",
        10: "failedIndexes s?", 11: "terminating i32?",
    },
    "JobCondition": {
        1: "type", 2: "status", 3: "lastProbeTime Time", 4: "lastTransitionTime Time",
        5: "reason", 6: "message",
    },
    "UncountedTerminatedPods": {1: "succeeded [s]", 2: "failed [s]"},
    "PodFailurePolicy": {1: "rules [PodFailurePolicyRule]"},
    "PodFailurePolicyRule": {
        1: "action", 2: "onExitCodes PodFailurePolicyOnExitCodesRequirement",
        3: "onPodConditions [PodFailurePolicyOnPodConditionsPattern]",
    },
    "PodFailurePolicyOnExitCodesRequirement": {
        1: "containerName s?", 2: "operator", 3: "values [i32]",
    },
    "PodFailurePolicyOnPodConditionsPattern": {1: "type", 2: "status"},
    "SuccessPolicy": {1: "rules [SuccessPolicyRule]"},
    "SuccessPolicyRule": {1: "succeededIndexes s?", 2: "succeededCount i32?"},
    "CronJob": {1: "metadata ObjectMeta", 2: "spec CronJobSpec", 3: "status CronJobStatus"},
    "CronJobSpec": {
        1: "schedule", 2: "startingDeadlineSeconds i64?", 3: "concurrencyPolicy",
        4: "suspend bool?", 5: "jobTemplate JobTemplateSpec",
        6: "successfulJobsHistoryLimit i32?", 7: "failedJobsHistoryLimit i32?",
        8: "timeZone s?",
    },
    "CronJobStatus": {
        1: "active [ObjectReference]", 4: "lastScheduleTime Time",
        5: "lastSuccessfulTime Time",
    },
    "JobTemplateSpec": {1: "metadata ObjectMeta", 2: "spec JobSpec"},
    # coordination.k8s.io/v1: every LeaseSpec field is a Go pointer.
    "Lease": {1: "metadata ObjectMeta", 2: "spec LeaseSpec"},
    "LeaseSpec": {
        1: "holderIdentity s?", 2: "leaseDurationSeconds i32?", 3: "acquireTime MicroTime",
        4: "renewTime MicroTime", 5: "leaseTransitions i32?", 6: "strategy s?",
        7: "preferredHolder s?",
    },
    # events.k8s.io/v1
    "EventsEvent": {
        1: "metadata ObjectMeta", 2: "eventTime MicroTime", 3: "series EventSeries",
        4: "reportingController", 5: "reportingInstance", 6: "action", 7: "reason",
        8: "regarding ObjectReference", 9: "related ObjectReference", 10: "note",
        11: "type", 12: "deprecatedSource EventSource", 13: "deprecatedFirstTimestamp Time",
        14: "deprecatedLastTimestamp Time", 15: "deprecatedCount i32",
    },
    # authorization.k8s.io/v1
    "SelfSubjectAccessReview": {
        1: "metadata ObjectMeta", 2: "spec SelfSubjectAccessReviewSpec",
        3: "status SubjectAccessReviewStatus",
    },
    "SelfSubjectAccessReviewSpec": {
        1: "resourceAttributes ResourceAttributes",
        2: "nonResourceAttributes NonResourceAttributes",
    },
    "SubjectAccessReview": {
        1: "metadata ObjectMeta", 2: "spec SubjectAccessReviewSpec",
        3: "status SubjectAccessReviewStatus",
    },
    "SubjectAccessReviewSpec": {
        1: "resourceAttributes ResourceAttributes",
        2: "nonResourceAttributes NonResourceAttributes", 3: "user", 4: "groups [s]",
        5: "extra {ExtraValue}", 6: "uid",
    },
    "ResourceAttributes": {
        1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
        6: "subresource", 7: "name", 8: "fieldSelector FieldSelectorAttributes",
        9: "labelSelector LabelSelectorAttributes",
    },
    "FieldSelectorAttributes": {
        1: "rawSelector", 2: "requirements [FieldSelectorRequirement]",
    },
    "LabelSelectorAttributes": {
        1: "rawSelector", 2: "requirements [LabelSelectorRequirement]",
    },
    "NonResourceAttributes": {1: "path", 2: "verb"},
    "SubjectAccessReviewStatus": {
        1: "allowed bool?", 2: "reason", 3: "evaluationError", 4: "denied bool",
    },
    "SelfSubjectRulesReview": {
        1: "metadata ObjectMeta", 2: "spec SelfSubjectRulesReviewSpec",
        3: "status SubjectRulesReviewStatus",
    },
    "SelfSubjectRulesReviewSpec": {1: "namespace"},
    "SubjectRulesReviewStatus": {
        1: "resourceRules [ResourceRule]", 2: "nonResourceRules [NonResourceRule]",
        3: "incomplete bool?", 4: "evaluationError",
    },
    "ResourceRule": {1: "verbs [s]", 2: "apiGroups [s]", 3: "resources [s]",
                     4: "resourceNames [s]"},
    "NonResourceRule": {1: "verbs [s]", 2: "nonResourceURLs [s]"},
    # authentication.k8s.io/v1
    "SelfSubjectReview": {1: "metadata ObjectMeta", 2: "status SelfSubjectReviewStatus"},
    "SelfSubjectReviewStatus": {1: "userInfo UserInfo"},
    "UserInfo": {1: "username", 2: "uid", 3: "groups [s]", 4: "extra {ExtraValue}"},
    "TokenRequest": {
        1: "metadata ObjectMeta", 2: "spec TokenRequestSpec", 3: "status TokenRequestStatus",
    },
    "TokenRequestSpec": {
        1: "audiences [s]", 3: "boundObjectRef BoundObjectReference",
        4: "expirationSeconds i64?",
    },
    # The proto names field 4 "uID", but Go's JSON tag is "uid".
    "BoundObjectReference": {1: "kind", 2: "apiVersion", 3: "name", 4: "uid"},
    "TokenRequestStatus": {1: "token s?", 2: "expirationTimestamp Time"},
    "TokenReview": {
        1: "metadata ObjectMeta", 2: "spec TokenReviewSpec", 3: "status TokenReviewStatus",
    },
    "TokenReviewSpec": {1: "token", 2: "audiences [s]"},
    "TokenReviewStatus": {
        1: "authenticated bool", 2: "user UserInfo", 3: "error", 4: "audiences [s]",
    },
}

# (apiVersion, kind) -> top-level message.
_KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "Secret"): "Secret",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Event"): "CoreEvent",
    ("v1", "Service"): "Service",
    ("v1", "Pod"): "Pod",
    ("v1", "PodTemplate"): "PodTemplate",
    ("apps/v1", "Deployment"): "Deployment",
    ("apps/v1", "ReplicaSet"): "ReplicaSet",
    ("apps/v1", "Scale"): "Scale",
    ("autoscaling/v1", "Scale"): "Scale",
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("coordination.k8s.io/v1", "Lease"): "Lease",
    ("events.k8s.io/v1", "Event"): "EventsEvent",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    ("authorization.k8s.io/v1", "SubjectAccessReview"): "SubjectAccessReview",
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): "SubjectAccessReview",
    ("authentication.k8s.io/v1", "SelfSubjectReview"): "SelfSubjectReview",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
    ("authentication.k8s.io/v1", "TokenReview"): "TokenReview",
    ("v1", "DeleteOptions"): "DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
}

# client-go registers DeleteOptions in every group version, so a typed client may label
# the body with its own group (e.g. "apps/v1"); the message is the same everywhere.
_ANY_VERSION_KINDS: dict[str, str] = {"DeleteOptions": "DeleteOptions"}

SUPPORTED_KINDS: Final[frozenset[tuple[str, str]]] = frozenset(_KINDS)


# --- compiled descriptors -----------------------------------------------------------------

# Value kinds. Scalars (< _MSG) are subject to omitempty; the rest are always kept.
_STR, _BYTES, _I32, _I64, _BOOL, _F64 = range(6)
_MSG, _INLINE, _TIME, _MICRO, _QTY, _IOS, _FIELDS, _DUR, _RAW, _EXTRA = range(6, 16)

_SCALARS = {"s": _STR, "b": _BYTES, "i32": _I32, "i64": _I64, "bool": _BOOL, "f64": _F64}
_SPECIAL = {
    "Time": _TIME, "MicroTime": _MICRO, "Quantity": _QTY, "IntOrString": _IOS,
    "FieldsV1": _FIELDS, "Duration": _DUR, "RawExtension": _RAW, "ExtraValue": _EXTRA,
}
_REPEATED, _MAP, _KEEP = 1, 2, 4


class _Msg:
    """One compiled message: field number -> (json name, value kind, submessage, flags)."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[int, tuple[str, int, _Msg | None, int]] = {}


def _compile(tables: dict[str, dict[int, str]]) -> dict[str, _Msg]:
    msgs = {name: _Msg(name) for name in tables}
    for name, table in tables.items():
        for number, text in table.items():
            json_name, _, spec = text.partition(" ")
            spec = spec or "s"
            flags = 0
            if spec.endswith("?"):
                flags |= _KEEP
                spec = spec[:-1]
            if spec.startswith("["):
                flags |= _REPEATED
                spec = spec[1:-1]
            elif spec.startswith("{"):
                flags |= _MAP
                spec = spec[1:-1]
            inline = spec.startswith("^")
            spec = spec.lstrip("^")
            sub: _Msg | None = None
            if spec in _SCALARS:
                kind = _SCALARS[spec]
            elif spec in _SPECIAL:
                kind = _SPECIAL[spec]
            elif spec in msgs:
                kind, sub = (_INLINE if inline else _MSG), msgs[spec]
            else:  # a typo in the tables must fail at import, not on a request
                raise AssertionError(f"protobuf table {name}.{number}: unknown type {spec!r}")
            msgs[name].fields[number] = (json_name, kind, sub, flags)
    return msgs


_MESSAGES: Final = _compile(_M)


# --- wire format --------------------------------------------------------------------------

_U64 = (1 << 64) - 1
_MAX_DEPTH = 64
_EPOCH = datetime(1970, 1, 1)
_VARINT_KINDS = frozenset({_I32, _I64, _BOOL})
_DOUBLE = struct.Struct("<d")


def _truncated() -> ProtobufError:
    return ProtobufError("truncated protobuf body")


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise _truncated()
    b = buf[pos]
    if b < 0x80:  # most tags and lengths fit in one byte
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("corrupt protobuf body: varint longer than 10 bytes")
    raise _truncated()


def _span(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix; return the (start, stop) of the bytes it announces."""
    n, pos = _varint(buf, pos, end)
    stop = pos + n
    if stop > end:
        raise _truncated()
    return pos, stop


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos, end)[1]
    if wire == 2:
        return _span(buf, pos, end)[1]
    size = 8 if wire == 1 else 4 if wire == 5 else 0
    if not size:  # 3/4 are proto2 groups, which Kubernetes never uses; 6/7 do not exist
        raise ProtobufError(f"corrupt protobuf body: unsupported wire type {wire}")
    if pos + size > end:
        raise _truncated()
    return pos + size


def _int64(raw: int) -> int:
    return raw - (1 << 64) if raw >> 63 else raw


def _int32(raw: int) -> int:
    # Go accumulates int32 fields in 32 bits, so only the low word counts.
    raw &= 0xFFFFFFFF
    return raw - (1 << 32) if raw >> 31 else raw


def _scalar(raw: int, kind: int) -> int | bool:
    if kind == _I32:
        return _int32(raw)
    if kind == _I64:
        return _int64(raw)
    return raw != 0


def _text(buf: bytes, start: int, stop: int) -> str:
    # Go's JSON encoder replaces invalid UTF-8 with U+FFFD; do the same.
    return buf[start:stop].decode("utf-8", "replace")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int | tuple[int, int]]]:
    """Scan a small well-known message: (field number, varint or (start, stop) span)."""
    out: list[tuple[int, int | tuple[int, int]]] = []
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            out.append((number, value))
        elif wire == 2:
            start, pos = _span(buf, pos, end)
            out.append((number, (start, pos)))
        else:
            pos = _skip(buf, pos, end, wire)
    return out


def _decode_message(buf: bytes, pos: int, end: int, msg: _Msg, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise ProtobufError("corrupt protobuf body: messages nested too deeply")
    out: dict[str, Any] = {}
    fields = msg.fields
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        field = fields.get(number)
        if field is None:
            if number == 0:
                raise ProtobufError("corrupt protobuf body: field number 0")
            pos = _skip(buf, pos, end, wire)
            continue
        name, kind, sub, flags = field
        value: Any
        if flags & _MAP:
            if wire != 2:
                raise _wire_error(msg, name, wire)
            start, pos = _span(buf, pos, end)
            key, value = _decode_entry(buf, start, pos, kind, sub, depth)
            entries = out.get(name)
            if entries is None:
                out[name] = {key: value}
            else:
                entries[key] = value
            continue
        if kind in _VARINT_KINDS or kind == _F64:
            if wire == 2 and flags & _REPEATED:  # packed repeated scalars
                start, pos = _span(buf, pos, end)
                values = _decode_packed(buf, start, pos, kind)
                if values:
                    out.setdefault(name, []).extend(values)
                continue
            if kind == _F64:
                if wire != 1:
                    raise _wire_error(msg, name, wire)
                if pos + 8 > end:
                    raise _truncated()
                value = _DOUBLE.unpack_from(buf, pos)[0]
                pos += 8
            else:
                if wire != 0:
                    raise _wire_error(msg, name, wire)
                raw, pos = _varint(buf, pos, end)
                value = _scalar(raw, kind)
        else:
            if wire != 2:
                raise _wire_error(msg, name, wire)
            start, pos = _span(buf, pos, end)
            value = _decode_value(buf, start, pos, kind, sub, depth)
            if kind == _INLINE:
                out.update(value)
                continue
        if flags & _REPEATED:
            items = out.get(name)
            if items is None:
                out[name] = [value]
            else:
                items.append(value)
        elif kind == _MSG and isinstance(out.get(name), dict):
            out[name].update(value)  # a repeated occurrence of a message merges into it
        elif kind >= _MSG or flags & _KEEP or value:
            out[name] = value
        else:  # a zero value of a non-pointer field: Go's omitempty drops it from JSON
            out.pop(name, None)
    return out


def _wire_error(msg: _Msg, name: str, wire: int) -> ProtobufError:
    return ProtobufError(f"corrupt protobuf body: {msg.name}.{name} has wire type {wire}")


def _decode_packed(buf: bytes, pos: int, end: int, kind: int) -> list[Any]:
    values: list[Any] = []
    if kind == _F64:
        if (end - pos) % 8:
            raise _truncated()
        values.extend(v for (v,) in _DOUBLE.iter_unpack(buf[pos:end]))
        return values
    while pos < end:
        raw, pos = _varint(buf, pos, end)
        values.append(_scalar(raw, kind))
    return values


def _decode_entry(
    buf: bytes, pos: int, end: int, kind: int, sub: _Msg | None, depth: int
) -> tuple[str, Any]:
    """A map entry is a message with key = 1 (string here) and value = 2."""
    key = ""
    value: Any = _decode_value(buf, 0, 0, kind, sub, depth)  # the value when absent
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire != 2 or number not in (1, 2):
            pos = _skip(buf, pos, end, wire)
            continue
        start, pos = _span(buf, pos, end)
        if number == 1:
            key = _text(buf, start, pos)
        else:
            value = _decode_value(buf, start, pos, kind, sub, depth)
    return key, value


def _decode_value(
    buf: bytes, pos: int, end: int, kind: int, sub: _Msg | None, depth: int
) -> Any:
    """Decode one length-delimited value occupying buf[pos:end]."""
    if kind == _STR:
        return _text(buf, pos, end)
    if kind == _BYTES:
        return base64.b64encode(buf[pos:end]).decode("ascii")
    if kind in (_MSG, _INLINE):
        assert sub is not None
        return _decode_message(buf, pos, end, sub, depth + 1)
    if kind in (_TIME, _MICRO):
        return _timestamp(buf, pos, end, micro=kind == _MICRO)
    if kind == _QTY:
        text = ""
        for number, value in _fields(buf, pos, end):
            if number == 1 and isinstance(value, tuple):
                text = _text(buf, *value)
        return text or "0"  # a zero Quantity marshals as "0"
    if kind == _IOS:
        return _int_or_string(buf, pos, end)
    if kind == _DUR:
        nanos = 0
        for number, value in _fields(buf, pos, end):
            if number == 1 and isinstance(value, int):
                nanos = _int64(value)
        return go_duration(nanos)
    if kind == _EXTRA:
        return [_text(buf, *v) for n, v in _fields(buf, pos, end)
                if n == 1 and isinstance(v, tuple)]
    # FieldsV1 and RawExtension both carry their payload in bytes field 1.
    raw = b""
    for number, value in _fields(buf, pos, end):
        if number == 1 and isinstance(value, tuple):
            raw = buf[value[0]:value[1]]
    if not raw:
        return None
    if kind == _RAW and raw.startswith(MAGIC):  # an embedded protobuf object
        return decode(raw)
    try:
        return json.loads(raw)
    except ValueError as exc:
        what = "fieldsV1" if kind == _FIELDS else "raw extension"
        raise ProtobufError(f"corrupt protobuf body: {what} is not valid JSON") from exc


def _timestamp(buf: bytes, pos: int, end: int, *, micro: bool) -> str | None:
    if pos == end:  # Go marshals a zero Time as an empty message; JSON renders it null
        return None
    seconds = nanos = 0
    for number, value in _fields(buf, pos, end):
        if isinstance(value, int):
            if number == 1:
                seconds = _int64(value)
            elif number == 2:
                nanos = _int32(value)
    try:
        t = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError as exc:
        raise ProtobufError("corrupt protobuf body: timestamp out of range") from exc
    # Hand formatting: strftime does not zero-pad years below 1000 everywhere.
    text = (f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
            f"T{t.hour:02d}:{t.minute:02d}:{t.second:02d}")
    return f"{text}.{t.microsecond:06d}Z" if micro else f"{text}Z"


def _int_or_string(buf: bytes, pos: int, end: int) -> int | str:
    typ, number_value, text = 0, 0, ""
    for number, value in _fields(buf, pos, end):
        if number == 1 and isinstance(value, int):
            typ = _int64(value)
        elif number == 2 and isinstance(value, int):
            number_value = _int32(value)
        elif number == 3 and isinstance(value, tuple):
            text = _text(buf, *value)
    if typ == 0:
        return number_value
    if typ == 1:
        return text
    raise ProtobufError(f"corrupt protobuf body: IntOrString type {typ}")


# --- entry point --------------------------------------------------------------------------


def _message_for(api_version: str, kind: str) -> _Msg:
    name = _KINDS.get((api_version, kind)) or _ANY_VERSION_KINDS.get(kind)
    if name is None:
        raise ProtobufError(
            f'the protobuf body of kind "{kind}" in version "{api_version}" is not '
            "supported by this server; send application/json"
        )
    return _MESSAGES[name]


def decode(body: bytes) -> dict[str, Any]:
    """Decode a Kubernetes protobuf body into the dict a JSON client would have sent."""
    buf = bytes(body)
    if not buf.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body: missing the k8s\\x00 prefix")
    try:
        return _decode_unknown(buf)
    except ProtobufError:
        raise
    except (IndexError, ValueError, OverflowError, RecursionError, struct.error) as exc:
        # Bounds are checked as we go; this is a backstop so callers only see ProtobufError.
        raise ProtobufError(f"corrupt protobuf body: {exc}") from exc


def _decode_unknown(buf: bytes) -> dict[str, Any]:
    api_version = kind = encoding = ""
    raw_start = raw_stop = 0
    for number, value in _fields(buf, len(MAGIC), len(buf)):
        if not isinstance(value, tuple):
            continue
        if number == 1:  # typeMeta
            for inner, text in _fields(buf, *value):
                if inner == 1 and isinstance(text, tuple):
                    api_version = _text(buf, *text)
                elif inner == 2 and isinstance(text, tuple):
                    kind = _text(buf, *text)
        elif number == 2:
            raw_start, raw_stop = value
        elif number == 3:
            encoding = _text(buf, *value)
    if encoding:
        raise ProtobufError(f"unsupported protobuf contentEncoding {encoding!r}")
    if not kind:
        raise ProtobufError("protobuf body has no kind in its typeMeta")
    obj = _decode_message(buf, raw_start, raw_stop, _message_for(api_version, kind), 0)
    return {"apiVersion": api_version, "kind": kind, **obj}
