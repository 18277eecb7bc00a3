"""Benchmark of artifact archiving: a generated source tree to a reproducible ``.tar.gz``.

Generates a tree of ``--files`` files (default 5,000) of mixed sizes, like a GitOps repo
with some vendored charts and binaries: mostly small YAML-like text, some medium text,
a few large partly incompressible files. Then, on the local filesystem only, it times

* ``ArtifactStore.archive`` (walk, tar headers, gzip level 6, sha256, fsync, rename),
* ``tar czf`` of the same tree (GNU tar + gzip, the same compression level),
* ``extract_tarball`` of fluxd's artifact,

taking the best of ``--runs`` runs each, and reports files/s, MB/s of input and the
ratio of fluxd's time to tar's (lower is better; 1.0 means as fast as ``tar czf``).

    .venv/bin/python -m benchmarks.artifacts [--files 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fluxd.artifacts.extract import extract_tarball
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import SystemClock

WORDS = ("apiVersion", "kind", "metadata", "name", "namespace", "spec", "replicas", "image",
         "containers", "ports", "containerPort", "resources", "limits", "memory", "cpu",
         "labels", "app", "selector", "matchLabels", "template", "value", "env", "true")


def corpus(rng: random.Random, size: int = 4 << 20) -> bytes:
    """YAML-like text to cut files from (compresses about as well as manifests do)."""
    lines = []
    total = 0
    while total < size:
        indent = "  " * rng.randrange(4)
        line = f"{indent}{rng.choice(WORDS)}: {rng.choice(WORDS)}-{rng.randrange(10_000)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def generate(root: Path, files: int, seed: int = 1) -> int:
    """Write the tree; returns its total size in bytes."""
    rng = random.Random(seed)
    source = corpus(rng)

    def text(size: int) -> bytes:
        start = rng.randrange(len(source) - size)
        return source[start:start + size]

    total = 0
    for i in range(files):
        depth = rng.randrange(1, 5)
        parts = [f"d{rng.randrange(12)}" for _ in range(depth - 1)]
        roll = rng.random()
        if roll < 0.90:
            name, data = f"f{i}.yaml", text(rng.randrange(100, 4096))
        elif roll < 0.99:
            name, data = f"f{i}.yaml", text(rng.randrange(16 << 10, 64 << 10))
        else:
            size = rng.randrange(256 << 10, 1 << 20)
            name, data = f"f{i}.bin", rng.randbytes(size // 2) + text(size - size // 2)
        path = root.joinpath(*parts, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        total += len(data)
    return total


def best_of(runs: int, action: Callable[[int], object]) -> float:
    best = float("inf")
    for run in range(runs):
        start = time.perf_counter()
        action(run)
        best = min(best, time.perf_counter() - start)
    return best


def bench(files: int, runs: int, workdir: Path) -> dict[str, float]:
    source = workdir / "src"
    size = generate(source, files)
    store = ArtifactStore(workdir / "storage", clock=SystemClock(), advertised="localhost")
    record = store.archive("GitRepository", "bench", "tree", source, "warm.tar.gz")

    def archive(run: int) -> None:
        store.archive("GitRepository", "bench", "tree", source, f"run{run}.tar.gz")

    def tar_czf(run: int) -> None:
        subprocess.run(["tar", "-C", str(source), "-czf", str(workdir / f"tar{run}.tar.gz"),
                        "."], check=True, timeout=300)

    def extract(run: int) -> None:
        extract_tarball(store.local_path(record.path), workdir / f"out{run}")

    fluxd_s = best_of(runs, archive)
    tar_s = best_of(runs, tar_czf)
    extract_s = best_of(runs, extract)
    return {"files": files, "bytes": size, "fluxd_s": fluxd_s, "tar_s": tar_s,
            "extract_s": extract_s, "fluxd_size": record.size,
            "tar_size": (workdir / "tar0.tar.gz").stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the tree")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best counts")
    args = parser.parse_args()
    if shutil.which("tar") is None:
        raise SystemExit("needs tar on PATH for the comparison")
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-") as tmp:
        r = bench(args.files, args.runs, Path(tmp))
    mb = r["bytes"] / 1e6
    print(f"artifacts: {int(r['files'])} files, {mb:.1f} MB, best of {args.runs} runs")
    print(f"  fluxd archive: {r['fluxd_s']:.3f} s  {r['files'] / r['fluxd_s']:,.0f} files/s  "
          f"{mb / r['fluxd_s']:.1f} MB/s  -> {r['fluxd_size'] / 1e6:.2f} MB")
    print(f"  tar czf:       {r['tar_s']:.3f} s  {r['files'] / r['tar_s']:,.0f} files/s  "
          f"{mb / r['tar_s']:.1f} MB/s  -> {r['tar_size'] / 1e6:.2f} MB")
    print(f"  ratio fluxd/tar: {r['fluxd_s'] / r['tar_s']:.2f}x the time")
    print(f"  fluxd extract: {r['extract_s']:.3f} s  {r['files'] / r['extract_s']:,.0f} files/s")


if __name__ == "__main__":
    main()
