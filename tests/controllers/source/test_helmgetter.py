"""fluxd.controllers.source.helmgetter: repository URLs and client options from Secrets."""

from __future__ import annotations

import re

import pytest

from fluxd.controllers.source.helmgetter import (
    ClientOptions,
    CredentialsError,
    InvalidURL,
    TLSData,
    index_url,
    ssl_context,
)
from tests.support.pki import CertificateAuthority


@pytest.mark.parametrize(("url", "index"), [
    ("https://charts.example.com", "https://charts.example.com/index.yaml"),
    ("https://charts.example.com/", "https://charts.example.com/index.yaml"),
    ("https://example.com/a/b//", "https://example.com/a/b/index.yaml"),
    ("http://127.0.0.1:8080/charts?token=x", "http://127.0.0.1:8080/charts/index.yaml?token=x"),
    ("http://[::1]:8080/charts", "http://[::1]:8080/charts/index.yaml"),
])
def test_the_index_is_index_yaml_under_the_repository_url(url: str, index: str) -> None:
    assert index_url(url) == index


@pytest.mark.parametrize(("url", "problem"), [
    ("http://exa mple.com/", 'invalid character " " in host name'),
    ("http://example.com:http/", 'invalid port ":http" after host'),
    ("https://", "missing host"),
    ("http://[::1/charts", "Invalid IPv6 URL"),
])
def test_urls_that_cannot_work_are_invalid(url: str, problem: str) -> None:
    with pytest.raises(InvalidURL, match=re.escape(problem)):
        index_url(url)


def options(auth: dict[str, bytes] | None = None, cert: dict[str, bytes] | None = None, *,
            cert_type: str = "Opaque") -> ClientOptions:
    return ClientOptions.from_secrets(
        timeout=60, pass_credentials=False,
        auth=None if auth is None else ("auth", "Opaque", auth),
        cert=None if cert is None else ("certs", cert_type, cert))


def test_basic_auth_needs_both_username_and_password_or_neither() -> None:
    assert (options({"username": b"u", "password": b"p"}).username, options({}).username) \
        == ("u", "")
    with pytest.raises(CredentialsError, match="required fields 'username' and 'password'"):
        options({"password": b"p"})


def test_cert_secret_ref_wins_over_the_deprecated_secret_ref_keys() -> None:
    ca = CertificateAuthority.create().ca_pem
    chosen = options({"caFile": b"legacy"}, {"ca.crt": ca})
    assert (chosen.tls, chosen.legacy_tls) == (TLSData(ca=ca), False)
    legacy = options({"caFile": ca})
    assert (legacy.tls, legacy.legacy_tls) == (TLSData(ca=ca), True)
    assert options({}, {}).tls is None


def test_tls_secrets_are_checked_as_flux_checks_them() -> None:
    with pytest.raises(CredentialsError, match="both certificate and private key"):
        options(cert={"tls.crt": b"cert only"})
    wrong_type = re.escape("invalid secret type: 'kubernetes.io/basic-auth'")
    with pytest.raises(CredentialsError, match=wrong_type):
        options(cert={"ca.crt": b"x"}, cert_type="kubernetes.io/basic-auth")
    with pytest.raises(CredentialsError, match="invalid CA certificate"):
        ssl_context(TLSData(ca=b"not a certificate"))


def test_a_client_key_pair_and_ca_make_a_verifying_tls_1_2_context() -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue("fluxd", client=True)
    context = ssl_context(TLSData(cert=pair.cert, key=pair.key, ca=ca.ca_pem))
    assert context.check_hostname and context.minimum_version.name == "TLSv1_2"
    with pytest.raises(CredentialsError, match="invalid client certificate or key"):
        ssl_context(TLSData(cert=pair.cert, key=ca.issue("other").key))
