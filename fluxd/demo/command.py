"""The installed ``kubectl`` and ``helm``, run as a user would, their output going straight
to ours."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from fluxd import tools
from fluxd.clock import Clock

#: how long one command may take
TIMEOUT = 60.0


def find_tool(name: str, configured: str | None = None) -> str:
    """A tool binary (``fluxd.tools.find_tool``); the demo cannot go on without it."""
    found = tools.find_tool(name, configured)
    if found is None:
        raise SystemExit(f"{name} not found: install it or run `make demo`, which does")
    return found


async def run(binary: str, kubeconfig: Path, *args: str, clock: Clock) -> int:
    """``<binary> <args>`` against ``kubeconfig``, echoed first as ``$ <tool> <args>``; its
    exit status (1 when it takes longer than ``TIMEOUT`` on ``clock``)."""
    tool = Path(binary).name
    print(f"\n$ {tool} {' '.join(args)}", flush=True)
    proc = await asyncio.create_subprocess_exec(
        binary, *args, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    try:
        async with clock.timeout(TIMEOUT):
            return await proc.wait()
    except TimeoutError:
        print(f"{tool} {args[0]} took longer than {TIMEOUT:.0f}s", file=sys.stderr)
        return 1
    finally:
        if proc.returncode is None:  # timed out or cancelled (Ctrl-C)
            proc.kill()
            await proc.wait()
