"""fluxd settings: defaults < config file (TOML) < ``FLUXD_*`` environment < flags.

Groups mirror Flux's controller flags, with Flux's defaults (``--concurrent``,
``--kube-api-qps``, ``--min-retry-delay``, ``--leader-election-lease-duration``, …). The
file is ``config.example.toml``'s format (every key documented there); durations are
Go-style strings (``"750ms"``, ``"15m"``, ``"1h30m"``) or seconds. ``FLUXD_KUBE__QPS=20``
style variables override single values.

``HOT_RELOADABLE`` lists the settings a running ``fluxd run`` applies on SIGHUP; a change
to anything else is logged as needing a restart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration string (``"1m30s"``) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '30s' or a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a string like '30s' or a number of seconds")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: use e.g. '750ms', '30s', '15m', '1h'")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KubeSettings(_Group):
    #: kubeconfig path; unset: $KUBECONFIG, ~/.kube/config, else in-cluster
    kubeconfig: str | None = None
    context: str | None = None
    #: optional client-side cap on API requests (Flux --kube-api-qps / --kube-api-burst).
    #: 0 (the default): no client-side limit — the API server's priority and fairness
    #: decides, and its 429 + Retry-After are obeyed (see fluxd.kube.client); burst
    #: counts only while qps > 0
    qps: float = Field(default=0.0, ge=0)
    burst: int = Field(default=300, ge=1)


class ConcurrencySettings(_Group):
    """Reconciles running at once per controller (Flux --concurrent)."""

    source: int = Field(default=2, ge=1)
    kustomize: int = Field(default=4, ge=1)
    helm: int = Field(default=4, ge=1)
    notification: int = Field(default=4, ge=1)


class ReconcileSettings(_Group):
    #: per-item exponential backoff for failed reconciles (Flux --min/--max-retry-delay)
    min_retry_delay: Duration = 0.75
    max_retry_delay: Duration = 900.0
    #: how soon a Kustomization/HelmRelease waiting on a dependency is retried
    requeue_dependency: Duration = 30.0
    #: ± percentage jitter on success intervals (Flux --interval-jitter-percentage)
    interval_jitter_percentage: float = Field(default=5.0, ge=0, lt=100)
    #: deadline of one reconcile
    timeout: Duration = 600.0


class WatchSettings(_Group):
    #: false: only the runtime namespace (Flux --watch-all-namespaces)
    all_namespaces: bool = True
    #: the namespace fluxd runs in ($RUNTIME_NAMESPACE in Flux)
    runtime_namespace: str = "flux-system"
    #: shard selector on Flux objects (Flux --watch-label-selector)
    label_selector: str = ""
    #: ConfigMaps/Secrets whose changes trigger reconciles
    configs_label_selector: str = "reconcile.fluxcd.io/watch=Enabled"


class LeaderElectionSettings(_Group):
    enabled: bool = True
    #: Lease name; the shard selector is added to it
    name: str = "fluxd-leader-election"
    #: unset: the runtime namespace
    namespace: str | None = None
    lease_duration: Duration = 35.0
    renew_deadline: Duration = 30.0
    retry_period: Duration = 5.0
    release_on_cancel: bool = True


class StorageSettings(_Group):
    """The artifact store (Flux --storage-* and --artifact-* flags)."""

    #: where artifacts are written
    path: Path = Path("/data")
    #: the artifact HTTP server (Flux --storage-addr)
    address: str = "0.0.0.0:9090"
    #: host[:port] or URL put in status.artifact.url (Flux --storage-adv-addr); empty:
    #: localhost with the port the server is bound to (port 0 takes a free one)
    advertised_address: str = ""
    #: artifacts kept per object, and for how long (Flux --artifact-retention-*)
    retention_records: int = Field(default=2, ge=1)
    retention_ttl: Duration = 60.0
    #: sha256, sha384 or sha512 (Flux --artifact-digest-algo)
    digest_algorithm: str = Field(default="sha256", pattern="^(sha256|sha384|sha512)$")
    #: fsync every artifact and its directory (off, as in Flux: artifacts are a cache whose
    #: digests are checked on every reconcile; turn on for a persistent volume)
    fsync: bool = False


class GitSettings(_Group):
    """Limits of one Git fetch (GitRepository), against hostile or runaway packs."""

    #: largest Git object (a file, a tree) a fetch may hold, in bytes: one object is
    #: whole in memory once, and a pack's deltas could otherwise grow one without end
    max_object_size: int = Field(default=128 * 1024 * 1024, ge=1)
    #: most one fetch may inflate to, all objects together, in bytes (past 32 MiB they
    #: are kept in a temporary file, not in memory)
    max_fetch_size: int = Field(default=1024 * 1024 * 1024, ge=1)
    #: most bytes of file contents one checkout (or artifact) of a revision may expand to,
    #: submodules included: Git stores a file or directory once however often a tree
    #: names it, so a small fetch can name terabytes. 4 GiB: four times a whole fetch,
    #: which only a repository holding many copies of large files could approach
    max_checkout_size: int = Field(default=4 * 1024 * 1024 * 1024, ge=1)
    #: most entries (files, directories, links) the same may walk, submodules included
    max_checkout_entries: int = Field(default=1_000_000, ge=1)


class HelmSettings(_Group):
    """Helm repository limits (Flux --helm-* flags)."""

    #: largest Helm repository index accepted, in bytes (Flux --helm-index-max-size)
    index_max_size: int = Field(default=50 * 1024 * 1024, ge=1)
    #: largest chart archive accepted, in bytes (Flux --helm-chart-max-size)
    chart_max_size: int = Field(default=10 * 1024 * 1024, ge=1)
    #: largest single file read from a chart, e.g. Chart.yaml or a values file, in bytes
    #: (Flux --helm-chart-file-max-size)
    chart_file_max_size: int = Field(default=5 * 1024 * 1024, ge=1)
    #: how long one run of the helm CLI (``helm package``) may take
    package_timeout: Duration = 120.0


class KustomizeSettings(_Group):
    """kustomize-controller behaviour (Flux's kustomize-controller flags and gates)."""

    #: server-side applies in flight per Kustomization (Flux --concurrent-ssa)
    concurrent_ssa: int = Field(default=4, ge=1)
    #: field managers whose fields the apply takes over, besides kubectl's
    #: (Flux --override-manager)
    override_managers: list[str] = []
    #: a ${var} with no value and no default fails the build (Flux feature gate
    #: StrictPostBuildSubstitutions, on since kustomize-controller v1.9)
    strict_substitution: bool = True
    #: the longest wait between two rounds of health checks (the first comes after
    #: 100 ms, each next one after twice as long, up to this)
    health_poll_interval: Duration = 2.0
    #: built and substituted manifests kept for reuse while their inputs (artifact
    #: digest, path, build fields, substitution variables) stay the same: at most this
    #: many entries of at most this many bytes together (pickled); 0 keeps none
    build_cache_max_entries: int = Field(default=4096, ge=0)
    build_cache_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)


