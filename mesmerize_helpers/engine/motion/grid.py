"""Patch layout of piecewise-rigid registration, masks, and dense shift fields."""

from __future__ import annotations

import numpy as np


def _patch_starts(dim: int, stride: int, overlap: int) -> tuple[np.ndarray, int]:
    """Start pixels of the patches along one axis, and the patch size.

    The number of patches is CaImAn's (``len(range(0, dim - size, stride)) + 1``); they are
    spread evenly so that the first starts at 0 and the last ends at the image edge (CaImAn
    puts the last one at the edge and the others every ``stride``, which can leave two patches
    almost on top of each other).
    """
    size = stride + overlap
    if size >= dim:
        return np.zeros(1, dtype=int), dim
    n = len(range(0, dim - size, stride)) + 1
    return np.round(np.linspace(0, dim - size, n)).astype(int), size


def patch_grid(dims: tuple[int, int], strides: tuple[int, int], overlaps: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Patch layout of piecewise-rigid registration.

    Parameters
    ----------
    dims
        (y, x) frame size in pixels.
    strides, overlaps
        CaImAn's ``strides`` and ``overlaps`` (y, x); patches are ``strides + overlaps`` wide.

    Returns
    -------
    starts_y, starts_x
        (n_patches_y,), (n_patches_x,) int first pixel of each patch row / column.
    size
        (patch_y, patch_x) patch size in pixels.
    """
    sy, py = _patch_starts(dims[0], strides[0], overlaps[0])
    sx, px = _patch_starts(dims[1], strides[1], overlaps[1])
    return sy, sx, (py, px)


def _interp_matrix(centers: np.ndarray, n_pixels: int) -> np.ndarray:
    """(n_pixels, n_centers) weights of a natural cubic spline through values at ``centers``.

    Beyond the first/last centre the value is held constant (as CaImAn does) rather than
    extrapolated, which would amplify errors of the border patches.
    """
    n = len(centers)
    if n == 1:
        return np.ones((n_pixels, 1), dtype=np.float32)
    coords = np.clip(np.arange(n_pixels, dtype=float), centers[0], centers[-1])
    if n == 2:  # a natural spline through two points is the straight line
        t = (coords - centers[0]) / (centers[1] - centers[0])
        return np.stack([1 - t, t], axis=1).astype(np.float32)
    from scipy.interpolate import CubicSpline  # only piecewise-rigid jobs need it

    spline = CubicSpline(centers, np.eye(n), bc_type="natural")
    return spline(coords).astype(np.float32)


def dense_shift_field(patch_shifts: np.ndarray, centers_y: np.ndarray, centers_x: np.ndarray,
                      dims: tuple[int, int]) -> np.ndarray:
    """Interpolate patch shifts to a smooth per-pixel shift field.

    Parameters
    ----------
    patch_shifts
        (frames, n_patches_y, n_patches_x, 2) shifts (y, x) in pixels at the patch centres.
    centers_y, centers_x
        (n_patches_y,), (n_patches_x,) patch centre coordinates in pixels.
    dims
        (y, x) frame size.

    Returns
    -------
    np.ndarray
        (frames, 2, y, x) float32 dense shift field; bicubic (natural spline) between centres,
        constant beyond the outermost centres.
    """
    wy = _interp_matrix(np.asarray(centers_y, float), dims[0])
    wx = _interp_matrix(np.asarray(centers_x, float), dims[1])
    s = np.moveaxis(np.asarray(patch_shifts, np.float32), -1, 1)  # (frames, 2, ny, nx)
    return wy @ s @ wx.T



def border_mask(shape: tuple[int, int], borders: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) binary mask, zero in borders (top, bottom, left, right) pixels wide.

    Each border is clamped to a third of the size so that a usable centre always remains.
    """
    h, w = shape
    top, bottom = (min(int(b), h // 3) for b in borders[:2])
    left, right = (min(int(b), w // 3) for b in borders[2:])
    mask = np.zeros(shape, dtype=np.float32)
    mask[top:h - bottom, left:w - right] = 1.0
    return mask


