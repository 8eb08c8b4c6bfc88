"""CNMF-E results in use: the ring background of any frame, the data without it, and the
evaluation of the components (accepted / rejected).

The evaluation is CNMF's (transient SNR and spatial consistency, :mod:`.evaluate`) on the
background-free data, plus two criteria for what a one-photon sensor shows where there are
no cells (:func:`sensor_artefacts`):

- **unlit**: most of the footprint's core (its pixels above half its peak) lies where the
  background is below :data:`LIT_FRACTION` of the field's lit level (the 95th percentile of
  the background over the frame): no excitation light reaches it, so no fluorescence
  either (the dark border around a GRIN lens);
- **line noise**: the component's transients reach along its rows (or columns) of the sensor
  beyond its footprint with more than :data:`LINE_SPREAD` of their amplitude on it (the
  median over its largest transients of the frame-to-frame jump beside the footprint
  relative to on it): an offset common to a whole row of the frame (sensor line noise,
  interference), not a cell, whose signal is local.

Both measure the component against the data around it, not a fixed brightness, so they do
not depend on the sensor's black level or the movie's units.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from .cnmfe_steps import cnmfe_params
from .data import DataMatrix
from .footprints import column
from .model import Estimates, data_matrix
from .ring import RingModel, background_at, ring_background

__all__ = ["background_frames", "BackgroundFree", "evaluate_components", "sensor_artefacts",
           "LIT_FRACTION", "LINE_SPREAD"]

#: Footprints where the background is below this fraction of the lit level are unlit.
LIT_FRACTION = 0.1
#: Transients reaching along the sensor's rows (or columns) beyond the footprint with more
#: than this fraction of their amplitude on it are line noise.
LINE_SPREAD = 0.25


def background_frames(estimates: Estimates, movie: Any, frames: Any = slice(None)) -> np.ndarray:
    """Background of the given frames of ``movie``, (n, y, x) float32 counts.

    For a ring model (``extra["W"]``): ``b0 + W (Y - A C - b0)`` frame by frame; otherwise
    the low-rank ``b f``. ``movie``: (T, y, x) array-like, or the (pixels, T)
    :class:`~.data.DataMatrix` (only the frames asked for are read).
    """
    n_frames = movie.n_frames if isinstance(movie, DataMatrix) else int(movie.shape[0])
    idx = np.arange(n_frames)[frames]
    dims = estimates.dims
    if "W" in estimates.extra and isinstance(movie, DataMatrix):
        B = background_at(movie, estimates.A, estimates.C, estimates.extra["W"],
                          estimates.extra["b0"], dims, int(estimates.extra.get("ssub_B", 1)),
                          np.arange(movie.n_pixels), idx)
        return np.ascontiguousarray(B.reshape(dims[1], dims[0], -1).transpose(2, 1, 0))
    if "W" in estimates.extra:
        Yf = np.asarray(movie[frames] if isinstance(frames, slice) else movie[idx], np.float32)
        AC = (estimates.A @ estimates.C[:, idx]).reshape(dims[1], dims[0], -1).transpose(2, 1, 0)
        return ring_background(estimates.extra["W"], estimates.extra["b0"], Yf - AC, dims,
                               int(estimates.extra.get("ssub_B", 1)))
    B = estimates.b @ estimates.f[:, idx]
    return B.reshape(dims[1], dims[0], -1).transpose(2, 1, 0).astype(np.float32)


def evaluate_components(estimates: Estimates, movie: Any, params: Mapping[str, Any]
                        ) -> Estimates:
    """Accept / reject components as CNMF's evaluation, on background-free data.

    Transient SNR of ``C + YrA`` and spatial consistency ``r`` (see :mod:`.evaluate`), the
    latter measured on ``Y - B`` with the ring background: on the raw one-photon movie the
    bright background would dominate every footprint's pixels. A component is accepted when
    (SNR >= min_SNR or r >= rval_thr) and SNR > SNR_lowest and r > rval_lowest, and it is
    not a sensor artefact (:func:`sensor_artefacts`). ``movie``: (T, y, x) array-like, or
    the (pixels, T) :class:`~.data.DataMatrix` (only each component's pixels and those
    around it are read, at its transients).

    Returns
    -------
    Estimates
        The same object with ``SNR_comp``, ``r_values``, ``cnn_preds`` (NaN),
        ``idx_components`` and ``idx_components_bad`` set, and ``extra["artefact"]``: (K,)
        ``""``, ``"unlit"`` or ``"line noise"``.
    """
    from .evaluate import remove_slow_baseline, spatial_consistency, trace_snr

    P = cnmfe_params(params)
    est = estimates
    K = est.n_components
    N = int(np.ceil(float(P["decay_time"]) * float(P["fr"])))
    artefact = np.full(K, "", dtype=object)
    if K:
        snr = trace_snr(remove_slow_baseline(est.C + est.YrA), N)
        Yb = BackgroundFree(data_matrix(movie), est)
        empty = np.zeros((est.A.shape[0], 0), np.float32), np.zeros((0, est.C.shape[1]))
        rval = spatial_consistency(Yb, est.A, est.C, *empty)
        artefact = sensor_artefacts(Yb.data, est, P["gSiz"], N)
    else:
        snr = rval = np.zeros(0)
    ok = (snr >= P["min_SNR"]) | (rval >= P["rval_thr"])
    ok &= (snr > P["SNR_lowest"]) & (rval > P["rval_lowest"])
    ok &= artefact == ""
    est.SNR_comp = np.asarray(snr, np.float64)
    est.r_values = np.asarray(rval, np.float64)
    est.cnn_preds = np.full(K, np.nan)
    est.idx_components = np.flatnonzero(ok)
    est.idx_components_bad = np.flatnonzero(~ok)
    est.extra["artefact"] = artefact.astype(str)
    return est


class BackgroundFree:
    """The data minus the fitted background, ``Y - B``, read where asked (:meth:`take`):
    the ring model's background computed for those pixels and frames only
    (:class:`~.ring.RingModel`), or the low-rank ``b f``."""

    def __init__(self, data: DataMatrix, estimates: Estimates) -> None:
        self.data, self.est = data, estimates
        self.shape = data.shape
        self.dims = data.dims
        self._A = sp.csr_matrix(estimates.A)
        self._ring = (RingModel(estimates.extra["W"], estimates.extra["b0"], estimates.dims,
                                int(estimates.extra.get("ssub_B", 1)))
                      if "W" in estimates.extra else None)

    def take(self, pixels: np.ndarray, frames: Any) -> np.ndarray:
        """(len(pixels), n_frames) float32 of ``Y - B``."""
        est = self.est
        Y = self.data.take(pixels, frames)
        if self._ring is not None:
            return Y - self._ring.at(self.data, self._A, est.C, pixels, frames)
        fr = est.f[:, frames] if isinstance(frames, slice) else est.f[:, np.asarray(frames)]
        return Y - est.b[np.asarray(pixels)] @ fr



def sensor_artefacts(data: Any, est: Estimates, gSiz: Any, decay_frames: int = 1
                     ) -> np.ndarray:
    """Which components are what a sensor shows where there are no cells (see the module).

    Line noise is measured at the component's largest transients (the peaks of ``C``, at
    least ``decay_frames`` apart): the jump of the data at the peak frame over the mean of
    the frames before and after it (slow background changes cancel), with the other
    components' part removed, beside the footprint along its rows (and columns) relative
    to on it; the median over the transients, so that a few that coincide with line noise
    do not condemn a cell.

    Parameters
    ----------
    data
        The (pixels, T) data matrix (:class:`~.data.DataMatrix` or array).
    est
        The fit (footprints, traces, background).
    gSiz
        Neuron diameter (px), (y, x): sets how far beside the footprint the data are read.
    decay_frames
        Frames between two transients that count apart (the decay time in frames).

    Returns
    -------
    np.ndarray
        (K,) object: ``"unlit"``, ``"line noise"`` or ``""`` (a possible cell).
    """
    from scipy.signal import find_peaks

    from .data import as_data

    data = as_data(data, est.dims)
    A = est.A if sp.isspmatrix_csc(est.A) else sp.csc_matrix(est.A)
    K = A.shape[1]
    out = np.full(K, "", dtype=object)
    level = resting_background(est)
    lit = np.percentile(level, 95)
    h, w = est.dims
    gy, gx = (int(v) for v in np.broadcast_to(np.asarray(gSiz), (2,)))
    Ar = sp.csr_matrix(A)
    for k in range(K):
        idx, val = column(A, k)
        if not idx.size or val.max() <= 0:
            continue
        core = idx[val > 0.5 * val.max()]  # the footprint's brighter half: where it is
        if np.median(level[core]) < LIT_FRACTION * lit:
            out[k] = "unlit"
            continue
        c = est.C[k]
        peaks = find_peaks(c, distance=max(int(decay_frames), 1))[0]
        peaks = peaks[(peaks > 0) & (peaks < len(c) - 1)]
        peaks = np.sort(peaks[np.argsort(c[peaks])[::-1][:10]])
        if not len(peaks):  # no transient
            continue
        ys, xs = core % h, core // h
        rows, cols = np.arange(ys.min(), ys.max() + 1), np.arange(xs.min(), xs.max() + 1)
        beside = _flank(rows, xs.min(), xs.max(), w, gx, lambda r, c_: r + c_ * h)
        above = _flank(cols, ys.min(), ys.max(), h, gy, lambda c_, r: r + c_ * h)
        on = _jumps(data, Ar, est.C, k, core, peaks)
        up = on >= 3 * _jump_noise(data, core)  # clear transients: the rest may be noise
        if not up.any():
            continue
        spread = max(float(np.median(_jumps(data, Ar, est.C, k, p, peaks)[up] / on[up]))
                     if p.size else 0.0 for p in (beside, above))
        if spread > LINE_SPREAD:
            out[k] = "line noise"
    return out


def resting_background(est: Estimates) -> np.ndarray:
    """(pixels,) the resting background of each pixel (counts): the ring model's ``b0``,
    or the low-rank ``b f``'s mean."""
    if "b0" in est.extra:
        return np.asarray(est.extra["b0"], np.float64)
    return np.asarray(est.b @ est.f.mean(axis=1), np.float64)


