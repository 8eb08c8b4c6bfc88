"""Update of the temporal traces by block coordinate descent with OASIS deconvolution.

For each component in turn, the data projected on its footprint, minus what the other
components and the background explain there, gives its raw trace; the trace is denoised
and deconvolved (non-negative, AR(p) dynamics, noise constrained) and replaces the old one.
Background traces ``f`` get a plain non-negative least-squares update in the same sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .data import as_data
from .deconv import deconvolve_trace
from .noise import estimate_ar, noise_fft

__all__ = ["TemporalResult", "update_temporal"]


@dataclass
class TemporalResult:
    """Output of :func:`update_temporal` (K components, nb background, T frames)."""

    C: np.ndarray  # (K, T) denoised calcium, baseline removed
    f: np.ndarray  # (nb, T) background traces
    S: np.ndarray  # (K, T) deconvolved spikes
    YrA: np.ndarray  # (K, T) raw trace minus C (noise, unexplained signal and baseline bl)
    bl: np.ndarray  # (K,) baselines
    c1: np.ndarray  # (K,) initial calcium values
    g: np.ndarray  # (K, p) AR coefficients
    neurons_sn: np.ndarray  # (K,) noise level of each raw trace


def update_temporal(
    Y: Any,
    A: np.ndarray,
    C: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    *,
    p: int,
    g_prior: np.ndarray,
    g: np.ndarray | None = None,
    n_iter: int = 2,
    bas_nonneg: bool = True,
    s_min: float | None = None,
    noise_range: tuple[float, float] = (0.25, 0.5),
    noise_method: str = "mean",
    lags: int = 5,
    fudge_factor: float = 0.96,
    optimize_g: int = 0,
) -> TemporalResult:
    """Block coordinate descent on the traces of ``Y ~ A C + b f``.

    Parameters
    ----------
    Y
        (pixels, T) data, Fortran pixel order: an array or a :class:`~.data.DataMatrix`
        (read once, a block at a time).
    A
        (pixels, K) footprints (dense or scipy.sparse).
    C
        (K, T) current traces (used for the other components' contributions).
    b, f
        (pixels, nb) background footprints and (nb, T) their traces.
    p
        AR order (0, 1, 2).
    g_prior
        (p,) AR coefficients implied by ``decay_time`` and ``fr``, used where a trace's own
        estimate is not trustworthy.
    g
        (K, p) AR coefficients to reuse; estimated from the traces when None.
    n_iter
        Sweeps over all components (CaImAn's ``ITER``).
    bas_nonneg, s_min, optimize_g
        Passed to :func:`~mesmerize_helpers.engine.deconv.deconvolve_trace`.
    noise_range, noise_method, lags, fudge_factor
        Noise and AR estimation settings (CaImAn's names).

    Returns
    -------
    TemporalResult
    """
    K, T = C.shape
    nb = b.shape[1]
    As = sp.csc_matrix(A)
    # projections of the data on all spatial components, and their Gram matrix, sparse:
    # footprints that share no pixel do not interact, so each update costs what the
    # neighbours of a component (and the background) cost, not K. Kept in float32 (the
    # products are float32): what differs between frames is summed in float64 below
    WtY = np.vstack(as_data(Y).project(As, b))
    Wt = sp.hstack([As, sp.csc_matrix(b)]).tocsc().astype(np.float64)
    G = (Wt.T @ Wt).tocsr()
    G.sort_indices()
    Gd = G.diagonal()

    def g_dot(k: int) -> np.ndarray:  # G[k] @ H
        s, e = G.indptr[k], G.indptr[k + 1]
        return G.data[s:e] @ H[G.indices[s:e]]

    H = np.vstack([C, f]).astype(np.float64)
    # results go straight into float32 (their final type): a (K, T) float64 array each
    # would double the memory that grows with the number of frames
    S = np.zeros((K, T), np.float32)
    YrA = np.zeros((K, T), np.float32)
    bl, c1, sn = np.zeros(K), np.zeros(K), np.zeros(K)
    g_out = np.zeros((K, p)) if g is None else np.array(g, float).reshape(K, p)
    have_g = g is not None
    for it in range(n_iter):
        for j in range(K, K + nb):  # background traces: non-negative least squares
            if Gd[j] > 0:
                H[j] = np.maximum(H[j] + (WtY[j] - g_dot(j)) / Gd[j], 0)
        for k in range(K):
            if Gd[k] <= 0:
                H[k] = 0
                continue
            y = H[k] + (WtY[k] - g_dot(k)) / Gd[k]
            sn[k] = noise_fft(y, noise_range, noise_method)
            if p > 0 and not have_g and it == 0:
                g_out[k] = estimate_ar(
                    y, p, sn[k], lags=lags, fudge_factor=fudge_factor, prior=g_prior
                )
            res = deconvolve_trace(
                y, g_out[k], sn[k], bas_nonneg=bas_nonneg, s_min=s_min, optimize_g=optimize_g
            )
            H[k] = res.c
            S[k], bl[k], c1[k] = res.s, res.b, res.c1
            if p > 0:
                g_out[k] = res.g[:p]
            YrA[k] = y - res.c
    return TemporalResult(
        C=H[:K].astype(np.float32),
        f=H[K:].astype(np.float32),
        S=S,
        YrA=YrA,
        bl=bl,
        c1=c1,
        g=g_out,
        neurons_sn=sn,
    )
