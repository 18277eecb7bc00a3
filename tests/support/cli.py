"""Running the ``fluxd`` command the way a user does, in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def fluxd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxd", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
