"""Noise level and autoregressive (AR) time constants of fluorescence traces.

The noise standard deviation is read off the high-frequency part of the power spectral
density, where calcium transients (slow) contribute little and white noise is flat.
AR coefficients come from the autocovariance of a trace (Yule-Walker), corrected for the
noise variance at lag 0, with the frame rate and decay time as a fallback prior.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["noise_fft", "ar_from_decay_time", "estimate_ar", "pixel_noise"]


def noise_fft(
    y: np.ndarray, noise_range: tuple[float, float] = (0.25, 0.5), method: str = "mean"
) -> np.ndarray:
    """Noise standard deviation of each row of ``y`` from its power spectral density.

    Parameters
    ----------
    y
        (n, T) traces (or a single (T,) trace), any units.
    noise_range
        Band of frequencies used, as fractions of the sampling rate (0.5 is Nyquist).
    method
        How to average the PSD over the band: ``"mean"`` (unbiased for white noise),
        ``"median"`` or ``"logmexp"`` (geometric mean, less sensitive to outliers).

    Returns
    -------
    np.ndarray
        (n,) noise standard deviation in the units of ``y`` (a float for a 1-d input).
    """
    y = np.asarray(y, dtype=np.float32)
    single = y.ndim == 1
    y2 = np.atleast_2d(y)
    T = y2.shape[-1]
    freqs = np.fft.rfftfreq(T)
    band = (freqs > noise_range[0]) & (freqs <= noise_range[1])
    if not band.any():
        band = freqs > 0
    # for white noise of variance s^2, E|X_k|^2 = T s^2, so |X_k|^2 / T estimates s^2
    psd = np.abs(np.fft.rfft(y2, axis=-1)[:, band]) ** 2 / T
    if method == "mean":
        var = psd.mean(axis=-1)
    elif method == "median":
        var = np.median(psd, axis=-1) / np.log(2)  # median of an exponential is mean*ln2
    elif method == "logmexp":
        var = np.exp(np.mean(np.log(psd + 1e-20), axis=-1) + np.euler_gamma)
    else:
        raise ValueError(f"Unknown noise_method {method!r}; use 'mean', 'median' or 'logmexp'.")
    sn = np.sqrt(var).astype(np.float32)
    return float(sn[0]) if single else sn


def pixel_noise(
    Y: Any,
    noise_range: tuple[float, float] = (0.25, 0.5),
    method: str = "mean",
    chunk: int = 4096,
) -> np.ndarray:
    """Per-pixel noise of a (pixels, T) matrix, computed in blocks of pixels.

    ``Y`` is an array or a :class:`~.data.DataMatrix` (blocks of at most ``chunk`` rows,
    fewer when its budget says so). Each row's estimate depends on that row only, so the
    blocks do not change the result.

    Returns
    -------
    np.ndarray
        (pixels,) float32 noise standard deviation, in movie units.
    """
    from .data import DataMatrix

    out = np.empty(Y.shape[0], np.float32)
    if isinstance(Y, DataMatrix):
        # a block and its spectrum (complex, half the frames) and power
        step = min(Y.rows_per_block(copies=4), chunk)
        for a in range(0, Y.shape[0], step):
            out[a:a + step] = noise_fft(Y.rows(a, min(a + step, Y.shape[0])), noise_range,
                                        method)
        Y.release()
        return out
    for i in range(0, Y.shape[0], chunk):
        out[i:i + chunk] = noise_fft(Y[i:i + chunk], noise_range, method)
    return out


def ar_from_decay_time(decay_time: float, fr: float, p: int) -> np.ndarray:
    """AR coefficients of a calcium response with the given decay time (s) at ``fr`` Hz.

    For ``p == 2`` a rise time of a tenth of the decay (at least a frame) is assumed.

    Returns
    -------
    np.ndarray
        (p,) AR coefficients (empty for p == 0).
    """
    if p == 0:
        return np.zeros(0)
    d = np.exp(-1.0 / (decay_time * fr))
    if p == 1:
        return np.array([d])
    r = np.exp(-1.0 / max(0.1 * decay_time * fr, 1.0))
    # AR(2) with roots d and r: c[t] = (d + r) c[t-1] - d r c[t-2] + s[t]
    return np.array([d + r, -d * r])


def _autocov(y: np.ndarray, lags: int) -> np.ndarray:
    y = y - y.mean()
    T = len(y)
    return np.array([y[k:] @ y[: T - k] / T for k in range(lags + 1)])


def estimate_ar(
    y: np.ndarray,
    p: int,
    sn: float,
    *,
    lags: int = 5,
    fudge_factor: float = 0.96,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """AR(p) coefficients of a noisy calcium trace by Yule-Walker on its autocovariance.

    White noise only adds ``sn**2`` at lag 0, so lags 1.. are used to solve for ``g``.
    An estimate that is not a stable, decaying response (or a trace too noisy to tell) falls
    back to ``prior``.

    Parameters
    ----------
    y
        (T,) trace.
    p
        AR order (0, 1 or 2).
    sn
        Noise standard deviation of ``y``.
    lags
        Number of extra lags beyond ``p`` used in the least-squares fit.
    fudge_factor
        Shrinks the time constants slightly (values < 1 counter the positive bias).
    prior
        (p,) coefficients to use when estimation fails (e.g. from the decay time).

    Returns
    -------
    np.ndarray
        (p,) AR coefficients.
    """
    if p == 0:
        return np.zeros(0)
    xc = _autocov(np.asarray(y, np.float64), lags + p)
    # rows: lag k = 1..lags+p ;  xc[k] = sum_j g_j xc[|k - j|] (noise-free part)
    A = np.array([[xc[abs(k - j)] for j in range(1, p + 1)] for k in range(1, lags + p + 1)])
    A[np.arange(p), np.arange(p)] -= sn**2  # remove the noise from xc[0] where it appears
    g = np.linalg.lstsq(A, xc[1:lags + p + 1], rcond=None)[0]
    roots = np.roots(np.concatenate([[1.0], -g]))
    ok = np.all(np.isreal(roots)) and np.all((np.real(roots) > 0) & (np.abs(roots) < 1))
    if not ok:
        return np.asarray(prior, float) if prior is not None else np.array([0.9] + [0.0] * (p - 1))
    roots = np.real(roots) * fudge_factor
    return -np.poly(roots)[1:]
