"""The ``paths`` and ``caiman`` accessors on the batch DataFrame and its rows.

Thin classes: batch editing lives in :mod:`mesmerize_helpers.batch`, running in
:mod:`mesmerize_helpers.runner`.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import batch as batch_lib
from ..errors import (
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    DependencyError,
    WrongAlgorithmExtensionError,
)
from ..io.movies import open_movie
from ..manifest import read_manifest, update_manifest

# --- shared helpers for every accessor ----------------------------------------------------

def batch_path_of(obj: pd.DataFrame | pd.Series) -> Path:
    """The batch file a DataFrame or row came from (``attrs["batch_path"]``)."""
    path = obj.attrs.get("batch_path")
    if path is None:
        raise ValueError(
            "This DataFrame/row has no batch path: load it with load_batch() or create_batch(), "
            "and keep attrs when building new frames from it."
        )
    return Path(path)


def parents_of(batch_path: Path) -> dict[str, str | None]:
    """uuid -> parent uuid for every item now in the batch file."""
    stat = Path(batch_path).stat()
    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # every write is a new file
    return dict(_parents_cached(str(batch_path), version))


@functools.lru_cache(maxsize=8)
def _parents_cached(batch_path: str, version: tuple[int, int, int]
                    ) -> tuple[tuple[str, str | None], ...]:
    # every getter needs an item's folder, hence its lineage: read the TSV once per version
    return tuple((row["uuid"], row["parent"]) for row in batch_lib.read_table(batch_path))


def item_folder(s: pd.Series) -> Path:
    """The output folder of the item in row ``s``."""
    path = batch_path_of(s)
    parents = parents_of(path)
    parents.setdefault(s["uuid"], s["parent"])
    return batch_lib.item_dir(batch_lib.results_dir_of(path), s["uuid"], parents)


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
    return manifest, folder


def output_file(s: pd.Series, key: str, algos: tuple[str, ...] | None = None) -> Path:
    """Path of one of the item's outputs by mesmerize-core key (e.g. ``"corr-img-path"``)."""
    manifest, folder = checked_manifest(s, algos)
    try:
        return (folder / manifest["outputs"][key]).resolve()
    except KeyError:
        raise FileNotFoundError(
            f"Item {s['uuid']} has no output {key!r}; it has {', '.join(manifest['outputs'])}."
        ) from None


def _uuid_of(df: pd.DataFrame, index_or_uuid: int | str) -> str:
    if isinstance(index_or_uuid, str):
        if index_or_uuid not in set(df["uuid"]):
            raise KeyError(f"No item with uuid {index_or_uuid} in the batch.")
        return index_or_uuid
    return df.loc[index_or_uuid, "uuid"]


# --- paths ---------------------------------------------------------------------------

