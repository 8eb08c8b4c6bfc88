"""CNMF-E's seeding images of a movie: the peak-to-noise ratio and the correlation image of
the movie band-pass filtered at the neurons' scale (CaImAn's ``correlation_pnr``), computed
streaming over frames in chunks, as the plain summary images (:mod:`.images`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .images import SummaryAccumulator, _chunks, _default_chunk
from .params import as_pair

__all__ = ["correlation_pnr", "pnr_image", "corr_image_filtered", "pnr_filter_kernel"]

# Noise of each pixel: Welch average of periodograms of segments of this many frames, over
# frequencies in (0.25, 0.5] cycles/frame (CaImAn's noise_range for get_noise_fft).
_NOISE_SEGMENT = 64
_NOISE_RANGE = (0.25, 0.5)
# Values of the filtered, noise-normalised movie below this are zeroed before correlating
# (CaImAn's correlation_pnr).
_CORR_THRESHOLD = 3.0


def pnr_filter_kernel(gSig: float | tuple[float, float], center_psf: bool = True) -> np.ndarray:
    """Spatial filter of CNMF-E's seeding images (CaImAn's ``correlation_pnr``).

    A Gaussian of width ``gSig`` on a ``(4 gSig + 1)``-pixel support; with ``center_psf`` it is
    kept only where it exceeds its largest value on the first row (a disk) and made zero-mean
    there, which turns it into a band-pass that removes the smooth 1p background.

    Parameters
    ----------
    gSig
        Gaussian standard deviation (y, x) in pixels (half the expected neuron size).
    center_psf
        Zero-mean disk kernel (True) or plain Gaussian blur (False).

    Returns
    -------
    np.ndarray
        (ky, kx) float32 kernel.
    """
    gy, gx = (float(v) for v in as_pair(gSig, "gSig"))
    sizes = [int(2 * g) * 2 + 1 for g in (gy, gx)]
    axes = [np.arange(n) - (n - 1) / 2 for n in sizes]
    ker = np.outer(np.exp(-axes[0] ** 2 / (2 * gy**2)), np.exp(-axes[1] ** 2 / (2 * gx**2)))
    ker /= ker.sum()
    if center_psf:
        support = ker >= ker[0].max()
        ker[support] -= ker[support].mean()
        ker[~support] = 0.0
    return ker.astype(np.float32)


def _fill_missing(frames: np.ndarray) -> np.ndarray:
    """Frames with NaN (no data, e.g. a registration border) filled in for filtering.

    All-NaN border rows and columns take the nearest row / column with data (what
    ``border_nan="copy"`` gives); any NaN left (irregular piecewise-rigid borders) takes the
    frame's mean. Without this, one NaN would spread over the whole filter support.
    """
    missing = np.isnan(frames)
    if not missing.any():
        return frames
    frames = frames.copy()
    for i in np.flatnonzero(missing.any(axis=(1, 2))):
        frame = frames[i]
        rows = np.flatnonzero(~np.isnan(frame).all(axis=1))
        if rows.size == 0:
            frame[:] = 0.0
            continue
        frame[:rows[0]] = frame[rows[0]]
        frame[rows[-1] + 1:] = frame[rows[-1]]
        cols = np.flatnonzero(~np.isnan(frame).all(axis=0))
        frame[:, :cols[0]] = frame[:, cols[0], None]
        frame[:, cols[-1] + 1:] = frame[:, cols[-1], None]
        left = np.isnan(frame)
        if left.any():
            frame[left] = frame[~left].mean()
    return frames


def _filter_frames(frames: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """Filter each frame (replicated borders, as CaImAn's correlation_pnr); NaN filled in."""
    frames = _fill_missing(frames)
    if kernel is None:
        return frames
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        cv2.filter2D(frame, cv2.CV_32F, kernel, dst=out[i], borderType=cv2.BORDER_REPLICATE)
    return out


class _WelchNoise:
    """Per-pixel noise level from the high-frequency part of the power spectrum.

    CaImAn's ``get_noise_fft`` (``noise_method="mean"``) takes the square root of the mean
    power spectral density over (0.25, 0.5] cycles/frame, from one periodogram of (up to 3072
    samples of) each trace. Here the PSD is a Welch average over non-overlapping Hann-windowed
    segments, which streams over chunks and gives the same value for white noise.
    """

    def __init__(self, dims: tuple[int, int], segment: int) -> None:
        self.segment = segment
        self.window = np.hanning(segment + 2)[1:-1] if segment > 2 else np.ones(segment)
        freqs = np.fft.rfftfreq(segment)
        self.band = (freqs > _NOISE_RANGE[0]) & (freqs <= _NOISE_RANGE[1])
        if not self.band.any():
            self.band = freqs > 0
        self.power = np.zeros(dims)
        self.n_segments = 0

    def add(self, frames: np.ndarray) -> None:
        """Accumulate the whole segments of a chunk (chunks must start on segment borders)."""
        n_seg = len(frames) // self.segment
        if n_seg == 0:
            return
        seg = frames[: n_seg * self.segment].reshape(n_seg, self.segment, *frames.shape[1:])
        seg = seg - seg.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(seg * self.window[None, :, None, None], axis=1)[:, self.band]
        self.power += (spec.real**2 + spec.imag**2).mean(axis=1).sum(axis=0)
        self.n_segments += n_seg

    def noise(self) -> np.ndarray:
        """(y, x) noise standard deviation."""
        psd = self.power / max(self.n_segments, 1) / np.sum(self.window**2)
        return np.sqrt(psd)


def _pnr_setup(movie: Any, gSig: Any, center_psf: bool, chunk_size: int | None
               ) -> tuple[np.ndarray | None, int, int]:
    """Filter kernel, noise segment length and chunk size (a multiple of the segment)."""
    n_frames = int(movie.shape[0])
    segment = max(1, min(_NOISE_SEGMENT, n_frames))
    if chunk_size:
        chunk = max(segment, int(chunk_size) // segment * segment)
    else:
        chunk = _default_chunk(movie.shape, segment)
    kernel = None if not gSig else pnr_filter_kernel(gSig, center_psf)
    return kernel, segment, chunk


def _filtered_stats(movie: Any, kernel: np.ndarray | None, segment: int, chunk: int,
                    progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the filtered movie: (mean, max, noise) images, float64."""
    dims = tuple(int(v) for v in movie.shape[1:])
    total = np.zeros(dims)
    peak = np.full(dims, -np.inf)
    noise_acc = _WelchNoise(dims, segment)
    for frames in _chunks(movie, chunk, progress, "PNR image"):
        filtered = _filter_frames(frames, kernel)
        total += filtered.sum(axis=0, dtype=np.float64)
        peak = np.maximum(peak, filtered.max(axis=0))
        noise_acc.add(filtered)
    return total / max(int(movie.shape[0]), 1), peak, noise_acc.noise()


def _pnr(mean: np.ndarray, peak: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Peak-to-noise ratio, 0 where negative or where the noise is 0."""
    return np.maximum((peak - mean) / np.where(noise > 0, noise, np.inf), 0.0)


def correlation_pnr(movie: Any, gSig: float | tuple[float, float] | None, *,
                    center_psf: bool = True, chunk_size: int | None = None,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Correlation image and peak-to-noise ratio of the filtered movie (CNMF-E seeding).

    Follows CaImAn's ``correlation_pnr``: each frame is filtered with
    :func:`pnr_filter_kernel`; the temporal mean of each pixel is removed; PNR is the
    temporal maximum divided by the noise level (negative values set to 0); the correlation
    image is :func:`local_correlations` of the filtered movie divided by the noise with values
    below 3 set to 0. Two streaming passes over the movie: mean, max and noise first, then
    the correlations of the thresholded movie. NaN pixels (registration borders) are filled
    from the nearest row / column with data before filtering.

    Parameters
    ----------
    movie
        (frames, y, x) array-like supporting ``movie[a:b]``.
    gSig
        Filter width (y, x) in pixels, or None for no filtering.
    center_psf
        Zero-mean (band-pass) kernel, as for 1p data.
    chunk_size
        Frames per chunk (rounded to a multiple of the 64-frame noise segment).
    progress
        Show tqdm progress bars.

    Returns
    -------
    cn, pnr
        (y, x) float32 correlation image and peak-to-noise-ratio image.

    Notes
    -----
    The noise is a Welch average over 64-frame segments (the whole movie if shorter); the
    frames after the last whole segment count for the mean, max and correlations but not for
    the noise.
    """
    kernel, segment, chunk = _pnr_setup(movie, gSig, center_psf, chunk_size)
    mean, peak, noise = _filtered_stats(movie, kernel, segment, chunk, progress)
    safe_noise = np.where(noise > 0, noise, np.inf)
    dims = tuple(int(v) for v in movie.shape[1:])
    corr = SummaryAccumulator(dims)
    for frames in _chunks(movie, chunk, progress, "correlation image (filtered)"):
        z = (_filter_frames(frames, kernel) - mean) / safe_noise
        z[z < _CORR_THRESHOLD] = 0.0
        corr.add(z.astype(np.float32))
    return corr.correlation_image(), _pnr(mean, peak, noise).astype(np.float32)


def pnr_image(movie: Any, gSig: float | tuple[float, float] | None, *,
              center_psf: bool = True, chunk_size: int | None = None,
              progress: bool = False) -> np.ndarray:
    """Peak-to-noise ratio of the filtered movie (one streaming pass).

    See :func:`correlation_pnr`. Returns a (y, x) float32 image.
    """
    kernel, segment, chunk = _pnr_setup(movie, gSig, center_psf, chunk_size)
    mean, peak, noise = _filtered_stats(movie, kernel, segment, chunk, progress)
    return _pnr(mean, peak, noise).astype(np.float32)


def corr_image_filtered(movie: Any, gSig: float | tuple[float, float] | None, *,
                        center_psf: bool = True, chunk_size: int | None = None,
                        progress: bool = False) -> np.ndarray:
    """Correlation image of the filtered, noise-thresholded movie (see :func:`correlation_pnr`).

    Returns a (y, x) float32 image.
    """
    return correlation_pnr(movie, gSig, center_psf=center_psf, chunk_size=chunk_size,
                           progress=progress)[0]
