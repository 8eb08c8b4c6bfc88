"""The ``paths`` and ``caiman`` accessors on the batch DataFrame and its rows.

Thin classes: batch editing lives in :mod:`mesmerize_helpers.batch`, running in
:mod:`mesmerize_helpers.runner`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid as uuid_lib
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import batch as batch_lib
from .. import validation
from ..errors import (
    DependencyError,
    ItemNotFoundError,
    ItemRunningError,
    ReadOnlyBatchError,
)
from ..io.movies import open_movie, read_input_movie
from ..legacy import is_legacy, writable_batch
from ..locks import hold_idle
from ..manifest import read_manifest, update_manifest
from ..param_types import decode_types, encode_types
from .editing import save_frame, split_updates
from .params import flatten_params, params_diffs, set_dotted  # noqa: F401 (re-exported)
from .paths import PathsDataFrameExtension, PathsSeriesExtension, batch_path_of  # noqa: F401
from .results import (  # noqa: F401 (re-exported: the other accessors' helpers)
    checked_manifest,
    checked_outputs,
    item_folder,
    output_file,
    parents_of,
    result_stamp,
)


@contextmanager
def _idle(folder: Path, row: pd.Series, remove_data: bool) -> Iterator[None]:
    """While the item in ``row`` (output ``folder``) is removed with its data: no job runs it
    or an item inside its folder (:func:`~mesmerize_helpers.locks.hold_idle`)."""
    if not remove_data or not folder.exists():
        yield
        return
    try:
        with hold_idle(folder):
            yield
    except ItemRunningError as err:
        which = "it" if err.folder == folder else f"the item {err.folder.name} in its folder"
        raise ItemRunningError(
            f"Cannot remove {row['algo']} item {row['uuid']} ({row['item_name']!r}) with its "
            f"data: a job is running {which} now ({err.holder}). Wait for the run to finish "
            f"(`mesmerize-helpers status BATCH` marks running items) or stop it, then remove "
            f"the item; nothing was removed.", err.folder, err.holder) from None


def _uuid_of(df: pd.DataFrame, index_or_uuid: int | str | uuid_lib.UUID) -> str:
    """The uuid of an item given as a row position (mesmerize-core's ``df.iloc`` index; -1
    is the last) or a uuid (``str`` or ``uuid.UUID``)."""
    if isinstance(index_or_uuid, (str, uuid_lib.UUID)):
        uuid = str(index_or_uuid)
        if uuid not in set(df["uuid"]):
            raise ItemNotFoundError(f"No item with uuid {uuid} in the batch.")
        return uuid
    if isinstance(index_or_uuid, (int, np.integer)) and not isinstance(index_or_uuid, bool):
        if not -len(df) <= index_or_uuid < len(df):
            raise ItemNotFoundError(f"No item at index {index_or_uuid}: the batch has "
                                    f"{len(df)} item(s).")
        return df["uuid"].iloc[int(index_or_uuid)]
    raise TypeError(f"An item is given by its index (int), or its uuid (str or uuid.UUID); got "
                    f"{type(index_or_uuid).__name__}.")


# --- df.caiman --------------------------------------------------------------------------

@pd.api.extensions.register_dataframe_accessor("caiman")
class CaimanDataFrameExtensions:
    """``df.caiman``: add, remove and inspect batch items (mesmerize-core's API)."""

    def __init__(self, df: pd.DataFrame):
        self._df = df

    @property
    def _batch_path(self) -> Path:
        return batch_path_of(self._df)

    def _input_and_parent(self, input_movie_path: Any) -> tuple[str, str | None]:
        """The stored input path and the parent uuid for an ``add_item`` input."""
        if isinstance(input_movie_path, pd.Series):
            parent = input_movie_path
            if parent["algo"] != "mcorr":
                raise ValueError(
                    f"Only an mcorr item's output can be an input; item {parent['uuid']} is "
                    f"{parent['algo']!r}."
                )
            folder = item_folder(parent)
            return batch_lib.store_path(folder / "mcorr.npy", self._batch_path.parent), parent["uuid"]
        path = Path(input_movie_path).expanduser()
        if not path.is_absolute():
            path = batch_lib.resolve_path(path, self._batch_path.parent)
        path = path.resolve()
        # a registered movie inside an mcorr item's folder: that item becomes the parent
        mcorr = {row["uuid"] for row in batch_lib.read_table(self._batch_path) if row["algo"] == "mcorr"}
        results = batch_lib.results_dir_of(self._batch_path)
        if path.is_relative_to(results) and path.parent.name in mcorr:
            return batch_lib.store_path(path, self._batch_path.parent), path.parent.name
        if not path.is_file():
            raise FileNotFoundError(f"Input movie {path} does not exist.")
        return batch_lib.store_path(path, self._batch_path.parent), None

    def add_item(
        self,
        algo: str,
        item_name: str,
        input_movie_path: str | os.PathLike | pd.Series,
        params: dict,
        comments: str | None = None,
    ) -> str:
        """Add an item to the batch, save it to disk, and append it to this DataFrame.

        Parameters
        ----------
        algo
            ``"mcorr"``, ``"cnmf"`` or ``"cnmfe"``.
        item_name
            A name to group items by (usually the movie's name).
        input_movie_path
            A movie path, or an mcorr item's row or output path (the item becomes the parent).
        params
            ``{"main": {<CaImAn params>}, ...}``, JSON-serialisable.
        comments
            Free text.

        Returns
        -------
        str
            The new item's uuid.
        """
        writable_batch(self._batch_path)
        validation.check_item(algo, params, item_name)
        stored, parent = self._input_and_parent(input_movie_path)
        if parent is None:  # a raw movie: its header, and params that depend on its size
            movie = batch_lib.resolve_path(stored, self._batch_path.parent)
            validation.check_item(algo, params, item_name, movie)
        row = batch_lib.new_row(algo, item_name, stored, params, parent, comments)
        self._append_row(row)
        return row["uuid"]

    def _append_row(self, row: dict[str, Any]) -> None:
        """Write a new row into the batch file (its parent must still be there) and append
        it to this DataFrame."""
        parent = row["parent"]

        def append(rows: list[dict]) -> None:
            if parent is not None and parent not in {r["uuid"] for r in rows}:
                raise KeyError(f"Parent item {parent} is no longer in the batch.")
            rows.append(row)

        batch_lib.update_rows(self._batch_path, append)
        record = {**row, "params": decode_types(row["params"]), "outputs": None,
                  "ran_time": None, "algo_duration": None}
        index = 0 if self._df.empty else int(self._df.index.max()) + 1
        self._df.loc[index] = pd.Series(record, dtype=object)[list(self._df.columns)]

    def import_cnmf(self, hdf5_path: str | os.PathLike, input_movie_path: Any, item_name: str,
                    algo: str | None = None, comments: str | None = None) -> str:
        """Add results CaImAn (or mesmerize-core) saved, an ``.hdf5`` of ``CNMF.save``, as
        a finished cnmf / cnmfe item on ``input_movie_path`` (a movie, or an mcorr item's row
        or output); returns its uuid. See :func:`mesmerize_helpers.cnmf_import.import_cnmf`."""
        from ..cnmf_import import import_cnmf

        return import_cnmf(self._df, hdf5_path, input_movie_path, item_name, algo, comments)

    def add_grid(
        self,
        algo: str,
        item_name: str,
        input_movie_path: str | os.PathLike | pd.Series,
        base_params: dict,
        grid: Mapping[str, list],
        allow_duplicates: bool = False,
    ) -> list[str]:
        """Add one item per combination of a parameter grid.

        Parameters
        ----------
        grid
            Dotted parameter names (``"main.gSig"``) mapped to lists of values.
        allow_duplicates
            Add combinations even when an item with the same algo, input and params exists.

        Returns
        -------
        list of str
            The uuids added, in grid order.
        """
        names = list(grid)
        combos = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
        all_params = [set_dotted(base_params, combo) for combo in combos]
        stored, parent = self._input_and_parent(input_movie_path)
        movie = None if parent is not None else batch_lib.resolve_path(stored, self._batch_path.parent)
        for params in all_params:  # all refused before any is added
            validation.check_item(algo, params, item_name, movie)
        if not allow_duplicates:
            existing = {
                (r["algo"], r["input_movie_path"], batch_lib.params_to_json(r["params"]))
                for r in batch_lib.read_table(self._batch_path)
            }
            for combo, params in zip(combos, all_params):
                if (algo, stored, batch_lib.params_to_json(encode_types(params))) in existing:
                    raise ValueError(
                        f"An item with algo {algo!r}, input {stored} and params {combo} exists "
                        "already; pass allow_duplicates=True to add it again."
                    )
        return [self.add_item(algo, item_name, input_movie_path, p) for p in all_params]

    def uloc(self, u: str | uuid_lib.UUID) -> pd.Series:
        """The row of the item with this uuid (``str`` or ``uuid.UUID``)."""
        match = self._df[self._df["uuid"] == str(u)]
        if match.empty:
            raise ItemNotFoundError(f"No item with uuid {u} in the batch.")
        return match.iloc[0]

    def _descendants(self, uuid: str) -> list[str]:
        parents = parents_of(self._batch_path)
        return [u for u in parents if u != uuid and uuid in batch_lib.lineage(u, parents)]

    def get_children(self, index: int | str | uuid_lib.UUID) -> list[str]:
        """uuids of the items that use this mcorr item's output (and their own children).

        Raises
        ------
        TypeError
            For a cnmf/cnmfe item (they have no children), as mesmerize-core.
        """
        uuid = _uuid_of(self._df, index)
        algo = self._df.loc[self._df["uuid"] == uuid, "algo"].iloc[0]
        if algo != "mcorr":
            raise TypeError(f"Item {uuid} is a {algo!r} item; only mcorr items have children.")
        return self._descendants(uuid)

    def get_parent(self, index: int | str | uuid_lib.UUID, root: bool = False) -> str | None:
        """The parent's uuid (None on a raw movie); ``root=True``: the raw-movie ancestor."""
        uuid = _uuid_of(self._df, index)
        chain = batch_lib.lineage(uuid, parents_of(self._batch_path))
        if len(chain) == 1:
            return None
        return chain[0] if root else chain[-2]

    def remove_item(
        self, index: int | str | uuid_lib.UUID, remove_data: bool = True, safe_removal: bool = True
    ) -> None:
        """Remove an item from the batch (and its output folder when ``remove_data``).

        Raises
        ------
        DependencyError
            When other items use this item's output and ``safe_removal`` is True.
        ItemRunningError
            When ``remove_data`` and a job is running this item, or an item whose folder
            is inside its folder (a dependent item, with ``safe_removal=False``), right now:
            its files would be deleted under it. Nothing is removed.
        """
        writable_batch(self._batch_path)
        uuid = _uuid_of(self._df, index)
        children = self._descendants(uuid)
        if children and safe_removal:
            raise DependencyError(
                f"Item {uuid} has {len(children)} dependent item(s) ({', '.join(children)}); remove "
                "them first, or pass safe_removal=False to remove it anyway."
            )
        folder = item_folder(self.uloc(uuid))

        def drop(rows: list[dict]) -> None:
            rows[:] = [r for r in rows if r["uuid"] != uuid]
            if not safe_removal:  # orphans now start from raw data no longer there
                for r in rows:
                    if r["parent"] == uuid:
                        r["parent"] = None

        with _idle(folder, self.uloc(uuid), remove_data):
            batch_lib.update_rows(self._batch_path, drop)
            if remove_data and folder.exists():
                shutil.rmtree(folder)
        with warnings.catch_warnings():
            # mesmerize-core's API edits the user's DataFrame in place; pandas 3.1 deprecates
            # inplace=, and pyproject pins pandas < 4 until there is another in-place way
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            self._df.drop(index=self._df.index[self._df["uuid"] == uuid], inplace=True)
            self._df.reset_index(drop=True, inplace=True)

    def update_item(self, index: int | str | uuid_lib.UUID,
                    updates: Mapping[str, Any] | pd.Series) -> None:
        """Change columns of an item, on disk and here: ``item_name``, ``comments``, and
        ``params`` (as :meth:`update_params`). An unknown column is an AttributeError
        (:class:`~mesmerize_helpers.errors.UnknownColumnError`), as mesmerize-core."""
        params, updates = split_updates(self._df.columns, updates)
        if params is not None:
            self.update_params(index, params)
        if updates:
            self._edit_row(index, updates)

    def update_params(self, index: int | str | uuid_lib.UUID, params: dict) -> None:
        """Replace an item's params; Snakemake will re-run it and its children."""
        batch_lib.params_to_json(encode_types(params))
        row = self.uloc(_uuid_of(self._df, index))
        movie = None
        if row["parent"] is None:  # check against the movie when it is still there
            try:
                movie = batch_lib.resolve_path(row["input_movie_path"], self._batch_path.parent)
            except FileNotFoundError:
                pass
        validation.check_item(row["algo"], params, row["item_name"], movie)
        self._edit_row(index, {"params": params})

    def save_to_disk(self) -> None:
        """Write the edits made to this DataFrame in memory (``item_name``, ``comments``,
        ``params``) to the batch file; an IndexError
        (:class:`~mesmerize_helpers.errors.PreventOverwriteError`) when the file holds other
        items than this DataFrame, as mesmerize-core."""
        save_frame(self._df, writable_batch(self._batch_path))

    def _edit_row(self, index: int | str | uuid_lib.UUID, updates: dict[str, Any]) -> None:
        writable_batch(self._batch_path)
        uuid = _uuid_of(self._df, index)

        stored = {k: encode_types(v) if k == "params" else v for k, v in updates.items()}

        def edit(rows: list[dict]) -> None:
            for r in rows:
                if r["uuid"] == uuid:
                    r.update(stored)

        batch_lib.update_rows(self._batch_path, edit)
        label = self._df.index[self._df["uuid"] == uuid][0]
        for key, value in stored.items():
            self._df.at[label, key] = decode_types(value) if key == "params" else value

    def get_params_diffs(self, algo: str, item_name: str) -> pd.DataFrame:
        """The params that differ between the ``algo`` items named ``item_name``.

        As mesmerize-core: keys of ``"main"`` by their bare name (``"gSig"``; a nested CaImAn
        group's as ``"init.K"``), other top-level keys as they are (``"refit"``,
        ``"eval.min_SNR"``); ``"<default>"`` where an item does not set a key that another
        sets. One row per item, indexed as in this DataFrame.

        Raises
        ------
        NameError
            When no ``algo`` item has this name (mesmerize-core's error).
        """
        rows = self._df[(self._df["algo"] == algo) & (self._df["item_name"] == item_name)]
        if rows.empty:
            raise NameError(f"No {algo!r} item named {item_name!r} in the batch.")
        return pd.DataFrame.from_records(params_diffs(list(rows["params"])),
                                         index=rows.index).astype(object)

    def reload_from_disk(self) -> pd.DataFrame:
        """The batch as it is now on disk, with fresh results from the manifests."""
        return batch_lib.load_batch(self._batch_path)

    def view(self, uuids: list[str] | None = None, max_mb: float = 20.0) -> Any:
        """The batch viewer (table, contours, traces, shifts) for a notebook cell (the
        notebook keeps a copy: ``max_mb`` caps it); ``save(path)`` writes the page."""
        from ..viewer import view

        return view(self._batch_path, uuids=uuids, max_mb=max_mb)


# --- s.caiman ----------------------------------------------------------------------------

@pd.api.extensions.register_series_accessor("caiman")
class CaimanSeriesExtensions:
    """``s.caiman``: run one item and read what all algorithms produce."""

    def __init__(self, s: pd.Series):
        self._series = s

    def run(self, backend: str | None = None, wait: bool = True, **kwargs: Any):
        """Run this item (and the items it depends on) with Snakemake.

        As in mesmerize-core, a failing item does not raise: the failure is recorded in the
        item (``outputs["success"]`` False, ``outputs["traceback"]``), so a loop over the batch
        goes on; the getters then raise ``BatchItemUnsuccessfulError``.

        Parameters
        ----------
        backend
            ``"subprocess"`` (default), ``"local"`` (always waits), ``"local_async"`` (never
            waits) run snakemake on this machine; ``"slurm"`` submits SLURM jobs through
            ``profiles/slurm`` (``sbatch_opts="--mem=16G --time=2:00:00 ..."`` as in
            mesmerize-core). Other names raise KeyError listing these.
        wait
            Block until the run ends.
        **kwargs
            ``profile`` (a Snakemake profile name or directory), ``cores`` (local cores;
            default ``MESMERIZE_N_PROCESSES``, else all but one), ``sbatch_opts``.

        Returns
        -------
        mesmerize_helpers.runner.Run
            Its ``.wait()`` returns the item's manifest.
        """
        from ..runner import run_item

        writable_batch(batch_path_of(self._series))
        return run_item(batch_path_of(self._series), self._series["uuid"],
                        item_folder(self._series), backend=backend, wait=wait, **kwargs)

    def get_input_movie_path(self) -> Path:
        """The movie this item reads: its raw movie, or its parent's registered movie (the
        one the parent's latest successful run wrote)."""
        s = self._series
        batch_path = batch_path_of(s)
        parent = s.get("parent")
        if parent is not None and not is_legacy(batch_path):
            parents = parents_of(batch_path)
            folder = batch_lib.item_dir(batch_lib.results_dir_of(batch_path), parent, parents)
            manifest = read_manifest(folder)
            if manifest and manifest.get("success") and \
                    "mcorr-output-path" in manifest.get("outputs", {}):
                registered = folder / manifest["outputs"]["mcorr-output-path"]
                return Path(os.path.normpath(registered)).resolve()
        return batch_lib.resolve_path(s["input_movie_path"], batch_path.parent)

    def get_input_movie(self, reader: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """The input movie as a (frames, y, x) array (lazy for large files).

        Parameters
        ----------
        reader
            A callable ``reader(path: str, **kwargs)`` returning an array-like, for formats
            the built-in readers do not know (``LazyTiff``, ``LazyVideo``, ``pims.open``...).
            It also receives ``var_name_hdf5`` when the item's params set it (flat or in the
            ``"data"`` group), as mesmerize-core does.
        **kwargs
            Passed to ``reader``; the built-in readers take only ``var_name_hdf5``.
        """
        return read_input_movie(self.get_input_movie_path(), self._series["params"], reader,
                                **kwargs)

    def get_output_dir(self) -> Path:
        """This item's output folder."""
        return item_folder(self._series)

    def get_manifest(self) -> dict:
        """This item's manifest (raises if not run or failed)."""
        if is_legacy(batch_path_of(self._series)):
            raise ReadOnlyBatchError(f"Item {self._series['uuid']} is in a mesmerize-core batch, "
                                     "which has no manifests; its row's 'outputs' say what ran.")
        return checked_manifest(self._series)[0]

    def get_corr_image(self, filtered: bool | None = None) -> np.ndarray:
        """The local (8-neighbour) correlation image, (y, x).

        Parameters
        ----------
        filtered
            The correlation image of the gSig-filtered movie that CNMF-E seeds from (with
            ``get_pnr_image``) instead of the plain one. Default: filtered for cnmfe items.
        """
        if filtered is None:
            filtered = self._series["algo"] == "cnmfe"
        if filtered:
            return np.load(self._pnr_images()["corr-pnr-img-path"])
        return np.load(output_file(self._series, "corr-img-path"))

    def get_pnr_image(self) -> np.ndarray:
        """The peak-to-noise ratio image of the gSig-filtered movie, (y, x).

        cnmfe items make it when they run; for other items it is computed on the first
        request (from the registered movie of an mcorr item, the input movie of a cnmf item,
        filtered at the item's ``gSig``, else ``gSig_filt``, else 3 px), saved in the item's
        folder and recorded in its manifest, then read from there.
        """
        return np.load(self._pnr_images()["pnr-image-path"])

    def _pnr_images(self) -> dict[str, Path]:
        """Paths of the item's PNR image and filtered correlation image, made if missing."""
        from ..outputs import describe, pnr_gsig, pnr_images

        manifest, folder = checked_manifest(self._series)
        outputs = manifest["outputs"]
        keys = ("pnr-image-path", "corr-pnr-img-path")
        if not all(k in outputs for k in keys) and not is_legacy(batch_path_of(self._series)):
            if self._series["algo"] == "mcorr":
                movie = open_movie(folder / outputs["mcorr-output-path"])
            else:
                movie = self.get_input_movie()
            made = pnr_images(movie, folder, pnr_gsig(manifest["params"]["main"]), progress=False)
            files = {k: {"path": made[k], **describe(folder / made[k])} for k in keys}
            outputs = update_manifest(folder, {"outputs": made, "files": files})["outputs"]
        return {k: output_file(self._series, k) for k in keys} if is_legacy(
            batch_path_of(self._series)) else {k: (folder / outputs[k]).resolve() for k in keys}

    def get_projection(self, proj_type: str) -> np.ndarray:
        """``"mean"``, ``"max"`` or ``"std"`` projection of the movie, (y, x)."""
        if proj_type not in ("mean", "max", "std"):
            raise ValueError(f"proj_type must be 'mean', 'max' or 'std', got {proj_type!r}.")
        return np.load(output_file(self._series, f"{proj_type}-projection-path"))
