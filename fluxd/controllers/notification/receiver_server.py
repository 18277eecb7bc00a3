"""The webhook receiver server: ``POST /hook/<digest>`` turned into reconcile requests.

Contract, one request, in this order (Flux's ``receiver_handlers.go`` answers the same
codes):

1. The path is looked up in the Receiver informer's ``webhookPath`` index: unknown →
   **404** with aiohttp's plain body (nothing says whether the path ever existed).
2. Each known path has two token buckets, each ``receiver_rate_limit_burst`` at once and
   refilled at ``receiver_rate_limit_qps``: one for *deliveries* (requests that passed
   step 5), one for *failures* (requests refused in steps 4 and 5). An empty delivery
   bucket → **429** before the body is read.
3. A suspended Receiver, or one that is not Ready → **503**.
4. The body is read whole by the listener's ``BodyReader`` (``body.py``): past
   ``receiver_max_body_size`` → **413**, slower than 30 s → **408**, unreadable (also a
   ``Content-Encoding`` the bytes are not) → **400**, the bodies of all requests in flight
   past ``receiver_max_inflight_bytes`` → **503**.
5. The request is authenticated and decoded as the Receiver's ``type`` says (the
   ``VALIDATORS`` table; the token is read from the Secret on every request) and
   filtered by ``spec.events`` where the type has events: any failure → **400**. A
   failure takes a token from the failure bucket; when there is none, **429** instead.
   A delivery takes one from the delivery bucket; when there is none, **429**.
6. Every ``spec.resources`` entry that passes its ``filter`` and ``spec.resourceFilter``
   (CEL over ``res``: the object's apiVersion, kind and metadata; ``req``: the JSON body,
   ``{}`` for other content types; ``claims``: a verified OIDC token's claims) gets the
   annotation ``reconcile.fluxcd.io/requestedAt`` (Go's ``metav1.Now().String()``) by a
   JSON merge patch: all done → **200**; any failure → **500**.

Why two buckets: the signature can only be checked once the body is read, and someone
who knows only the URL must not be able to spend a path's budget and so suppress real
pushes. Their requests still have to be read and checked (one of them could be a real
delivery), but once the failure bucket is empty they cost no more than the limit allows
of what is dear: the path's Secret is then read at most once per refill interval
(``1 / receiver_rate_limit_qps`` s) and shared by the requests in that interval; outside
such a flood it is read on every request, and Secrets are never cached otherwise. Types
that authenticate nothing (``generic``, ``dockerhub``, ``quay``, ``acr``, ``cdevents``)
have only the path as secret: every well-formed request to them is a delivery.

Bodies of error answers are a few generic words; what went wrong is logged with the
Receiver's name. An answer given before the body was read to its end closes the
connection. Signatures and tokens are compared with ``hmac.compare_digest``; an
empty token authenticates nothing.

Gitea: a ``github`` Receiver takes Gitea's requests as they come (Gitea sends
``X-Hub-Signature-256``, ``X-Hub-Signature`` and ``X-GitHub-Event`` next to its own
``X-Gitea-*`` headers). Beyond go-github's rules it also accepts ``X-Gitea-Signature``
alone, and, for Gitea's form-encoded deliveries (where Gitea signs the ``payload``
parameter, not the form body), a signature over that parameter.

``generic-oidc`` and ``gcr`` verify a bearer JWT against the issuer's published keys
(OIDC discovery, JWKS; RSA, RSA-PSS, ECDSA and Ed25519 signatures) with ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import hmac
import json
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry, Gauge, Histogram
from pydantic import ValidationError

from fluxd import listen
from fluxd import logging as fluxlog
from fluxd import selector as labelselector
from fluxd.api.notification import OIDCProvider, ReceiverResource, ReceiverSpec
from fluxd.clock import Clock
from fluxd.config import Settings
from fluxd.controllers.notification.body import BodyReader, RequestRejected
from fluxd.controllers.notification.oidc import (
    OIDCError,
    OIDCVerifier,
    unverified_claims,
)
from fluxd.kube import KubeClient, KubeError
from fluxd.lru import LRU
from fluxd.runtime import conditions as cond
from fluxd.runtime.cel import CELError, Expression
from fluxd.runtime.driver import validation_text
from fluxd.tokenbucket import TokenBuckets

log = logging.getLogger("fluxd.notification.receiver")

Obj = dict[str, Any]

HOOK_PREFIX = "/hook/"
#: the informer index the server finds Receivers by
WEBHOOK_PATH_INDEX = "webhookPath"
#: the ``handler`` label of the HTTP metrics (Flux's, without --export-http-path-metrics)
HANDLER_ID = "/hook/"
#: what a Receiver's resource entry may omit the apiVersion for (Flux's list)
DEFAULT_API_VERSIONS = {
    "Bucket": "source.toolkit.fluxcd.io/v1",
    "HelmChart": "source.toolkit.fluxcd.io/v1",
    "HelmRepository": "source.toolkit.fluxcd.io/v1",
    "GitRepository": "source.toolkit.fluxcd.io/v1",
    "OCIRepository": "source.toolkit.fluxcd.io/v1",
    "ImageRepository": "image.toolkit.fluxcd.io/v1",
    "ArtifactGenerator": "source.extensions.fluxcd.io/v1beta1",
}
#: the CEL variables of ``resourceFilter`` and a resource's ``filter``
FILTER_VARIABLES = ("res", "req", "claims")
#: the CEL variables of an OIDC provider's variables and validations
CLAIMS_VARIABLES = ("claims", "vars")
#: the audience a generic-oidc token must carry when the provider names none
DEFAULT_OIDC_AUDIENCE = "notification-controller"
GOOGLE_ISSUER = "https://accounts.google.com"
#: Secrets whose credentials floods share at once (the least recently read go first)
_MAX_FLOODED_SECRETS = 1024


def webhook_path(token: str, name: str, namespace: str) -> str:
    """``/hook/`` and the hex sha256 of token, name and namespace (Flux's
    ``GetWebhookPath``)."""
    digest = hashlib.sha256((token + name + namespace).encode()).hexdigest()
    return HOOK_PREFIX + digest


def go_time_string(moment: datetime.datetime, monotonic: float) -> str:
    """What Go's ``metav1.Now().String()`` prints, which Flux writes as the
    ``requestedAt`` value: ``2006-01-02 15:04:05.999999999 -0700 MST m=+12.000000001``
    (UTC here; ``monotonic`` is the process's monotonic reading in seconds)."""
    utc = moment.astimezone(datetime.UTC)
    fraction = f"{utc.microsecond * 1000:09d}".rstrip("0")
    text = utc.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "")
    nanos = round(monotonic * 1_000_000_000)
    sign = "-" if nanos < 0 else "+"
    whole, rest = divmod(abs(nanos), 1_000_000_000)
    return f"{text} +0000 UTC m={sign}{whole}.{rest:09d}"


