"""Contours and centres of mass of spatial footprints."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.measure import find_contours

from .footprints import as_footprints, box_image, column


def energy_threshold(footprint: np.ndarray, thr: float = 0.9) -> float:
    """The pixel value above which a footprint holds ``thr`` of its energy (sum of squares).

    Parameters
    ----------
    footprint
        (y, x) non-negative image.
    thr
        Fraction of energy, in (0, 1].
    """
    values = np.sort(footprint[footprint > 0].ravel())[::-1]
    if values.size == 0:
        return 0.0
    energy = np.cumsum(values.astype(np.float64) ** 2)
    index = int(np.searchsorted(energy, thr * energy[-1]))
    return float(values[min(index, values.size - 1)])


def center_of_mass(footprint: np.ndarray) -> np.ndarray:
    """The footprint-weighted centroid, (y, x) in pixels; NaN for an empty footprint."""
    total = footprint.sum()
    if total <= 0:
        return np.array([np.nan, np.nan])
    yy, xx = np.indices(footprint.shape)
    return np.array([(yy * footprint).sum() / total, (xx * footprint).sum() / total])


def footprint_contour(footprint: np.ndarray, thr: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The outline of a footprint's main body and its centre of mass.

    Parameters
    ----------
    footprint
        (y, x) non-negative image.
    thr
        The contour encloses the pixels that hold this fraction of the energy.

    Returns
    -------
    contour : ndarray
        (n_points, 2) closed polygon, (y, x) in pixels; empty for an empty footprint.
    com : ndarray
        (2,) centre of mass, (y, x).
    """
    footprint = np.asarray(footprint, dtype=np.float64)
    level = energy_threshold(footprint, thr)
    if level <= 0:
        return np.zeros((0, 2)), center_of_mass(footprint)
    # pad so contours touching the border still close
    padded = np.pad(footprint, 1)
    contours = find_contours(padded, level * (1 - 1e-9))
    if not contours:
        return np.zeros((0, 2)), center_of_mass(footprint)
    longest = max(contours, key=len) - 1
    return np.clip(longest, 0, np.array(footprint.shape) - 1), center_of_mass(footprint)


def footprint_contours(
    A: Any, dims: tuple[int, int], thr: float = 0.9
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`footprint_contour` of each column of a (pixels, K) footprint matrix.

    Each footprint is drawn only in the box around it, so memory does not grow with
    pixels x K.

    Parameters
    ----------
    A
        (pixels, K) footprints (scipy.sparse or dense), Fortran pixel order on ``dims``.
    dims
        (y, x) frame size.
    thr
        Fraction of energy enclosed.

    Returns
    -------
    contours, centers
        K (n_points, 2) polygons and K (2,) centres of mass, (y, x) in frame pixels.
    """
    A = as_footprints(A, np.float64)
    contours, centers = [], []
    for k in range(A.shape[1]):
        idx, val = column(A, k)
        if not idx.size:
            contours.append(np.zeros((0, 2)))
            centers.append(np.array([np.nan, np.nan]))
            continue
        img, r0, c0 = box_image(idx, val, dims, 1)
        contour, com = footprint_contour(img, thr)
        contours.append(contour + (r0, c0))
        centers.append(com + (r0, c0))
    return contours, centers
