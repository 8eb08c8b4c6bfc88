"""Convert a mesmerize-core batch (a pickle, read by :mod:`.legacy`) to a TSV batch, once.

:func:`import_batch` writes a TSV batch with the same uuids, names, params, comments and
lineage; with ``keep_results`` (the default) each finished item gets a manifest in its new
folder that points at its existing files, so it reads as done without re-running; running it
again writes fresh files into its own folder. :func:`imported_manifest` is that manifest
(also used to import a single CaImAn result, :mod:`.cnmf_import`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from . import batch as batch_lib
from .batch import resolve_path, store_path
from .legacy import legacy_outputs, read_pickle_batch


def _stored_input(value: Any, old_dir: Path, new_dir: Path) -> str:
    """An input path as the new batch stores it: re-based when it lies in the old batch dir
    (absolute when the new dir is elsewhere), else kept (relative to the raw data dir)."""
    value = PurePath(str(value))
    candidate = old_dir / value
    if value.is_absolute() or candidate.exists():
        return store_path(candidate, new_dir)
    return value.as_posix()


def imported_manifest(stored: dict[str, Any], outputs: Mapping[str, Any], folder: Path,
                      base: Path, input_path: str, source: Path, *, success: bool = True,
                      traceback: str | None = None, ran_time: Any = None,
                      duration: float | None = None, engine_version: str = "mesmerize-core (imported)",
                      identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of an item whose results were made elsewhere (by mesmerize-core or
    CaImAn) and are read in place: its output paths, resolved as mesmerize-core resolves them
    (``base``, else the raw data dir), made relative to the item's ``folder``.

    Parameters
    ----------
    stored
        The item's batch row (``uuid``, ``algo``, ``params``, ``parent``).
    outputs
        mesmerize-core's output keys to paths (relative to ``base``, or absolute).
    input_path
        The movie the results were made from (recorded as ``input_movie_path``).
    source
        The file imported from (a batch pickle, an estimates file).
    identity
        The run identity (:mod:`.runstate`) when it is known; without one the item is
        current as long as its params and parent match.
    """
    rebased = {}
    for key, value in outputs.items():
        if key in ("success", "traceback"):
            continue
        if isinstance(value, str):
            try:  # as mesmerize-core resolves it: the batch dir, else the raw data dir
                value = os.path.relpath(resolve_path(value, base), folder)
            except FileNotFoundError:
                pass  # a file that is gone stays named as it was
        rebased[key] = value
    manifest = {
        "uuid": stored["uuid"], "algo": stored["algo"], "params": stored["params"],
        "engine": "caiman", "engine_version": engine_version,
        "parent": stored["parent"], "input_movie_path": input_path,
        "ran_time": ran_time, "algo_duration": duration,
        "success": success, "traceback": traceback,
        "outputs": rebased if success else {}, "imported_from": str(source),
        "imported_time": datetime.now().isoformat(timespec="seconds"),
    }
    if identity is not None:
        manifest["identity"] = identity
    return manifest


def _legacy_manifest(row: pd.Series, stored: dict[str, Any], folder: Path, old_dir: Path,
                     input_path: str, source: Path) -> dict[str, Any]:
    """The manifest of an item of a mesmerize-core batch, from its row."""
    duration = row.get("algo_duration")
    if isinstance(duration, str):  # mesmerize-core writes "12.3 sec"
        duration = duration.removesuffix(" sec")
    try:
        duration = float(duration) if duration is not None else None
    except ValueError:
        duration = None
    return imported_manifest(
        stored, legacy_outputs(row["outputs"]), folder, old_dir, input_path, source,
        success=bool(row["outputs"].get("success")), traceback=row["outputs"].get("traceback"),
        ran_time=row.get("ran_time"), duration=duration)


def import_batch(pickle_path: str | os.PathLike, tsv_path: str | os.PathLike,
                 keep_results: bool = True, force: bool = False) -> pd.DataFrame:
    """Convert a mesmerize-core batch to a TSV batch; return it loaded.

    Parameters
    ----------
    pickle_path
        The mesmerize-core ``batch.pickle``.
    tsv_path
        The new batch file (its folder holds the items' folders).
    keep_results
        Give each item that ran a manifest in its new folder pointing at its existing files
        (left where they are, never moved), so results read without re-running; False: every
        item starts as not run.
    force
        Replace an existing ``tsv_path``.

    Raises
    ------
    FileExistsError
        ``tsv_path`` exists and ``force`` is False.
    """
    from .manifest import write_manifest
    from .param_types import encode_types

    old = read_pickle_batch(pickle_path)
    old_dir = Path(old.attrs["batch_path"]).parent
    tsv_path = Path(tsv_path).expanduser().resolve()
    if tsv_path.exists() and not force:
        raise FileExistsError(f"{tsv_path} exists; pass force=True (--force) to replace it.")
    new_dir = tsv_path.parent
    rows = []
    for _, row in old.iterrows():
        params = encode_types(row["params"] if isinstance(row["params"], Mapping) else {})
        params.setdefault("main", {})
        rows.append({
            "uuid": row["uuid"], "item_name": str(row["item_name"]), "algo": row["algo"],
            "input_movie_path": _stored_input(row["input_movie_path"], old_dir, new_dir),
            "params": params, "comments": None if pd.isna(row["comments"]) else row["comments"],
            "added_time": row["added_time"], "parent": row["parent"],
        })
    new_dir.mkdir(parents=True, exist_ok=True)
    with batch_lib.lock_for(tsv_path):
        batch_lib.write_table(tsv_path, rows)
    if keep_results:
        parents = {r["uuid"]: r["parent"] for r in rows}
        results = batch_lib.results_dir_of(tsv_path)
        for (_, row), stored in zip(old.iterrows(), rows):
            if not isinstance(row["outputs"], Mapping):
                continue  # never ran
            folder = batch_lib.item_dir(results, stored["uuid"], parents)
            folder.mkdir(parents=True, exist_ok=True)
            try:  # what run_item records: the movie the item read
                input_path = str(batch_lib.resolve_path(stored["input_movie_path"], new_dir))
            except FileNotFoundError:
                input_path = os.path.normpath(new_dir / stored["input_movie_path"])
            write_manifest(folder, _legacy_manifest(row, stored, folder, old_dir, input_path,
                                                      Path(old.attrs["batch_path"])))
    return batch_lib.load_batch(tsv_path)