# --------------------------------------------------------------------------- filters


def compile_filters(spec: ReceiverSpec) -> tuple[Expression | None, list[Expression | None]]:
    """``resourceFilter`` and each resource's ``filter``, compiled; ``CELError`` names the
    failing one (the reconciler stalls the Receiver with it)."""
    common = None
    if spec.resource_filter:
        common = _compile(spec.resource_filter, FILTER_VARIABLES, "resourceFilter")
    own = [_compile(r.filter, FILTER_VARIABLES, f"resources[{i}].filter") if r.filter
           else None for i, r in enumerate(spec.resources)]
    return common, own


def _compile(text: str, variables: Collection[str], where: str) -> Expression:
    try:
        return Expression.compile(text, variables=variables)
    except CELError as exc:
        raise CELError(f"invalid {where}: {exc}") from None


@dataclass(frozen=True)
class ClaimsCheck:
    """One OIDC provider's CEL variables and validations, compiled."""

    variables: tuple[tuple[str, Expression], ...]
    validations: tuple[tuple[Expression, str], ...]

    @classmethod
    def compile(cls, provider: OIDCProvider) -> ClaimsCheck:
        variables = []
        for v in provider.variables or ():
            try:
                variables.append((v.name, Expression.compile(v.expression,
                                                             variables=CLAIMS_VARIABLES)))
            except CELError as exc:
                raise CELError(f"invalid expression for variable {v.name!r}: {exc}") from None
        validations = []
        for c in provider.validations:
            try:
                validations.append((Expression.compile(c.expression,
                                                       variables=CLAIMS_VARIABLES), c.message))
            except CELError as exc:
                raise CELError(f"invalid expression for validation {c.message!r}: "
                               f"{exc}") from None
        return cls(tuple(variables), tuple(validations))

    def evaluate(self, claims: Mapping[str, Any]) -> None:
        """Evaluate the variables in order (each sees those before it as ``vars``), then
        every validation; raises ``ValueError`` naming the failed validations."""
        values: dict[str, Any] = {}
        for name, expression in self.variables:
            try:
                values[name] = expression.evaluate({"claims": claims, "vars": dict(values)})
            except CELError as exc:
                raise ValueError(f"failed to evaluate variable {name!r}: {exc}") from None
        failures = []
        for expression, message in self.validations:
            try:
                ok = expression.evaluate_bool({"claims": claims, "vars": values})
            except CELError as exc:
                raise ValueError(f"failed to evaluate validation: {exc}") from None
            if not ok:
                failures.append(message)
        if failures:
            raise ValueError("token validation failed: " + "; ".join(failures))


