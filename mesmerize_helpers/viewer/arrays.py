"""Array reductions that keep the viewer's HTML small: trace envelopes, 8-bit images, and the
motion left after registration. Pure array code."""

from __future__ import annotations

import numpy as np

#: Images larger than this (px, longest side) are shrunk by area averaging for the page.
MAX_IMAGE_SIDE = 512
#: Footprint crops larger than this (px, longest side) are shrunk likewise.
MAX_FOOTPRINT_SIDE = 48


def envelope(traces: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Traces reduced to at most ``n_points`` samples that keep every peak and trough.

    Frames are cut into ``n_points // 2`` equal bins; each bin contributes its minimum and its
    maximum, in the order they occur, placed at the bin's start and middle. Traces of at most
    ``n_points`` frames are returned unchanged.

    Parameters
    ----------
    traces
        (K, T) traces.
    n_points
        Samples per trace wanted, >= 2.

    Returns
    -------
    frames : ndarray
        (M,) float64 frame positions of the samples (fractional for bin middles), M <= n_points.
    values : ndarray
        (K, M) float32 samples.
    """
    traces = np.asarray(traces, dtype=np.float32)
    k, t = traces.shape
    if t <= n_points:
        return np.arange(t, dtype=np.float64), traces
    n_bins = max(1, n_points // 2)
    width = -(-t // n_bins)  # ceil
    n_bins = -(-t // width)
    padded = np.concatenate([traces, np.repeat(traces[:, -1:], n_bins * width - t, axis=1)],
                            axis=1).reshape(k, n_bins, width)
    lo, hi = padded.argmin(axis=2), padded.argmax(axis=2)
    first = np.where(lo <= hi, lo, hi)[..., None]
    second = np.where(lo <= hi, hi, lo)[..., None]
    values = np.concatenate([np.take_along_axis(padded, first, 2),
                             np.take_along_axis(padded, second, 2)], axis=2)
    starts = np.arange(n_bins, dtype=np.float64) * width
    frames = np.stack([starts, np.minimum(starts + width / 2, t - 1)], axis=1)
    return frames.ravel(), values.reshape(k, 2 * n_bins)


#: Page bytes per trace sample: int16 (:func:`quantize`), base64-encoded.
BYTES_PER_SAMPLE = 2 * 4 / 3


def points_per_trace(budget_bytes: float, n_traces: int, n_frames: int,
                     minimum: int = 100) -> int:
    """Samples per trace so that ``n_traces`` quantized traces fit ``budget_bytes`` in the
    page, at least ``minimum`` and at most ``n_frames``."""
    n = int(budget_bytes / max(n_traces, 1) / BYTES_PER_SAMPLE)
    return int(min(n_frames, max(minimum, n)))


def quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row of ``values`` (K, M) as int16 over its own range: ``value = (q + 32768) *
    step + low``, exact to ``step / 2`` = range / 131070 (far below a plot's pixel).

    Returns
    -------
    q : ndarray
        (K, M) int16.
    low, step : ndarray
        (K,) float64 per row.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low = values.min(axis=1) if values.size else np.zeros(values.shape[0])
    high = values.max(axis=1) if values.size else np.zeros(values.shape[0])
    step = np.where(high > low, (high - low) / 65535.0, 1.0)
    q = np.round((values - low[:, None]) / step[:, None]) - 32768
    return np.clip(q, -32768, 32767).astype(np.int16), low, step


def dequantize(q: np.ndarray, low: float, step: float) -> np.ndarray:
    """The float32 values of one row of :func:`quantize`."""
    return ((np.asarray(q, np.float64) + 32768) * step + low).astype(np.float32)


def shrink(image: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """``image`` (y, x) averaged over square blocks so its longest side is <= ``max_side``."""
    import cv2

    image = np.asarray(image, dtype=np.float32)
    factor = -(-max(image.shape) // max_side)
    if factor <= 1:
        return image
    size = (max(1, image.shape[1] // factor), max(1, image.shape[0] // factor))
    return cv2.resize(np.nan_to_num(image), size, interpolation=cv2.INTER_AREA)


def to_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """``image`` scaled so its ``low`` .. ``high`` percentiles span 0 .. 255 (NaN -> 0)."""
    image = np.asarray(image, dtype=np.float32)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((np.nan_to_num(image, nan=lo) - lo) * scale, 0, 255)
    return np.round(out).astype(np.uint8)


def footprint_image(crop: np.ndarray) -> np.ndarray:
    """A footprint crop (y, x) as uint8, 255 at its peak, shrunk to
    :data:`MAX_FOOTPRINT_SIDE`."""
    crop = shrink(crop, MAX_FOOTPRINT_SIDE)
    peak = float(crop.max()) if crop.size else 0.0
    if peak <= 0:
        return np.zeros(crop.shape, np.uint8)
    return np.round(np.clip(crop / peak, 0, 1) * 255).astype(np.uint8)


def residual_motion(samples: np.ndarray, upsample: int = 10) -> float:
    """Root-mean-square rigid shift (px) of each sample frame against their mean: the motion
    left after registration (about 0 for a well registered movie).

    Parameters
    ----------
    samples
        (n, y, x) registered frames (or means of a few consecutive frames, for less noise).
    upsample
        Sub-pixel precision 1 / ``upsample`` px.
    """
    from skimage.registration import phase_cross_correlation

    samples = np.asarray(samples, dtype=np.float32)
    if samples.shape[0] < 2:
        return float("nan")
    filled = np.where(np.isfinite(samples), samples, np.nanmean(samples))
    template = filled.mean(axis=0)
    # plain cross-correlation: the mean of moving frames is a blurred template, which the
    # whitening of phase correlation turns into noise
    shifts = [phase_cross_correlation(template, frame, upsample_factor=upsample,
                                      normalization=None)[0] for frame in filled]
    return float(np.sqrt(np.mean(np.sum(np.square(shifts), axis=1))))
