"""Applying shifts to frames: rigid (OpenCV cubic or Fourier) and dense-field warps."""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.fft


def _border_strips(frame: np.ndarray, shift: np.ndarray, border_nan: bool | str,
                   fill: float) -> None:
    """Mark, in place, the strips of a rigidly shifted frame that hold no data (as CaImAn)."""
    if border_nan is False:
        return
    top, left = (math.ceil(max(0.0, s)) for s in shift)
    bottom, right = (math.floor(min(0.0, s)) for s in shift)
    if border_nan == "copy":
        if top > 0:
            frame[:top] = frame[top]
        if bottom < 0:
            frame[bottom:] = frame[bottom - 1]
        if left > 0:
            frame[:, :left] = frame[:, left, None]
        if right < 0:
            frame[:, right:] = frame[:, right - 1, None]
        return
    frame[:top] = fill
    frame[:, :left] = fill
    if bottom < 0:
        frame[bottom:] = fill
    if right < 0:
        frame[:, right:] = fill


def _border_fill(frame: np.ndarray, border_nan: bool | str) -> float:
    return float(np.nanmin(frame)) if border_nan == "min" else np.nan


def _cubic_weights(frac: float) -> np.ndarray:
    """Cubic-convolution weights (OpenCV's a = -0.75) of taps -1, 0, 1, 2 for position frac."""
    a = -0.75
    x = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - frac)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, far).astype(np.float32)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into [0, n) as OpenCV's BORDER_REFLECT (edge pixel repeated)."""
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - 1 - idx)


def _translate(frame: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """out(p) = frame(p - shift), cubic interpolation, reflected borders.

    Same interpolation as ``cv2.warpAffine(..., INTER_CUBIC)`` but done as a separable
    4-tap filter for the fractional part (``cv2.sepFilter2D``) and a copy for the integer
    part, which is about 5x faster for a translation.
    """
    h, w = frame.shape
    src = -np.asarray(shift, dtype=np.float64)  # out(p) = frame(p + src)
    whole = np.floor(src).astype(int)
    frac = src - whole
    filtered = cv2.sepFilter2D(frame, cv2.CV_32F, _cubic_weights(frac[1]),
                               _cubic_weights(frac[0]), anchor=(1, 1),
                               borderType=cv2.BORDER_REFLECT)
    rows = _reflect_index(np.arange(h) + whole[0], h)
    cols = _reflect_index(np.arange(w) + whole[1], w)
    # The bulk is a plain slice copy; only the strips beyond the edges need the index maps.
    y0, y1 = max(0, -whole[0]), min(h, h - whole[0])
    x0, x1 = max(0, -whole[1]), min(w, w - whole[1])
    if y0 < y1 and x0 < x1:
        out[y0:y1, x0:x1] = filtered[y0 + whole[0]:y1 + whole[0], x0 + whole[1]:x1 + whole[1]]
    for ys, xs in (((slice(0, y0)), slice(None)), ((slice(y1, h)), slice(None)),
                   (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, w))):
        strip_rows, strip_cols = rows[ys], cols[xs]
        if len(strip_rows) and len(strip_cols):
            out[ys, xs] = filtered[np.ix_(strip_rows, strip_cols)]


def shift_rigid_cv(frames: np.ndarray, shifts: np.ndarray, border_nan: bool | str) -> np.ndarray:
    """Translate each frame by ``shifts`` (y, x) with cubic interpolation (OpenCV filters)."""
    out = np.empty_like(frames)
    for i in range(len(frames)):
        _translate(frames[i], shifts[i], out[i])
        # Cubic interpolation overshoots at sharp edges; keep values within the frame's range.
        low, high = _finite_range(frames[i])
        np.clip(out[i], low, high, out=out[i])
        _border_strips(out[i], shifts[i], border_nan, _border_fill(frames[i], border_nan))
    return out


def shift_rigid_fft(spectra: np.ndarray, shape: tuple[int, int], shifts: np.ndarray,
                     border_nan: bool | str, workers: int) -> np.ndarray:
    """Translate frames by ``shifts`` with a Fourier phase ramp (exact for band-limited data)."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)
    two_pi = np.float32(2 * np.pi)
    ramp_y = np.exp(-1j * two_pi * fy[None, :] * shifts[:, 0, None].astype(np.float32))
    ramp_x = np.exp(-1j * two_pi * fx[None, :] * shifts[:, 1, None].astype(np.float32))
    out = scipy.fft.irfft2(spectra * ramp_y[:, :, None] * ramp_x[:, None, :], s=shape,
                           workers=workers).astype(np.float32, copy=False)
    for i in range(len(out)):
        _border_strips(out[i], shifts[i], border_nan, _border_fill(out[i], border_nan))
    return out


def shift_dense(frames: np.ndarray, field: np.ndarray, border_nan: bool | str) -> np.ndarray:
    """Warp each frame by its dense shift field (frames, 2, y, x) with cv2.remap (cubic).

    Pixels whose source lies outside the frame are NaN (``border_nan=True``), the frame minimum
    (``"min"``), zero (``False``, as CaImAn's remap) or replicate the edge (``"copy"``).
    """
    n, h, w = frames.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    map_y, map_x = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    out = np.empty_like(frames)
    for i in range(n):
        np.subtract(grid_y, field[i, 0], out=map_y)
        np.subtract(grid_x, field[i, 1], out=map_x)
        cv2.remap(frames[i], map_x, map_y, cv2.INTER_CUBIC, dst=out[i],
                  borderMode=cv2.BORDER_REPLICATE)
        low, high = _finite_range(frames[i])
        np.clip(out[i], low, high, out=out[i])
        if border_nan != "copy":
            fill = 0.0 if border_nan is False else _border_fill(frames[i], border_nan)
            reach = int(np.ceil(np.abs(field[i]).max())) + 1  # only a border band can be outside
            for band in _border_bands(h, w, reach):
                outside = ((map_y[band] < 0) | (map_y[band] > h - 1)
                           | (map_x[band] < 0) | (map_x[band] > w - 1))
                out[i][band][outside] = fill
    return out


def _finite_range(frame: np.ndarray) -> tuple[float, float]:
    """(min, max) of a frame, ignoring NaN."""
    low, high = cv2.minMaxLoc(frame)[:2]
    if np.isnan(low) or np.isnan(high):
        return float(np.nanmin(frame)), float(np.nanmax(frame))
    return low, high


def _border_bands(h: int, w: int, reach: int) -> list[tuple[slice, slice]]:
    """Slices of the four bands ``reach`` pixels wide along the edges of an (h, w) frame."""
    if 2 * reach >= min(h, w):
        return [(slice(None), slice(None))]
    middle = slice(reach, h - reach)
    return [(slice(0, reach), slice(None)), (slice(h - reach, h), slice(None)),
            (middle, slice(0, reach)), (middle, slice(w - reach, w))]
