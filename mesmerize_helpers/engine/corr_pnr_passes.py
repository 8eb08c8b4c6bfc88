"""The passes of the corr-PNR seeding over its two movies, a block of frames at a time.

The seeding (:mod:`.corr_pnr`) works on two (T, y, x) float32 movies: the raw data and its
filtered copy, from which each found neuron is subtracted. In memory they are arrays and a
block is the whole movie; for a long movie they are frame stores of the fit's workspace
(:meth:`~.data.Workspace.frames`, files read and written by slices of frames), and every
step below reads them a block of frames at a time, so the seeding's memory is that of a
block whatever the number of frames. Sums over frames are accumulated in float64: the
result does not depend on the blocks beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from .data import put_frames
from .images import local_correlations
from .noise import pixel_noise

__all__ = ["SeedMovies"]

#: Pixels whose filtered trace correlates with the seed's above this form the neuron's core
#: (whose mean is the initial trace); below ``BG_CORR`` they are taken as background.
CORE_CORR = 0.9
BG_CORR = 0.3


class _Window:
    """A (T, y, x) view of ``[:, ys, xs]`` of a frame store, read by slices of frames."""

    def __init__(self, store: Any, ys: slice, xs: slice) -> None:
        self.store, self.ys, self.xs = store, ys, xs
        h = len(range(*ys.indices(store.shape[1])))
        w = len(range(*xs.indices(store.shape[2])))
        self.shape = (store.shape[0], h, w)

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.store[key][:, self.ys, self.xs]


class _Thresholded:
    """Read-only view of a (T, y, x) movie with values below a per-pixel level set to 0,
    thresholded chunk by chunk as :func:`~.images.local_correlations` reads it."""

    def __init__(self, movie: Any, level: np.ndarray) -> None:
        self.movie, self.level = movie, level.astype(np.float32)
        self.shape = movie.shape

    def __getitem__(self, key: slice) -> np.ndarray:
        frames = self.movie[key]
        return np.where(frames >= self.level, frames, np.float32(0))


def corr_image(movie: Any, noise: np.ndarray, thresh_init: float) -> np.ndarray:
    """Correlation image of a (T, y, x) movie thresholded at ``thresh_init`` x ``noise``
    (values below set to 0), read a chunk of frames at a time."""
    chunk = max(1, 2**21 // max(movie.shape[1] * movie.shape[2], 1))
    cn = local_correlations(_Thresholded(movie, thresh_init * noise), chunk)
    return np.nan_to_num(np.maximum(cn, 0))


class SeedMovies:
    """The raw and the filtered movie of the seeding, read and written by blocks of frames.

    Parameters
    ----------
    raw
        (T, y, x) float32 frame store (array or :meth:`~.data.Workspace.frames`): the data,
        from which found neurons are subtracted (written).
    filt
        Frame store of the same shape for the filtered movie (filled by :meth:`filter`).
    block
        Frames per block (the whole movie for arrays in memory).
    """

    def __init__(self, raw: Any, filt: Any, block: int) -> None:
        self.raw, self.filt = raw, filt
        self.T, self.h, self.w = (int(s) for s in raw.shape)
        self.block = max(int(block), 1)

    def spans(self) -> Iterator[tuple[int, int]]:
        for t0 in range(0, self.T, self.block):
            yield t0, min(t0 + self.block, self.T)

    # --- the whole movie ---------------------------------------------------------------

    def filter(self, kernel: np.ndarray | None) -> None:
        """Fill the filtered movie: each frame filtered with ``kernel`` (borders replicated),
        then its temporal mean removed."""
        total = np.zeros((self.h, self.w), np.float64)
        for t0, t1 in self.spans():
            rb = self.raw[t0:t1]
            fb = self.filt[t0:t1] if isinstance(self.filt, np.ndarray) else np.empty_like(rb)
            for t in range(t1 - t0):
                if kernel is None:
                    fb[t] = rb[t]
                else:
                    cv2.filter2D(rb[t], cv2.CV_32F, kernel, dst=fb[t],
                                 borderType=cv2.BORDER_REPLICATE)
            total += fb.sum(axis=0, dtype=np.float64)
            put_frames(self.filt, t0, fb)
        mean = (total / max(self.T, 1)).astype(np.float32)
        for t0, t1 in self.spans():
            fb = self.filt[t0:t1]
            fb -= mean
            put_frames(self.filt, t0, fb)

    def peak(self, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """Maximum over frames of the filtered movie in ``[ys, xs]``, (y', x')."""
        out = None
        for t0, t1 in self.spans():
            m = self.filt[t0:t1][:, ys, xs].max(axis=0)
            out = m if out is None else np.maximum(out, m)
        return out

    def noise(self, noise_range: tuple[float, float], block_bytes: int | None) -> np.ndarray:
        """Noise of each pixel of the filtered movie (:func:`~.noise.pixel_noise`), (y, x):
        whole traces, gathered a group of pixels at a time."""
        T, n = self.T, self.h * self.w
        if isinstance(self.filt, np.ndarray):
            sn = pixel_noise(self.filt.reshape(T, -1).T, noise_range, "mean", chunk=1024)
        else:
            # a group's traces, its spectrum (complex, half the frames) and power
            group = n if block_bytes is None else max(int(block_bytes // (T * 4 * 4)), 1)
            sn = np.empty(n, np.float32)
            for p0 in range(0, n, group):
                p1 = min(p0 + group, n)
                traces = np.empty((p1 - p0, T), np.float32)
                for t0, t1 in self.spans():
                    traces[:, t0:t1] = self.filt[t0:t1].reshape(t1 - t0, n)[:, p0:p1].T
                sn[p0:p1] = pixel_noise(traces, noise_range, "mean", chunk=1024)
        sn = sn.reshape(self.h, self.w)
        return np.maximum(sn, 1e-9 * max(float(sn.max()), 1e-30))

    def corr(self, noise: np.ndarray, thresh_init: float, ys: slice = slice(None),
             xs: slice = slice(None)) -> np.ndarray:
        """Thresholded correlation image (:func:`corr_image`) of ``[ys, xs]``; ``noise`` of
        that window."""
        movie = self.filt if (ys, xs) == (slice(None), slice(None)) else _Window(self.filt,
                                                                                 ys, xs)
        return corr_image(movie, noise, thresh_init)

    # --- one neuron --------------------------------------------------------------------

    def box_stats(self, ys: slice, xs: slice, ctr: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One pass over the filtered box ``[ys, xs]`` (pixels in C order): the seed pixel
        ``ctr``'s trace and, per pixel, mean, norm of the centred trace and correlation
        with the seed's.

        Returns
        -------
        trace, mean, norm, corr
            (T,) float32; (n,) float64 x 3.
        """
        trace = np.empty(self.T, np.float32)
        s1 = s2 = sc = None
        for t0, t1 in self.spans():
            fb = self.filt[t0:t1][:, ys, xs].reshape(t1 - t0, -1).astype(np.float64)
            trace[t0:t1] = fb[:, ctr]
            p1, p2, pc = fb.sum(axis=0), np.einsum("ij,ij->j", fb, fb), fb[:, ctr] @ fb
            s1, s2, sc = (p1, p2, pc) if s1 is None else (s1 + p1, s2 + p2, sc + pc)
        mean = s1 / self.T
        norm = np.sqrt(np.maximum(s2 - s1 * mean, 0))
        norm[norm == 0] = 1.0
        corr = (sc - s1[ctr] * mean) / (norm[ctr] * norm)
        return trace, mean, norm, corr

    def regress(self, ys: slice, xs: slice, core: np.ndarray, bg: np.ndarray,
                mean: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neuron's trace (mean of its core's normalised filtered traces) and the
        regression of the raw box on that trace, a local background trace (median of the
        ``bg`` pixels' raw traces) and a constant, in one pass.

        Returns
        -------
        ci, coef
            (T,) float32 trace; (3, n) float64 coefficients (trace, background, constant).
        """
        ci = np.empty(self.T, np.float32)
        n = int(core.size)
        XtX, XtY = np.zeros((3, 3)), np.zeros((3, n))
        for t0, t1 in self.spans():
            fb = self.filt[t0:t1][:, ys, xs].reshape(t1 - t0, -1)[:, core]
            c = ((fb - mean[core]) / norm[core]).mean(axis=1)
            rb = self.raw[t0:t1][:, ys, xs].reshape(t1 - t0, -1)
            y_bg = np.median(rb[:, bg], axis=1) if bg.any() else np.ones_like(c)
            X = np.stack([c, y_bg, np.ones_like(c)], axis=1).astype(np.float64)
            XtX += X.T @ X
            XtY += X.T @ rb.astype(np.float64)
            ci[t0:t1] = c
        # normal equations: X has 3 columns, so this is much cheaper than a QR of (T, n)
        XtX += 1e-12 * np.trace(XtX) * np.eye(3)
        if not np.all(np.isfinite(ci)):
            return ci, np.zeros((3, n))
        return ci, np.linalg.solve(XtX, XtY)

    def subtract(self, ci: np.ndarray, box: tuple[slice, slice], ai: np.ndarray,
                 window: tuple[slice, slice], ai_f: np.ndarray) -> np.ndarray:
        """Remove a neuron: ``ci x ai`` from the raw box, ``ci x ai_f`` (the filtered
        footprint) from the filtered window; returns the filtered window's new peak."""
        peak = None
        for t0, t1 in self.spans():
            c = ci[t0:t1, None, None]
            rb = self.raw[t0:t1]
            rb[:, box[0], box[1]] -= c * ai[None]
            put_frames(self.raw, t0, rb)
            fb = self.filt[t0:t1]
            sub = fb[:, window[0], window[1]]
            sub -= c * ai_f[None]
            put_frames(self.filt, t0, fb)
            m = sub.max(axis=0)
            peak = m if peak is None else np.maximum(peak, m)
        return peak