def check_oidc_providers(providers: list[OIDCProvider]) -> None:
    """Flux's spec checks for ``oidcProviders`` that the CRD schema may not have enforced
    (``ValueError``): unique issuers, at least one validation, named variables."""
    seen: set[str] = set()
    for i, p in enumerate(providers):
        if p.issuer_url in seen:
            raise ValueError(f"oidcProviders[{i}]: duplicate issuerURL {p.issuer_url!r}")
        seen.add(p.issuer_url)
        if not p.validations:
            raise ValueError(f"oidcProviders[{i}] (issuerURL={p.issuer_url!r}): at least one "
                             "validation is required")
        for j, v in enumerate(p.variables or ()):
            if not v.name or not v.expression:
                raise ValueError(f"oidcProviders[{i}] (issuerURL={p.issuer_url!r}): "
                                 f"variables[{j}]: name and expression are required")


# --------------------------------------------------------------------------- requests


def _bad(answer: str, detail: str) -> RequestRejected:
    return RequestRejected(400, answer, detail)


class ResourceError(Exception):
    """A resource entry that cannot be reconciled (no apiVersion, another namespace, …)."""


@dataclass(frozen=True)
class Webhook:
    """A request as the validators see it: its headers, its whole body and its media
    type (lowercase, without parameters; "" when the header is missing)."""

    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Accepted:
    """A request that passed validation: the body the filters see as ``req`` (GCR's is the
    unwrapped Pub/Sub message) and an OIDC token's claims."""

    body: bytes
    claims: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Credentials:
    """What the Receiver's Secret holds: ``token``, and for gcr ``email`` and
    ``audience``."""

    token: bytes
    data: Mapping[str, bytes]


class Validator(Protocol):
    def __call__(self, server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                 secret: Credentials) -> Awaitable[Accepted]: ...


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad("invalid payload", f"cannot decode {what} webhook payload: {exc}") from None


