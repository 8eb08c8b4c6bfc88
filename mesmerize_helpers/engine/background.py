"""Initialization of the low-rank non-negative background ``b f``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .data import DataMatrix, MemoryWorkspace, Workspace, as_data

__all__ = ["init_background", "BACKGROUND_BINS"]

#: Frames the background's factorization iterates on. A longer movie is averaged over bins of
#: consecutive frames first (one pass over the data), the factorization runs on those means
#: in memory, and the full-rate traces and then the footprints are fitted to the data in one
#: more pass each: 3 passes over the movie instead of the 38 of iterating on the movie itself
#: (nb = 2), which on a movie larger than the OS's file cache are each a full read from disk.
#: A fixed number, not one derived from the memory budget, so that every budget gives the
#: same background: the means go to the fit's workspace (a file when they do not fit).
BACKGROUND_BINS = 1000

Product = Callable[[np.ndarray], np.ndarray]


def init_background(
    Y: np.ndarray, A: np.ndarray, C: np.ndarray, nb: int, n_iter: int = 10, seed: int = 0,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``nb`` non-negative factorization of the residual ``Y - A C``.

    The residual is never formed: every product with it is taken as products with ``Y``,
    ``A`` and ``C``, and ``Y`` is read a block at a time, so memory stays at the size of
    the factors (and a block). A movie longer than :data:`BACKGROUND_BINS` frames is
    factorized as the means of that many bins of frames, then its traces and footprints
    are fitted at the full frame rate.

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
    workspace
        Where the bin means of a long movie go, (pixels, :data:`BACKGROUND_BINS`) float32
        (default: memory).

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
    r_dot, rt_dot = _residual_products(Y, A, C)
    width = int(np.ceil(T / BACKGROUND_BINS))
    if width == 1:
        return _factorize(r_dot, rt_dot, d, T, nb, n_iter, seed)
    R = _binned_residual(Y, A, C, width, workspace or MemoryWorkspace(Y.budget))
    no_components = sp.csc_matrix((d, 0), dtype=np.float32), np.zeros((0, R.shape[1]),
                                                                        np.float32)
    b, f_binned = _factorize(*_residual_products(R, *no_components), d, R.shape[1],
                             nb, n_iter, seed)
    del R
    # at the full frame rate: the traces given the footprints, then the footprints given
    # the traces, each from one product with the data (HALS sweeps on the fixed product)
    f = np.repeat(f_binned, width, axis=1)[:, :T]
    f = _hals_rows(f, rt_dot(b).T, b.T @ b, n_iter)
    b = _hals_rows(b.T, r_dot(f.T).T, f @ f.T, n_iter).T
    return np.ascontiguousarray(b), f


def _residual_products(Y, A: sp.csc_matrix, C: np.ndarray) -> tuple[Product, Product]:
    """``v -> (Y - A C) v`` and ``u -> (Y - A C).T u``, each one pass over ``Y``."""
    def r_dot(v: np.ndarray) -> np.ndarray:  # R @ v, v (T, m)
        v = np.asarray(v, np.float32)
        return Y.dot(v) - A @ (C @ v)

    def rt_dot(u: np.ndarray) -> np.ndarray:  # R.T @ u, u (d, m)
        u = np.asarray(u, np.float32)
        return (Y.project(u) - (A.T @ u).T @ C).T

    return r_dot, rt_dot


def _binned_residual(Y, A: sp.csc_matrix, C: np.ndarray, width: int,
                     workspace: Workspace) -> DataMatrix:
    """``Y - A C`` averaged over bins of ``width`` frames (the last may be shorter),
    (pixels, ceil(T / width)) float32 in ``workspace``, from one pass over ``Y``."""
    d, T = Y.shape
    starts = np.arange(0, T, width)
    counts = np.diff(np.r_[starts, T]).astype(np.float32)

    def binned(X: np.ndarray) -> np.ndarray:
        return np.add.reduceat(X, starts, axis=1) / counts

    C_binned = binned(C) if C.shape[0] else np.zeros((0, len(starts)), np.float32)
    R = workspace.matrix((d, len(starts)))
    for a, b in Y.row_blocks(copies=2):
        R.write(a, 0, binned(Y.rows(a, b)) - A[a:b] @ C_binned)
    Y.release()
    return R.done(Y.dims)


def _hals_rows(X: np.ndarray, P: np.ndarray, G: np.ndarray, sweeps: int) -> np.ndarray:
    """HALS sweeps for the non-negative rows ``X`` (m, n) of ``min ||R - U X||`` given the
    fixed products ``P = U.T R`` (m, n) and ``G = U.T U`` (m, m)."""
    X = np.array(X, np.float32)
    for _ in range(sweeps):
        for j in range(X.shape[0]):
            if G[j, j] > 0:
                X[j] = np.maximum(X[j] + (P[j] - G[j] @ X) / G[j, j], 0)
    return X


def _factorize(r_dot: Product, rt_dot: Product, d: int, T: int, nb: int, n_iter: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HALS NMF of rank ``nb`` of the (d, T) matrix whose products are ``r_dot, rt_dot``."""
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
