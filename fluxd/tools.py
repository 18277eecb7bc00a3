"""Where the external tools (``helm``, ``kubectl``) are: the path ``[tools]`` configures,
else the one next to this Python (the ``.venv`` the Makefile builds), else on ``PATH``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_tool(name: str, configured: str | None = None) -> str | None:
    """The binary for ``name``; None when there is none."""
    if configured:
        return configured
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)