def _shape(value: Any, fields: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` as Go decodes JSON into a struct: an object whose listed fields, when
    present and not null, have the listed types (a dict of fields for a nested struct,
    ``(list, str)`` for a list of strings)."""
    if not isinstance(value, dict):
        raise _bad("invalid payload", f"cannot decode {what} webhook payload: not an object")
    for name, kind in fields.items():
        item = value.get(name)
        if item is None:
            continue
        if isinstance(kind, dict):
            _shape(item, kind, what)
        elif isinstance(kind, tuple):
            if not isinstance(item, list) or not all(isinstance(x, kind[1]) for x in item):
                raise _bad("invalid payload", f"cannot decode {what} webhook payload: "
                                              f"field {name!r} has the wrong type")
        elif not isinstance(item, kind):
            raise _bad("invalid payload", f"cannot decode {what} webhook payload: field "
                                          f"{name!r} has the wrong type")
    return value


def _same(given: str, token: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token)


def _allow_event(spec: ReceiverSpec, event: str, sender: str) -> None:
    if spec.events and not any(event.casefold() == e.casefold() for e in spec.events):
        raise _bad("event not accepted", f"the {sender} event {event!r} is not authorised")


_HASHES: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def signature_matches(signature: str, payloads: Collection[bytes], token: bytes) -> bool:
    """go-github's ``ValidateSignature``: ``<sha1|sha256|sha512>=<hex HMAC>`` of one of
    ``payloads`` keyed by ``token``."""
    algorithm, sep, digest = signature.partition("=")
    if not sep or algorithm not in _HASHES:
        return False
    try:
        given = binascii.unhexlify(digest)
    except (binascii.Error, ValueError):
        return False
    return any(hmac.compare_digest(given, hmac.new(token, p, _HASHES[algorithm]).digest())
               for p in payloads)


def _github_signature(headers: CIMultiDictProxy[str], *, gitea: bool) -> str:
    for name in ("X-Hub-Signature-256", "X-Hub-Signature"):
        value = headers.get(name, "")
        if value:
            return value
    gitea_signature = headers.get("X-Gitea-Signature") or ""
    return "sha256=" + gitea_signature if gitea and gitea_signature else ""


def _github_payload(webhook: Webhook, token: bytes, *, sender: str, gitea: bool) -> bytes:
    """go-github's ``ValidatePayload``: the JSON payload of a JSON or form-encoded body
    whose ``X-Hub-Signature-256`` (else ``X-Hub-Signature``) signs the body. With
    ``gitea``, ``X-Gitea-Signature`` is the last resort, and a form's ``payload``
    parameter may be what is signed (Gitea signs that, not the form)."""
    body, media = webhook.body, webhook.media_type
    signed = [body]
    if media == "application/json":
        payload = body
    elif media == "application/x-www-form-urlencoded":
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                         max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad("invalid payload", f"the {sender} form body is invalid: {exc}") \
                from None
        payload = (form.get("payload") or [""])[0].encode()
        if gitea:
            signed.append(payload)
    else:
        raise _bad("invalid payload", f"the {sender} request has unsupported Content-Type "
                                      f"{media!r}")
    signature = _github_signature(webhook.headers, gitea=gitea)
    if not signature_matches(signature, signed, token):
        raise _bad("invalid signature", f"the {sender} signature header is invalid")
    return payload


async def _generic(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                   secret: Credentials) -> Accepted:
    return Accepted(webhook.body)


async def _generic_hmac(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                        secret: Credentials) -> Accepted:
    if not signature_matches(webhook.headers.get("X-Signature", ""), [webhook.body],
                             secret.token):
        raise _bad("invalid signature", "unable to validate HMAC signature")
    return Accepted(webhook.body)


async def _github(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                  secret: Credentials) -> Accepted:
    _github_payload(webhook, secret.token, sender="GitHub", gitea=True)
    headers = webhook.headers
    event = headers.get("X-GitHub-Event", "") or headers.get("X-Gitea-Event", "")
    _allow_event(spec, event, "GitHub")
    log.info("handling GitHub event: %s", event)
    return Accepted(webhook.body)


async def _gitlab(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                  secret: Credentials) -> Accepted:
    if not _same(webhook.headers.get("X-Gitlab-Token", ""), secret.token):
        raise _bad("invalid signature",
                   "the X-Gitlab-Token header value does not match the receiver token")
    event = webhook.headers.get("X-Gitlab-Event", "")
    _allow_event(spec, event, "GitLab")
    log.info("handling GitLab event: %s", event)
    return Accepted(webhook.body)


async def _bitbucket(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                     secret: Credentials) -> Accepted:
    _github_payload(webhook, secret.token, sender="Bitbucket server", gitea=False)
    event = webhook.headers.get("X-Event-Key", "")
    _allow_event(spec, event, "Bitbucket server")
    log.info("handling Bitbucket server event: %s", event)
    return Accepted(webhook.body)


async def _harbor(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                  secret: Credentials) -> Accepted:
    if not _same(webhook.headers.get("Authorization", ""), secret.token):
        raise _bad("invalid signature", "the Harbor Authorization header value does not "
                                        "match the receiver token")
    log.info("handling Harbor event")
    return Accepted(webhook.body)


async def _dockerhub(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                     secret: Credentials) -> Accepted:
    p = _shape(_json(webhook.body, "DockerHub"),
               {"push_data": {"tag": str}, "repository": {"repo_url": str}}, "DockerHub")
    log.info("handling DockerHub event from %s for tag %s",
             (p.get("repository") or {}).get("repo_url", ""),
             (p.get("push_data") or {}).get("tag", ""))
    return Accepted(webhook.body)


async def _quay(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                secret: Credentials) -> Accepted:
    p = _shape(_json(webhook.body, "Quay"),
               {"docker_url": str, "updated_tags": (list, str)}, "Quay")
    log.info("handling Quay event from %s", p.get("docker_url", ""))
    return Accepted(webhook.body)


async def _nexus(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                 secret: Credentials) -> Accepted:
    signature = webhook.headers.get("X-Nexus-Webhook-Signature", "")
    if not signature:
        raise _bad("invalid signature", "the Nexus signature is missing from header")
    expected = hmac.new(secret.token, webhook.body, hashlib.sha1).hexdigest()
    if not _same(signature, expected.encode()):
        raise _bad("invalid signature", "invalid Nexus signature")
    p = _shape(_json(webhook.body, "Nexus"), {"action": str, "repositoryName": str}, "Nexus")
    log.info("handling Nexus event from %s", p.get("repositoryName", ""))
    return Accepted(webhook.body)


async def _acr(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
               secret: Credentials) -> Accepted:
    p = _shape(_json(webhook.body, "ACR"),
               {"action": str, "target": {"repository": str, "tag": str}}, "ACR")
    target = p.get("target") or {}
    log.info("handling ACR event from %s for tag %s", target.get("repository", ""),
             target.get("tag", ""))
    return Accepted(webhook.body)


_CDEVENT_TYPE = re.compile(r"^dev\.cdevents\.[a-z]+\.[a-z]+\.\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def check_cdevent(value: Any) -> str:
    """The type of a CDEvent (spec v0.4 shape: ``context`` with version, id, source, type
    and an RFC 3339 timestamp; ``subject`` with id and a ``content`` object), else
    ``ValueError``. fluxd checks this structure, not each event type's JSON schema."""
    if not isinstance(value, dict):
        raise ValueError("a CDEvent is a JSON object")
    context, subject = value.get("context"), value.get("subject")
    if not isinstance(context, dict) or not isinstance(subject, dict):
        raise ValueError("a CDEvent has a 'context' and a 'subject' object")
    for key in ("version", "id", "source", "type", "timestamp"):
        if not isinstance(context.get(key), str) or not context[key]:
            raise ValueError(f"context.{key} is required")
    if not _CDEVENT_TYPE.match(context["type"]):
        raise ValueError(f"context.type {context['type']!r} is not a CDEvents type")
    if not _RFC3339.match(context["timestamp"]):
        raise ValueError("context.timestamp is not an RFC 3339 time")
    if not isinstance(subject.get("id"), str) or not subject["id"]:
        raise ValueError("subject.id is required")
    if not isinstance(subject.get("content"), dict):
        raise ValueError("subject.content is required")
    return str(context["type"])


async def _cdevents(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
                    secret: Credentials) -> Accepted:
    event = webhook.headers.get("Ce-Type", "")
    try:
        check_cdevent(_json(webhook.body, "CDEvent"))
    except ValueError as exc:
        raise _bad("invalid payload", f"unable to validate CDEvent event: {exc}") from None
    _allow_event(spec, event, "CDEvent")
    log.info("handling CDEvent: %s", event)
    return Accepted(webhook.body)


def _bearer(webhook: Webhook) -> str:
    value = webhook.headers.get("Authorization", "")
    if not value.startswith("Bearer ") or not value[7:].strip():
        raise _bad("invalid signature", "the Authorization header is missing or malformed")
    return value[7:].strip()


async def _gcr(server: ReceiverServer, spec: ReceiverSpec, webhook: Webhook,
               secret: Credentials) -> Accepted:
    email = secret.data.get("email", b"").decode("utf-8", "replace")
    audience = secret.data.get("audience", b"").decode("utf-8", "replace")
    issuer = server.google_issuer
    accepted = {issuer, "accounts.google.com"} if issuer == GOOGLE_ISSUER else {issuer}
    try:
        claims = await server.oidc.verify(_bearer(webhook), issuer=issuer,
                                          audience=audience or None, issuers=accepted)
    except OIDCError as exc:
        raise _bad("invalid signature", f"cannot authenticate GCR request: {exc}") from None
    if email and claims.get("email") != email:
        raise _bad("invalid signature", f"cannot authenticate GCR request: token email is "
                                        f"{claims.get('email')!r}, want {email!r}")
    if claims.get("email_verified") is not True:
        raise _bad("invalid signature", "cannot authenticate GCR request: token email "
                                        f"{claims.get('email')!r} is not verified")
    message = _shape(_json(webhook.body, "GCR"), {"message": {"data": str}}, "GCR")
    data = (message.get("message") or {}).get("data") or ""
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    d = _shape(_json(raw, "GCR"), {"action": str, "digest": str, "tag": str}, "GCR")
    log.info("handling GCR event from %s for tag %s", d.get("digest", ""), d.get("tag", ""))
    unwrapped = {"action": d.get("action") or "", "digest": d.get("digest") or "",
                 "tag": d.get("tag") or ""}
    return Accepted(json.dumps(unwrapped).encode(), claims)


#: how each Receiver type authenticates and decodes a request (generic-oidc has no Secret
#: and is handled by ``ReceiverServer.validate_oidc``)
VALIDATORS: dict[str, Validator] = {
    "generic": _generic, "generic-hmac": _generic_hmac, "github": _github,
    "gitlab": _gitlab, "bitbucket": _bitbucket, "harbor": _harbor, "dockerhub": _dockerhub,
    "quay": _quay, "nexus": _nexus, "acr": _acr, "cdevents": _cdevents, "gcr": _gcr,
}


# --------------------------------------------------------------------------- plumbing


class ReceiverMetrics:
    """Flux's receiver HTTP metrics (go-http-metrics with prefix ``gotk_receiver``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["handler", "method", "code"]
        self.duration = Histogram("gotk_receiver_http_request_duration_seconds",
                                  "The latency of the HTTP requests.", labels,
                                  registry=registry)
        self.size = Histogram("gotk_receiver_http_response_size_bytes",
                              "The size of the HTTP responses.", labels,
                              buckets=tuple(100.0 * 10**i for i in range(8)),
                              registry=registry)
        self.inflight = Gauge("gotk_receiver_http_requests_inflight",
                              "The number of inflight requests being handled at the same "
                              "time.", ["handler"], registry=registry)
        self.body_bytes = Gauge("fluxd_receiver_request_body_bytes_inflight",
                                "Bytes of webhook request bodies held in memory.",
                                registry=registry)

    def observe(self, method: str, code: int, seconds: float, size: int) -> None:
        self.duration.labels(HANDLER_ID, method, str(code)).observe(seconds)
        self.size.labels(HANDLER_ID, method, str(code)).observe(size)


def _where(meta: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    """Log fields naming a Receiver, as Flux's receiver server logs them."""
    values: dict[str, Any] = {"reconciler kind": "Receiver", "name": meta.get("name"),
                              "namespace": meta.get("namespace"), **more}
    return fluxlog.fields(**values)


class ReceiverInformer(Protocol):
    """What the server needs of the Receiver informer."""

    def by_index(self, name: str, value: str) -> list[Obj]: ...


class ReceiverServer:
    """The webhook receiver HTTP server (see the module docstring)."""

    def __init__(self, *, client: KubeClient, receivers: ReceiverInformer, clock: Clock,
                 settings: Settings, metrics: ReceiverMetrics | None = None,
                 oidc: OIDCVerifier | None = None,
                 google_issuer: str = GOOGLE_ISSUER) -> None:
        n = settings.notification
        self.client = client
        self.receivers = receivers
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.oidc = oidc or OIDCVerifier(clock=clock)
        self.google_issuer = google_issuer
        self.max_body = n.receiver_max_body_size
        self.bodies = BodyReader(max_size=n.receiver_max_body_size,
                                 max_inflight=n.receiver_max_inflight_bytes, clock=clock,
                                 gauge=metrics.body_bytes if metrics is not None else None)
        #: token buckets by webhook path (see the module docstring)
        self.deliveries: TokenBuckets[str] = TokenBuckets(
            burst=n.receiver_rate_limit_burst, every=1.0 / n.receiver_rate_limit_qps,
            monotonic=clock.monotonic)
        self.failures: TokenBuckets[str] = TokenBuckets(
            burst=n.receiver_rate_limit_burst, every=1.0 / n.receiver_rate_limit_qps,
            monotonic=clock.monotonic)
        #: credentials read while their path's failure bucket was empty, by Secret, with
        #: when they were read (see the module docstring)
        self._flood_credentials: LRU[str, tuple[float, Credentials]] = LRU(
            _MAX_FLOODED_SECRETS)
        self.listener: listen.Listener | None = None
        self._started = clock.monotonic()

    def app(self) -> web.Application:
        # the cap on what aiohttp itself would buffer; the BodyReader reads in chunks anyway
        app = web.Application(client_max_size=self.max_body + 1)
        app.router.add_post(HOOK_PREFIX + "{digest}", self.handle)
        return app

    @contextlib.asynccontextmanager
    async def serve(self, address: str) -> AsyncIterator[listen.Listener]:
        """Serve on ``address`` for the length of the block (``listener`` says where)."""
        try:
            # lingering_time=0: an oversized body from a stranger is not drained
            async with listen.serve_app(address, self.app(), what="webhook receiver",
                                        log=log, lingering_time=0, limits=self.settings.http,
                                        clock=self.clock) as listener:
                self.listener = listener
                yield listener
        finally:
            self.listener = None
            await self.oidc.close()

    async def handle(self, request: web.Request) -> web.Response:
        started = self.clock.monotonic()
        if self.metrics is not None:
            self.metrics.inflight.labels(HANDLER_ID).inc()
        try:
            status, text = await self.answer(request)
        except Exception as exc:
            # a bug: answered without details, logged with them
            log.error("webhook request failed", extra=fluxlog.fields(
                with_stacktrace=True, error=f"{type(exc).__name__}: {exc}"))
            status, text = 500, "internal error"
        finally:
            if self.metrics is not None:
                self.metrics.inflight.labels(HANDLER_ID).dec()
        if self.metrics is not None:
            self.metrics.observe(request.method, status, self.clock.monotonic() - started,
                                 len(text))
        response = web.Response(status=status, text=text)
        if not request.content.is_eof():
            # the rest of the body is not waited for
            response.force_close()
        return response

    async def answer(self, request: web.Request) -> tuple[int, str]:
        """The status and body for one request."""
        found = self.receivers.by_index(WEBHOOK_PATH_INDEX, request.path)
        if not found:
            return 404, "404: Not Found"
        obj = found[0]
        meta = obj["metadata"]
        where = _where(meta)
        try:
            return await self.process(request, obj)
        except RequestRejected as exc:
            level = logging.INFO if exc.status == 429 else logging.ERROR
            log.log(level, "unable to process request: %s", exc, extra=where)
            return exc.status, exc.answer

    async def process(self, request: web.Request, obj: Obj) -> tuple[int, str]:
        path = request.path
        if not self.deliveries.ready(path):
            raise RequestRejected(429, "too many requests", "rate limit exceeded")
        try:
            spec: ReceiverSpec | None = ReceiverSpec.model_validate(obj.get("spec") or {})
            refused = ""
        except ValidationError as exc:
            spec, refused = None, f"invalid spec: {validation_text(exc)}"
        if spec is not None and spec.suspend:
            raise RequestRejected(503, "receiver unavailable", "receiver is suspended")
        if not cond.is_true((obj.get("status") or {}).get("conditions"), cond.READY):
            raise RequestRejected(503, "receiver unavailable", "receiver is not ready")
        if spec is None:
            # met only while a stale Ready lasts: the reconciler stalls such a Receiver
            raise RequestRejected(503, "receiver unavailable", refused)
        failed = 0
        try:
            async with self.bodies.read(request) as body:
                webhook = Webhook(request.headers, body)
                accepted = await self.validate(obj, spec, webhook,
                                               flooded=not self.failures.ready(path))
                delivered = self.deliveries.take(path)
                if delivered:
                    failed = await self.request_reconciliation(obj, spec, webhook, accepted)
        except RequestRejected as exc:
            # refused while reading or authenticating: only these spend the failure bucket
            if not self.failures.take(path):
                raise RequestRejected(429, "too many requests", "rate limit of failed "
                                      f"requests exceeded: {exc}") from None
            raise
        if not delivered:
            raise RequestRejected(429, "too many requests", "rate limit exceeded")
        if failed:
            return 500, "failed to request reconciliation"
        return 200, "ok"

    async def validate(self, obj: Obj, spec: ReceiverSpec, webhook: Webhook, *,
                       flooded: bool = False) -> Accepted:
        """What the request delivers, once authenticated; ``RequestRejected`` otherwise.
        ``flooded``: the path's failure bucket is empty (see ``credentials``)."""
        if spec.type == "generic-oidc":
            return await self.validate_oidc(spec, webhook)
        validator = VALIDATORS.get(spec.type)
        if validator is None:
            raise _bad("receiver type not supported by fluxd",
                       f"receiver type {spec.type!r} not supported")
        secret = await self.credentials(obj, spec, flooded=flooded)
        return await validator(self, spec, webhook, secret)

    async def credentials(self, obj: Obj, spec: ReceiverSpec, *,
                          flooded: bool = False) -> Credentials:
        """The Receiver's Secret, read now; while ``flooded``, one read within the last
        refill interval of the rate limit is shared instead."""
        ns = obj["metadata"].get("namespace", "")
        if spec.secret_ref is None:
            raise _bad("invalid request", "spec.secretRef is required")
        name = spec.secret_ref.name
        key = f"{ns}/{name}"
        now = self.clock.monotonic()
        if not flooded:
            self._flood_credentials.pop(key)
        elif (kept := self._flood_credentials.peek(key)) is not None and \
                now - kept[0] < self.failures.every:
            return kept[1]
        try:
            secret = await self.client.get("v1", "Secret", name, ns)
        except KubeError as exc:
            raise _bad("invalid request", f"unable to read secret '{ns}/{name}': "
                                          f"{exc}") from None
        try:
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        except (binascii.Error, ValueError, TypeError):
            raise _bad("invalid request", f"invalid '{ns}/{name}' secret data") from None
        token = data.get("token")
        if not token:
            # go-github skips the check for an empty secret; fluxd accepts nothing then
            raise _bad("invalid request", f"invalid '{ns}/{name}' secret data: required "
                                          "field 'token'")
        credentials = Credentials(token, data)
        if flooded:
            self._flood_credentials.put(key, (now, credentials))
        return credentials

    async def validate_oidc(self, spec: ReceiverSpec, webhook: Webhook) -> Accepted:
        token = _bearer(webhook)
        try:
            _, unverified, _, _ = unverified_claims(token)
            issuer = unverified.get("iss")
            provider = next((p for p in spec.oidc_providers or [] if p.issuer_url == issuer),
                            None)
            if provider is None:
                raise OIDCError(f"no oidcProvider configured for issuer {issuer!r}")
            claims = await self.oidc.verify(token, issuer=provider.issuer_url,
                                            audience=provider.audience or
                                            DEFAULT_OIDC_AUDIENCE)
            check = ClaimsCheck.compile(provider)
        except (OIDCError, CELError) as exc:
            raise _bad("invalid signature", f"failed to verify OIDC token: {exc}") from None
        try:
            check.evaluate(claims)
        except ValueError as exc:
            raise _bad("invalid signature", str(exc)) from None
        return Accepted(webhook.body, claims)

    # --- annotating ---------------------------------------------------------------------

    async def request_reconciliation(self, obj: Obj, spec: ReceiverSpec, webhook: Webhook,
                                     accepted: Accepted) -> int:
        """Annotate every selected resource; the number of entries that failed."""
        meta = obj["metadata"]
        where = _where(meta)
        try:
            common, own = compile_filters(spec)
            variables = self.filter_variables(webhook, accepted) \
                if common is not None or any(own) else {}
        except (CELError, ValueError) as exc:
            log.error("unable to create resource filter: %s", exc, extra=where)
            return len(spec.resources) or 1
        failed = 0
        for resource, expression in zip(spec.resources, own, strict=True):
            filters = [e for e in (expression, common) if e is not None]
            try:
                await self.reconcile_resource(meta.get("namespace", ""), resource, filters,
                                              variables)
            except (ResourceError, KubeError, CELError) as exc:
                log.error("unable to request reconciliation: %s", exc, extra=_where(
                    meta, resource=f"{resource.kind}/{resource.name}"))
                failed += 1
        return failed

    @staticmethod
    def filter_variables(webhook: Webhook, accepted: Accepted) -> dict[str, Any]:
        """``req`` (the JSON body when the request says it is JSON, else ``{}``) and
        ``claims``, as Flux's resource filters see them."""
        req: Any = {}
        if webhook.media_type == "application/json":
            try:
                req = json.loads(accepted.body)
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"failed to parse request body as JSON: {exc}") from None
            if not isinstance(req, dict):
                raise ValueError("failed to parse request body as JSON: not an object")
        return {"req": req, "claims": dict(accepted.claims or {})}

    async def reconcile_resource(self, default_namespace: str, resource: ReceiverResource,
                                 filters: list[Expression], variables: Mapping[str, Any]
                                 ) -> None:
        namespace = default_namespace
        if resource.namespace:
            if self.settings.access.no_cross_namespace_refs and \
                    resource.namespace != default_namespace:
                raise ResourceError("cross-namespace references are not allowed")
            namespace = resource.namespace
        api_version = resource.api_version or DEFAULT_API_VERSIONS.get(resource.kind)
        if not api_version:
            raise ResourceError(f"apiVersion must be specified for kind {resource.kind!r}")
        if resource.name != "*":
            target: Obj = {"apiVersion": api_version, "kind": resource.kind,
                           "metadata": {"name": resource.name, "namespace": namespace}}
            if filters:
                target = await self.client.get(api_version, resource.kind, resource.name,
                                               namespace)
            await self.notify(target, api_version, resource.kind, filters, variables)
            return
        if resource.match_labels is None:
            raise ResourceError("matchLabels field not set when using wildcard '*' as name")
        # as controller-runtime's MatchingLabels writes it; the API server judges it
        selector = str(labelselector.from_set(resource.match_labels))
        listed = await self.client.list_all(api_version, resource.kind, namespace,
                                            label_selector=selector or None)
        if not listed.items:
            log.error("no %r resources found with matching labels %r in %r namespace",
                      resource.kind, resource.match_labels, namespace)
            return
        for item in listed.items:
            await self.notify(item, api_version, resource.kind, filters, variables)

    async def notify(self, target: Obj, api_version: str, kind: str,
                     filters: list[Expression], variables: Mapping[str, Any]) -> None:
        meta = target.get("metadata") or {}
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
        res = {"apiVersion": api_version, "kind": kind, "metadata": meta}
        for expression in filters:
            if not expression.evaluate_bool({**variables, "res": res}):
                log.debug("resource '%s/%s.%s' NOT annotated because CEL expression "
                          "returned false", kind, name, namespace)
                return
        value = go_time_string(self.clock.now(), self.clock.monotonic() - self._started)
        await self.client.merge_patch(
            api_version, kind, name,
            {"metadata": {"annotations": {cond.RECONCILE_REQUEST_ANNOTATION: value}}},
            namespace)
        log.info("resource '%s/%s.%s' annotated", kind, name, namespace)
