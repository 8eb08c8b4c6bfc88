"""Quality evaluation of CNMF components (accept / reject), as CaImAn's
``evaluate_components``, without the CNN classifier.

Two measures per component:

- **SNR** of its transients: the raw trace ``C + YrA`` is z-scored against its own noise
  (estimated from the part of the trace below its mode, which holds no transients), and the
  most exceptional run of ``N = ceil(decay_time * fr)`` consecutive frames gives an
  equivalent Gaussian SNR (the z-score whose tail probability is the geometric mean of the
  run's per-frame tail probabilities). Pure noise gives about 1, real transients several.
- **Spatial consistency** ``r``: the correlation, over the footprint's pixels, between the
  footprint and the movie averaged over the component's strongest transients (with the
  background and the other components removed). A real cell looks like its footprint when
  it fires; a spurious component does not.

A component is accepted when (SNR >= min_SNR or r >= rval_thr) and SNR > SNR_lowest and
r > rval_lowest (CaImAn's rule, without the CNN terms), and its area (pixels above 20 % of
its peak) lies between 0.6 and 9 times ``pi * gSig_y * gSig_x`` (a soma is neither a speck
nor a sheet), and its footprint holds at least as much soma-scale structure as pixel noise
(:func:`footprint_snr`: a footprint fitted to noise is a speckle of isolated pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.signal import argrelmax
from scipy.special import log_ndtr, ndtri

from .data import as_data
from .dff import robust_mode, running_percentile
from .footprints import areas, as_footprints, box_image, column

__all__ = [
    "evaluate_components", "trace_snr", "spatial_consistency", "robust_mode",
    "remove_slow_baseline", "footprint_snr", "footprint_areas", "max_area", "min_area",
]

#: Footprint pixels above this fraction of the peak make up a component's area.
AREA_THR = 0.2
#: Largest area of a soma, in units of ``pi * gSig_y * gSig_x`` (a disk of radius 3 gSig).
MAX_AREA_FACTOR = 9.0
#: Smallest area of a soma, same units (a disk of radius ~0.8 gSig): smaller components are
#: bright specks (dendrites, boutons) or noise.
MIN_AREA_FACTOR = 0.6


def footprint_areas(A: Any) -> np.ndarray:
    """(K,) number of pixels of each (pixels, K) footprint (sparse or dense) above
    ``AREA_THR`` times its peak."""
    return areas(A, AREA_THR)


def max_area(P: Mapping[str, Any]) -> float:
    """Largest plausible soma area (px) for the ``gSig`` of the params."""
    return MAX_AREA_FACTOR * np.pi * P["gSig"][0] * P["gSig"][1]


def min_area(P: Mapping[str, Any]) -> float:
    """Smallest plausible soma area (px) for the ``gSig`` of the params."""
    return MIN_AREA_FACTOR * np.pi * P["gSig"][0] * P["gSig"][1]




def trace_snr(F: np.ndarray, N: int) -> np.ndarray:
    """Transient SNR of each trace (see module docstring).

    Parameters
    ----------
    F
        (K, T) raw traces (any units; each row is scaled by its own noise).
    N
        Number of consecutive frames of a transient (``ceil(decay_time * fr)``).

    Returns
    -------
    np.ndarray
        (K,) SNR values (dimensionless, ~1 for pure noise).
    """
    K, T = F.shape
    N = int(max(1, min(N, T)))
    out = np.zeros(K)
    kernel = np.ones(N)
    for k in range(K):
        x = np.asarray(F[k], np.float64)
        md = robust_mode(x)
        below = x[x < md] - md
        sd = np.sqrt(np.mean(below**2)) if below.size > 1 else np.std(x)
        if not np.isfinite(sd) or sd <= 0:
            continue
        logp = log_ndtr(-(x - md) / sd)  # log tail probability of each frame under noise
        run = np.convolve(logp, kernel, mode="valid")  # log prob of N consecutive frames
        out[k] = -ndtri(np.exp(run.min() / N))
    return np.nan_to_num(out, posinf=1e3)


def remove_slow_baseline(F: np.ndarray) -> np.ndarray:
    """Subtract from each trace its running 8th percentile over a fifth of the recording
    (at most 800 frames), as CaImAn does before scoring transients: slow drifts are not
    events."""
    from scipy.ndimage import uniform_filter1d

    T = F.shape[1]
    window = int(min(max(T // 5, 1), 800))
    if not len(F):
        return F
    # the running percentile of a noisy trace is itself noisy; averaging it over the window
    # keeps only the slow drift, so that noise is not mistaken for transients
    base = np.stack([running_percentile(f, 8, window, use_fast=True) for f in F])
    return F - uniform_filter1d(base, window, axis=1, mode="nearest")


def _peak_frames(c: np.ndarray, n_peaks: int, before: int, after: int) -> np.ndarray:
    """Frames around the ``n_peaks`` largest local maxima of ``c`` (above half its max)."""
    T = len(c)
    peaks = argrelmax(c, order=max(after, 1))[0]
    if c.max() <= 0:
        return np.zeros(0, int)
    peaks = peaks[c[peaks] > 0.3 * c.max()] if peaks.size else np.array([int(np.argmax(c))])
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(c))])
    peaks = peaks[np.argsort(c[peaks])[::-1][:n_peaks]]
    frames = np.unique(np.concatenate([np.arange(p - before, p + after + 1) for p in peaks]))
    return frames[(frames >= 0) & (frames < T)]


def spatial_consistency(
    Y: Any,
    A: np.ndarray,
    C: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    *,
    n_peaks: int = 5,
    before: int = 2,
    after: int = 5,
    athresh: float = 0.1,
) -> np.ndarray:
    """Correlation between each footprint and the data during its transients.

    Parameters
    ----------
    Y
        (pixels, T) data: an array or a :class:`~.data.DataMatrix` (only each footprint's
        pixels at its transients are read).
    A
        (pixels, K) footprints (scipy.sparse or dense).
    C
        (K, T) traces.
    b, f
        Background footprints (pixels, nb) and traces (nb, T).
    n_peaks, before, after
        Number of transients used and frames taken before / after each peak.
    athresh
        Pixels of the footprint above this fraction of its peak enter the correlation.

    Returns
    -------
    np.ndarray
        (K,) correlations in [-1, 1] (-1 for a component without transients).
    """
    Y = as_data(Y)
    A = A if sp.isspmatrix_csc(A) else as_footprints(A)
    K = A.shape[1]
    r = -np.ones(K)
    W = sp.hstack([A, sp.csc_matrix(b)], format="csr", dtype=np.float32)
    H = np.vstack([C, f]).astype(np.float32)
    for k in range(K):
        frames = _peak_frames(C[k], n_peaks, before, after)
        idx, val = column(A, k)
        if frames.size == 0 or not idx.size or val.max() <= 0:
            continue
        strong = val > athresh * val.max()
        pix, a = idx[strong], val[strong]
        if pix.size < 3:
            continue
        # the data during the transients minus everything but this component
        resid = (Y.take(pix, frames) - W[pix] @ H[:, frames]
                 + np.outer(a, C[k, frames]))
        img = resid.mean(axis=1)
        if np.std(img) > 0 and np.std(a) > 0:
            r[k] = float(np.corrcoef(img, a)[0, 1])
    return r


#: Width (px, Gaussian sigma) of the blur that separates structure from pixel noise in
#: :func:`footprint_snr`.
SMOOTH_SIGMA = 1.0
#: Smallest footprint SNR (see :func:`footprint_snr`) of an accepted component: at least as
#: much energy in soma-scale structure as in pixel noise.
MIN_FOOTPRINT_SNR = 1.0


def footprint_snr(A: np.ndarray, dims: tuple[int, int], gSig: tuple[float, float]) -> np.ndarray:
    """Ratio of structured to pixel-noise energy of each footprint.

    A footprint is estimated pixel by pixel from the data; where the component's trace is
    weak next to the pixel noise, it is a speckle of isolated pixels rather than a soma.
    A blur of ``SMOOTH_SIGMA`` px keeps the fraction ``f_soma`` of the energy of a soma (a
    Gaussian blob of width ``gSig / 2``, smooth at that scale) but only the fraction
    ``f_noise`` of the energy of white noise (the sum of the squared blur kernel, ~0.08).
    The fraction ``f`` a footprint keeps gives the share of its energy in structure,
    ``rho = (f - f_noise) / (f_soma - f_noise)``; the footprint SNR is ``rho / (1 - rho)``
    (1: as much structure as noise). Calibration: a footprint made of rectified white noise
    (``max(noise, 0)`` on a disk of radius ``3 gSig``, which is what the non-negative
    spatial update fits where there is no cell; its positive mean counts as structure)
    scores about 0.6; the same with a soma of peak twice the noise level added, about 1.4;
    a noise-free soma, 1000 (the cap).

    Parameters
    ----------
    A
        (pixels, K) footprints (scipy.sparse or dense), Fortran pixel order on ``dims``.
    dims
        (y, x) frame size.
    gSig
        Expected soma half-size (px), (y, x).

    Returns
    -------
    np.ndarray
        (K,) footprint SNR values (0 for an empty footprint, capped at 1e3).
    """
    from scipy.ndimage import gaussian_filter

    def kept(img: np.ndarray) -> float:
        e = float((img.astype(np.float64) ** 2).sum())
        blurred = gaussian_filter(img.astype(np.float64), SMOOTH_SIGMA, mode="constant")
        return float((blurred**2).sum()) / e if e > 0 else 0.0

    n = int(np.ceil(4 * max(max(gSig), SMOOTH_SIGMA))) + 4
    delta = np.zeros((2 * n + 1, 2 * n + 1))
    delta[n, n] = 1.0
    f_noise = kept(delta)
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    blob = np.exp(-0.5 * ((2 * yy / gSig[0]) ** 2 + (2 * xx / gSig[1]) ** 2))
    f_soma = kept(blob)
    pad = int(np.ceil(4 * SMOOTH_SIGMA))
    out = np.zeros(A.shape[1])
    A = A if sp.isspmatrix_csc(A) else as_footprints(A)
    for k in range(A.shape[1]):
        idx, val = column(A, k)
        if not idx.size:
            continue
        crop = box_image(idx, val, dims, pad)[0]
        rho = (kept(crop) - f_noise) / max(f_soma - f_noise, 1e-12)
        rho = min(max(rho, 0.0), 1.0)
        out[k] = min(rho / (1 - rho), 1e3) if rho < 1 else 1e3
    return out


def evaluate_components(estimates: Any, movie: Any, params: Mapping[str, Any]) -> Any:
    """Compute SNR and spatial consistency and split components into accepted / rejected.

    Parameters
    ----------
    estimates
        :class:`~mesmerize_helpers.engine.cnmf.Estimates` from ``fit_cnmf``.
    movie
        The movie the estimates were fitted on (read only): (T, y, x) array-like, or its
        (pixels, T) :class:`~.data.DataMatrix`.
    params
        Resolved CNMF params (``min_SNR``, ``SNR_lowest``, ``rval_thr``, ``rval_lowest``,
        ``decay_time``, ``fr``).

    Returns
    -------
    Estimates
        The same object with ``SNR_comp``, ``r_values``, ``cnn_preds`` (NaN),
        ``idx_components`` and ``idx_components_bad`` set.
    """
    est = estimates
    K = est.n_components
    N = int(np.ceil(float(params["decay_time"]) * float(params["fr"])))
    F = remove_slow_baseline(est.C + est.YrA)
    snr = trace_snr(F, N) if K else np.zeros(0)
    if K:
        from .model import data_matrix

        rval = spatial_consistency(data_matrix(movie), est.A, est.C, est.b, est.f)
    else:
        rval = np.zeros(0)
    ok = ((snr >= params["min_SNR"]) | (rval >= params["rval_thr"]))
    ok &= (snr > params["SNR_lowest"]) & (rval > params["rval_lowest"])
    if K:  # size limits: somata are neither specks nor sheets
        area = footprint_areas(est.A)
        ok &= (area >= min_area(params)) & (area <= max_area(params))
        # a speckle of isolated pixels is a footprint fitted to noise, not a soma
        ok &= footprint_snr(est.A, est.dims, params["gSig"]) >= MIN_FOOTPRINT_SNR
    est.SNR_comp = snr.astype(np.float64)
    est.r_values = rval.astype(np.float64)
    est.cnn_preds = np.full(K, np.nan)
    est.idx_components = np.flatnonzero(ok)
    est.idx_components_bad = np.flatnonzero(~ok)
    return est
