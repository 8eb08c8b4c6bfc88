"""The batch: a TSV file with one row per item, read into mesmerize-core's DataFrame.

The TSV holds only what a person decides (``uuid, item_name, algo, input_movie_path, params,
comments, added_time, parent``). What a run produced (``outputs``, ``ran_time``,
``algo_duration``) is read from each item's manifest when the batch is loaded, so workers
never write to the TSV.

The file format itself (cells, escaping, validation, atomic writes) is :mod:`.tsv`; every
write takes the batch's file lock (:func:`locked_rows`) and atomically replaces the file.
"""

from __future__ import annotations

import json
import os
import uuid as uuid_lib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from .errors import BatchFormatError
from .runstate import OUTDATED, STALE, ItemState, item_states
from .settings import remember_raw_data, remembered_raw_data
from .tsv import (  # noqa: F401 (the file format; re-exported as this module's API)
    ALGOS,
    TSV_COLUMNS,
    lock_for,
    params_to_json,
    read_table,
    write_table,
)

#: ``params["Ain"]`` value that seeds CNMF with the somata visible in the input's mean image
#: (any other value is the path of a ``.npy`` of seed masks).
SOMATA_SEEDS = "somata"
#: Columns of the loaded DataFrame: mesmerize-core's, in its order, plus ``parent``.
DATAFRAME_COLUMNS = (
    "algo", "item_name", "input_movie_path", "params", "outputs", "added_time", "ran_time",
    "algo_duration", "comments", "uuid", "parent",
)
#: Column names a user may change with ``update_item``; the rest define what runs.
USER_COLUMNS = ("item_name", "comments")

_PARENT_RAW_DATA_PATH: Path | None = None

#: mesmerize-core's compute backends (its ``batch_utils``), all run with Snakemake here
#: (see :func:`mesmerize_helpers.runner.run_item`).
COMPUTE_BACKEND_SUBPROCESS = "subprocess"  #: snakemake in a subprocess (the default)
COMPUTE_BACKEND_SLURM = "slurm"  #: snakemake submitting SLURM jobs (``profiles/slurm``)
COMPUTE_BACKEND_LOCAL = "local"  #: like subprocess, and ``run()`` always waits
COMPUTE_BACKEND_ASYNC = "local_async"  #: like subprocess, and ``run()`` never waits
COMPUTE_BACKENDS = [
    COMPUTE_BACKEND_SUBPROCESS, COMPUTE_BACKEND_SLURM, COMPUTE_BACKEND_LOCAL, COMPUTE_BACKEND_ASYNC,
]


# --- raw data dir and path storage ------------------------------------------------------

def set_parent_raw_data_path(path: str | os.PathLike) -> Path:
    """Set the top directory of the raw movies, so batches can store paths relative to it.

    Parameters
    ----------
    path
        An existing directory.

    Returns
    -------
    Path
        The directory, resolved.
    """
    global _PARENT_RAW_DATA_PATH
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise NotADirectoryError(f"Raw data path {path} is not a directory.")
    _PARENT_RAW_DATA_PATH = path
    return path


def get_parent_raw_data_path() -> Path | None:
    """Return the directory set with :func:`set_parent_raw_data_path`, or None."""
    return _PARENT_RAW_DATA_PATH


def raw_data_dir_for(batch_dir: str | os.PathLike) -> Path | None:
    """The raw-data directory for the batches in ``batch_dir``: the one set in this process,
    else the one remembered beside the batch (:mod:`.settings`), else None."""
    return _PARENT_RAW_DATA_PATH or remembered_raw_data(batch_dir)


def get_full_raw_data_path(path: str | os.PathLike) -> Path:
    """``path`` under the raw data directory (when one is set), made absolute
    (mesmerize-core's ``batch_utils.get_full_raw_data_path``)."""
    path = Path(path)
    if _PARENT_RAW_DATA_PATH is not None:
        path = _PARENT_RAW_DATA_PATH / path
    return path.resolve()


