"""Seed masks for seeded CNMF (``params["Ain"]`` / mesmerize-core's ``params["Ain_path"]``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["load_seed_masks"]


def load_seed_masks(path: str | os.PathLike, dims: tuple[int, int]) -> np.ndarray:
    """Seed masks from a ``.npy`` file, as (y, x, n) masks on a ``dims`` frame.

    Accepted layouts: (y, x, n) images (this package's), and CaImAn's ``Ain`` as
    mesmerize-core passes it: (pixels, n) in Fortran pixel order (``y + x * dims[0]``), dense
    or a pickled scipy.sparse matrix (``np.save`` of a sparse matrix).

    Raises
    ------
    ValueError
        When the array fits neither layout; the message names the file and both shapes.
    """
    path = Path(path)
    data = np.load(path, allow_pickle=True)  # mesmerize-core's seeds may be pickled sparse
    if data.dtype == object and data.size == 1:
        data = data.item()
    if sp.issparse(data):
        data = data.toarray()
    data = np.asarray(data)
    if data.dtype == object:
        raise ValueError(f"{path}: holds Python objects, not seed masks.")
    d1, d2 = int(dims[0]), int(dims[1])
    if data.ndim == 3 and data.shape[:2] == (d1, d2):
        return data
    if data.ndim == 2 and data.shape[0] == d1 * d2:
        return data.reshape(d1, d2, data.shape[1], order="F")
    if data.ndim == 2 and data.shape == (d1, d2):
        return data[:, :, None]
    raise ValueError(f"{path}: seed masks of shape {data.shape} fit a {d1} x {d2} movie "
                     f"neither as (y, x, n) = ({d1}, {d2}, n) nor as CaImAn's (pixels, n) = "
                     f"({d1 * d2}, n).")
