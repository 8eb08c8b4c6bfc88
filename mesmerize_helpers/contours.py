"""Footprint contours exactly as mesmerize-core returns them from CaImAn's ``get_contours``.

CaImAn (1.11.2 and later) outlines footprint ``k`` as follows (``thr_method="nrg"``): sort
the footprint's pixel values in decreasing order, give each pixel the fraction of the
footprint's energy (sum of squares) held by it and all brighter pixels, give every other
pixel 1, and trace the iso-line at ``thr`` with marching squares
(``skimage.measure.find_contours``). ``thr_method="max"`` traces ``thr`` on the footprint
divided by its maximum (0 elsewhere). Each traced piece is closed (an open piece that ends on
two different frame edges is closed through the frame corner between them) and the pieces
are concatenated, each preceded and followed by a row of NaN.

mesmerize-core calls it with ``swap_dim``: True (its default) gives (row, column) =
(axis 0, axis 1) coordinates, False gives (column, row). The centre it returns is the NaN-mean
of the contour's vertices, not CaImAn's centre of mass.

Here each footprint is traced inside the box around its pixels plus a one-pixel margin of
background, which yields the same vertices in the same order as tracing the whole frame
(marching squares finds nothing in a uniform region; only the last bits of a float differ,
~1e-15 px, from shifting the box back) at a cost independent of the frame size.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from skimage.measure import find_contours

__all__ = ["caiman_contours", "contour_centers"]


def _level_values(data: np.ndarray, thr_method: str) -> tuple[np.ndarray, float]:
    """The traced values of a footprint's pixels (in stored order) and of the background."""
    if thr_method == "nrg":
        order = np.argsort(data)[::-1]  # CaImAn's order, ties included
        energy = np.cumsum(data[order] ** 2)
        values = np.empty_like(energy)
        values[order] = energy / energy[-1]
        return values, 1.0
    if thr_method != "max":
        raise ValueError(f"thr_method must be 'nrg' or 'max', got {thr_method!r}.")
    return data / data.max(), 0.0


def _close(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Close one traced piece as CaImAn does (``shape``: the traced array's shape)."""
    n_close = int(np.sum(np.isclose(vertices[0], vertices[-1])))
    if n_close == 2:
        return vertices
    if n_close == 0:  # the piece runs from one frame edge to another: close via the corner
        scale = np.array(shape, dtype=float)
        corner = np.round(vertices[[0, -1]].mean(axis=0) / scale) * scale
        return np.concatenate([corner[None], vertices, corner[None]])
    return np.concatenate([vertices, vertices[:1]])  # open along one edge


def _outline(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, background: float,
             shape: tuple[int, int], thr: float) -> np.ndarray:
    """CaImAn's NaN-separated pieces of the ``thr`` iso-line of an image that is
    ``background`` except ``values`` at (``rows``, ``cols``); ``shape`` is the image's."""
    r0, c0 = max(rows.min() - 1, 0), max(cols.min() - 1, 0)
    r1, c1 = min(rows.max() + 2, shape[0]), min(cols.max() + 2, shape[1])
    box = np.full((r1 - r0, c1 - c0), background, dtype=np.float64)
    box[rows - r0, cols - c0] = values
    gap = np.full((1, 2), np.nan)
    pieces = [gap]
    if min(box.shape) < 2:  # a one-pixel-wide frame has no iso-line to trace
        return gap
    for vertices in find_contours(box, thr):
        pieces += [_close(vertices + (r0, c0), shape), gap]
    return np.concatenate(pieces)


def caiman_contours(
    A: Any, dims: tuple[int, int], thr: float = 0.9, thr_method: str = "nrg",
    swap_dim: bool = True,
) -> list[np.ndarray]:
    """Contour of each footprint as mesmerize-core's ``get_contours`` returns it.

    Parameters
    ----------
    A
        (pixels, K) footprints, sparse or dense, pixels in Fortran order on ``dims``
        (CaImAn's layout: pixel ``y + x * dims[0]``).
    dims
        (y, x) frame size in pixels.
    thr
        Energy fraction (``"nrg"``) or fraction of the maximum (``"max"``) to outline.
    thr_method
        ``"nrg"`` (CaImAn's and mesmerize-core's default) or ``"max"``.
    swap_dim
        True: columns are (row, column) = (axis 0, axis 1); False: (column, row), ready for
        ``plt.plot(c[:, 0], c[:, 1])`` over ``plt.imshow(image)``.

    Returns
    -------
    list of ndarray
        One (n_points, 2) float array per component, in pixels: the closed pieces of the
        outline, each preceded and followed by a NaN row (a footprint whose energy is in a
        single pixel gives only ``[[nan, nan]]``); (0, 2) for an empty footprint.
    """
    A = sp.csc_matrix(A)
    d1, d2 = int(dims[0]), int(dims[1])
    if A.shape[0] != d1 * d2:
        raise ValueError(f"A has {A.shape[0]} pixel rows; dims {dims} has {d1 * d2} pixels.")
    # swap_dim=True traces the (y, x) image, False its transpose (CaImAn's B.T)
    shape = (d1, d2) if swap_dim else (d2, d1)
    out = []
    for k in range(A.shape[1]):
        data = np.asarray(A.data[A.indptr[k]:A.indptr[k + 1]], dtype=np.float64)
        if data.size == 0:
            out.append(np.zeros((0, 2)))
            continue
        index = A.indices[A.indptr[k]:A.indptr[k + 1]]
        y, x = index % d1, index // d1
        values, background = _level_values(data, thr_method)
        rows, cols = (y, x) if swap_dim else (x, y)
        out.append(_outline(rows, cols, values, background, shape, thr))
    return out


def contour_centers(contours: list[np.ndarray]) -> list[np.ndarray]:
    """mesmerize-core's centre of each contour: the NaN-mean of its vertices, (2,), in the
    contour's own column order; NaN when the contour has no vertex."""
    centers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN contours
        for contour in contours:
            if contour.size == 0:
                centers.append(np.full(2, np.nan))
            else:
                centers.append(np.nanmean(contour, axis=0))
    return centers
