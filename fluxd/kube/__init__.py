"""The Kubernetes client facade: the only package that imports kubernetes_asyncio."""

from fluxd.kube.client import KubeClient, ListResult, Throttle, WatchEvent
from fluxd.kube.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    TransportError,
)
from fluxd.kube.mapping import Mapping, RESTMapper

__all__ = [
    "AlreadyExists", "Conflict", "Forbidden", "Gone", "Invalid", "KubeClient", "KubeError",
    "ListResult", "Mapping", "NotFound", "RESTMapper", "Throttle", "TransportError",
    "WatchEvent",
]
