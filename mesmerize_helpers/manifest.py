"""Each item's ``manifest.json``: what ran, on what, with which engine, and what it produced.

A successful run writes ``manifest.json`` last and atomically: a folder without one is an
incomplete run. A run that raised writes ``manifest.failed.json`` instead (same fields,
``success: false`` and the traceback), because Snakemake removes the declared output
(``manifest.json``) of a failed job, and the batch must still show why it failed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FAILED_MANIFEST = "manifest.failed.json"


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` via a temp file, fsync and rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write an item's manifest; the failed variant when ``manifest["success"]`` is false.

    Writing either removes the other, so the folder always tells the latest outcome.
    """
    folder = Path(folder)
    ok = bool(manifest.get("success"))
    target, other = (MANIFEST, FAILED_MANIFEST) if ok else (FAILED_MANIFEST, MANIFEST)
    (folder / other).unlink(missing_ok=True)
    write_json_atomic(folder / target, manifest)
    return folder / target


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Return an item's manifest (successful or failed), or None when it has not finished."""
    folder = Path(folder)
    for name in (MANIFEST, FAILED_MANIFEST):
        path = folder / name
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return None


def update_manifest(folder: str | os.PathLike, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into a successful item's manifest (e.g. after re-evaluation)."""
    manifest = read_manifest(folder)
    if manifest is None or not manifest.get("success"):
        raise FileNotFoundError(f"No successful manifest in {folder}.")
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key].update(value)
        else:
            manifest[key] = value
    write_manifest(folder, manifest)
    return manifest
