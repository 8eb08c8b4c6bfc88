"""Deconvolution of calcium traces into spikes with OASIS (constrained foopsi).

A thin wrapper over ``oasis-deconv`` that handles the AR order ``p`` (0, 1, 2), degenerate
traces and an optional minimum spike size ``s_min``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import lfilter

__all__ = ["Deconvolved", "deconvolve_trace"]


class Deconvolved(NamedTuple):
    """Result of deconvolving one trace (all arrays (T,), units of the trace)."""

    c: np.ndarray  # denoised calcium, baseline removed
    s: np.ndarray  # spikes (non-negative increments of c)
    b: float  # baseline
    c1: float  # initial calcium value at t = 0 (the part of c decaying from before the movie)
    g: np.ndarray  # AR coefficients used


def _p0(y: np.ndarray, bas_nonneg: bool) -> Deconvolved:
    """p = 0: no dynamics; the trace above a low-percentile baseline, clipped at 0."""
    b = float(np.percentile(y, 10))
    if bas_nonneg:
        b = max(b, 0.0)
    c = np.maximum(y - b, 0)
    return Deconvolved(c, np.zeros_like(c), b, 0.0, np.zeros(0))


def deconvolve_trace(
    y: np.ndarray,
    g: np.ndarray,
    sn: float,
    *,
    bas_nonneg: bool = True,
    s_min: float | None = None,
    optimize_g: int = 0,
) -> Deconvolved:
    """Sparse non-negative deconvolution of one trace, noise constrained (L1 penalty).

    Solves ``min |s|_1`` subject to ``|c + b - y|^2 <= sn^2 T``, ``s = G c >= 0`` (OASIS).

    Parameters
    ----------
    y
        (T,) raw trace (units: e.g. counts times footprint norm).
    g
        (p,) AR coefficients; ``p = len(g)`` (0, 1 or 2).
    sn
        Noise standard deviation of ``y``.
    bas_nonneg
        Constrain the baseline ``b`` to be >= 0.
    s_min
        If given, spikes smaller than this are removed and ``c`` recomputed from ``s``.
    optimize_g
        Number of large isolated events OASIS may use to refine ``g`` (p = 1 only).

    Returns
    -------
    Deconvolved
    """
    from oasis.functions import constrained_oasisAR1, constrained_onnlsAR2

    y = np.asarray(y, np.float64)
    p = len(g)
    if p == 0 or not np.all(np.isfinite(y)) or np.ptp(y) == 0:
        return _p0(np.nan_to_num(y), bas_nonneg)
    sn = float(sn) if np.isfinite(sn) and sn > 0 else float(np.std(y) + 1e-9)
    if p == 1:
        c, s, b, g1, _ = constrained_oasisAR1(
            y, float(g[0]), sn, optimize_b=True, b_nonneg=bas_nonneg,
            optimize_g=optimize_g, penalty=1,
        )
        g_used = np.atleast_1d(np.asarray(g1, float))
    elif p == 2:
        c, s, b, g2, _ = constrained_onnlsAR2(
            y, tuple(float(x) for x in g), sn, optimize_b=True, b_nonneg=bas_nonneg,
            optimize_g=0, penalty=1,
        )
        g_used = np.asarray(g2, float)
    else:
        raise ValueError(f"Only AR orders p = 0, 1, 2 are supported; got p = {p}.")
    c = np.asarray(c, np.float64)
    s = np.asarray(s, np.float64)
    c1 = float(c[0]) if len(c) else 0.0
    if s_min is not None and s_min > 0:
        # drop small spikes and rebuild c so that c and s stay consistent
        s = np.where(s >= s_min, s, 0.0)
        s[0] = c[0]
        c = lfilter([1.0], np.concatenate([[1.0], -g_used]), s)
        s[0] = 0.0
    return Deconvolved(c, np.maximum(s, 0), float(b), c1, g_used)
