"""How a run's files reach the item folder: staged apart, switched in atomically, under locks.

A run writes into a fresh staging folder ``<item>/.run-<run_id>/`` and, when it succeeded,
moves each file into the item folder with ``os.replace`` (a new inode: a notebook that has the
old file open as a memmap keeps the old data) and writes ``manifest.json`` last, the commit
point. A file is never rewritten in place, so a killed or failed run leaves the previous
run's files and manifest as they were. The switch happens under the item's commit lock
(:mod:`.locks`), so a child job reading the item never sees half of it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .locks import COMMIT_LOCK, item_lock
from .manifest import DONE, MANIFEST, read_manifest, write_manifest, write_text_atomic

#: A run writes its files into ``<item folder>/<STAGING_PREFIX><run_id>/`` and moves them
#: into the item folder when it succeeds.
STAGING_PREFIX = ".run-"

#: Files that make Snakemake re-run an item our files say is not current (workflow rule
#: ``rerun``); old ones are removed by a later run of the item.
RERUN_DIR = ".rerun"
_RERUN_KEEP_S = 24 * 3600


def new_run_id() -> str:
    """A unique, sortable id for one run of an item (UTC time and 8 random hex digits)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


# --- staging and committing ----------------------------------------------------------------

def clean_dead_runs(folder: Path) -> None:
    """Remove what killed runs of the item left: staging folders, temp files of atomic
    writes, old re-run triggers. Call with the item's run lock held (no run is alive)."""
    for entry in folder.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)
    for entry in folder.glob(".*.tmp"):
        entry.unlink(missing_ok=True)
    now = time.time()
    for entry in (folder / RERUN_DIR).glob("*"):
        try:
            if now - entry.stat().st_mtime > _RERUN_KEEP_S:
                entry.unlink()
        except OSError:
            pass


def staging_folder(folder: Path, run_id: str) -> Path:
    """A new, empty staging folder for run ``run_id`` of the item in ``folder``."""
    staging = folder / f"{STAGING_PREFIX}{run_id}"
    staging.mkdir()
    return staging


def commit(staging: Path, folder: Path, manifest: dict[str, Any]) -> None:
    """Switch a successful run's files from ``staging`` into ``folder``, then write its
    manifest (the commit point) and the :data:`~.manifest.DONE` marker. Files of an earlier
    run that this one does not make stay (an imported mesmerize-core item's CaImAn files
    among them); no manifest names them any more. Except an earlier run's pixel-major movie
    (named by its run, :mod:`.pixel_major`): a movie-sized file that no current result
    reads (a job that has it open reads on until it closes it)."""
    from .pixel_major import YR_GLOB

    with item_lock(folder, COMMIT_LOCK):
        # no manifest while files switch: a kill here leaves "not run", never old + new files
        (folder / MANIFEST).unlink(missing_ok=True)
        staged = {entry.name for entry in staging.iterdir()}
        for old in folder.glob(YR_GLOB):
            if old.name not in staged:
                old.unlink(missing_ok=True)
        for entry in staging.iterdir():
            target = folder / entry.name
            if entry.is_dir() and target.is_dir():
                shutil.rmtree(target)
            elif target.is_file():  # a replaced file keeps its mode
                os.chmod(entry, target.stat().st_mode & 0o7777)
            os.replace(entry, target)
        write_manifest(folder, manifest)
        write_done(folder, manifest["run_id"])


def publish_failure(folder: Path, manifest: dict[str, Any]) -> None:
    """Record a failed run: ``manifest.failed.json`` replaces the item's manifest (its
    previous files stay, no manifest vouches for them any more)."""
    with item_lock(folder, COMMIT_LOCK):
        (folder / DONE).unlink(missing_ok=True)
        write_manifest(folder, manifest)


def write_done(folder: Path, run_id: str) -> None:
    """The marker Snakemake waits for: the item has a finished run, ``run_id``."""
    write_text_atomic(folder / DONE, run_id + "\n")


def read_done(folder: Path) -> str | None:
    """The run id in an item's :data:`~.manifest.DONE` marker, or None without one."""
    try:
        return (folder / DONE).read_text().strip() or None
    except OSError:
        return None


@contextmanager
def reading_parent(parent_dir: Path) -> Iterator[dict[str, Any]]:
    """The parent item's successful manifest, held still (shared commit lock) while the
    block opens the files it names.

    Raises
    ------
    RuntimeError
        When the parent has no successful run.
    """
    with item_lock(parent_dir, COMMIT_LOCK, shared=True):
        manifest = read_manifest(parent_dir)
        if manifest is None or not manifest.get("success") or not (parent_dir / MANIFEST).is_file():
            raise RuntimeError(
                f"Its parent item {parent_dir.name} has no successful run (folder {parent_dir}); "
                "run the parent first (or run this item: its parent runs first).")
        yield manifest
