"""Footprint matrices: K spatial footprints as a sparse (pixels, K) matrix.

A footprint covers a few hundred pixels of a field of tens or hundreds of thousands, and the
number of footprints grows with the field. Held dense, the (pixels, K) matrix grows with the
square of the field (a 512 x 512 field fitted in patches holds ~1800 footprints before
merging: 1.8 GB dense in float32, a few MB sparse). The engine therefore keeps footprints as
``scipy.sparse.csc_matrix`` float32 with sorted indices (one column per footprint, pixels
in Fortran order on ``(y, x)``), and these helpers do the column-wise work on the stored
entries only.

Pure array code: matrices in, matrices and per-column numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "as_footprints", "from_columns", "column", "column_norms", "column_peaks", "areas",
    "scale_columns", "overlapping_pairs", "box_image",
]


def as_footprints(A: Any, dtype: Any = np.float32) -> sp.csc_matrix:
    """(pixels, K) footprints, dense or sparse, as a CSC matrix with sorted indices and no
    stored zeros (a copy when ``A`` is not already one)."""
    out = sp.csc_matrix(A, dtype=dtype, copy=True)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def from_columns(
    indices: Sequence[np.ndarray], values: Sequence[np.ndarray], n_pixels: int,
    dtype: Any = np.float32,
) -> sp.csc_matrix:
    """CSC matrix whose column k holds ``values[k]`` at pixels ``indices[k]`` (zeros dropped).

    Parameters
    ----------
    indices
        K integer arrays of distinct pixel indices.
    values
        K arrays of the same lengths.
    n_pixels
        Number of rows.
    """
    K = len(indices)
    sizes = np.fromiter((len(i) for i in indices), np.int64, K)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    idx = np.concatenate(indices).astype(np.int32) if K else np.zeros(0, np.int32)
    val = np.concatenate(values).astype(dtype) if K else np.zeros(0, dtype)
    return as_footprints(sp.csc_matrix((val, idx, indptr), shape=(n_pixels, K)), dtype)


def column(A: sp.csc_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices and values of column ``k`` of a CSC matrix (views, not copies)."""
    s, e = A.indptr[k], A.indptr[k + 1]
    return A.indices[s:e], A.data[s:e]


def _reduce_columns(A: sp.csc_matrix, values: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """``ufunc.reduce`` of ``values`` (one per stored entry) over each column; 0 if empty."""
    out = np.zeros(A.shape[1], np.float64)
    nz = np.flatnonzero(np.diff(A.indptr) > 0)
    if nz.size:
        out[nz] = ufunc.reduceat(values, A.indptr[nz])
    return out


def column_norms(A: sp.csc_matrix) -> np.ndarray:
    """(K,) L2 norm of each column."""
    return np.sqrt(_reduce_columns(A, np.asarray(A.data, np.float64) ** 2, np.add))


def column_peaks(A: sp.csc_matrix) -> np.ndarray:
    """(K,) largest value of each column (0 for an empty or non-positive column)."""
    return np.maximum(_reduce_columns(A, np.asarray(A.data, np.float64), np.maximum), 0)


def areas(A: Any, rel_thr: float) -> np.ndarray:
    """(K,) number of pixels of each column above ``rel_thr`` times its peak."""
    A = A if sp.isspmatrix_csc(A) else as_footprints(A)
    col = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    peak = column_peaks(A)
    above = A.data > rel_thr * np.maximum(peak[col], 1e-30)
    return np.bincount(col[above], minlength=A.shape[1])


def scale_columns(A: sp.csc_matrix, s: np.ndarray) -> sp.csc_matrix:
    """Column k multiplied by ``s[k]`` (a new CSC matrix, same dtype)."""
    out = A.copy()
    out.data = (out.data * np.repeat(np.asarray(s, np.float64), np.diff(A.indptr))).astype(
        A.dtype)
    return out


def overlapping_pairs(A: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` of columns that share at least one stored pixel.

    Returns
    -------
    i, j
        (n_pairs,) int arrays.
    """
    support = A.copy()
    support.data = np.ones_like(support.data, dtype=np.float32)
    ov = sp.triu(support.T @ support, k=1).tocoo()
    return ov.row.astype(np.int64), ov.col.astype(np.int64)


def box_image(
    idx: np.ndarray, val: np.ndarray, dims: tuple[int, int], pad: int
) -> tuple[np.ndarray, int, int]:
    """A footprint's pixels drawn in the smallest box holding them, plus ``pad`` px around
    (clipped to the frame).

    Parameters
    ----------
    idx, val
        (n,) pixel indices (Fortran order on ``dims``) and values; n >= 1.
    dims
        (y, x) frame size.
    pad
        Margin (px).

    Returns
    -------
    img, r0, c0
        The (rows, cols) box image (``val``'s dtype, 0 elsewhere) and the frame coordinates
        of its top-left pixel.
    """
    idx = np.asarray(idx, np.int64)
    ys, xs = idx % dims[0], idx // dims[0]
    r0, c0 = max(int(ys.min()) - pad, 0), max(int(xs.min()) - pad, 0)
    r1, c1 = min(int(ys.max()) + pad + 1, dims[0]), min(int(xs.max()) + pad + 1, dims[1])
    img = np.zeros((r1 - r0, c1 - c0), np.asarray(val).dtype)
    img[ys - r0, xs - c0] = val
    return img, r0, c0
