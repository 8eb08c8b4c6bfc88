"""Each item's ``manifest.json``: what ran, on what, with which engine, and what it produced.

A successful run moves its files into the item folder and then writes ``manifest.json``,
atomically: a folder without one holds no finished run. A run that raised writes
``manifest.failed.json`` instead (same fields, ``success: false`` and the traceback).
Snakemake's own output of an item's job is the marker file :data:`DONE` (see
:mod:`.commit`), never the manifest, so Snakemake never deletes a manifest.

Every file written here follows the umask (``mkstemp`` alone would make it 0600, unreadable
to a colleague) and a replaced file keeps its mode.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .locks import COMMIT_LOCK, item_lock

MANIFEST = "manifest.json"
FAILED_MANIFEST = "manifest.failed.json"
#: The file Snakemake sees as an item job's output; holds the run id of the run it marks.
DONE = ".done"


def current_umask() -> int:
    """This process's umask (read from ``/proc`` where possible: setting it to read it back
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode_for(path: str | os.PathLike) -> int:
    """Permission bits for a file about to be written at ``path``: those of the file it
    replaces, else what ``open()`` would give a new file (0666 less the umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Replace ``path`` with ``text`` atomically (temp file in the same folder, fsync,
    rename), keeping the mode of the file it replaces or following the umask."""
    path = Path(path)
    mode = file_mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable))


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
    """Return an item's manifest (successful or failed), or None when it has not finished.

    A manifest that is not valid JSON (edited by hand, or a disk error) reads as a failed
    run whose traceback says so, so that one bad file never stops a batch from loading.
    """
    folder = Path(folder)
    for name in (MANIFEST, FAILED_MANIFEST):
        path = folder / name
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            continue
        except (ValueError, OSError) as err:
            return {"success": False, "outputs": {}, "traceback": (
                f"{path} is unreadable ({type(err).__name__}: {err}); re-run the item.")}
        if isinstance(manifest, dict):
            return manifest
        return {"success": False, "outputs": {},
                "traceback": f"{path} does not hold a JSON object; re-run the item."}
    return None


def update_manifest(folder: str | os.PathLike, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into a successful item's manifest (e.g. after re-evaluation), under
    the item's commit lock (a run committing at the same time is not undone)."""
    with item_lock(folder, COMMIT_LOCK):
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
