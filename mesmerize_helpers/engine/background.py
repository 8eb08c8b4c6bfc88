"""Initialization of the low-rank non-negative background ``b f``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .data import as_data

__all__ = ["init_background"]


def init_background(
    Y: np.ndarray, A: np.ndarray, C: np.ndarray, nb: int, n_iter: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``nb`` non-negative factorization of the residual ``Y - A C``.

    The residual is never formed: every product with it is taken as products with ``Y``,
    ``A`` and ``C``, and ``Y`` is read a block at a time, so memory stays at the size of
    the factors (and a block).

    Parameters
    ----------
    Y
        (pixels, T) data: an array or a :class:`~.data.DataMatrix`.
    A
        (pixels, K) footprints (scipy.sparse or dense).
    C
        (K, T) traces.
    nb
        Number of background components (0 gives empty arrays).
    n_iter
        HALS iterations.
    seed
        Seed for the power iterations that initialize components beyond the first.

    Returns
    -------
    b, f
        (pixels, nb) and (nb, T), non-negative.
    """
    Y = as_data(Y)
    d, T = Y.shape
    if nb <= 0:
        return np.zeros((d, 0), np.float32), np.zeros((0, T), np.float32)

    # products with Y in Y's float32: a float64 operand would make numpy copy all of Y
    A = sp.csc_matrix(A, dtype=np.float32)
    C = np.asarray(C, np.float32)

    def r_dot(v: np.ndarray) -> np.ndarray:  # R @ v, v (T, m)
        v = np.asarray(v, np.float32)
        return Y.dot(v) - A @ (C @ v)

    def rt_dot(u: np.ndarray) -> np.ndarray:  # R.T @ u, u (d, m)
        u = np.asarray(u, np.float32)
        return (Y.project(u) - (A.T @ u).T @ C).T

    # first component: mean image and a flat trace (the static baseline)
    b = np.zeros((d, nb), np.float32)
    f = np.zeros((nb, T), np.float32)
    f[0] = 1.0
    b[:, 0] = np.maximum(r_dot(np.ones((T, 1), np.float32) / T)[:, 0], 0)
    # further components: leading singular vectors of what the first one leaves
    rng = np.random.default_rng(seed)
    for j in range(1, nb):
        v = rng.standard_normal((T, 1)).astype(np.float32)
        for _ in range(8):
            u = r_dot(v) - b[:, :j] @ (f[:j] @ v)
            v = rt_dot(u) - f[:j].T @ (b[:, :j].T @ u)
            v /= np.linalg.norm(v) + 1e-12
        u = r_dot(v) - b[:, :j] @ (f[:j] @ v)
        if np.sum(np.maximum(u, 0)) < np.sum(np.maximum(-u, 0)):
            u, v = -u, -v
        b[:, j] = np.maximum(u[:, 0], 0)
        f[j] = np.maximum(v[:, 0], 0) + 1e-3 * float(np.abs(v).max())  # strictly positive
    for _ in range(n_iter):  # HALS NMF on the residual
        RtB = rt_dot(b)  # (T, nb)
        BtB = b.T @ b
        for j in range(nb):
            if BtB[j, j] > 0:
                f[j] = np.maximum(f[j] + (RtB[:, j] - f.T @ BtB[:, j]) / BtB[j, j], 0)
        RF = r_dot(f.T)  # (d, nb)
        FFt = f @ f.T
        for j in range(nb):
            if FFt[j, j] > 0:
                b[:, j] = np.maximum(b[:, j] + (RF[:, j] - b @ FFt[:, j]) / FFt[j, j], 0)
    return b, f
