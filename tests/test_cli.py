"""The fluxd command: the dev-cluster command and configuration."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fluxd import config
from tests.support.cli import fluxd


def test_dev_cluster_help_says_it_is_for_development_only() -> None:
    done = fluxd("dev-cluster", "--help")
    assert done.returncode == 0
    assert "DEVELOPMENT server" in done.stdout and "not meant for production" in done.stdout
    assert "devcluster.fluxd.io/simulate=fail" in done.stdout


def test_example_config_is_valid_and_complete() -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    settings = config.load(example)
    assert settings == config.Settings()  # the example states the defaults


def test_flags_win_over_environment_over_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fluxd.toml"
    path.write_text("[devcluster]\nport = 7000\nready_delay = 2.0\n")
    assert config.load(path).devcluster.port == 7000
    monkeypatch.setenv("FLUXD_DEVCLUSTER__PORT", "7100")
    assert config.load(path).devcluster.port == 7100
    assert config.load(path).devcluster.ready_delay == 2.0
    assert config.load(path, devcluster={"port": 7200}).devcluster.port == 7200


def test_unknown_and_invalid_settings_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "fluxd.toml"
    path.write_text("[devcluster]\nprot = 7000\n")
    with pytest.raises(ValueError, match="prot"):
        config.load(path)
    path.write_text("[devcluster]\nport = -1\n")
    with pytest.raises(ValueError, match="port"):
        config.load(path)
    done = fluxd("--config", str(path), "dev-cluster")
    assert done.returncode != 0 and "invalid configuration" in done.stderr
    with pytest.raises(FileNotFoundError):
        config.load(tmp_path / "missing.toml")



def test_dev_runs_the_manager_on_an_embedded_cluster_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fluxd", "dev", "--port", "0",
                             "--kubeconfig", str(tmp_path / "kubeconfig"),
                             "--metrics-addr", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    ready = r.status == 200
            except OSError:
                time.sleep(0.1)
        assert ready
        assert (tmp_path / "kubeconfig").exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "development cluster (in memory, not for production)" in out
        assert "\tinfo\t" in out  # console log format for fluxd dev
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_example_config_documents_every_setting() -> None:
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    for group, model in config.Settings.model_fields.items():
        assert f"[{group}]" in text, group
        annotation = model.annotation
        assert annotation is not None
        for key in annotation.model_fields:  # type: ignore[union-attr]
            assert re.search(rf"^#? ?{key} = ", text, re.M), f"{group}.{key}"


def test_hot_reloadable_settings_are_marked_hot_in_the_example() -> None:
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    for name in config.HOT_RELOADABLE:
        group = name.partition(".")[0]
        section = text.split(f"[{group}]", 1)[1].split("\n[", 1)[0]
        assert "[hot]" in section, name
