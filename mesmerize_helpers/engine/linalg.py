"""Matrix products with the (pixels, T) data matrix, in the orientation BLAS does fast."""

from __future__ import annotations

import numpy as np

__all__ = ["project", "pair_dots"]


def project(Y: np.ndarray, U: np.ndarray) -> np.ndarray:
    """``U.T @ Y`` for a (pixels, m) matrix ``U`` with few columns.

    OpenBLAS multiplies a short-and-wide left operand by a tall ``Y`` several times slower
    than the same product written as ``(Y.T @ U).T``; the result is the same.

    Returns
    -------
    np.ndarray
        (m, T) in ``Y``'s dtype.
    """
    U = np.ascontiguousarray(U, dtype=Y.dtype)
    return (Y.T @ U).T


def pair_dots(X: np.ndarray, i: np.ndarray, j: np.ndarray,
              chunk_bytes: int = 32 << 20) -> np.ndarray:
    """``X[i[n]] @ X[j[n]]`` for every n, in float64, without forming ``X @ X.T``.

    Parameters
    ----------
    X
        (K, T) rows (e.g. traces).
    i, j
        (n,) row indices.

    Returns
    -------
    np.ndarray
        (n,) float64.
    """
    out = np.empty(len(i), np.float64)
    # pairs per chunk: the rows gathered for them take ``chunk_bytes`` (a fixed number of
    # pairs took 650 MB for 20,000-frame traces)
    chunk = max(int(chunk_bytes // max(2 * X.shape[1] * X.itemsize, 1)), 1)
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = np.einsum("nt,nt->n", X[i[s:s + chunk]], X[j[s:s + chunk]],
                                     dtype=np.float64)
    return out
