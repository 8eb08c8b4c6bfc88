"""mesmerize-core batches: open them as they are, and convert them to a TSV batch once.

A mesmerize-core batch is a pickled DataFrame (``batch.pickle``) with one folder per item
beside it, ``<batch dir>/<uuid>/``, holding CaImAn's files: the registered movie
(``<uuid>-mcorr_els__d1_<y>_d2_<x>_d3_1_order_F_frames_<T>.mmap``), the shifts
(``<uuid>_shifts.npy``: rigid (frames, 2), piecewise (2, frames, patches)), projections
(``<uuid>_{mean,std,max}_projection.npy``), the correlation image (``<uuid>_cn.npy``), the
CNMF estimates (``<uuid>.hdf5``, CaImAn's ``CNMF.save``) and the C-order movie CNMF read
(``<uuid>_cnmf-memmap_d1_.._order_C_frames_<T>.mmap``). Each row's ``outputs`` names them
relative to the batch dir. Lineage is implicit: a cnmf item's input path is its parent's
registered movie.

:func:`read_pickle_batch` returns that DataFrame (plus the derived ``parent`` column) and the
accessors read its results in place. :func:`import_batch` writes a TSV batch with the same
uuids, names, params, comments and lineage; with ``keep_results`` (the default) each finished
item gets a manifest in its new folder that points at its existing files, so it reads as
done without re-running; running it again writes fresh files into its own folder.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from .errors import (
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    ReadOnlyBatchError,
    WrongAlgorithmExtensionError,
)

#: First byte of a pickle (protocol 2 and later), where a TSV batch starts with its header.
_PICKLE_MAGIC = b"\x80"
_LEGACY_COLUMNS = ("algo", "item_name", "input_movie_path", "params", "outputs", "uuid")


def is_pickle_batch(path: str | os.PathLike) -> bool:
    """Whether the batch file at ``path`` is a mesmerize-core pickle (by content, not name)."""
    try:
        with open(path, "rb") as f:
            return f.read(1) == _PICKLE_MAGIC
    except OSError:
        return False


def _key(path: Any, batch_dir: Path) -> str:
    """A stored path made comparable: absolute, normalised, not resolved (may not exist)."""
    return os.path.normpath(batch_dir / Path(str(path)))


def derive_parents(df: pd.DataFrame, batch_dir: Path) -> list[str | None]:
    """The parent uuid of each row: the mcorr item whose registered movie is its input."""
    producers = {}
    for _, row in df.iterrows():
        outputs = row["outputs"]
        if row["algo"] == "mcorr" and isinstance(outputs, Mapping) \
                and outputs.get("mcorr-output-path") is not None:
            producers[_key(outputs["mcorr-output-path"], batch_dir)] = row["uuid"]
    return [producers.get(_key(p, batch_dir)) for p in df["input_movie_path"]]


def read_pickle_batch(path: str | os.PathLike) -> pd.DataFrame:
    """A mesmerize-core batch pickle as the DataFrame mesmerize-core's ``load_batch`` gives,
    with ``attrs["batch_path"]`` and a ``parent`` column (derived from the input paths).

    Raises
    ------
    ValueError
        When the pickle does not hold a mesmerize-core batch DataFrame.
    """
    path = Path(path).expanduser().resolve()
    try:
        df = pd.read_pickle(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot read this pickle as a batch DataFrame "
                         f"({type(err).__name__}: {err}).") from err
    if not isinstance(df, pd.DataFrame) or not set(_LEGACY_COLUMNS) <= set(df.columns):
        raise ValueError(f"{path} is not a mesmerize-core batch: expected a pickled DataFrame "
                         f"with columns {', '.join(_LEGACY_COLUMNS)}.")
    df = df.copy()
    for column in ("added_time", "ran_time", "algo_duration", "comments"):
        if column not in df.columns:
            df[column] = None
    df["uuid"] = df["uuid"].astype(str)
    df["parent"] = pd.Series(derive_parents(df, path.parent), index=df.index, dtype=object)
    df.attrs["batch_path"] = path
    df.attrs["mesmerize_core_batch"] = True
    return df


def legacy_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``outputs`` with path values as POSIX strings (mesmerize-core's cnmfe stores
    ``Path`` objects)."""
    return {k: PurePath(v).as_posix() if isinstance(v, PurePath) else v
            for k, v in outputs.items()}


# --- reading rows of an opened mesmerize-core batch ------------------------------------

@functools.lru_cache(maxsize=32)
def _is_legacy(batch_path: str, version: tuple[int, int]) -> bool:
    return is_pickle_batch(batch_path)


def is_legacy(batch_path: str | os.PathLike) -> bool:
    """Whether a batch file is a mesmerize-core pickle (opened read-only, results in place)."""
    try:
        stat = Path(batch_path).stat()
    except OSError:
        return False
    return _is_legacy(str(batch_path), (stat.st_ino, stat.st_mtime_ns))


def writable_batch(batch_path: Path) -> Path:
    """``batch_path``, or ReadOnlyBatchError for a mesmerize-core pickle."""
    if is_legacy(batch_path):
        raise ReadOnlyBatchError(
            f"{batch_path} is a mesmerize-core batch, opened read-only (its results read as "
            "they are). Convert it once to change or run items: mesmerize-helpers import "
            f"{batch_path} {Path(batch_path).with_suffix('.tsv')}"
        )
    return batch_path


def checked_legacy_outputs(s: pd.Series, algos: tuple[str, ...] | None) -> dict[str, Any]:
    """A mesmerize-core row's outputs, with mesmerize-core's checks (not run, wrong
    accessor, failed) in its order."""
    outputs = s["outputs"]
    if not isinstance(outputs, Mapping):
        raise BatchItemNotRunError(f"Item {s['uuid']} ({s['algo']}, {s['item_name']!r}) has "
                                   "not been run.")
    if algos is not None and s["algo"] not in algos:
        raise WrongAlgorithmExtensionError(
            f"Item {s['uuid']} is a {s['algo']!r} item; this accessor is for {'/'.join(algos)} items."
        )
    if not outputs.get("success"):
        raise BatchItemUnsuccessfulError(
            f"Item {s['uuid']} ({s['algo']}, {s['item_name']!r}) failed:\n{outputs.get('traceback')}"
        )
    return legacy_outputs(outputs)



# --- conversion ---------------------------------------------------------------------------

def _stored_input(value: Any, old_dir: Path, new_dir: Path) -> str:
    """An input path as the new batch stores it: re-based when it lies in the old batch dir
    (absolute when the new dir is elsewhere), else kept (relative to the raw data dir)."""
    from .batch import store_path

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
    from .batch import resolve_path

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
    from . import batch as batch_lib
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