class NotificationSettings(_Group):
    """notification-controller (Flux's --events-addr, --receiverAddr, --rate-limit-interval)."""

    #: the event intake for controllers outside this process (Flux --events-addr; Flux
    #: uses :9090, which is the artifact server's port here)
    events_address: str = "0.0.0.0:9690"
    #: webhook receivers, the one listener meant to face the internet (Flux --receiverAddr)
    receiver_address: str = "0.0.0.0:9292"
    #: webhook requests one Receiver path takes in a burst, then per second; more are
    #: answered 429 (Flux leaves this to the ingress in front of it). Counted apart for
    #: authenticated deliveries and for failed requests, so failures cannot spend the
    #: deliveries' share
    receiver_rate_limit_burst: int = Field(default=20, ge=1)
    receiver_rate_limit_qps: float = Field(default=5.0, gt=0)
    #: largest webhook body read, in bytes; a larger one is answered 413 (Flux: 3 MiB)
    receiver_max_body_size: int = Field(default=3 * 1024 * 1024, ge=1)
    #: request-body bytes all webhook requests may hold in memory at once; a request that
    #: would go past it is answered 503 (fluxd's own bound; keep it above the largest body)
    receiver_max_inflight_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    #: the same bound for the event intake, whose bodies are at most 3 MiB (as Flux's)
    events_max_inflight_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    #: an event repeated within this window is dropped (Flux --rate-limit-interval)
    rate_limit_interval: Duration = 300.0
    #: notifications in flight at once, to all Providers together
    concurrent_sends: int = Field(default=16, ge=1)
    #: notifications in flight at once to one Provider; its other sends wait in its own
    #: queue, so a slow Provider delays only itself (Flux has no bound)
    concurrent_sends_per_provider: int = Field(default=4, ge=1)
    #: bytes of events (message and metadata) waiting to be sent; beyond it the oldest
    #: are dropped and counted in fluxd_notification_events_dropped_total
    queue_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)


