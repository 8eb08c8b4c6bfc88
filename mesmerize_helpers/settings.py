"""A batch folder's settings sidecar: what every tool must agree on to resolve its paths.

Movie paths under the raw-data directory are stored relative to it
(:func:`mesmerize_helpers.set_parent_raw_data_path`). That directory used to live only in the
notebook's memory, so ``snakemake`` and ``mesmerize-helpers run`` could not find those
movies. It is now also written to ``mesmerize-settings.json`` beside the batch TSV whenever
the batch is written with a raw-data directory set (or ``mesmerize-helpers run --raw-data``
is used), and the Snakefile, the command line and the accessors read it from there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SETTINGS_FILE = "mesmerize-settings.json"


def settings_path(batch_dir: str | os.PathLike) -> Path:
    """The sidecar of the batches in ``batch_dir``."""
    return Path(batch_dir) / SETTINGS_FILE


def read_settings(batch_dir: str | os.PathLike) -> dict[str, Any]:
    """The sidecar's settings, or {} when there is none or it is unreadable."""
    try:
        data = json.loads(settings_path(batch_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remembered_raw_data(batch_dir: str | os.PathLike) -> Path | None:
    """The raw-data directory remembered for the batches in ``batch_dir``, or None."""
    value = read_settings(batch_dir).get("raw_data")
    return Path(value) if value else None


def remember_raw_data(batch_dir: str | os.PathLike, raw_data: str | os.PathLike) -> None:
    """Record ``raw_data`` as the raw-data directory of the batches in ``batch_dir`` (a
    no-op when it is already recorded, so read-only batch folders are not written to)."""
    from .manifest import write_json_atomic

    raw_data = str(Path(raw_data).expanduser().resolve())
    settings = read_settings(batch_dir)
    if settings.get("raw_data") == raw_data:
        return
    write_json_atomic(settings_path(batch_dir), {**settings, "raw_data": raw_data})
