"""How the shift estimate weighs pixels and spatial frequencies.

- :func:`highpass_kernel`, :func:`highpass_filter`: CaImAn's ``gSig_filt`` high-pass, applied
  to frames and template for the shift estimate only.
- :func:`estimate_weights`: pixel weights measured on the registered template sample.
  Where cells fire, a frame differs from the template by far more than its noise, and an
  unweighted correlation is pulled by those transients (0.1-0.2 px on dim two-photon
  movies). Pixels are weighted by how much activity their residuals (frame minus template,
  smoothed to cell size) show beyond the typical residual variance; the weights are used
  only when they are predicted to reduce the variance of the shifts by a useful factor (on
  bright movies without such transients they are not, and registration is unchanged).
- :func:`patch_shrinkage`: how far piecewise-rigid patch shifts may deviate from the rigid
  one, from the noise of patch estimates measured on the template sample.
- :func:`template_gain`: a Wiener filter of the template for the shift estimate, from the
  template's noise spectrum (measured on two templates made from disjoint frames).
- :func:`noise_model`: where the noise grows with the brightness (shot noise), frames and
  template are compared after a variance-stabilising square root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft
from scipy import ndimage

from ..params import as_pair
from .correlation import _periodic_extension

# Width (px) of the Gaussian that smooths residuals (activity is cell-sized, noise is not)
# and then the weights (the Taylor expansion of the weights needs them smooth).
_RESIDUAL_SMOOTHING = 2.0
_WEIGHT_SMOOTHING = 2.0
# Use pixel weights when the predicted variance gain mean(w) * mean(1/w) exceeds this (below
# about 1.5 they did not help on any test movie, and hurt a little on simulate_2p); the
# weighted fine stage costs about 15 % more per frame.
_PIXEL_GAIN = 1.6
# Template Wiener filter: power spectra are smoothed over this many frequency bins (a single
# periodogram is too noisy to divide by), computed on the template extended by this many
# pixels to wrap around smoothly (no leakage of its edges into the spectrum).
_SPECTRUM_SMOOTHING = 2.0
_SPECTRUM_PAD = 16
# Variance stabilisation: used when the fitted noise variance at the bright end of the field
# (90th percentile of the template) is at least this many times that at the dim end (10th).
_STABILISE_RATIO = 1.5
# Brightness bins (quantiles of the template) over which the noise variance is fitted, up to
# this quantile (the brightest pixels are mostly firing cells).
_NOISE_BINS = 24
_NOISE_TOP = 0.9


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
class PatchShrinkage:
    """Piecewise-rigid patch shifts as ``rigid + mean + factor * (patch - rigid - mean)``.

    A patch's deviation from the rigid shift is the true deformation plus the error of a
    patch-sized estimate (several times the rigid one's). With ``v`` the variance of the
    deviations over the template sample and ``s2`` that of the estimation error, the
    posterior-mean (Wiener) factor is ``max(0, 1 - s2 / v)``: 1 where the tissue really
    deforms, 0 where the deviations are noise. ``mean`` (ny, nx, 2) is the sample's mean
    deviation, shrunk the same way (its own error variance is the deviations' spread over
    the number of frames), ``factor`` (ny, nx).
    """

    mean: np.ndarray
    factor: np.ndarray


def patch_shrinkage(deviations: np.ndarray, noise: np.ndarray) -> PatchShrinkage:
    """The :class:`PatchShrinkage` from (n, ny, nx, 2) deviations of patch shifts from the
    rigid ones over a sample, and the (ny, nx, 2) variance of their estimation error."""
    n = len(deviations)
    mean = deviations.mean(axis=0)
    spread = ((deviations - mean) ** 2).mean(axis=0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.clip(1.0 - noise.sum(axis=-1) / spread, 0.0, 1.0)
        # a static deviation (e.g. field curvature) is kept; a mean of noise is not
        kept = np.clip(1.0 - spread / max(n - 1, 1) / (mean**2).sum(axis=-1), 0.0, 1.0)
    mean = mean * np.nan_to_num(kept)[..., None]
    return PatchShrinkage(mean.astype(np.float32), np.nan_to_num(factor).astype(np.float32))


@dataclass(frozen=True)
class TemplateGain:
    """A real filter (``gain``, the rfft2 half spectrum of the template extended by ``pad``
    pixels to wrap around smoothly) applied to templates before shifts are estimated."""

    gain: np.ndarray
    pad: int

    def apply(self, template: np.ndarray) -> np.ndarray:
        """(y, x) template filtered (float32); its mean is kept."""
        h, w = template.shape
        ext = _periodic_extension(template[None].astype(np.float64), self.pad)[0]
        if self.gain.shape != (ext.shape[0], ext.shape[1] // 2 + 1):
            raise ValueError(f"a {h}x{w} template does not match the filter's size")
        spec = scipy.fft.rfft2(ext) * self.gain
        return scipy.fft.irfft2(spec, s=ext.shape)[:h, :w].astype(np.float32)


def _smoothed_power(image: np.ndarray) -> np.ndarray:
    """(H, W) periodogram of a periodic image, smoothed over neighbouring frequencies."""
    power = np.abs(scipy.fft.fft2(image - image.mean())) ** 2
    return ndimage.gaussian_filter(power, _SPECTRUM_SMOOTHING, mode="wrap")


def template_gain(template: np.ndarray, half_a: np.ndarray, half_b: np.ndarray,
                  n_a: int, n_b: int) -> TemplateGain:
    """Wiener filter of a template made of ``n_a + n_b`` registered frames.

    A template is the mean of noisy frames; its noise is white-ish (shot noise) while the
    tissue's spectrum falls with frequency, so at high frequencies a dim movie's template is
    mostly noise, which the correlation with each frame then matches. The noise is measured
    on two templates ``half_a``, ``half_b`` made from disjoint sets of ``n_a`` and ``n_b``
    frames: their difference has the noise spectrum of one frame times ``1/n_a + 1/n_b``, so
    that of the whole template (the mean of all ``n`` frames) is the difference's times
    ``n_a n_b / n^2``. The filter is ``max(0, 1 - noise / power)``: 1 where the template is
    clean (bright movies are unchanged), towards 0 where it is noise.

    Parameters
    ----------
    template
        (y, x) mean of all the registered frames.
    half_a, half_b
        (y, x) means of the two disjoint sets of registered frames.
    n_a, n_b
        Number of frames in each set.
    """
    n = n_a + n_b
    stack = np.stack([template, half_a - half_b]).astype(np.float64)
    ext = _periodic_extension(stack, _SPECTRUM_PAD)
    power, difference = (_smoothed_power(image) for image in ext)
    noise = difference * (n_a * n_b / n**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.clip(1.0 - noise / power, 0.0, 1.0)
    gain = np.nan_to_num(gain, nan=1.0)[:, :ext.shape[2] // 2 + 1]
    return TemplateGain(gain.astype(np.float32), _SPECTRUM_PAD)


@dataclass(frozen=True)
class VarianceStabilizer:
    """``sqrt(max(x + offset, 0))``: the generalised Anscombe transform (up to a scale) of
    data whose noise variance is ``gain * x + read``, with ``offset = 3 gain / 8 + read /
    gain``. Its noise has the same variance everywhere, so the correlation weighs dim and
    bright pixels by what they tell, and bright transients are compressed."""

    offset: float

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.add(frames, np.float32(self.offset), dtype=np.float32)
        np.maximum(out, 0.0, out=out)
        return np.sqrt(out, out=out)


def noise_model(registered: np.ndarray, template: np.ndarray, border: int
                ) -> VarianceStabilizer | None:
    """Fit the noise variance as a linear function of the brightness, and decide whether to
    stabilise it.

    Each pixel's residual variance (registered frames minus ``template``) is binned by the
    template's brightness; the median per bin (robust to the pixels where cells fire) is
    fitted by ``gain * brightness + read``. Shot noise gives ``gain > 0``; camera or
    detector noise that does not depend on the signal gives ``gain ~ 0``.

    Parameters
    ----------
    registered
        (n, y, x) frames registered to ``template``, no NaN; n >= 4.
    template
        (y, x) their template.
    border
        Width (px) of the frame border left out.

    Returns
    -------
    VarianceStabilizer or None
        The transform when the fitted variance at the 90th brightness percentile is at least
        ``_STABILISE_RATIO`` times that at the 10th, else None.
    """
    h, w = template.shape
    b = int(min(border, h // 3, w // 3))
    if len(registered) < 4:
        return None
    inner = (slice(b, h - b, 2), slice(b, w - b, 2))  # every other pixel is plenty
    level = template[inner].astype(np.float64).ravel()
    variance = np.zeros(level.shape)
    for start in range(0, len(registered), 16):
        residuals = registered[(slice(start, start + 16), *inner)] - template[inner]
        variance += np.square(residuals).sum(axis=0).ravel()
    variance /= len(registered)
    edges = np.quantile(level, np.linspace(0.0, _NOISE_TOP, _NOISE_BINS + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, _NOISE_BINS)
    keep = [k for k in range(_NOISE_BINS) if np.count_nonzero(which == k) >= 8]
    if len(keep) < 4:
        return None
    x = np.array([np.median(level[which == k]) for k in keep])
    y = np.array([np.median(variance[which == k]) for k in keep])
    gain, read = np.polyfit(x, y, 1)
    lo, hi = np.quantile(level, [0.1, 0.9])
    low, high = gain * lo + read, gain * hi + read
    if not (gain > 0 and low > 0 and high >= _STABILISE_RATIO * low):
        return None
    return VarianceStabilizer(float(3 * gain / 8 + read / gain))


def estimate_domain(kernel: np.ndarray | None, stabilizer: VarianceStabilizer | None
                    ) -> Callable[[np.ndarray], np.ndarray] | None:
    """What shift estimation applies to (n, y, x) frames and templates: the variance
    stabilisation, then the ``gSig_filt`` high-pass; None when neither."""
    if kernel is None and stabilizer is None:
        return None

    def apply(frames: np.ndarray) -> np.ndarray:
        if stabilizer is not None:
            frames = stabilizer(frames)
        return frames if kernel is None else highpass_filter(frames, kernel)

    return apply


@dataclass(frozen=True)
class ShiftWeights:
    """What the shift estimate weighs: pixel weights (y, x) in template coordinates (None:
    unweighted), with ``pixel_gain`` the predicted reduction of the shift variance that
    decided them; ``patch_shrink``: how piecewise-rigid patch shifts are pulled towards the
    rigid one, or None; ``template_filter``: the Wiener filter of the template, or None;
    ``stabilizer``: the variance-stabilising transform of frames and template, or None."""

    pixels: np.ndarray | None = None
    pixel_gain: float = 1.0
    patch_shrink: PatchShrinkage | None = None
    template_filter: TemplateGain | None = None
    stabilizer: VarianceStabilizer | None = None


def _smooth(frames: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(frames, dtype=np.float32)
    for i, frame in enumerate(frames):
        cv2.GaussianBlur(frame, (0, 0), sigma, dst=out[i], borderType=cv2.BORDER_REFLECT)
    return out


def _pixel_weights(residual_chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, float]:
    """Weights (inner area) from the transients in the smoothed residuals, and their gain.

    Activity adds positive transients to a pixel's residuals; misregistration (e.g. a
    deformation the rigid template does not follow) adds residuals of either sign. The
    activity power is the excess of the positive over the negative tail,
    ``A = E[max(r, 0)^2] - E[max(-r, 0)^2] = E[r |r|]``, and a pixel's weight is
    ``s2 / (s2 + A)`` with ``s2`` the typical (median) residual variance.
    """
    n, signed, total, squares = 0, np.float64(0), np.float64(0), np.float64(0)
    for residuals in residual_chunks:
        smoothed = _smooth(residuals, _RESIDUAL_SMOOTHING)
        n += len(smoothed)
        # float32 sums over a chunk, float64 over the chunks
        signed = signed + (smoothed * np.abs(smoothed)).sum(axis=0)
        total = total + smoothed.sum(axis=0)
        squares = squares + np.square(smoothed).sum(axis=0)
    excess = signed / n
    variance = squares / n - (total / n) ** 2
    typical = float(np.median(variance))
    if not typical > 0:
        return np.ones(excess.shape, np.float32), 1.0
    weights = typical / (typical + np.maximum(excess, 0.0))
    gain = float(weights.mean() * (1.0 / weights).mean())
    return weights.astype(np.float32), gain


def estimate_weights(registered: np.ndarray, template: np.ndarray, border: int,
                     kernel: np.ndarray | None = None,
                     stabilizer: VarianceStabilizer | None = None,
                     chunk: int = 16) -> ShiftWeights:
    """Decide the pixel weighting from frames registered to ``template``.

    Parameters
    ----------
    registered
        (n, y, x) float32 frames registered to ``template``, no NaN.
    template
        (y, x) template they were registered to.
    border
        Width (px) of the frame border left out (the correlation's mask border).
    kernel, stabilizer
        What the correlation applies to frames and template (the ``gSig_filt`` high-pass,
        the variance stabilisation), or None. With a stabilizer, the residuals are taken
        from the mean of the stabilised frames (the square root of the mean is brighter by
        about the noise variance over 8 times the level, which would look like activity).
    chunk
        Frames processed at once.

    Returns
    -------
    ShiftWeights
        Smooth pixel weights (full frame, the border replicating the inner edge) if they are
        predicted to reduce the variance of the shifts by more than a factor 1.6, else none.
    """
    h, w = template.shape
    b = int(min(border, h // 3, w // 3))
    if len(registered) < 4:
        return ShiftWeights()
    inner = (slice(None), slice(b, h - b), slice(b, w - b))
    prefilter = estimate_domain(kernel, stabilizer)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(registered), chunk):
            frames = np.asarray(registered[start:start + chunk], np.float32)
            yield frames if prefilter is None else prefilter(frames)

    if stabilizer is not None:  # the mean in the stabilised domain (high-pass is linear)
        total = sum(stabilizer(np.asarray(registered[a:a + chunk], np.float32)).sum(
            axis=0, dtype=np.float64) for a in range(0, len(registered), chunk))
        template = total.astype(np.float32)[None] / np.float32(len(registered))
        if kernel is not None:
            template = highpass_filter(template, kernel)
    elif prefilter is not None:
        template = prefilter(template[None].astype(np.float32))
    else:
        template = template[None]
    reference = template[0][inner[1:]].astype(np.float32)

    def residuals() -> Iterator[np.ndarray]:
        for frames in chunks():
            yield frames[inner] - reference

    weights, gain = _pixel_weights(residuals())
    if gain <= _PIXEL_GAIN:
        return ShiftWeights(pixel_gain=gain)
    full = cv2.copyMakeBorder(weights, b, b, b, b, cv2.BORDER_REPLICATE)
    pixels = cv2.GaussianBlur(full, (0, 0), _WEIGHT_SMOOTHING, borderType=cv2.BORDER_REFLECT)
    return ShiftWeights(pixels=pixels, pixel_gain=gain)
