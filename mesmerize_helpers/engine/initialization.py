"""Initialization of spatial footprints and traces.

- :func:`greedy_roi`: greedy detection of Gaussian-shaped sources (CaImAn's ``greedy_roi``
  idea): repeatedly pick the pixel where the centre-surround filtered, noise-normalized
  residual movie has most energy (as a z-score against pure noise), fit a rank-1
  non-negative factorization in a window around it, subtract it and update the score
  locally. Differences from CaImAn: the surround of the filter ignores smooth background,
  the window is twice ``gSiz`` (a soma's tails reach beyond it), a centre already taken is
  not picked again, and the search stops when what is left is noise (``K`` is a maximum).
- :func:`masks_to_A`: footprints given by the user (``Ain``).

Pixel vectors use CaImAn's Fortran order on (y, x): index ``y + x * height``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .footprints import (
    as_footprints,
    box_image,
    column,
    column_norms,
    from_columns,
    scale_columns,
)

__all__ = [
    "greedy_roi", "downsample", "downsample_data", "upsample_footprints", "masks_matrix", "masks_to_A",
    "seed_of_components", "nmf_rank1",
]


def downsample(movie: np.ndarray, ssub: int, tsub: int) -> np.ndarray:
    """Mean-pool a (T, y, x) movie by ``tsub`` frames and ``ssub`` x ``ssub`` pixels.

    Trailing frames / pixels that do not fill a block are dropped.
    """
    T, h, w = movie.shape
    T2, h2, w2 = T // tsub, h // ssub, w // ssub
    m = movie[: T2 * tsub, : h2 * ssub, : w2 * ssub]
    m = m.reshape(T2, tsub, h2, ssub, w2, ssub).mean(axis=(1, 3, 5), dtype=np.float32)
    return m


def downsample_data(data: Any, ssub: int, tsub: int, minus: Any = None, out: Any = None
                    ) -> Any:
    """The movie of a (pixels, T) :class:`~.data.DataMatrix`, mean-pooled by ``tsub``
    frames and ``ssub`` x ``ssub`` pixels (:func:`downsample`), as a new (T', y', x')
    float32 array (C order), or written into the frame store ``out`` of that shape
    (:meth:`~.data.Workspace.frames`) and returned.

    Into an array, the data is read ``ssub`` columns of pixels at a time (contiguous rows
    of a pixel-major matrix), so only the downsampled movie is ever held whole; into a
    store, a block of frames at a time. ``minus``: optional ``(A, C)``, footprints
    (pixels, K) and traces (K, T) whose product is subtracted from the data first (a
    residual movie).
    """
    h, w = data.dims
    T = data.n_frames
    ssub, tsub = max(int(ssub), 1), max(int(tsub), 1)
    T2, h2, w2 = T // tsub, h // ssub, w // ssub
    A, C = (None, None) if minus is None or not minus[0].shape[1] else minus
    if A is not None:
        A = sp.csr_matrix(A, dtype=np.float32)
        C = np.asarray(C, np.float32)
    if out is not None and not isinstance(out, np.ndarray):
        return _downsample_frames(data, ssub, tsub, A, C, out)
    out = np.empty((T2, h2, w2), np.float32) if out is None else out
    # whole groups of ssub columns per read, as many as a block holds
    group = ssub * h
    per_read = max(data.rows_per_block() // group, 1)
    for x0 in range(0, w2, per_read):
        x1 = min(x0 + per_read, w2)
        rows = data.rows(x0 * group, x1 * group)  # (columns * h, T): Fortran order
        if A is not None:
            rows = rows - A[x0 * group:x1 * group] @ C
        sub = rows.reshape(x1 * ssub - x0 * ssub, h, T).transpose(2, 1, 0)  # (T, h, cols)
        out[:, :, x0:x1] = sub if ssub == tsub == 1 else downsample(sub, ssub, tsub)
    return out


def _downsample_frames(data: Any, ssub: int, tsub: int, A: Any, C: Any, out: Any) -> Any:
    """:func:`downsample_data` into a frame store, a block of whole frames at a time
    (``tsub`` frames per output frame, the partial group at the end dropped)."""
    h, w = data.dims
    T2 = data.n_frames // tsub
    step = max(data.frames_per_block(copies=3) // tsub, 1)  # data, residual, transposed
    for o0 in range(0, T2, step):
        o1 = min(o0 + step, T2)
        t0, t1 = o0 * tsub, o1 * tsub
        block = data.frames(t0, t1)  # (pixels, n)
        if A is not None:
            block -= A @ C[:, t0:t1]
        frames = block.reshape(w, h, t1 - t0).transpose(2, 1, 0)  # (n, h, w)
        small = frames if ssub == tsub == 1 else downsample(frames, ssub, tsub)
        out[o0:o1] = np.ascontiguousarray(small, np.float32)
    return out


def _linear_weights(n_small: int, n_full: int, lo: int, hi: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear zoom along one axis, as OpenCV's ``INTER_LINEAR`` (pixel centres aligned,
    clamped at the border), for the full-grid positions whose source lies in ``[lo, hi]``.

    Returns the full-grid positions, the two source pixels of each and the second's weight.
    """
    z = n_full / n_small
    # at the frame's edges the source is clamped: the outermost full pixels take its value
    first = 0 if lo == 0 else max(int(np.floor((lo + 0.5) * z - 0.5)), 0)
    last = n_full - 1 if hi == n_small - 1 else min(int(np.ceil((hi + 0.5) * z - 0.5)),
                                                     n_full - 1)
    pos = np.arange(first, last + 1)
    src = np.clip((pos + 0.5) / z - 0.5, 0, n_small - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_small - 1)
    return pos, np.clip(i0, lo, hi), np.clip(i1, lo, hi), src - i0


def upsample_footprints(A: Any, small: tuple[int, int], full: tuple[int, int]) -> sp.csc_matrix:
    """Resize (pixels_small, K) F-order footprints (sparse or dense) to (pixels_full, K) by
    bilinear zoom (OpenCV's ``INTER_LINEAR`` convention), each within the box around it.

    Returns
    -------
    scipy.sparse.csc_matrix
        (pixels_full, K) float32, non-negative.
    """
    A = as_footprints(A)
    idx, val = [], []
    for k in range(A.shape[1]):
        i, v = column(A, k)
        if not i.size:
            idx.append(np.zeros(0, np.int64))
            val.append(np.zeros(0, np.float32))
            continue
        # a one-pixel margin of zeros: the zoom spreads each pixel towards its neighbours
        img, r0, c0 = box_image(i, v.astype(np.float64), small, 1)
        ry, y0, y1, wy = _linear_weights(small[0], full[0], r0, r0 + img.shape[0] - 1)
        rx, x0, x1, wx = _linear_weights(small[1], full[1], c0, c0 + img.shape[1] - 1)
        rows = (1 - wy)[:, None] * img[y0 - r0] + wy[:, None] * img[y1 - r0]
        big = (1 - wx) * rows[:, x0 - c0] + wx * rows[:, x1 - c0]
        xx, yy = np.nonzero(np.maximum(big, 0).T)  # Fortran order
        idx.append(ry[yy] + rx[xx] * full[0])
        val.append(big[yy, xx])
    return from_columns(idx, val, full[0] * full[1])


def nmf_rank1(Yw: np.ndarray, c: np.ndarray, n_iter: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rank-1 non-negative factorization ``Yw ~ outer(c, a)`` by alternating least squares.

    Parameters
    ----------
    Yw
        (T, n) data (frames by pixels).
    c
        (T,) initial trace.
    n_iter
        Number of alternations.

    Returns
    -------
    a, c
        (n,) footprint and (T,) trace, both non-negative.
    """
    c = np.maximum(c, 0).astype(np.float32)
    a = np.zeros(Yw.shape[1], np.float32)
    for _ in range(n_iter):
        cc = float(c @ c)
        if cc <= 0:
            break
        a = np.maximum(c @ Yw / cc, 0)
        aa = float(a @ a)
        if aa <= 0:
            break
        c = np.maximum(Yw @ a / aa, 0)
    return a, c


def _gauss2d(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of one frame (OpenCV), truncated at 2 sigma, edge pixels replicated."""
    import cv2

    k = 2 * int(np.ceil(2 * sigma)) + 1
    return cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)


def _dog(movie: np.ndarray, sig: float, surround: float) -> np.ndarray:
    """Centre-surround (difference of Gaussians) filter of each frame of (T, h, w)."""
    out = np.empty(movie.shape, np.float32)
    for t, frame in enumerate(movie):
        out[t] = _gauss2d(frame, sig) - _gauss2d(frame, surround)
    return out


def _score(rho: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Energy of the positive part of the filtered movie: transients are positive.

    Summed over chunks of frames so that temporaries stay small.
    """
    out = np.zeros(rho.shape[1:], np.float64)
    for t0 in range(0, rho.shape[0], chunk):
        out += np.square(np.maximum(rho[t0:t0 + chunk], 0)).sum(axis=0)
    return out


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of the 1-d blur used by :func:`_gauss2d` (edges replicated)."""
    import cv2

    k = 2 * int(np.ceil(2 * sigma)) + 1
    g = cv2.getGaussianKernel(k, sigma)
    eye = np.eye(n, dtype=np.float64)
    return cv2.sepFilter2D(eye, -1, np.ones(1), g, borderType=cv2.BORDER_REPLICATE)


def _filtered_noise_var(rho: np.ndarray, sig: float, surround: float) -> np.ndarray:
    """Per-pixel noise variance of the centre-surround filtered (T, h, w) movie.

    The filter's gain on white noise is computed exactly per pixel (near the borders it
    sees replicated pixels and passes more noise); the overall noise level is the median,
    over pixels, of the high-frequency power of ``rho`` relative to that gain, which active
    cells (whose sharp rises have high-frequency power too) barely affect.
    """
    from .noise import noise_fft

    T, h, w = rho.shape
    gy1, gy2 = _blur_matrix(h, sig), _blur_matrix(h, surround)
    gx1, gx2 = _blur_matrix(w, sig), _blur_matrix(w, surround)

    def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(axis=1)

    gain = (np.outer(rowdot(gy1, gy1), rowdot(gx1, gx1))
            - 2 * np.outer(rowdot(gy1, gy2), rowdot(gx1, gx2))
            + np.outer(rowdot(gy2, gy2), rowdot(gx2, gx2)))
    gain = np.maximum(gain, 1e-12)
    step = max(h * w // 4000, 1)
    sn2 = noise_fft(rho.reshape(T, -1)[:, ::step].T).astype(np.float64) ** 2
    scale = float(np.median(sn2 / gain.ravel()[::step]))
    return scale * gain + 1e-20


def greedy_roi(
    Yn: np.ndarray,
    K: int,
    gSig: tuple[float, float],
    gSiz: tuple[int, int],
    n_iter: int = 5,
    min_score: float = 6.0,
) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """Greedy detection of K sources in a noise-normalized, baseline-free movie.

    Parameters
    ----------
    Yn
        (T, h, w) float32 movie with each pixel's baseline removed and divided by its noise
        level. It is modified in place (found sources are subtracted).
    K
        Maximum number of sources to find.
    gSig
        Gaussian width (px) of a source, (y, x); the mean of the two is used.
    gSiz
        Typical size (px) of a source, (y, x); each source is fitted in a window of twice
        that size.
    n_iter
        Rank-1 NMF iterations per source.
    min_score
        Stop early when the best remaining score, as a z-score against the score of pure
        noise, falls below this: the rest of the field holds no source.

    Returns
    -------
    A
        (h*w, K') ``scipy.sparse.csc_matrix`` footprints in Fortran pixel order, in the
        units of ``Yn``.
    C
        (K', T) traces.
    centers
        (K', 2) integer (y, x) centres of the windows.
    """
    T, h, w = Yn.shape
    sig = float(np.mean(gSig))
    # the surround removes smooth background such as neuropil from the score, so that
    # picks are localised sources rather than broad background fluctuations
    surround = 3.0 * sig
    rho = _dog(Yn, sig, surround)
    v = _score(rho)
    # noise level of the filtered movie, to express scores as z-scores against pure noise
    # (for Gaussian noise of variance s2, max(rho, 0)^2 has mean s2/2 and variance 1.25 s2^2)
    s2 = _filtered_noise_var(rho, sig, surround)
    v_noise, v_sd = 0.5 * T * s2, s2 * np.sqrt(1.25 * T)
    z = (v - v_noise) / v_sd  # picks are made on the z-score, comparable across the field
    # fit each source in a window twice gSiz wide: a soma's tails reach beyond gSiz, and
    # leaving them in the residual would make them look like new sources
    gh = (max(int(gSiz[0]), 1), max(int(gSiz[1]), 1))
    A_list, C_list, centers = [], [], []
    yy, xx = np.mgrid[:h, :w]
    taken = np.zeros((h, w), bool)
    for _ in range(K):
        r, c = np.unravel_index(int(np.argmax(z)), z.shape)
        if z[r, c] <= min_score:
            break
        r0, r1 = max(r - gh[0], 0), min(r + gh[0] + 1, h)
        c0, c1 = max(c - gh[1], 0), min(c + gh[1] + 1, w)
        Yw = Yn[:, r0:r1, c0:c1].reshape(T, -1)
        a, trace = nmf_rank1(Yw, rho[:, r, c].copy(), n_iter)
        if not np.any(a) or not np.any(trace):
            z[r, c] = -np.inf  # nothing to explain here: never pick this pixel again
            continue
        Yn[:, r0:r1, c0:c1] -= np.outer(trace, a).reshape(T, r1 - r0, c1 - c0)
        img = np.zeros((h, w), np.float32)
        img[r0:r1, c0:c1] = a.reshape(r1 - r0, c1 - c0)
        xs, ys = np.nonzero(img.T)  # Fortran order
        A_list.append((ys + xs * h, img[ys, xs]))
        C_list.append(trace)
        centers.append((r, c))
        # the filter is linear, so the filtered movie changes by trace x filtered footprint
        d_img = _gauss2d(img, sig) - _gauss2d(img, surround)
        rows = np.flatnonzero(np.abs(d_img).max(axis=1) > 0)
        cols = np.flatnonzero(np.abs(d_img).max(axis=0) > 0)
        i0, i1, j0, j1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        rho[:, i0:i1, j0:j1] -= trace[:, None, None] * d_img[None, i0:i1, j0:j1]
        v[i0:i1, j0:j1] = _score(rho[:, i0:i1, j0:j1])
        z[i0:i1, j0:j1] = (v[i0:i1, j0:j1] - v_noise[i0:i1, j0:j1]) / v_sd[i0:i1, j0:j1]
        # what a rank-1 fit leaves at a soma's centre (model mismatch, edges) is not a new
        # source: never pick again within gSig of a centre already taken
        taken |= ((yy - r) / gSig[0]) ** 2 + ((xx - c) / gSig[1]) ** 2 <= 1
        z[taken] = -np.inf
    A = from_columns([a[0] for a in A_list], [a[1] for a in A_list], h * w)
    if not A_list:
        return A, np.zeros((0, T), np.float32), np.zeros((0, 2))
    return A, np.stack(C_list), np.array(centers)


def masks_matrix(Ain: Any, dims: tuple[int, int]) -> sp.csc_matrix:
    """User masks as a (pixels, n) non-negative matrix in Fortran pixel order, one column
    per mask, in the user's order (empty masks included).

    Parameters
    ----------
    Ain
        (y, x, n) boolean or float masks (CaImAn's convention), or a (pixels, n) matrix in
        Fortran order (dense or scipy.sparse), or (n, y, x) masks if the first axis is not
        the height.
    dims
        (y, x) frame size.
    """
    d = dims[0] * dims[1]
    if sp.issparse(Ain):
        if Ain.ndim != 2 or Ain.shape[0] != d:
            raise ValueError(f"Ain of shape {Ain.shape} does not match {d} pixels.")
        A = as_footprints(Ain)
    else:
        Ain = np.asarray(Ain)
        if Ain.ndim == 2:
            if Ain.shape[0] != d:
                raise ValueError(f"Ain of shape {Ain.shape} does not match {d} pixels.")
            flat = Ain
        elif Ain.ndim == 3 and Ain.shape[:2] == tuple(dims):
            flat = Ain.reshape(d, -1, order="F")
        elif Ain.ndim == 3 and Ain.shape[1:] == tuple(dims):
            flat = Ain.transpose(1, 2, 0).reshape(d, -1, order="F")
        else:
            raise ValueError(f"Ain of shape {Ain.shape} does not match frames of shape {dims}.")
        A = as_footprints(flat)
    A.data = np.maximum(A.data, 0)
    return as_footprints(A)


def masks_to_A(Ain: Any, dims: tuple[int, int]) -> sp.csc_matrix:
    """User masks as footprints: :func:`masks_matrix` with unit-norm columns, empty masks
    dropped.

    Returns
    -------
    scipy.sparse.csc_matrix
        (pixels, n') float32.
    """
    A = masks_matrix(Ain, dims)
    norms = column_norms(A)
    keep = np.flatnonzero(norms > 0)
    return scale_columns(A[:, keep], 1 / norms[keep])


def seed_of_components(A: Any, masks: Any) -> np.ndarray:
    """Which user mask each component lies on.

    Parameters
    ----------
    A
        (pixels, K) non-negative footprints.
    masks
        (pixels, n) non-negative masks (:func:`masks_matrix`).

    Returns
    -------
    np.ndarray
        (K,) int64: the index of the mask holding the largest share of the component's
        footprint (sum of ``A`` over the mask's pixels, masks binarized), -1 if it lies on
        none.
    """
    A = as_footprints(A)
    inside = as_footprints(masks)
    inside.data = np.ones_like(inside.data)
    share = (inside.T @ A).toarray()  # (n, K)
    if share.shape[0] == 0:
        return np.full(A.shape[1], -1, np.int64)
    best = np.argmax(share, axis=0)
    return np.where(share.max(axis=0) > 0, best, -1).astype(np.int64)
