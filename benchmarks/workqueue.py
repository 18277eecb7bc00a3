"""Benchmark of the shared work queue: keys per second through add -> get -> done.

One producer adds keys of several kinds (one add in ten repeats a recent key, which the
queue folds into the queued one or runs once more after the current run), while each kind
has a few workers that get a key, yield to the loop once (standing in for a reconcile) and
call done. Real clock; the run is bounded by ``--items`` and ``--seconds``.

    .venv/bin/python -m benchmarks.workqueue [--items 200000] [--seconds 60]

Reports adds/s and processed keys/s (the figure to watch; the target is >= 20,000/s on
two cores), and how many adds were folded into keys already queued.
"""

from __future__ import annotations

import argparse
import asyncio
import random

import anyio

from fluxd.clock import SystemClock
from fluxd.runtime.reconcile import ObjectKey
from fluxd.runtime.workqueue import WorkQueue

#: Flux's default --concurrent per controller
LIMITS = {"GitRepository": 2, "OCIRepository": 2, "HelmChart": 2, "Kustomization": 4,
          "HelmRelease": 4, "Alert": 4}
WORKERS_PER_KIND = 3
BATCH = 200


async def bench(items: int, seconds: float) -> dict[str, float]:
    clock = SystemClock()
    queue = WorkQueue(clock=clock, kind_limits=LIMITS)
    kinds = list(LIMITS)
    rng = random.Random(1)
    processed = 0
    added = 0
    recent: list[ObjectKey] = []

    async def worker(kind: str) -> None:
        nonlocal processed
        while (key := await queue.get(kind)) is not None:
            await asyncio.sleep(0)
            queue.done(key)
            processed += 1

    async def produce() -> None:
        nonlocal added
        deadline = clock.monotonic() + seconds
        for i in range(items):
            if recent and rng.random() < 0.1:
                key = rng.choice(recent)
            else:
                key = ObjectKey(kinds[i % len(kinds)], f"ns-{i % 50}", f"obj-{i}")
                recent.append(key)
                if len(recent) > 1000:
                    del recent[:500]
            queue.add(key)
            added += 1
            if i % BATCH == 0:
                # Let the workers keep up, as a busy API watch would (bounded spin).
                for _ in range(10_000):
                    await asyncio.sleep(0)
                    if len(queue) <= 4 * BATCH:
                        break
                if clock.monotonic() > deadline:
                    break

    start = clock.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(queue.run)
        for kind in kinds:
            for _ in range(WORKERS_PER_KIND):
                group.start_soon(worker, kind)
        await produce()
        drained = await queue.shut_down_with_drain(seconds)
    elapsed = clock.monotonic() - start
    return {"adds": added, "processed": processed, "seconds": elapsed,
            "adds_per_s": added / elapsed, "processed_per_s": processed / elapsed,
            "folded": added - processed, "drained": float(drained)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000, help="adds to make")
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on the run")
    args = parser.parse_args()
    result = asyncio.run(bench(args.items, args.seconds))
    print(f"work queue: {int(result['adds'])} adds, {int(result['processed'])} processed "
          f"({int(result['folded'])} adds folded into queued keys) "
          f"in {result['seconds']:.2f} s, drained={bool(result['drained'])}")
    print(f"  adds/s:      {result['adds_per_s']:,.0f}")
    print(f"  processed/s: {result['processed_per_s']:,.0f}  (items/s, target >= 20,000)")


if __name__ == "__main__":
    main()
