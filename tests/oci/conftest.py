"""Real registries for the OCI tests (Debian's ``docker-registry``), all on 127.0.0.1.

Registries whose state tests only add to are shared by a module; ones whose counters a
test reads are its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import FakeClock
from tests.support.registry import Registry, RegistryUnavailable, ensure_registry

USER, PASSWORD = "flux-user", "s3cr3t-Pa55word"


def start_registry(root: Path, **options: Any) -> Registry:
    try:
        ensure_registry()
    except RegistryUnavailable as exc:
        pytest.fail(f"{exc}; the Makefile's test target installs it")
    return Registry(root, **options).start()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Anonymous, plain HTTP."""
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """htpasswd basic auth for USER / PASSWORD."""
    reg = start_registry(tmp_path_factory.mktemp("basic-registry"), users={USER: PASSWORD})
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[Registry]:
    """Token auth: USER / PASSWORD at the token server; tokens live 120 s."""
    reg = start_registry(tmp_path / "token-registry", users={USER: PASSWORD},
                         token_auth=True, token_expires_in=120,
                         refresh_tokens={"refresh-0123": USER})
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Anonymous, HTTPS with a certificate from a CA of its own (``ca_pem``)."""
    reg = start_registry(tmp_path_factory.mktemp("tls-registry"), tls=True)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
