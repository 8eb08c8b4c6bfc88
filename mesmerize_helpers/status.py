"""One item's state for the getters: is it done, or why not (see :mod:`.runstate`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from .batch import batch_states, lineage, read_table
from .errors import ItemNotCurrentError
from .runstate import OUTDATED, STALE, ItemState


def item_state(batch_path: str | os.PathLike, uuid: str) -> ItemState | None:
    """One item's state (reading only its own and its ancestors' manifests), or None when
    the batch file has no such item (a row that only lives in memory)."""
    batch_path = Path(batch_path).resolve()
    stat = batch_path.stat()
    rows = {r["uuid"]: r for r in _rows_cached(str(batch_path),
                                                (stat.st_ino, stat.st_mtime_ns, stat.st_size))}
    if uuid not in rows:
        return None
    chain = lineage(uuid, {u: r["parent"] for u, r in rows.items()})
    return batch_states(batch_path, [rows[u] for u in chain])[uuid]


def check_current(batch_path: str | os.PathLike, uuid: str) -> None:
    """Raise :class:`~.errors.ItemNotCurrentError` when a successfully run item is outdated
    or stale (what every getter checks)."""
    state = item_state(batch_path, uuid)
    if state is not None and state.state in (OUTDATED, STALE):
        raise ItemNotCurrentError(f"Item {uuid} is {state.reason}")


@functools.lru_cache(maxsize=8)
def _rows_cached(batch_path: str, version: tuple[int, int, int]) -> tuple[dict[str, Any], ...]:
    # getters check that results are current on every call: parse the TSV once per version
    return tuple(read_table(batch_path))
