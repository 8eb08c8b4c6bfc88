"""Detrended dF/F of CNMF traces (CaImAn's ``detrend_df_f``).

``F = C + YrA`` is each component's raw fluorescence (unmixed from the others) and
``B = a^T b f`` the background under its (unit-norm) footprint. The baseline ``F0`` of ``F``
is a running low percentile over ``frames_window`` frames (which also removes slow drift),
and ``dF/F = (F - F0) / (B0 + F0)`` with ``B0`` the same running percentile of ``B``: the
change relative to all the light seen through the footprint at rest. With ``flag_auto``,
the percentile of each trace is the one at its mode (the resting level), as found from its
values, instead of the fixed ``quantileMin``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["detrend_df_f", "mode_percentile", "running_percentile", "robust_mode"]


def robust_mode(x: np.ndarray) -> float:
    """Half-sample mode of a 1-d sample (robust location of the densest value)."""
    x = np.sort(np.asarray(x, np.float64))
    while len(x) > 3:
        h = (len(x) + 1) // 2
        widths = x[h - 1:] - x[: len(x) - h + 1]
        i = int(np.argmin(widths))
        x = x[i:i + h]
    return float(np.mean(x)) if len(x) else 0.0


def mode_percentile(x: np.ndarray) -> float:
    """Percentile (0-100) at which the mode (resting level) of a trace lies."""
    x = np.asarray(x, np.float64)
    mode = robust_mode(x)
    # ties at the mode (flat baselines) count half, so that the percentile lands on them
    below = np.mean(x < mode) + 0.5 * np.mean(x == mode)
    return float(np.clip(100.0 * below, 1.0, 99.0))


def running_percentile(
    x: np.ndarray, q: float, window: int | None, use_fast: bool = False
) -> np.ndarray:
    """Percentile ``q`` of a trace over a sliding window of ``window`` frames.

    ``window`` None (or longer than the trace) gives a constant. ``use_fast`` computes it on
    every ``window // 10``-th frame's window and interpolates linearly in between.
    """
    x = np.asarray(x, np.float64)
    T = len(x)
    if window is None or window >= T:
        return np.full(T, np.percentile(x, q))
    window = max(int(window), 1)
    if not use_fast:
        return ndimage.percentile_filter(x, q, size=window, mode="reflect")
    step = max(window // 10, 1)
    centers = np.arange(0, T, step)
    half = window // 2
    vals = [np.percentile(x[max(c - half, 0):c + half + 1], q) for c in centers]
    return np.interp(np.arange(T), centers, vals)


def detrend_df_f(
    estimates: Any,
    quantileMin: float = 8,
    frames_window: int | None = 500,
    flag_auto: bool = True,
    use_fast: bool = False,
    detrend_only: bool = False,
) -> np.ndarray:
    """Detrended dF/F of every component.

    Parameters
    ----------
    estimates
        :class:`~mesmerize_helpers.engine.model.Estimates` (uses A, b, C, f, YrA; for a
        CNMF-E ring model, ``extra["b0"]`` as the background).
    quantileMin
        Percentile (0-100) used as baseline when ``flag_auto`` is False.
    frames_window
        Length (frames) of the running window for the baseline; None for a constant one.
    flag_auto
        Pick each trace's baseline percentile at its mode.
    use_fast
        Approximate the running percentile on a subsampled grid.
    detrend_only
        Return ``F - F0`` (drift removed, not divided).

    Returns
    -------
    np.ndarray
        (K, T) float32 dF/F (dimensionless), or detrended F in trace units.
    """
    A = estimates.A
    K = A.shape[1]
    T = estimates.C.shape[1]
    if K == 0:
        return np.zeros((0, T), np.float32)
    nA = np.sqrt(np.asarray(A.power(2).sum(axis=0)).ravel())
    nA[nA == 0] = 1
    F = (estimates.C + estimates.YrA) * nA[:, None]
    extra = getattr(estimates, "extra", {})
    if estimates.b.size == 0 and "b0" in extra:
        # CNMF-E's ring model: the constant part b0 is the baseline light under a footprint
        under = np.asarray(A.T @ np.asarray(extra["b0"], np.float64)).ravel() / nA
        B = np.repeat(under[:, None], T, axis=1)
    else:
        B = np.asarray((A.T @ estimates.b) @ estimates.f) / nA[:, None]
    out = np.zeros((K, T), np.float64)
    for k in range(K):
        q = mode_percentile(F[k, :frames_window] if frames_window else F[k]) if flag_auto \
            else quantileMin
        f0 = running_percentile(F[k], q, frames_window, use_fast)
        if detrend_only:
            out[k] = F[k] - f0
        else:
            b0 = running_percentile(B[k], q, frames_window, use_fast)
            out[k] = (F[k] - f0) / np.maximum(b0 + f0, 1e-12)
    return out.astype(np.float32)
