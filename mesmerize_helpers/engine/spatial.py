"""Update of the spatial footprints and the spatial background (HALS).

Hierarchical alternating least squares on ``Y ~ A C + b f``: each footprint in turn gets
the non-negative least-squares update given all the others, restricted to a support made of
its current pixels dilated by a disk, so that footprints stay local but can grow or move.
The background footprints ``b`` are updated on the whole field.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["update_spatial", "clean_footprint", "disk", "dilated_supports"]


def disk(radius: int) -> np.ndarray:
    """Boolean disk structuring element of the given radius (px)."""
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy**2 + xx**2) <= r * r + 0.5


def dilated_supports(
    A: np.ndarray, dims: tuple[int, int], radius: int, max_radius: float | None = None
) -> list[np.ndarray]:
    """Pixel indices (Fortran order) of each footprint's support dilated by ``radius`` px,
    limited to ``max_radius`` px around the footprint's centre of mass.

    Parameters
    ----------
    A
        (pixels, K) footprints, Fortran pixel order on ``dims``.
    dims
        (y, x) frame size.
    radius
        Dilation radius (px).
    max_radius
        None: no limit.

    Returns
    -------
    list of np.ndarray
        K arrays of pixel indices.
    """
    se = disk(radius)
    out = []
    for k in range(A.shape[1]):
        a = A[:, k].reshape(dims, order="F")
        img = a > 0
        if not img.any():
            out.append(np.zeros(0, np.int64))
            continue
        rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
        r0, r1 = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, dims[0])
        c0, c1 = max(cols[0] - radius, 0), min(cols[-1] + radius + 1, dims[1])
        sub = ndimage.binary_dilation(img[r0:r1, c0:c1], se)
        yy, xx = np.nonzero(sub)
        yy, xx = yy + r0, xx + c0
        if max_radius is not None:
            w = a[img]
            cy, cx = np.nonzero(img)
            cy, cx = (cy * w).sum() / w.sum(), (cx * w).sum() / w.sum()
            near = (yy - cy) ** 2 + (xx - cx) ** 2 <= max_radius**2
            yy, xx = yy[near], xx[near]
        out.append(yy + xx * dims[0])
    return out


def clean_footprint(a: np.ndarray, dims: tuple[int, int], rel_thr: float = 0.02) -> np.ndarray:
    """Median-filter, zero small pixels and keep the connected piece holding the peak.

    The 3x3 median filter (CaImAn's ``medw``) removes isolated pixels: a footprint fitted
    to noise is made of them and vanishes, while a soma, smooth at that scale, keeps its
    shape.

    Parameters
    ----------
    a
        (pixels,) footprint in Fortran pixel order (modified copy returned).
    dims
        (y, x) frame size.
    rel_thr
        Pixels below this fraction of the peak are set to 0.

    Returns
    -------
    np.ndarray
        (pixels,) cleaned footprint.
    """
    if not a.any():
        return a
    full = a.reshape(dims, order="F")
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    img = full[box]
    # only where the median is positive: it would shave the rim of the soma otherwise
    img = np.where(ndimage.median_filter(img, size=3, mode="constant") > 0, img, 0)
    out = np.zeros(dims, a.dtype)
    if img.max() <= 0:
        return out.ravel(order="F")
    img = np.where(img >= rel_thr * img.max(), img, 0)
    labels, n = ndimage.label(img > 0, structure=np.ones((3, 3)))
    if n > 1:
        peak = labels.flat[int(np.argmax(img))]
        img = np.where(labels == peak, img, 0)
    out[box] = img
    return out.ravel(order="F")


def update_spatial(
    Y: np.ndarray,
    A: np.ndarray,
    C: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    dims: tuple[int, int],
    *,
    radius: int,
    n_iter: int = 3,
    update_background: bool = True,
    smooth: float = 0.0,
    max_radius: float | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """HALS update of the footprints ``A`` and background footprints ``b``.

    Parameters
    ----------
    Y
        (pixels, T) data, Fortran pixel order.
    A
        (pixels, K) current footprints (dense).
    C
        (K, T) traces (baseline-free calcium).
    b
        (pixels, nb) background footprints.
    f
        (nb, T) background traces.
    dims
        (y, x) frame size.
    radius
        Dilation radius (px) of each footprint's support.
    n_iter
        HALS sweeps.
    update_background
        Also update ``b``.
    smooth
        Width (px, Gaussian sigma) of the blur applied to the data projections of the
        footprints (0: none).
    max_radius
        Footprints stay within this distance (px) of their centre of mass (None: no limit):
        a soma has a bounded size, and a footprint spreading further is taking over
        background.
    allowed
        (pixels, K) boolean: where each footprint may be non-zero (None: anywhere within
        its support), e.g. around a user's mask, so that a seeded component cannot move
        onto a neighbouring cell.

    Returns
    -------
    A, b
        Updated (pixels, K) and (pixels, nb), non-negative. Footprints are cleaned (small
        pixels and detached pieces removed); they are not normalized here.
    """
    K, nb = A.shape[1], b.shape[1]
    H = np.vstack([C, f]).astype(np.float32)
    W = np.hstack([A, b]).astype(np.float32)
    U = Y @ H.T  # (pixels, K + nb): data projected on each trace
    if smooth > 0:
        # each footprint is estimated from the data in its own pixels only; on short or dim
        # recordings that estimate is dominated by pixel noise. A slight blur (well below
        # the size of a soma) of the projections trades a little sharpness for much less
        # noise, and keeps footprints compact
        for k in range(K):
            img = U[:, k].reshape(dims, order="F")
            U[:, k] = ndimage.gaussian_filter(img, smooth, mode="nearest").ravel(order="F")
    V = H @ H.T
    supports = dilated_supports(A, dims, radius, max_radius)
    if allowed is not None:
        supports = [idx[allowed[idx, k]] for k, idx in enumerate(supports)]
    for k in range(K):  # start from footprints restricted to their support
        keep = np.zeros(W.shape[0], bool)
        keep[supports[k]] = True
        W[~keep, k] = 0
    for _ in range(n_iter):
        for k in range(K):
            idx = supports[k]
            if V[k, k] <= 0 or idx.size == 0:
                W[:, k] = 0
                continue
            w = W[idx, k] + (U[idx, k] - W[idx] @ V[:, k]) / V[k, k]
            W[idx, k] = np.maximum(w, 0)
        if update_background:
            for j in range(K, K + nb):
                if V[j, j] > 0:
                    W[:, j] = np.maximum(W[:, j] + (U[:, j] - W @ V[:, j]) / V[j, j], 0)
    A_new = W[:, :K]
    for k in range(K):
        A_new[:, k] = clean_footprint(A_new[:, k], dims)
    return np.ascontiguousarray(A_new), np.ascontiguousarray(W[:, K:])
