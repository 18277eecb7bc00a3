"""``status.history``: snapshots of the last reconciliations, as Flux's ``meta.History``.

A snapshot is keyed by (digest, status): reconciling the same resources with the same
result again updates that snapshot (last time, duration, count, metadata) and moves it to
the front; anything else adds a new one. The list is newest first by ``lastReconciled``
and keeps at most ``HISTORY_MAX_SIZE`` entries. Pure functions over the JSON form.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from fluxd.api.meta import HISTORY_MAX_SIZE
from fluxd.clock import format_duration, rfc3339

Obj = dict[str, Any]


def upsert(history: Sequence[Mapping[str, Any]] | None, *, digest: str,
           now: datetime.datetime, duration: float, status: str,
           metadata: Mapping[str, str] | None = None) -> list[Obj]:
    """``history`` with this reconciliation recorded (a new list; the input is kept)."""
    out = [copy.deepcopy(dict(s)) for s in history or ()]
    when = rfc3339(now)
    found = next((s for s in out if s.get("digest") == digest
                  and s.get("lastReconciledStatus") == status), None)
    if found is None:
        found = {"digest": digest, "firstReconciled": when, "totalReconciliations": 0}
        out.append(found)
    found["lastReconciled"] = when
    found["lastReconciledDuration"] = format_duration(duration)
    found["lastReconciledStatus"] = status
    found["totalReconciliations"] = int(found.get("totalReconciliations") or 0) + 1
    if metadata:
        found["metadata"] = dict(metadata)
    else:
        found.pop("metadata", None)
    # newest first; the entry just written wins ties (same second)
    out.sort(key=lambda s: (str(s.get("lastReconciled") or ""), s is found), reverse=True)
    return out[:HISTORY_MAX_SIZE]
