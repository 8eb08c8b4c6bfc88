"""How the shift estimate weighs pixels and spatial frequencies.

- :func:`highpass_kernel`, :func:`highpass_filter`: CaImAn's ``gSig_filt`` high-pass, applied
  to frames and template for the shift estimate only.
- :func:`estimate_weights`: a noise model measured on the registered template sample, which
  decides, from the data, whether and how the correlation should weigh

  * pixels: where cells fire, a frame differs from the template by far more than its noise;
    an unweighted correlation is pulled by those transients (about 0.1-0.2 px on dim
    two-photon movies). Pixels are weighted by the inverse variance of the frames' smoothed
    residuals (frame minus template), relative to the typical one;
  * frequencies: the generalised cross-correlation weighting of Knapp & Carter (1976) for a
    noisy template, ``W(k) = S / (P (S (1 + 1/N) + P / N))``, with ``S(k)`` the template's
    signal power (cross-spectrum of two half-sample templates, free of their noise), ``P(k)``
    the power of the residuals and ``N`` the number of frames in the template. It keeps the
    frequencies where the template has signal above its noise and whitens the residuals.

  Each is used only when the model predicts it reduces the variance of the shifts by a
  useful factor; on bright movies neither is, and registration is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..params import as_pair
from .correlation import radial_frequency

# Width (px) of the Gaussian that smooths residuals (activity is cell-sized, noise is not)
# and then the weights (the Taylor expansion of the weights needs them smooth).
_RESIDUAL_SMOOTHING = 2.0
_WEIGHT_SMOOTHING = 2.0
# Use pixel weights when the predicted variance gain mean(w) * mean(1/w) exceeds this; the
# weighted fine stage costs about 15 % more per frame.
_PIXEL_GAIN = 1.25
# Use the spectral weighting when its predicted variance gain exceeds this.
_SPECTRAL_GAIN = float("inf")
# Radial frequency bins of the power spectra (up to the corner frequency sqrt(1/2)).
_N_BINS = 48


def highpass_kernel(gSig: tuple[float, float] | float) -> np.ndarray:
    """Zero-sum "centred Gaussian" kernel used to high-pass frames (CaImAn's ``gSig_filt``).

    A Gaussian of width ``gSig`` is kept on the disk where it exceeds its largest value on the
    kernel's edge, and its mean over that disk is subtracted, so that the kernel sums to zero:
    it removes smooth background and keeps structures of about the size of a cell.

    Parameters
    ----------
    gSig
        Gaussian standard deviation (y, x) in pixels.

    Returns
    -------
    np.ndarray
        (ky, kx) float32 kernel, odd sizes ``(3 * gSig) // 2 * 2 + 1``.
    """
    gy, gx = as_pair(gSig, "gSig_filt")
    sizes = [int(3 * g) // 2 * 2 + 1 for g in (gy, gx)]
    axes = [np.arange(n) - (n - 1) / 2 for n in sizes]
    ker = np.outer(np.exp(-axes[0] ** 2 / (2 * gy**2)), np.exp(-axes[1] ** 2 / (2 * gx**2)))
    ker /= ker.sum()
    edge = max(ker[0].max(), ker[:, 0].max())
    support = ker >= edge
    ker[support] -= ker[support].mean()
    ker[~support] = 0.0
    return ker.astype(np.float32)


def highpass_filter(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter each frame of a (frames, y, x) float32 stack with ``kernel`` (reflected borders)."""
    out = np.empty_like(frames, dtype=np.float32)
    for i, frame in enumerate(frames):
        cv2.filter2D(frame, cv2.CV_32F, kernel, dst=out[i], borderType=cv2.BORDER_REFLECT)
    return out


@dataclass(frozen=True)
class RadialGain:
    """A filter gain tabulated against the spatial frequency |k| (cycles/px)."""

    k: np.ndarray
    gain: np.ndarray

    def __call__(self, k: np.ndarray) -> np.ndarray:
        return np.interp(k, self.k, self.gain)


@dataclass(frozen=True)
class PatchShrinkage:
    """Piecewise-rigid patch shifts as ``rigid + mean + factor * (patch - rigid - mean)``.

    A patch's deviation from the rigid shift is the true deformation plus the error of a
    patch-sized estimate (several times the rigid one's). With ``v`` the variance of the
    deviations over the template sample and ``s2`` that of the estimation error, the
    posterior-mean (Wiener) factor is ``max(0, 1 - s2 / v)``: 1 where the tissue really
    deforms, 0 where the deviations are noise. ``mean`` (ny, nx, 2) is the sample's mean
    deviation, ``factor`` (ny, nx).
    """

    mean: np.ndarray
    factor: np.ndarray


def patch_shrinkage(deviations: np.ndarray, noise: np.ndarray) -> PatchShrinkage:
    """The :class:`PatchShrinkage` from (n, ny, nx, 2) deviations of patch shifts from the
    rigid ones over a sample, and the (ny, nx, 2) variance of their estimation error."""
    mean = deviations.mean(axis=0)
    spread = ((deviations - mean) ** 2).mean(axis=0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.clip(1.0 - noise.sum(axis=-1) / spread, 0.0, 1.0)
    return PatchShrinkage(mean.astype(np.float32), np.nan_to_num(factor).astype(np.float32))


@dataclass(frozen=True)
class ShiftWeights:
    """What the correlation weighs: pixel weights (y, x) in template coordinates, and a
    spectral gain; None where unweighted. ``pixel_gain`` and ``spectral_gain`` are the
    predicted reductions of the shift variance that decided it. ``patch_shrink``: how
    piecewise-rigid patch shifts are pulled towards the rigid one, or None."""

    pixels: np.ndarray | None = None
    spectral: RadialGain | None = None
    pixel_gain: float = 1.0
    spectral_gain: float = 1.0
    patch_shrink: PatchShrinkage | None = None


def _smooth(frames: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(frames, dtype=np.float32)
    for i, frame in enumerate(frames):
        cv2.GaussianBlur(frame, (0, 0), sigma, dst=out[i], borderType=cv2.BORDER_REFLECT)
    return out


def _pixel_weights(residuals: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights (inner area) from the transients in the smoothed residuals, and their gain.

    Activity adds positive transients to a pixel's residuals; misregistration (e.g. a
    deformation the rigid template does not follow) adds residuals of either sign. The
    activity power is the excess of the positive over the negative tail,
    ``A = E[max(r, 0)^2] - E[max(-r, 0)^2]``, and a pixel's weight is ``s2 / (s2 + A)`` with
    ``s2`` the typical residual variance.
    """
    smoothed = _smooth(residuals, _RESIDUAL_SMOOTHING)
    positive = np.maximum(smoothed, 0.0)
    negative = np.minimum(smoothed, 0.0)
    excess = (np.einsum("tyx,tyx->yx", positive, positive, dtype=np.float64)
              - np.einsum("tyx,tyx->yx", negative, negative, dtype=np.float64)) / len(residuals)
    typical = float(np.median(smoothed.var(axis=0, dtype=np.float64)))
    if not typical > 0:
        return np.ones(excess.shape, np.float32), 1.0
    weights = typical / (typical + np.maximum(excess, 0.0))
    gain = float(weights.mean() * (1.0 / weights).mean())
    return weights.astype(np.float32), gain


def _radial_profile(power: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Mean of (y, x // 2 + 1) ``power`` in radial bins: (centres, means, counts)."""
    k = radial_frequency(shape)
    edges = np.linspace(0.0, np.sqrt(0.5) + 1e-9, _N_BINS + 1)
    idx = np.clip(np.digitize(k.ravel(), edges) - 1, 0, _N_BINS - 1)
    counts = np.bincount(idx, minlength=_N_BINS).astype(float)
    means = np.bincount(idx, power.ravel(), minlength=_N_BINS) / np.maximum(counts, 1)
    return 0.5 * (edges[1:] + edges[:-1]), means, counts


def _spectral_weighting(residuals: np.ndarray, sample: np.ndarray, n_template: int
                        ) -> tuple[RadialGain, float]:
    """Knapp-Carter weighting from residual and signal power spectra, and its gain."""
    shape = residuals.shape[1:]
    window = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    res = residuals - residuals.mean(axis=(1, 2), keepdims=True)
    noise = (np.abs(np.fft.rfft2(res * window)) ** 2).mean(axis=0)
    halves = [sample[0::2].mean(axis=0), sample[1::2].mean(axis=0)]
    fa, fb = (np.fft.rfft2((h - h.mean()) * window) for h in halves)
    k, p, counts = _radial_profile(noise, shape)
    _, s, _ = _radial_profile((fa * np.conj(fb)).real, shape)
    s = np.maximum(s, 0.0)
    p = np.maximum(p, 1e-12 * max(p.max(), 1e-30))
    n = max(n_template, 1)
    gain = s / (p * (s * (1 + 1 / n) + p / n))

    def variance(w: np.ndarray) -> float:
        # small-error variance of the peak position of a correlation weighted by w(k)
        moment = counts * k**2
        top = np.sum(moment * w**2 * (s * p * (1 + 1 / n) + p * p / n))
        bottom = np.sum(moment * w * s) ** 2
        return float(top / bottom) if bottom > 0 else np.inf

    predicted = variance(np.ones_like(gain)) / variance(gain)
    return RadialGain(k, gain / max(gain.max(), 1e-30)), predicted


def estimate_weights(registered: np.ndarray, template: np.ndarray, border: int,
                     n_template: int) -> ShiftWeights:
    """Decide the shift weighting from frames registered to ``template``.

    Parameters
    ----------
    registered
        (n, y, x) float32 frames registered to ``template`` (as the correlation sees them:
        high-passed if ``gSig_filt`` is set), no NaN.
    template
        (y, x) template they were registered to, same filtering.
    border
        Width (px) of the frame border left out (the correlation's mask border).
    n_template
        Number of frames averaged into the template the weighting will be used with.

    Returns
    -------
    ShiftWeights
        Pixel weights (full frame, smooth, 1 on the border) and a spectral gain, each only if
        predicted to help (see the module docstring).
    """
    h, w = template.shape
    b = int(min(border, h // 3, w // 3))
    inner = (slice(None), slice(b, h - b), slice(b, w - b))
    sample = np.asarray(registered[inner], dtype=np.float32)
    residuals = sample - template[inner[1:]].astype(np.float32)
    if len(sample) < 4:
        return ShiftWeights()
    weights, pixel_gain = _pixel_weights(residuals)
    pixels = None
    if pixel_gain > _PIXEL_GAIN:
        full = cv2.copyMakeBorder(weights, b, b, b, b, cv2.BORDER_REPLICATE)
        pixels = cv2.GaussianBlur(full, (0, 0), _WEIGHT_SMOOTHING,
                                  borderType=cv2.BORDER_REFLECT)
        # the noise the weighted correlation sees (at the same overall scale)
        residuals = residuals * np.sqrt(weights / weights.mean())
    spectral, spectral_gain = _spectral_weighting(residuals, sample, n_template)
    return ShiftWeights(pixels=pixels,
                        spectral=spectral if spectral_gain > _SPECTRAL_GAIN else None,
                        pixel_gain=pixel_gain, spectral_gain=spectral_gain)
