"""Results a lab already has, made by CaImAn (``CNMF.save``) or by mesmerize-core, as a
finished cnmf / cnmfe item of a batch: ``df.caiman.import_cnmf(hdf5, input_movie, name)``.

The estimates file stays where it is and is read in place, as for an imported
mesmerize-core batch (:func:`~.legacy_import.imported_manifest`); the item's folder gets what a run
of ours would have made besides it: the C-order movie memmap the evaluation reads and the
summary images (mean, correlation, PNR...). The manifest records the run's identity (params,
input, parent run, and the size and time of the raw movie and of the estimates file), so
the item is done until one of them changes, like any other; a re-run or ``run_eval`` writes
new files into the item's folder and never changes the imported file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["import_cnmf", "params_of_file"]

#: CaImAn's params groups that define a CNMF fit (motion, online and ring_CNN do not).
_FIT_GROUPS = ("data", "init", "preprocess", "patch", "spatial", "temporal", "merging",
               "quality")
#: Values CaImAn fills in from the data or its environment, not settings of the fit.
_NOT_SETTINGS = {"fnames", "dims", "caiman_version", "last_commit", "mmap_F", "mmap_C",
                 "n_pixels_per_process", "n_processes"}


def _plain(value: Any) -> Any:
    """A value read from HDF5 as JSON-able Python (numbers, strings, lists)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind == "S" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def params_of_file(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings of a CaImAn fit as a flat ``params["main"]``: the values of its params
    groups that differ from CaImAn's defaults (a key of several groups from the first)."""
    from .engine.params import CAIMAN_DEFAULTS

    main: dict[str, Any] = {}
    for group in _FIT_GROUPS:
        defaults = CAIMAN_DEFAULTS.get(group, {})
        for key, value in (groups.get(group) or {}).items():
            if key in _NOT_SETTINGS or key in main or key not in defaults:
                continue
            value = _plain(value)
            if json.dumps(value, default=str) != json.dumps(_plain(defaults[key]), default=str):
                main[key] = value
    return main


def _algo_of(groups: dict[str, dict[str, Any]]) -> str:
    init = groups.get("init") or {}
    return "cnmfe" if _plain(init.get("method_init")) == "corr_pnr" else "cnmf"


def _check_shapes(hdf5: Path, fit: Any, shape: tuple[int, ...], movie: Path) -> None:
    frames = np.shape(fit.estimates.C)[1]
    if tuple(shape[1:]) != tuple(fit.dims) or (frames and shape[0] != frames):
        raise ValueError(
            f"{hdf5} does not fit the movie {movie}: its footprints are {fit.dims[0]} x "
            f"{fit.dims[1]} pixels and its traces {frames} frames, the movie is {shape[0]} "
            f"frames of {shape[1]} x {shape[2]}. Give the movie these results were made from "
            "(for results made after motion correction, the registered movie or its mcorr "
            "item's row).")


def import_cnmf(df: pd.DataFrame, hdf5_path: str | os.PathLike, input_movie_path: Any,
                item_name: str, algo: str | None = None, comments: str | None = None,
                progress: bool | None = None) -> str:
    """Add a CaImAn estimates file as a finished cnmf / cnmfe item (see module docstring).

    Parameters
    ----------
    df
        The batch (``df.caiman.import_cnmf`` passes itself); the new row is appended to it.
    hdf5_path
        The file CaImAn's ``CNMF.save`` (or mesmerize-core, or this package) wrote.
    input_movie_path
        The movie the results were made from: a movie path, or an mcorr item's row or output
        (that item becomes the parent), as for ``add_item``.
    item_name
        The item's name.
    algo
        ``"cnmf"`` or ``"cnmfe"``; default from the file (CNMF-E's ``corr_pnr`` init).
    comments
        Free text (default: where the results came from).
    progress
        Progress bars while writing the summary images (default: unless the environment
        sets ``MESMERIZE_PROGRESS=0``).

    Returns
    -------
    str
        The new item's uuid.

    Raises
    ------
    ValueError
        The file is not CaImAn's layout, or its frame size or frame count is not the movie's.
    """
    from . import batch as batch_lib
    from . import validation
    from .accessors.results import item_folder
    from .commit import new_run_id, write_done
    from .io.estimates import load_cnmf
    from .io.movies import open_movie
    from .legacy import writable_batch
    from .legacy_import import imported_manifest
    from .manifest import read_manifest, write_manifest
    from .outputs import pnr_gsig, summary_images_for
    from .runstate import file_stat, run_params
    from .step_support import YR_KEY, cnmf_input, job_budget, open_yr

    batch_path = writable_batch(df.paths.get_batch_path())
    if progress is None:
        progress = os.environ.get("MESMERIZE_PROGRESS", "1") != "0"
    hdf5 = Path(hdf5_path).expanduser().resolve()
    try:
        fit = load_cnmf(hdf5)
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{hdf5} is not an estimates file in CaImAn's layout (CNMF.save): "
                         f"{type(err).__name__}: {err}") from err
    groups = fit.estimates.extra["caiman_params"]
    algo = algo or _algo_of(groups)
    params = {"main": params_of_file(groups)}
    validation.check_item(algo, params, item_name)
    stored, parent = df.caiman._input_and_parent(input_movie_path)
    files: dict[str, Any] = {}
    parent_run = None
    if parent is None:
        movie_path = batch_lib.resolve_path(stored, batch_path.parent)
        files["movie"] = {"path": stored, **file_stat(movie_path)}
    else:
        parent_manifest = read_manifest(item_folder(df.caiman.uloc(parent))) or {}
        if not parent_manifest.get("success"):
            raise ValueError(f"The mcorr item {parent} has no results yet: run it first.")
        parent_run = parent_manifest.get("run_id")
        movie_path = batch_lib.resolve_path(stored, batch_path.parent)
    movie = open_movie(movie_path, var_name_hdf5=params["main"].get("var_name_hdf5", "mov"))
    _check_shapes(hdf5, fit, tuple(movie.shape), movie_path)
    files["estimates"] = {"path": str(hdf5), **file_stat(hdf5)}
    row = batch_lib.new_row(algo, item_name, stored, params, parent,
                            comments if comments is not None else f"imported from {hdf5}")
    parents = {r["uuid"]: r["parent"] for r in batch_lib.read_table(batch_path)}
    parents[row["uuid"]] = parent
    folder = batch_lib.item_dir(batch_lib.results_dir_of(batch_path), row["uuid"], parents)
    folder.mkdir(parents=True)
    try:
        run_id = new_run_id()
        # the parent's pixel-major movie, else one written here (with the summary images)
        parent_yr = None if parent is None else parent_manifest["outputs"].get(YR_KEY)
        yr = None if parent_yr is None else open_yr(movie_path.parent / parent_yr)
        data, outputs, images = cnmf_input(movie, folder, job_budget({}), yr, progress,
                                           run_id=run_id)
        del data, yr
        gsig = pnr_gsig(params["main"]) if algo == "cnmfe" else None  # 1p images for cnmfe only
        outputs.update(summary_images_for(movie, folder, gsig, progress, computed=images))
        outputs["cnmf-hdf5-path"] = str(hdf5)
        identity = {"algo": algo, "params": run_params(row["params"]), "input": stored,
                    "parent": parent, "parent_run": parent_run, "files": files}
        manifest = imported_manifest(
            row, outputs, folder, folder, str(movie_path), hdf5, identity=identity,
            engine_version=f"CaImAn results (imported; {fit.params.data.get('caiman_version')})")
        manifest["run_id"] = run_id
        write_manifest(folder, manifest)
        write_done(folder, run_id)
        df.caiman._append_row(row)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return row["uuid"]
