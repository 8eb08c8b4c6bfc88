"""Ring-model background of CNMF-E (Zhou et al. 2018, eLife), as CaImAn's ``compute_W``.

In one-photon data the background is bright, spatially complex and changes in time, so a
low-rank ``b f`` fits it poorly. CNMF-E models the background of each pixel as a weighted sum
of the fluctuations on a ring of pixels around it, plus a constant::

    B = b0 1' + W (Y - A C - b0 1')

``W`` is sparse: row ``i`` is non-zero only on the pixels at a distance in ``(r, r + 1]`` from
pixel ``i``. The ring radius ``r`` is larger than a neuron, so a neuron's own activity never
predicts its background (the ring lies outside it), while the smooth background, shared by
the pixel and its ring, is predicted well.

As in CaImAn, ``W`` is estimated (and applied) on a grid downsampled by ``ssub_B`` in each
direction (block means, partial blocks at the bottom / right averaged over the pixels they
have), and the fluctuating part of the background is brought back to full resolution by
repeating each block; ``b0`` is at full resolution. A ``W`` stored by CaImAn
(``estimates.W``, with ``estimates.b0`` and ``params.init['ssub_B']``) can therefore be used
with :func:`ring_background` and vice versa.

Pixel vectors use CaImAn's Fortran order on (y, x): index ``y + x * height``; on the
downsampled grid of shape ``ds_dims(dims, ssub_B)`` likewise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .data import DataMatrix, MemoryWorkspace, Workspace, as_data

__all__ = [
    "ds_dims", "decimation_matrix", "ring_offsets", "ring_radius", "compute_W",
    "ring_background", "subtract_background", "background_at", "block_of_pixels", "RingModel",
]

#: Ridge added to the diagonal of each pixel's normal equations, relative to their trace
#: (CaImAn uses the same value): keeps the solve well posed where ring pixels are collinear.
_RIDGE = 1e-5


def ds_dims(dims: tuple[int, int], ssub: int) -> tuple[int, int]:
    """Shape (y, x) of the grid downsampled by ``ssub`` (partial blocks kept)."""
    s = max(int(ssub), 1)
    return ((int(dims[0]) - 1) // s + 1, (int(dims[1]) - 1) // s + 1)


def decimation_matrix(dims: tuple[int, int], ssub: int) -> sp.csr_matrix:
    """Sparse block-mean operator from the full grid to the ``ssub``-downsampled grid.

    Parameters
    ----------
    dims
        (y, x) full frame size.
    ssub
        Downsampling factor (1: identity).

    Returns
    -------
    scipy.sparse.csr_matrix
        (pixels_ds, pixels) float32; row ``j`` averages the pixels of block ``j``.
    """
    h, w = int(dims[0]), int(dims[1])
    s = max(int(ssub), 1)
    hd, _ = ds_dims(dims, s)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (yy // s + (xx // s) * hd).ravel(order="F")  # block of each full pixel (F order)
    counts = np.bincount(block)
    data = (1.0 / counts[block]).astype(np.float32)
    return sp.csr_matrix((data, (block, np.arange(h * w))), shape=(len(counts), h * w))


def _upsample(X: np.ndarray, dims: tuple[int, int], ssub: int) -> np.ndarray:
    """Repeat each block value of (pixels_ds, n) over its ``ssub`` x ``ssub`` pixels.

    Returns (pixels, n), Fortran pixel order (the inverse layout of the block mean).
    """
    if ssub == 1:
        return X
    hd, wd = ds_dims(dims, ssub)
    n = X.shape[1]
    img = X.reshape(wd, hd, n)  # F order on (hd, wd): x slowest
    img = np.repeat(np.repeat(img, ssub, axis=0), ssub, axis=1)[: dims[1], : dims[0]]
    return img.reshape(dims[0] * dims[1], n)


def ring_radius(ring_size_factor: float, gSiz: Any) -> float:
    """Ring radius in full-resolution px: ``ring_size_factor * gSiz`` (CaImAn's choice).

    ``gSiz`` is the neuron's diameter, so the default factor 1.5 puts the ring one and a
    half diameters from the pixel: outside the pixel's own neuron and its close neighbours.
    """
    g = float(np.asarray(gSiz, float).ravel()[0])
    return float(ring_size_factor) * g


def ring_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) integer offsets of the pixels at a distance in ``(r, r + 1]``, ``r = radius``.

    ``r`` is rounded to an integer first, as CaImAn does.
    """
    r = int(round(radius))
    rr = np.arange(-r - 1, r + 2)
    dy, dx = np.meshgrid(rr, rr, indexing="ij")
    d2 = dy**2 + dx**2
    on = (d2 > r * r) & (d2 <= (r + 1) ** 2)
    return dy[on], dx[on]


def _ring_indices(dims_ds: tuple[int, int], radius: float) -> np.ndarray:
    """(pixels, n_ring) Fortran indices of each pixel's ring on a grid; -1 where off-grid."""
    hd, wd = dims_ds
    dy, dx = ring_offsets(radius)
    yy, xx = np.meshgrid(np.arange(hd), np.arange(wd), indexing="ij")
    yy, xx = yy.ravel(order="F")[:, None] + dy, xx.ravel(order="F")[:, None] + dx
    inside = (yy >= 0) & (yy < hd) & (xx >= 0) & (xx < wd)
    return np.where(inside, yy + xx * hd, -1)


def block_of_pixels(dims: tuple[int, int], ssub: int) -> np.ndarray:
    """(pixels,) index of the ``ssub``-downsampled block (Fortran order on the grid of
    :func:`ds_dims`) that holds each full-resolution pixel (Fortran order)."""
    h, w = int(dims[0]), int(dims[1])
    s = max(int(ssub), 1)
    hd, _ = ds_dims(dims, s)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (yy // s + (xx // s) * hd).ravel(order="F")


def _strips(dims: tuple[int, int], ssub: int, reach: int, width: int
            ) -> Any:
    """Vertical strips of the downsampled grid: for each, its ds-pixel range, and the
    ds-pixel and full-pixel ranges of the strip widened by ``reach`` ds columns (what the
    rings of its pixels touch). Ranges are contiguous in Fortran order (x slowest)."""
    h, w = int(dims[0]), int(dims[1])
    s = max(int(ssub), 1)
    hd, wd = ds_dims(dims, s)
    for c0 in range(0, wd, width):
        c1 = min(c0 + width, wd)
        e0, e1 = max(c0 - reach, 0), min(c1 + reach, wd)
        yield ((c0 * hd, c1 * hd), (e0 * hd, e1 * hd),
               (e0 * s * h, min(e1 * s, w) * h), (c0 * s * h, min(c1 * s, w) * h))


def compute_W(
    Y: Any,
    A: Any,
    C: np.ndarray,
    dims: tuple[int, int],
    radius: float,
    ssub_B: int = 2,
    batch: int = 64,
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Estimate the ring model ``W`` and the constant background ``b0`` by least squares.

    Solves, for every pixel ``i`` of the downsampled grid independently,
    ``min_w |x_i - w' X_ring(i)|^2`` with ``X = D (Y - A C - b0 1')`` (a tiny ridge keeps it
    well posed), where ``b0 = mean_t(Y - A C)``.

    The data is read in vertical strips of the grid, each widened by the ring's reach; when
    a strip's rings on all frames do not fit the budget of ``Y``, the normal equations of
    its pixels are summed over blocks of frames.

    Parameters
    ----------
    Y
        (pixels, T) data, Fortran pixel order (counts): an array or a
        :class:`~.data.DataMatrix`.
    A
        (pixels, K) footprints (dense or sparse; K may be 0).
    C
        (K, T) traces, so that ``A C`` is the neural signal in counts.
    dims
        (y, x) frame size.
    radius
        Ring radius in full-resolution px (see :func:`ring_radius`); divided by ``ssub_B``.
    ssub_B
        Spatial downsampling of the background model.
    batch
        Pixels solved together.

    Returns
    -------
    W, b0
        W: scipy.sparse.csc_matrix (pixels_ds, pixels_ds) float32, each row the weights of
        the pixel's ring. b0: (pixels,) float32 constant background (counts).
    """
    data = as_data(Y, dims)
    T = data.n_frames
    s = max(int(ssub_B), 1)
    A = (sp.csc_matrix(A) if A.shape[1] else
         sp.csc_matrix((data.n_pixels, 0), dtype=np.float32))
    b0 = data.row_means() - A @ C.mean(axis=1, dtype=np.float64)
    D = decimation_matrix(dims, s)
    DA = (D @ A).tocsr() if A.shape[1] else None
    Db0 = D @ b0
    hd, wd = ds_dims(dims, s)
    r = radius / s
    idx = _ring_indices((hd, wd), r)  # (pixels_ds, n_ring), -1 outside the grid
    n, n_ring = hd * wd, idx.shape[1]
    reach = int(round(r)) + 1
    # a strip holds its pixels' normal equations (float64) while frames are summed
    work = data.budget.work_bytes()
    per_col = hd * (n_ring + 1) * n_ring * 8
    width = wd if work is None else int(max(min(work // 2 // per_col, wd), 1))
    weights = np.zeros(idx.shape, np.float32)
    for (p0, p1), (q0, q1), (f0, f1), _ in _strips(dims, s, reach, width):
        Dq = D[q0:q1, f0:f1]
        local = np.where(idx[p0:p1] >= 0, idx[p0:p1] - q0, q1 - q0)  # q1 - q0: the zero row
        ext = (q1 - q0) + (f1 - f0)  # rows held per frame: X and the data
        t_step = T if work is None else int(max(min(work // 2 // (ext * 4 * 2), T), 1))
        chunks = [(t0, min(t0 + t_step, T)) for t0 in range(0, T, t_step)]
        G = rhs = None
        if len(chunks) > 1:
            G = np.zeros((p1 - p0, n_ring, n_ring))
            rhs = np.zeros((p1 - p0, n_ring))
        for t0, t1 in chunks:
            X = Dq @ data.block(f0, f1, slice(t0, t1))
            if DA is not None:
                X = X - DA[q0:q1] @ C[:, t0:t1]
            X = (X - Db0[q0:q1, None]).astype(np.float32)
            # a zero row stands for the ring pixels outside the grid: their weights are 0
            Xz = np.vstack([X, np.zeros((1, X.shape[1]), np.float32)])
            for b0_ in range(0, p1 - p0, batch):
                b1_ = min(b0_ + batch, p1 - p0)
                R = Xz[local[b0_:b1_]]  # (b, n_ring, t): each pixel's ring traces
                g = np.matmul(R, R.transpose(0, 2, 1)).astype(np.float64)
                h_ = np.matmul(R, X[p0 - q0 + b0_:p0 - q0 + b1_, :, None])[..., 0]
                if G is None:  # all frames at once: solve now
                    weights[p0 + b0_:p0 + b1_] = _solve(g, h_.astype(np.float64))
                else:
                    G[b0_:b1_] += g
                    rhs[b0_:b1_] += h_
        if G is not None:
            for b0_ in range(0, p1 - p0, batch):
                b1_ = min(b0_ + batch, p1 - p0)
                weights[p0 + b0_:p0 + b1_] = _solve(G[b0_:b1_], rhs[b0_:b1_])
    inside = idx >= 0
    rows = np.repeat(np.arange(n), inside.sum(axis=1))
    W = sp.csc_matrix((weights[inside], (rows, idx[inside])), shape=(n, n), dtype=np.float32)
    return W, b0.astype(np.float32)


def _solve(G: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Ring weights from the normal equations (b, n, n) and (b, n), with the ridge."""
    tr = np.trace(G, axis1=1, axis2=2)
    G = G + (_RIDGE * tr + 1e-12)[:, None, None] * np.eye(G.shape[1])[None]
    return np.linalg.solve(G, rhs[..., None])[..., 0]


def _background_cols(
    W: sp.spmatrix, b0: np.ndarray, R: np.ndarray, dims: tuple[int, int], ssub_B: int
) -> np.ndarray:
    """Background of (pixels, n) residual columns ``R = Y - A C``: ``b0 + U W D (R - b0)``."""
    s = max(int(ssub_B), 1)
    D = decimation_matrix(dims, s)
    X = D @ (R - b0[:, None])
    return b0[:, None] + _upsample(np.asarray(W @ X, np.float32), dims, s)


def ring_background(
    W: sp.spmatrix,
    b0: np.ndarray,
    residual_frames: np.ndarray,
    dims: tuple[int, int],
    ssub_B: int,
) -> np.ndarray:
    """Background frames of the ring model for any set of frames.

    The model is purely spatial (each frame's background depends only on that frame), so
    any subset or order of frames can be computed, e.g. lazily frame by frame.

    Parameters
    ----------
    W
        (pixels_ds, pixels_ds) sparse ring weights from :func:`compute_W` (or CaImAn's).
    b0
        (pixels,) constant background, Fortran pixel order (counts).
    residual_frames
        (n, y, x) or (y, x) frames of ``Y - A C`` (the movie minus the neurons).
    dims
        (y, x) frame size.
    ssub_B
        Downsampling factor ``W`` was estimated with.

    Returns
    -------
    np.ndarray
        (n, y, x) (or (y, x) for one frame) float32 background in counts.
    """
    frames = np.asarray(residual_frames, np.float32)
    single = frames.ndim == 2
    frames = frames[None] if single else frames
    n = frames.shape[0]
    R = frames.transpose(2, 1, 0).reshape(dims[0] * dims[1], n)  # F-order pixels x frames
    B = _background_cols(W, np.asarray(b0, np.float32), R, dims, ssub_B)
    out = B.reshape(dims[1], dims[0], n).transpose(2, 1, 0)
    return np.ascontiguousarray(out[0] if single else out)


class RingModel:
    """The ring background ``B = b0 1' + U W D (Y - A C - b0 1')`` of a fit, evaluated where
    asked (:meth:`at`); the decimation and the block of each pixel are built once."""

    def __init__(self, W: sp.spmatrix, b0: np.ndarray, dims: tuple[int, int],
                 ssub_B: int) -> None:
        self.W = sp.csr_matrix(W)
        self.b0 = np.asarray(b0, np.float32)
        self.dims = (int(dims[0]), int(dims[1]))
        self.ssub = max(int(ssub_B), 1)
        self.D = decimation_matrix(self.dims, self.ssub)
        self.block = block_of_pixels(self.dims, self.ssub)

    def at(self, Y: Any, A: Any, C: np.ndarray, pixels: np.ndarray, frames: Any
           ) -> np.ndarray:
        """The background at some pixels and frames, (len(pixels), n_frames) float32.

        Reads only the pixels of the blocks that the rings of ``pixels`` cover.

        Parameters
        ----------
        Y
            (pixels, T) data: an array or a :class:`~.data.DataMatrix`.
        A, C
            Footprints (pixels, K) (CSR is fastest; K may be 0) and traces (K, T).
        pixels
            Sorted full-resolution pixel indices (Fortran order).
        frames
            A slice or sorted frame indices.
        """
        data = as_data(Y, self.dims)
        pixels = np.asarray(pixels, np.int64)
        out_blocks, where = np.unique(self.block[pixels], return_inverse=True)
        Wo = self.W[out_blocks]
        ring = np.unique(Wo.indices)  # the blocks their rings cover
        Dr = self.D[ring]
        full = np.unique(Dr.indices)  # the pixels of those blocks
        R = data.take(full, frames)
        if A.shape[1]:
            Cf = C[:, frames] if isinstance(frames, slice) else C[:, np.asarray(frames)]
            R = R - sp.csr_matrix(A)[full] @ Cf
        X = Dr[:, full] @ (R - self.b0[full, None])
        WX = np.asarray(Wo[:, ring] @ X, np.float32)
        return self.b0[pixels, None] + WX[where]


def background_at(
    Y: Any, A: Any, C: np.ndarray, W: sp.spmatrix, b0: np.ndarray, dims: tuple[int, int],
    ssub_B: int, pixels: np.ndarray, frames: Any,
) -> np.ndarray:
    """The ring background at some pixels and frames (:meth:`RingModel.at`), for one use."""
    return RingModel(W, b0, dims, ssub_B).at(Y, A, C, pixels, frames)


def subtract_background(
    Y: Any,
    A: Any,
    C: np.ndarray,
    W: sp.spmatrix,
    b0: np.ndarray,
    dims: tuple[int, int],
    ssub_B: int,
    workspace: Workspace | None = None,
) -> DataMatrix:
    """``Y - B`` for the ring background of the current neurons, (pixels, T) float32.

    What the neurons' spatial and temporal updates are fitted to once the background is
    fixed (CaImAn's ``Y - B`` in ``greedyROI_corr``). Computed in vertical strips of the
    frame (and blocks of frames when a strip on all frames does not fit the budget), each
    strip reading the pixels its rings reach (:func:`background_at`), and written into a
    matrix of ``workspace`` (in memory by default; a job's workspace may put it in a file).
    """
    data = as_data(Y, dims)
    workspace = workspace or MemoryWorkspace(data.budget)
    out = workspace.matrix(data.shape)
    T = data.n_frames
    s = max(int(ssub_B), 1)
    hd, wd = ds_dims(dims, s)
    model = RingModel(W, b0, dims, s)
    A = sp.csr_matrix(A) if A.shape[1] else A
    Wr = model.W
    reach = int(np.max(np.abs(Wr.indices // hd - np.repeat(np.arange(hd * wd) // hd,
                                                           np.diff(Wr.indptr)))) + 1
                if Wr.nnz else 1)
    block = data.budget.block_bytes()
    # strips about twice the ring's reach wide: the pixels read are at most twice those kept
    width = wd if block is None else int(min(max(2 * reach, 4), wd))
    for (_, _), (_, _), (f0, f1), (o0, o1) in _strips(dims, s, reach, width):
        ext = f1 - f0
        t_step = T if block is None else int(max(min(block // (ext * 4 * 3), T), 1))
        pixels = np.arange(o0, o1)
        for t0 in range(0, T, t_step):
            frames = slice(t0, min(t0 + t_step, T))
            Yb = data.block(o0, o1, frames) - model.at(data, A, C, pixels, frames)
            out.write(o0, t0, Yb)
    return out.done(dims)