def store_path(path: str | os.PathLike, batch_dir: Path) -> str:
    """Return ``path`` as it is written in the TSV.

    Relative (POSIX) to the batch directory when it lies under it, else relative to the raw
    data directory when it lies under that, else absolute; so a batch moves with its data.
    """
    path = Path(path).expanduser().resolve()
    for root in (batch_dir, get_parent_raw_data_path()):
        if root is None:
            continue
        try:
            return PurePosixPath(path.relative_to(Path(root).resolve())).as_posix()
        except ValueError:
            continue
    return path.as_posix()


def resolve_path(path: str | os.PathLike, batch_dir: Path, raw_data_dir: Path | None = None) -> Path:
    """Resolve a stored path: absolute as is, else under the batch dir, else the raw data dir.

    Raises
    ------
    FileNotFoundError
        When a relative path exists under neither directory; the message names both.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    raw_data_dir = raw_data_dir if raw_data_dir is not None else raw_data_dir_for(batch_dir)
    candidates = [Path(batch_dir) / path]
    if raw_data_dir is not None:
        candidates.append(Path(raw_data_dir) / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    hint = "" if raw_data_dir is not None else (
        " (no raw data dir set: set_parent_raw_data_path(), or mesmerize-helpers run --raw-data)")
    raise FileNotFoundError(f"Cannot find {path}: tried {tried}{hint}.")


@contextmanager
def locked_rows(path: str | os.PathLike) -> Iterator[list[dict[str, Any]]]:
    """Read the rows under the batch lock; the (mutated) list is written back on exit.

    Nothing is written if the block raises, so a failed edit never leaves a half-written row.
    """
    with lock_for(path):
        rows = read_table(path)
        yield rows
        write_table(path, rows)
    if _PARENT_RAW_DATA_PATH is not None:  # so snakemake and the CLI resolve paths alike
        remember_raw_data(Path(path).parent, _PARENT_RAW_DATA_PATH)


# --- lineage and results ------------------------------------------------------------------

def lineage(uuid: str, parents: dict[str, str | None]) -> list[str]:
    """Return the chain of uuids from the raw-movie ancestor down to ``uuid``.

    Parameters
    ----------
    uuid
        The item.
    parents
        Map from each item's uuid to its parent's uuid (None for an item on a raw movie).
    """
    chain = [uuid]
    while parents.get(chain[-1]) is not None:
        chain.append(parents[chain[-1]])
        if len(chain) > len(parents) + 1:
            raise BatchFormatError(f"Cycle in the parent column around item {uuid}.")
    return chain[::-1]


def item_dir(results_dir: str | os.PathLike, uuid: str, parents: dict[str, str | None]) -> Path:
    """The output folder of an item: ``<results>/[<ancestor uuid>/...]<uuid>``."""
    return Path(results_dir, *lineage(uuid, parents))


def results_dir_of(batch_path: str | os.PathLike) -> Path:
    """Where a batch's items write their folders: the batch file's directory."""
    return Path(batch_path).resolve().parent


# --- the DataFrame --------------------------------------------------------------------------

def _batch_relative(outputs: dict[str, Any], folder: Path, batch_dir: Path) -> dict[str, Any]:
    """Output file names (relative to the item's folder) made relative to the batch dir, as
    mesmerize-core stores them, so ``df.paths.resolve(row["outputs"][key])`` finds them."""
    out = {}
    for key, value in outputs.items():
        if isinstance(value, str) and value and not os.path.isabs(value):
            path = os.path.normpath(folder / value)
            if os.path.exists(path):
                value = PurePosixPath(Path(os.path.relpath(path, batch_dir))).as_posix()
        out[key] = value
    return out


def _run_columns(manifest: dict[str, Any] | None, folder: Path | None = None,
                 batch_dir: Path | None = None, state: ItemState | None = None) -> dict[str, Any]:
    if manifest is None:
        return {"outputs": None, "ran_time": None, "algo_duration": None}
    outputs = dict(manifest.get("outputs") or {})
    if folder is not None and batch_dir is not None:
        outputs = _batch_relative(outputs, folder, batch_dir)
    outputs["success"] = bool(manifest.get("success"))
    outputs["traceback"] = manifest.get("traceback")
    if state is not None and state.state in (OUTDATED, STALE):  # results no longer the row's
        outputs["success"], outputs["traceback"] = False, state.reason
    return {
        "outputs": outputs,
        "ran_time": manifest.get("ran_time"),
        "algo_duration": manifest.get("algo_duration"),
    }


def rows_to_dataframe(rows: list[dict[str, Any]], batch_path: Path) -> pd.DataFrame:
    """Build the mesmerize-core style DataFrame, reading each item's manifest."""
    from .param_types import decode_types

    parents = {r["uuid"]: r["parent"] for r in rows}
    results = results_dir_of(batch_path)
    states = batch_states(batch_path, rows)  # done, or why not (outdated, stale, ...)
    records = []
    for row in rows:
        folder = item_dir(results, row["uuid"], parents)
        state = states[row["uuid"]]
        records.append({**row, "params": decode_types(row["params"]),
                        "comments": row["comments"] or None,  # the TSV's "" is no comment
                        **_run_columns(state.manifest, folder, Path(batch_path).resolve().parent,
                                       state)})
    df = pd.DataFrame.from_records(records, columns=list(DATAFRAME_COLUMNS))
    df = df.astype(object).where(df.notna(), None) if len(df) else df.astype(object)
    df.attrs["batch_path"] = Path(batch_path).resolve()
    return df


# --- whether results are current (see runstate) ----------------------------------------------

def batch_states(batch_path: str | os.PathLike, rows: list[dict[str, Any]] | None = None
                 ) -> dict[str, ItemState]:
    """The :class:`~.runstate.ItemState` of every item of the batch (or of ``rows``, which
    must hold the ancestors of each of their items)."""
    batch_path = Path(batch_path).resolve()
    rows = read_table(batch_path) if rows is None else rows
    parents = {row["uuid"]: row["parent"] for row in rows}
    results = results_dir_of(batch_path)
    folders = {uuid: item_dir(results, uuid, parents) for uuid in parents}
    batch_dir, raw = batch_path.parent, raw_data_dir_for(batch_path.parent)
    return item_states(rows, folders, lambda stored: resolve_path(stored, batch_dir, raw))


def create_batch(path: str | os.PathLike, remove_existing: bool = False) -> pd.DataFrame:
    """Create an empty batch TSV and return it as a DataFrame.

    Parameters
    ----------
    path
        Where to write the TSV (its directory is created; item folders go beside it).
    remove_existing
        Replace an existing batch instead of raising.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``remove_existing`` is False.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not remove_existing:
        raise FileExistsError(
            f"Batch {path} already exists; load it with load_batch() or pass remove_existing=True."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_for(path):
        write_table(path, [])
    return rows_to_dataframe([], path)


def load_batch(path: str | os.PathLike) -> pd.DataFrame:
    """Load a batch TSV with every mesmerize-core column, run results read from manifests.

    ``df.attrs["batch_path"]`` holds the absolute path (a ``Path``); it survives row
    selection. A mesmerize-core batch (a pickle, whatever its name) opens as it is, its
    results readable in place (read-only: ``mesmerize-helpers import`` converts it).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"No batch at {path}; create one with create_batch().")
    from .legacy import is_pickle_batch, read_pickle_batch

    if is_pickle_batch(path):  # a mesmerize-core batch, read as it is
        return read_pickle_batch(path)
    return rows_to_dataframe(read_table(path), path)


def new_row(
    algo: str,
    item_name: str,
    input_movie_path: str,
    params: dict,
    parent: str | None,
    comments: str | None = None,
) -> dict[str, Any]:
    """A new TSV row with a fresh uuid and the current time, params checked."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}.")
    from .param_types import encode_types

    # a JSON round trip: what is stored is what runs (tuples and paths noted in "__types__")
    params = json.loads(params_to_json(encode_types(params)))
    return {
        "uuid": str(uuid_lib.uuid4()),
        "item_name": str(item_name),
        "algo": algo,
        "input_movie_path": input_movie_path,
        "params": params,
        "comments": comments,
        "added_time": datetime.now().isoformat(timespec="seconds"),
        "parent": parent,
    }


def update_rows(path: str | os.PathLike, edit: Callable[[list[dict[str, Any]]], Any]) -> Any:
    """Apply ``edit`` to the rows of the batch under its lock and write them back atomically."""
    with locked_rows(path) as rows:
        return edit(rows)
