"""Copying JSON values: objects here are plain JSON (dicts, lists, str, numbers, bools,
None), so a copy through the C JSON codec is exact and several times faster than
``copy.deepcopy``, which matters on the write path of every request."""

from __future__ import annotations

import json
from typing import Any, TypeVar

T = TypeVar("T")

_dumps = json.JSONEncoder(ensure_ascii=False, check_circular=False,
                          separators=(",", ":")).encode
_loads = json.JSONDecoder().decode


def clone(value: T) -> T:
    """A deep copy of a JSON value."""
    copied: Any = _loads(_dumps(value))
    return copied  # type: ignore[no-any-return]