def _flank(lines: np.ndarray, lo: int, hi: int, n: int, size: int, index: Any) -> np.ndarray:
    """Sorted pixel indices of ``lines`` (rows or columns) on both sides of ``[lo, hi]``
    across them: a gap of half a neuron, then two neuron widths."""
    gap, span = size // 2 + 1, 2 * size
    across = np.r_[np.arange(max(lo - gap - span, 0), max(lo - gap, 0)),
                   np.arange(min(hi + gap + 1, n), min(hi + gap + span + 1, n))]
    if not across.size:
        return np.zeros(0, np.int64)
    return np.unique(index(lines[:, None], across[None, :]).ravel())


def _jump_noise(data: Any, pixels: np.ndarray) -> float:
    """Robust standard deviation (MAD) of the frame-to-frame jumps of the mean over
    ``pixels`` (read a block of frames at a time)."""
    jumps = []
    step = max(data.frames_per_block() if hasattr(data, "frames_per_block") else 4096, 3)
    T = data.shape[1]
    for t0 in range(0, T - 2, step):
        y = data.take(pixels, slice(t0, min(t0 + step + 2, T))).mean(axis=0)
        jumps.append(y[1:-1] - 0.5 * (y[:-2] + y[2:]))
    d = np.concatenate(jumps) if jumps else np.zeros(1)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _jumps(data: Any, A: sp.csr_matrix, C: np.ndarray, k: int, pixels: np.ndarray,
           peaks: np.ndarray) -> np.ndarray:
    """(len(peaks),) mean over ``pixels`` of the data's jump at each peak frame over the
    mean of its neighbouring frames, the other components' part removed."""
    frames = np.unique(np.concatenate([peaks - 1, peaks, peaks + 1]))
    others = A[pixels] @ C[:, frames] - np.outer(A[pixels, k].toarray().ravel(), C[k, frames])
    Y = data.take(pixels, frames) - others
    at = {int(f): i for i, f in enumerate(frames)}
    return np.array([Y[:, at[t]].mean() - 0.5 * (Y[:, at[t - 1]].mean() + Y[:, at[t + 1]].mean())
                     for t in peaks])
