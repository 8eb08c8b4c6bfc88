"""The sub-pixel stage of shift estimation: cross-correlations evaluated by matrix DFTs
on a 1/4 px grid around an integer peak, the template terms of the normalised (or weighted)
correlation on that grid, and the peak's parabolic fit."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

# Upsampling factor of the DFT used to refine correlation peaks, followed by a parabolic fit
# on that 1/4 px grid: the fit's own error is below 0.002 px for peaks wider than 0.6 px,
# and the small grid costs 6x less than CaImAn's 1/10 px grid.
_UPSAMPLE_FFT = 4


def _phase_kernel(freqs: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """exp(2 pi i f (c + o)) as (N, K, F), factorised as exp(2 pi i f c) * exp(2 pi i f o).

    The per-item factor has N*F entries and the fixed one K*F, so only those are computed with
    complex exponentials; their product is a cheap broadcast multiply.
    """
    two_pi = np.float32(2 * np.pi)
    per_item = np.exp(1j * (two_pi * freqs[None, :] * centres[:, None].astype(np.float32)))
    fixed = np.exp(1j * (two_pi * freqs[None, :] * offsets[:, None].astype(np.float32)))
    return per_item[:, None, :] * fixed[None, :, :]


def _upsampled_correlation(spec: np.ndarray, width: int, centres: np.ndarray,
                           offsets: np.ndarray) -> np.ndarray:
    """Cross-correlation at displacements ``centres + offsets`` by a matrix DFT.

    ``spec`` (N, h, width // 2 + 1) is the half (rfft) cross-power spectrum; the correlation
    is real, so the full inverse DFT is the real part of the half-spectrum sum with the
    non-self-conjugate columns counted twice. Costs h * wc * K per item, against a full
    upsampled inverse FFT of (h * uf) * (w * uf).

    Returns (N, K, K) with K = len(offsets).
    """
    n, h, wc = spec.shape
    fy = np.fft.fftfreq(h).astype(np.float32)
    fx = np.fft.rfftfreq(width).astype(np.float32)
    weight_x = np.full(wc, 2.0, dtype=np.float32)
    weight_x[0] = 1.0
    if width % 2 == 0:
        weight_x[-1] = 1.0
    ker_y = _phase_kernel(fy, centres[:, 0], offsets)  # (N, K, h)
    ker_x = _phase_kernel(fx, centres[:, 1], offsets) * weight_x  # (N, K, wc)
    return np.matmul(ker_y, np.matmul(spec, ker_x.transpose(0, 2, 1))).real


def _parabola_offset(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three equally spaced samples, in sample units."""
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def _fine_offsets(reach: float = 0.5, upsample: int = _UPSAMPLE_FFT) -> np.ndarray:
    """Offsets (pixels) of the sub-pixel grid evaluated around an integer peak.

    The true peak is within ``reach`` px of the integer one (1/2 px when both come from the
    same correlation); one more grid step on each side lets the parabola be fitted around
    any grid maximum inside that range.
    """
    half = math.ceil(reach * upsample) + 1
    return np.arange(-half, half + 1) / upsample


def _locate_peak(grid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sub-pixel maximum of (N, K, K) values sampled at ``offsets`` x ``offsets``.

    Takes the grid maximum and fits a parabola through it and its neighbours along each axis.
    Returns (N, 2) offsets in pixels.
    """
    k = len(offsets)
    step = offsets[1] - offsets[0]
    flat = grid.reshape(len(grid), -1).argmax(axis=1)
    iy, ix = np.divmod(flat, k)
    iy_c = np.clip(iy, 1, k - 2)
    ix_c = np.clip(ix, 1, k - 2)
    n = np.arange(len(grid))
    dy = _parabola_offset(grid[n, iy_c - 1, ix], grid[n, iy_c, ix], grid[n, iy_c + 1, ix])
    dx = _parabola_offset(grid[n, iy, ix_c - 1], grid[n, iy, ix_c], grid[n, iy, ix_c + 1])
    dy = np.where(iy == iy_c, dy, 0.0)  # no fit at the window edge
    dx = np.where(ix == ix_c, dx, 0.0)
    return np.stack([offsets[iy] + dy * step, offsets[ix] + dx * step], axis=1)


def _fine_grid(spec: np.ndarray, shape: tuple[int, int], grid_y: np.ndarray,
               grid_x: np.ndarray) -> np.ndarray:
    """(Q, Gy, Gx) circular correlation values, from (Q, h, w // 2 + 1) cross-power spectra,
    at the displacements ``grid_y`` x ``grid_x`` (any real values)."""
    h, w = shape
    ky = np.exp(2j * np.pi * grid_y[:, None] * np.fft.fftfreq(h)[None, :])  # (Gy, h)
    weight_x = np.full(w // 2 + 1, 2.0)
    weight_x[0] = 1.0
    if w % 2 == 0:
        weight_x[-1] = 1.0
    kx = weight_x[:, None] * np.exp(2j * np.pi * np.fft.rfftfreq(w)[:, None] * grid_x)
    return (ky @ spec @ kx).real / (h * w)


def _rect_fine_grid(row_spec: np.ndarray, col_spec: np.ndarray, template_spec: np.ndarray,
                    which: np.ndarray, centres: np.ndarray, offsets: np.ndarray,
                    shape: tuple[int, int]) -> np.ndarray:
    """(N, K, K) circular correlations of rectangular masks with templates at the
    displacements ``centres + offsets`` (per axis).

    The masks are ``rows[i, y] * cols[i, x]`` with spectra ``row_spec`` (N, H) (full FFT)
    and ``col_spec`` (N, W // 2 + 1) (rfft); ``template_spec`` (Q, H, W // 2 + 1) are the
    template sides (conjugate spectra), item ``i`` paired with template ``which[i]``.
    """
    big_h, big_w = shape
    fy = np.fft.fftfreq(big_h).astype(np.float32)
    fx = np.fft.rfftfreq(big_w).astype(np.float32)
    weight_x = np.full(len(fx), 2.0, dtype=np.float32)
    weight_x[0] = 1.0
    if big_w % 2 == 0:
        weight_x[-1] = 1.0
    left = _phase_kernel(fy, centres[:, 0], offsets) * row_spec[:, None, :]  # (N, K, H)
    right = _phase_kernel(fx, centres[:, 1], offsets) * (weight_x * col_spec)[:, None, :]
    n, k = len(centres), len(offsets)
    out = np.empty((n, k, k))
    for q in np.unique(which):
        items = which == q
        # one (items * K, H) x (H, W') product (no stack of small ones: slow with threads)
        part = (left[items].reshape(-1, big_h) @ template_spec[q]).reshape(-1, k, len(fx))
        out[items] = np.einsum("nkw,nlw->nkl", part, right[items]).real
    return out / (big_h * big_w)


def _derivative_maps(periodic: np.ndarray, image_shape: tuple[int, int],
                     workers: int) -> np.ndarray:
    """(Q, 6, h, w) float32: w, w_y, w_x, w_yy, w_yx, w_xx of periodic (Q, H, W) maps
    (spectral derivatives), on the image area."""
    shape = periodic.shape[1:]
    spec = scipy.fft.rfft2(periodic, workers=workers)
    dy = 2j * np.pi * np.fft.fftfreq(shape[0])[:, None]
    dx = 2j * np.pi * np.fft.rfftfreq(shape[1])[None, :]
    factors = (1.0, dy, dx, dy * dy, dy * dx, dx * dx)
    maps = np.stack([scipy.fft.irfft2(spec * f, s=shape, workers=workers) for f in factors],
                    axis=1)
    return maps[..., :image_shape[0], :image_shape[1]].astype(np.float32)


def _taylor_coefficients(offsets: np.ndarray) -> np.ndarray:
    """(6, K, K): weights of the maps of :func:`_derivative_maps` that give ``w(q - d)`` to
    second order, for d on the grid ``offsets`` x ``offsets``."""
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return np.stack([np.ones_like(dy), -dy, -dx, 0.5 * dy * dy, dy * dx, 0.5 * dx * dx])
