from __future__ import annotations

from pathlib import Path

import pytest

from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> ArtifactStore:
    return ArtifactStore(tmp_path / "storage", clock=clock,
                         advertised="source-controller.flux-system.svc.cluster.local.")
