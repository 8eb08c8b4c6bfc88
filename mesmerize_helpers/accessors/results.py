"""Where an item's results are, and the checks every getter makes before reading them: the
item is of the right algorithm, has run, succeeded, and is still current (not outdated or
stale); mesmerize-core's errors when not."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from .. import batch as batch_lib
from ..errors import BatchItemNotRunError, BatchItemUnsuccessfulError, WrongAlgorithmExtensionError
from ..legacy import checked_legacy_outputs, is_legacy, read_pickle_batch
from ..locks import COMMIT_LOCK, item_lock
from ..manifest import MANIFEST, read_manifest
from ..status import check_current
from .paths import batch_path_of


def parents_of(batch_path: Path) -> dict[str, str | None]:
    """uuid -> parent uuid for every item now in the batch file."""
    stat = Path(batch_path).stat()
    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # every write is a new file
    return dict(_parents_cached(str(batch_path), version))


@functools.lru_cache(maxsize=8)
def _parents_cached(batch_path: str, version: tuple[int, int, int]
                    ) -> tuple[tuple[str, str | None], ...]:
    # every getter needs an item's folder, hence its lineage: read the TSV once per version
    if is_legacy(batch_path):
        df = read_pickle_batch(batch_path)
        return tuple(zip(df["uuid"], df["parent"]))
    return tuple((row["uuid"], row["parent"]) for row in batch_lib.read_table(batch_path))


def item_folder(s: pd.Series) -> Path:
    """The output folder of the item in row ``s``."""
    path = batch_path_of(s)
    if is_legacy(path):  # mesmerize-core: <batch dir>/<uuid>
        return path.resolve().parent / str(s["uuid"])
    parents = parents_of(path)
    parents.setdefault(s["uuid"], s["parent"])
    return batch_lib.item_dir(batch_lib.results_dir_of(path), s["uuid"], parents)


_pins = threading.local()  # the item folders this thread holds still (see held_still)


@contextmanager
def held_still(s: pd.Series) -> Iterator[None]:
    """While the block reads the results of the item in row ``s``, no run commits new ones
    and no re-evaluation rewrites them: the item's shared commit lock, as a child job holds
    it while it reads its parent (:func:`~mesmerize_helpers.commit.reading_parent`). A
    commit under way finishes first (its manifest is briefly absent while files switch).

    Re-entrant: getters that call getters take the lock once. Nothing to hold for a
    mesmerize-core batch (no runs commit into it). Do not write the item's files inside
    (a commit lock wanted by this thread would wait for itself).
    """
    path = batch_path_of(s)
    folder = None if is_legacy(path) else str(item_folder(s))
    held = _pins.__dict__.setdefault("folders", set())
    if folder is None or folder in held or not os.path.isdir(folder):
        yield
        return
    with item_lock(folder, COMMIT_LOCK, shared=True):
        held.add(folder)
        try:
            yield
        finally:
            held.discard(folder)


def checked_manifest(s: pd.Series, algos: tuple[str, ...] | None = None) -> tuple[dict, Path]:
    """The item's successful manifest and folder, or the error mesmerize-core users expect.

    Raises
    ------
    WrongAlgorithmExtensionError
        When ``s`` is not a row of one of ``algos``.
    BatchItemNotRunError
        When the item has no manifest (not run, or killed).
    BatchItemUnsuccessfulError
        When the item failed; the message carries the traceback.
    """
    if algos is not None and s["algo"] not in algos:
        raise WrongAlgorithmExtensionError(
            f"Item {s['uuid']} is a {s['algo']!r} item; this accessor is for {'/'.join(algos)} items."
        )
    folder = item_folder(s)
    manifest = read_manifest(folder)
    if manifest is None:
        raise BatchItemNotRunError(
            f"Item {s['uuid']} ({s['algo']}, {s['item_name']!r}) has not been run "
            f"(no manifest in {folder}); run it with .caiman.run()."
        )
    if not manifest.get("success"):
        raise BatchItemUnsuccessfulError(
            f"Item {s['uuid']} ({s['algo']}, {s['item_name']!r}) failed:\n{manifest.get('traceback')}"
        )
    check_current(batch_path_of(s), s["uuid"])  # outdated or stale: ItemNotCurrentError
    return manifest, folder


def checked_outputs(s: pd.Series, algos: tuple[str, ...] | None = None
                    ) -> tuple[dict[str, Any], Path]:
    """The outputs of a finished item and the folder their paths are relative to: the item's
    folder (its manifest), or for a mesmerize-core batch the batch dir (its row).

    Raises the errors of :func:`checked_manifest`.
    """
    if is_legacy(batch_path_of(s)):
        return checked_legacy_outputs(s, algos), batch_path_of(s).resolve().parent
    manifest, folder = checked_manifest(s, algos)
    return manifest["outputs"], folder


def result_stamp(s: pd.Series, algos: tuple[str, ...] | None = None) -> tuple:
    """Changes whenever the item's results change (a run, a re-evaluation), in any process:
    for the cache. The manifest's identity and time, or the estimates file's for a
    mesmerize-core item."""
    outputs, base = checked_outputs(s, algos)
    if is_legacy(batch_path_of(s)):
        path = base / outputs.get("cnmf-hdf5-path", outputs.get("mcorr-output-path", ""))
    else:
        path = base / MANIFEST
    stat = path.stat()
    return (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def output_file(s: pd.Series, key: str, algos: tuple[str, ...] | None = None) -> Path:
    """Path of one of the item's outputs by mesmerize-core key (e.g. ``"corr-img-path"``)."""
    outputs, folder = checked_outputs(s, algos)
    try:
        value = outputs[key]
        if is_legacy(batch_path_of(s)):  # mesmerize-core: the batch dir, else the raw data dir
            return batch_lib.resolve_path(value, folder)
        return Path(os.path.normpath(folder / value)).resolve()
    except KeyError:
        keys = [k for k in outputs if k not in ("success", "traceback")]
        raise FileNotFoundError(
            f"Item {s['uuid']} has no output {key!r}; it has {', '.join(keys)}."
        ) from None
