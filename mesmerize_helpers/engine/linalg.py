"""Matrix products with the (pixels, T) data matrix, in the orientation BLAS does fast."""

from __future__ import annotations

import numpy as np

__all__ = ["project"]


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
