"""Keychains from docker config Secrets, challenges and the token cache."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from fluxd.clock import FakeClock
from fluxd.oci.auth import (
    AuthenticationError,
    Challenge,
    Credentials,
    Keychain,
    TokenCache,
    parse_challenges,
)


def secret(config: object, *,
           secret_type: str = "kubernetes.io/dockerconfigjson") -> dict[str, Any]:
    raw = base64.b64encode(json.dumps(config).encode()).decode()
    return {"type": secret_type, "metadata": {"name": "regcred"},
            "data": {".dockerconfigjson": raw}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_dockerconfigjson_secret_gives_credentials_by_registry_host() -> None:
    keychain = Keychain.from_secret(secret({"auths": {
        "https://ghcr.io": {"auth": b64("octo:ghp_token:with:colons")},
        "registry.example.com:5000": {"username": "alice", "password": "pw"},
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
        "*.azurecr.io": {"username": "00000000-0000", "password": "acr"},
        "quay.io/team-a": {"username": "team-a", "password": "a"},
        "quay.io": {"username": "quay", "password": "q"},
    }}))
    ghcr = keychain.lookup("ghcr.io")
    assert ghcr == Credentials(username="octo", password="ghp_token:with:colons")
    assert keychain.lookup("registry.example.com:5000") == Credentials(username="alice",
                                                                       password="pw")
    assert keychain.lookup("registry.example.com") is None  # the port is part of the host
    assert keychain.lookup("docker.io") == Credentials(username="hub", password="hubpw")
    assert keychain.lookup("index.docker.io") == keychain.lookup("registry-1.docker.io")
    assert keychain.lookup("flux.azurecr.io") == Credentials(username="00000000-0000",
                                                             password="acr")
    assert keychain.lookup("a.b.azurecr.io") is None  # '*' is one label
    assert keychain.lookup("quay.io", "team-a/app").username == "team-a"  # type: ignore[union-attr]
    assert keychain.lookup("quay.io", "team-b/app").username == "quay"  # type: ignore[union-attr]
    assert keychain.lookup("gcr.io") is None


def test_a_secret_of_another_type_or_without_the_key_is_refused() -> None:
    with pytest.raises(AuthenticationError, match=r"want 'kubernetes\.io/dockerconfigjson'"):
        Keychain.from_secret(secret({"auths": {}}, secret_type="Opaque"))
    with pytest.raises(AuthenticationError, match=r"no '\.dockerconfigjson' key"):
        Keychain.from_secret({"type": "kubernetes.io/dockerconfigjson", "data": {}})
    with pytest.raises(AuthenticationError, match="not user:password"):
        Keychain.from_docker_config({"auths": {"ghcr.io": {"auth": b64("no-colon")}}})
    with pytest.raises(AuthenticationError, match="not valid JSON"):
        Keychain.from_docker_config(b"{")


def test_secrets_stay_out_of_reprs() -> None:
    creds = Credentials(username="u", password="hunter2", identity_token="idtok",
                        registry_token="regtok")
    keychain = Keychain({"ghcr.io": creds})
    text = repr(creds) + repr(keychain)
    assert "hunter2" not in text and "idtok" not in text and "regtok" not in text
    assert "ghcr.io" in repr(keychain)


def test_challenges_are_parsed_with_quoted_commas_and_several_per_header() -> None:
    header = ('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
              'scope="repository:org/app:pull,push"')
    assert parse_challenges(header) == [Challenge("bearer", {
        "realm": "https://auth.example.com/token", "service": "registry.example.com",
        "scope": "repository:org/app:pull,push"})]
    both = parse_challenges(['Basic realm="Registry Realm"',
                             'Bearer realm="r", error="insufficient_scope"'])
    assert [(c.scheme, c.realm) for c in both] == [("basic", "Registry Realm"), ("bearer", "r")]
    assert both[1].params["error"] == "insufficient_scope"
    assert parse_challenges('Basic realm="a \\"quoted\\" realm", Bearer realm=x') == [
        Challenge("basic", {"realm": 'a "quoted" realm'}), Challenge("bearer", {"realm": "x"})]


def test_cached_tokens_expire_on_the_injected_clock_a_little_early() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.put(("r", "scope"), "tok", 300)
    clock.advance(294)
    assert cache.get(("r", "scope")) == "tok"
    clock.advance(1.5)
    assert cache.get(("r", "scope")) is None and len(cache) == 0
    cache.put(("r", "short"), "t2", 10)  # the margin is at most a tenth of the lifetime
    clock.advance(8.9)
    assert cache.get(("r", "short")) == "t2"
    clock.advance(0.2)
    assert cache.get(("r", "short")) is None
