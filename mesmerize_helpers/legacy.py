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
accessors read its results in place. Converting it to a TSV batch is
:func:`.legacy_import.import_batch` (this module reads; that one writes, with :mod:`.batch`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
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