class _PathsAccessor:
    def __init__(self, obj: pd.DataFrame | pd.Series):
        self._obj = obj

    def get_batch_path(self) -> Path:
        """The batch TSV this DataFrame or row belongs to."""
        return batch_path_of(self._obj)

    def resolve(self, path: str | os.PathLike) -> Path:
        """A stored path made absolute: batch dir first, then the raw data dir."""
        return batch_lib.resolve_path(path, self.get_batch_path().parent)

    def split(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Split an absolute path into (batch or raw data dir, path relative to it)."""
        path = Path(path).resolve()
        for root in (self.get_batch_path().parent, batch_lib.get_parent_raw_data_path()):
            if root is not None and path.is_relative_to(Path(root).resolve()):
                root = Path(root).resolve()
                return root, path.relative_to(root)
        raise ValueError(
            f"{path} is under neither the batch dir {self.get_batch_path().parent} nor the raw "
            f"data dir {batch_lib.get_parent_raw_data_path()}."
        )


@pd.api.extensions.register_dataframe_accessor("paths")
class PathsDataFrameExtension(_PathsAccessor):
    """``df.paths``: where the batch lives and how its stored paths resolve."""


@pd.api.extensions.register_series_accessor("paths")
class PathsSeriesExtension(_PathsAccessor):
    """``s.paths``: the same for one row."""


# --- df.caiman --------------------------------------------------------------------------

@pd.api.extensions.register_dataframe_accessor("caiman")
class CaimanDataFrameExtension:
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
        stored, parent = self._input_and_parent(input_movie_path)
        row = batch_lib.new_row(algo, item_name, stored, params, parent, comments)

        def append(rows: list[dict]) -> None:
            if parent is not None and parent not in {r["uuid"] for r in rows}:
                raise KeyError(f"Parent item {parent} is no longer in the batch.")
            rows.append(row)

        batch_lib.update_rows(self._batch_path, append)
        record = {**row, "outputs": None, "ran_time": None, "algo_duration": None}
        index = 0 if self._df.empty else int(self._df.index.max()) + 1
        self._df.loc[index] = pd.Series(record, dtype=object)[list(self._df.columns)]
        return row["uuid"]

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
        stored, _ = self._input_and_parent(input_movie_path)
        if not allow_duplicates:
            existing = {
                (r["algo"], r["input_movie_path"], batch_lib.params_to_json(r["params"]))
                for r in batch_lib.read_table(self._batch_path)
            }
            for combo, params in zip(combos, all_params):
                if (algo, stored, batch_lib.params_to_json(params)) in existing:
                    raise ValueError(
                        f"An item with algo {algo!r}, input {stored} and params {combo} exists "
                        "already; pass allow_duplicates=True to add it again."
                    )
        return [self.add_item(algo, item_name, input_movie_path, p) for p in all_params]

    def uloc(self, uuid: str) -> pd.Series:
        """The row of the item with this uuid."""
        match = self._df[self._df["uuid"] == uuid]
        if match.empty:
            raise KeyError(f"No item with uuid {uuid} in the batch.")
        return match.iloc[0]

    def get_children(self, index_or_uuid: int | str) -> list[str]:
        """uuids of every item that descends from this one (children, grandchildren, ...)."""
        uuid = _uuid_of(self._df, index_or_uuid)
        parents = parents_of(self._batch_path)
        return [u for u in parents if u != uuid and uuid in batch_lib.lineage(u, parents)]

    def get_parent(self, index_or_uuid: int | str, root: bool = False) -> str | None:
        """The parent's uuid (None on a raw movie); ``root=True``: the raw-movie ancestor."""
        uuid = _uuid_of(self._df, index_or_uuid)
        chain = batch_lib.lineage(uuid, parents_of(self._batch_path))
        if len(chain) == 1:
            return None
        return chain[0] if root else chain[-2]

    def remove_item(
        self, index_or_uuid: int | str, remove_data: bool = True, safe_removal: bool = True
    ) -> None:
        """Remove an item from the batch (and its output folder when ``remove_data``).

        Raises
        ------
        DependencyError
            When other items use this item's output and ``safe_removal`` is True.
        """
        uuid = _uuid_of(self._df, index_or_uuid)
        children = self.get_children(uuid)
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

    def update_item(self, index_or_uuid: int | str, updates: Mapping[str, Any]) -> None:
        """Change user columns (``item_name``, ``comments``) of an item, on disk and here."""
        bad = [k for k in updates if k not in batch_lib.USER_COLUMNS]
        if bad:
            raise ValueError(
                f"Cannot update column(s) {', '.join(bad)}: only {', '.join(batch_lib.USER_COLUMNS)} "
                "are editable (use update_params to change what runs)."
            )
        self._edit_row(index_or_uuid, dict(updates))

    def update_params(self, index_or_uuid: int | str, params: dict) -> None:
        """Replace an item's params; Snakemake will re-run it and its children."""
        batch_lib.params_to_json(params)
        self._edit_row(index_or_uuid, {"params": params})

    def _edit_row(self, index_or_uuid: int | str, updates: dict[str, Any]) -> None:
        uuid = _uuid_of(self._df, index_or_uuid)

        def edit(rows: list[dict]) -> None:
            for r in rows:
                if r["uuid"] == uuid:
                    r.update(updates)

        batch_lib.update_rows(self._batch_path, edit)
        index = self._df.index[self._df["uuid"] == uuid][0]
        for key, value in updates.items():
            self._df.at[index, key] = value

    def get_params_diffs(self, algo: str, item_name: str) -> pd.DataFrame:
        """The flattened params (``"main.gSig"``, ...) that differ between items of a name."""
        rows = self._df[(self._df["algo"] == algo) & (self._df["item_name"] == item_name)]
        flat = pd.DataFrame(
            [flatten_params(p) for p in rows["params"]], index=rows.index
        )
        varying = [c for c in flat.columns if flat[c].map(repr).nunique(dropna=False) > 1]
        return flat[varying]

    def reload_from_disk(self) -> pd.DataFrame:
        """The batch as it is now on disk, with fresh results from the manifests."""
        return batch_lib.load_batch(self._batch_path)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"main": {"gSig": [4, 4]}}`` -> ``{"main.gSig": [4, 4]}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def set_dotted(params: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """A deep copy of ``params`` with each dotted key of ``values`` set."""
    import copy

    out = copy.deepcopy(dict(params))
    for dotted, value in values.items():
        node = out
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Grid key {dotted!r}: {key!r} is not a dict in the base params.")
        node[last] = value
    return out


# --- s.caiman ----------------------------------------------------------------------------

@pd.api.extensions.register_series_accessor("caiman")
class CaimanSeriesExtension:
    """``s.caiman``: run one item and read what all algorithms produce."""

    def __init__(self, s: pd.Series):
        self._series = s

    def run(
        self,
        backend: str | None = None,
        wait: bool = True,
        profile: str | os.PathLike | None = None,
        cores: int | None = None,
    ):
        """Run this item (and the items it depends on) with Snakemake.

        Parameters
        ----------
        backend
            None or ``"local"``: snakemake on this machine; ``"slurm"`` (or any profile name
            under ``profiles/``): through that Snakemake profile.
        wait
            Block until the run ends (raising if the item failed).
        profile
            A Snakemake profile name or directory (overrides ``backend``).
        cores
            Local cores; default ``MESMERIZE_N_PROCESSES``, else all cores but one.

        Returns
        -------
        mesmerize_helpers.runner.Run
            Has ``.wait()``, which raises ``BatchItemUnsuccessfulError`` if the item failed.
        """
        from ..runner import run_item

        return run_item(self._series, backend=backend, wait=wait, profile=profile, cores=cores)

    def get_input_movie_path(self) -> Path:
        """The movie this item reads: its raw movie, or its parent's registered movie."""
        stored = self._series["input_movie_path"]
        return batch_lib.resolve_path(stored, batch_path_of(self._series).parent)

    def get_input_movie(self, reader: Callable[[Path], Any] | None = None) -> Any:
        """The input movie as a (frames, y, x) array (lazy for large files)."""
        var_name = self._series["params"]["main"].get("var_name_hdf5", "mov")
        return open_movie(self.get_input_movie_path(), reader=reader, var_name_hdf5=var_name)

    def get_output_dir(self) -> Path:
        """This item's output folder."""
        return item_folder(self._series)

    def get_manifest(self) -> dict:
        """This item's manifest (raises if not run or failed)."""
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
        if not all(k in outputs for k in keys):
            if self._series["algo"] == "mcorr":
                movie = open_movie(folder / outputs["mcorr-output-path"])
            else:
                movie = self.get_input_movie()
            made = pnr_images(movie, folder, pnr_gsig(manifest["params"]["main"]), progress=False)
            files = {k: {"path": made[k], **describe(folder / made[k])} for k in keys}
            outputs = update_manifest(folder, {"outputs": made, "files": files})["outputs"]
        return {k: (folder / outputs[k]).resolve() for k in keys}

    def get_projection(self, proj_type: str) -> np.ndarray:
        """``"mean"``, ``"max"`` or ``"std"`` projection of the movie, (y, x)."""
        if proj_type not in ("mean", "max", "std"):
            raise ValueError(f"proj_type must be 'mean', 'max' or 'std', got {proj_type!r}.")
        return np.load(output_file(self._series, f"{proj_type}-projection-path"))