class AccessSettings(_Group):
    """Multi-tenancy lockdown (Flux's --no-cross-namespace-refs and
    --default-service-account), for every controller of the process."""

    #: refuse references to objects in another namespace (sourceRef, dependsOn)
    no_cross_namespace_refs: bool = False
    #: the service account impersonated when an object names none; empty: fluxd's own
    default_service_account: str = ""


class ServerSettings(_Group):
    #: /metrics, /healthz and /readyz (Flux: --metrics-addr :8080, --health-addr :9440)
    metrics_address: str = "0.0.0.0:8080"


class HTTPSettings(_Group):
    """Bounds of every HTTP listener (metrics, artifacts, event intake, webhook receiver)
    against slow or hostile clients; Flux's listeners have none."""

    #: connections one listener holds at once; one more is answered 503 and closed. A
    #: listener never takes more than an eighth of the file-descriptor limit (RLIMIT_NOFILE)
    max_connections: int = Field(default=256, ge=1)
    #: how long a client may take to send a request's headers (Go's ReadHeaderTimeout)
    read_header_timeout: Duration = Field(default=10.0, gt=0)
    #: how long an idle keep-alive connection stays open (Go's IdleTimeout)
    idle_timeout: Duration = Field(default=60.0, gt=0)


class LogSettings(_Group):
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    #: json, or console (human-readable; the default for `fluxd dev`)
    encoding: str = Field(default="json", pattern="^(json|console)$")


class ShutdownSettings(_Group):
    #: how long in-flight reconciles may run on after SIGTERM
    grace_period: Duration = 30.0


class ToolSettings(BaseModel):
    """Paths of the external tools; unset means "next to this Python, else on PATH"."""

    model_config = ConfigDict(extra="forbid")

    helm: str | None = None
    kubectl: str | None = None


class DevClusterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=6443, ge=0, le=65535)
    kubeconfig: Path = Path(".fluxd/kubeconfig")
    #: seconds before simulated workloads report ready
    ready_delay: float = Field(default=1.0, ge=0)
    #: watch changes kept; a watch from an older resourceVersion gets 410 Gone
    watch_history: int = Field(default=10_000, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXD_", env_nested_delimiter="__",
                                      extra="forbid")

    kube: KubeSettings = KubeSettings()
    concurrency: ConcurrencySettings = ConcurrencySettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    watch: WatchSettings = WatchSettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    storage: StorageSettings = StorageSettings()
    git: GitSettings = GitSettings()
    helm: HelmSettings = HelmSettings()
    kustomize: KustomizeSettings = KustomizeSettings()
    notification: NotificationSettings = NotificationSettings()
    access: AccessSettings = AccessSettings()
    server: ServerSettings = ServerSettings()
    http: HTTPSettings = HTTPSettings()
    log: LogSettings = LogSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    tools: ToolSettings = ToolSettings()
    devcluster: DevClusterSettings = DevClusterSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) win over the environment, which wins over the file
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load(path: Path | None, **overrides: Any) -> Settings:
    """Settings from ``path`` (if given) with explicit overrides (from flags) on top."""
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    return Settings.model_validate(FromFile(**overrides).model_dump())


#: settings a running process applies on SIGHUP ("group.key"; "group" = the whole group)
HOT_RELOADABLE = frozenset({
    "log.level", "log.encoding", "concurrency", "reconcile", "kube.qps", "kube.burst",
    "shutdown.grace_period",
})


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """Dotted names of the settings that differ between two configurations."""
    out = []
    before, after = old.model_dump(), new.model_dump()
    for group in after:
        for key in after[group]:
            if before.get(group, {}).get(key) != after[group][key]:
                out.append(f"{group}.{key}")
    return out


def hot_reloadable(name: str) -> bool:
    return name in HOT_RELOADABLE or name.split(".")[0] in HOT_RELOADABLE


DEFAULT_CONFIG_PATH = Path("/etc/fluxd/config.toml")
