"""Writing an item's output files, and the summary images that mcorr and cnmf items share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_IMAGES = {
    "mean-projection-path": "mean_projection.npy",
    "std-projection-path": "std_projection.npy",
    "max-projection-path": "max_projection.npy",
    "corr-img-path": "corr_img.npy",
}


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Shape and dtype of a ``.npy`` file, for the manifest's file list."""
    array = np.load(path, mmap_mode="r")
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def save_array(folder: Path, name: str, array: np.ndarray) -> str:
    """Save ``array`` as ``folder/name`` (a ``.npy``) and return the name."""
    np.save(folder / name, np.ascontiguousarray(array))
    return name


def open_movie_output(folder: Path, name: str, shape: tuple[int, ...]) -> np.memmap:
    """A C-order float32 ``.npy`` memmap to stream a movie into, frame chunk by chunk."""
    return np.lib.format.open_memmap(folder / name, mode="w+", dtype=np.float32, shape=shape)


def write_summary_images(movie: Any, folder: Path, progress: bool = True) -> dict[str, str]:
    """Mean/max/std projections and the local correlation image of ``movie`` (frames, y, x).

    Returns
    -------
    dict
        mesmerize-core's output keys (``mean-projection-path``, ...) to file names in
        ``folder``.
    """
    from .engine.images import local_correlations, projections

    images = projections(movie)
    images["corr"] = local_correlations(movie)
    names = {"mean": "mean-projection-path", "std": "std-projection-path",
             "max": "max-projection-path", "corr": "corr-img-path"}
    return {key: save_array(folder, SUMMARY_IMAGES[key], images[kind]) for kind, key in names.items()}
