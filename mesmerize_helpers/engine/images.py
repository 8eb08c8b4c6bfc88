"""Summary images of a movie, computed streaming over frames in chunks.

Every function reads ``movie[a:b]`` chunk by chunk (any (frames, y, x) array-like: ndarray,
memmap, lazy reader), so memory does not grow with the number of frames, and gives the same
result (up to float rounding) as the computation on the whole movie at once:

- :func:`projections`: mean, max and standard-deviation images (NaN-aware, like
  mesmerize-core's ``np.nan*`` projections of a registered movie with NaN borders);
- :func:`local_correlations`: CaImAn's correlation image, the mean Pearson correlation of each
  pixel's trace with its 8 (or 4) neighbours, from running sums, sums of squares and
  neighbour cross-products;
- :func:`correlation_pnr`, :func:`pnr_image`, :func:`corr_image_filtered`: CaImAn's CNMF-E
  seeding images, the correlation image and the peak-to-noise ratio of the movie high-passed
  with a centred Gaussian of width ``gSig``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from .params import as_pair

__all__ = [
    "projections",
    "local_correlations",
    "correlation_pnr",
    "pnr_image",
    "corr_image_filtered",
    "pnr_filter_kernel",
]

# Pixels (frames x y x x) per chunk when chunk_size is not given (~32 MB as float64).
_CHUNK_PIXELS = 2**22
# Noise of each pixel: Welch average of periodograms of segments of this many frames, over
# frequencies in (0.25, 0.5] cycles/frame (CaImAn's noise_range for get_noise_fft).
_NOISE_SEGMENT = 64
_NOISE_RANGE = (0.25, 0.5)
# Values of the filtered, noise-normalised movie below this are zeroed before correlating
# (CaImAn's correlation_pnr).
_CORR_THRESHOLD = 3.0

# Neighbour offsets (dy, dx) whose pairs are counted once each; the mirror offsets are the
# same pairs seen from the other pixel.
_OFFSETS_4 = ((0, 1), (1, 0))
_OFFSETS_8 = ((0, 1), (1, 0), (1, 1), (1, -1))


def _default_chunk(shape: tuple[int, ...], multiple: int = 1) -> int:
    chunk = max(1, _CHUNK_PIXELS // int(np.prod(shape[1:])))
    return max(multiple, chunk // multiple * multiple)


def _chunks(movie: Any, chunk: int, progress: bool, desc: str) -> Iterator[np.ndarray]:
    """Yield float32 chunks of frames ``movie[a:b]``."""
    n_frames = int(movie.shape[0])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_frames, unit="frame", desc=desc)
    try:
        for start in range(0, n_frames, chunk):
            stop = min(n_frames, start + chunk)
            yield np.asarray(movie[start:stop], dtype=np.float32)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()


def _pair_slices(dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices (a, b) of an image such that a[i] and b[i] are neighbours at offset (dy, dx)."""
    def span(d: int) -> tuple[slice, slice]:
        if d > 0:
            return slice(0, -d), slice(d, None)
        if d < 0:
            return slice(-d, None), slice(0, d)
        return slice(None), slice(None)

    (ya, yb), (xa, xb) = span(dy), span(dx)
    return (ya, xa), (yb, xb)


# --------------------------------------------------------------------------------------------
# Projections
# --------------------------------------------------------------------------------------------


def projections(movie: Any, chunk_size: int | None = None, *,
                progress: bool = False) -> dict[str, np.ndarray]:
    """Mean, max and standard-deviation images, streaming over frames.

    Parameters
    ----------
    movie
        (frames, y, x) array-like supporting ``movie[a:b]``.
    chunk_size
        Frames per chunk; about 4 Mpixel by default.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``"mean"``, ``"max"``, ``"std"``: (y, x) float32 images in movie units. NaN frames of
        a pixel are skipped (``np.nanmean``/``np.nanmax``/``np.nanstd``, ddof 0); a pixel that
        is NaN in every frame is NaN.
    """
    chunk = chunk_size or _default_chunk(movie.shape)
    dims = tuple(int(v) for v in movie.shape[1:])
    count = np.zeros(dims)
    total = np.zeros(dims)
    total_sq = np.zeros(dims)
    peak = np.full(dims, np.nan)
    ref = None
    for frames in _chunks(movie, chunk, progress, "projections"):
        finite = np.isfinite(frames)
        if ref is None:
            # Sums of squares about a per-pixel reference (the first chunk's mean) keep the
            # variance free of cancellation when the baseline is large.
            with np.errstate(invalid="ignore", divide="ignore"):
                ref = np.nan_to_num(np.nansum(frames, axis=0, dtype=np.float64)
                                    / finite.sum(axis=0))
        centred = np.where(finite, frames - ref, 0.0)
        count += finite.sum(axis=0)
        total += centred.sum(axis=0)
        total_sq += np.einsum("tyx,tyx->yx", centred, centred)
        peak = np.fmax(peak, np.nanmax(np.where(finite, frames, -np.inf), axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = total / count
        var = np.maximum(total_sq / count - mean_c**2, 0.0)
    peak[np.isinf(peak)] = np.nan
    return {
        "mean": (mean_c + ref).astype(np.float32),
        "max": peak.astype(np.float32),
        "std": np.sqrt(var).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# Local correlations
# --------------------------------------------------------------------------------------------


class _NeighbourCorrelation:
    """Running sums for the correlation of each pixel with its neighbours.

    Keeps, per pixel, the sum and sum of squares of its trace (about a per-pixel reference
    value, to avoid cancellation), and per neighbour pair the sum of products: enough to give
    every neighbour Pearson correlation at the end, whatever the chunking.
    """

    def __init__(self, dims: tuple[int, int], eight_neighbours: bool) -> None:
        self.dims = dims
        self.offsets = _OFFSETS_8 if eight_neighbours else _OFFSETS_4
        self.n = 0
        self.ref: np.ndarray | None = None
        self.s = np.zeros(dims)
        self.ss = np.zeros(dims)
        self.cross = [np.zeros(self._pair_shape(o)) for o in self.offsets]

    def _pair_shape(self, offset: tuple[int, int]) -> tuple[int, int]:
        return self.dims[0] - abs(offset[0]), self.dims[1] - abs(offset[1])

    def add(self, frames: np.ndarray) -> None:
        """Accumulate a (n, y, x) chunk."""
        if self.ref is None:
            self.ref = frames.mean(axis=0, dtype=np.float64)
        x = frames - self.ref
        self.n += len(x)
        self.s += x.sum(axis=0)
        self.ss += np.einsum("tyx,tyx->yx", x, x)
        for k, offset in enumerate(self.offsets):
            a, b = _pair_slices(*offset)
            self.cross[k] += np.einsum("tyx,tyx->yx", x[(slice(None), *a)], x[(slice(None), *b)])

    def image(self) -> np.ndarray:
        """(y, x) float32 mean correlation of each pixel with its neighbours.

        A pair involving a constant pixel has correlation 0 (CaImAn divides by an infinite
        std); pairs with NaN statistics are left out of a pixel's mean; pixels with no finite
        pair get 0 (as mesmerize-core does with NaN correlation values).
        """
        n = max(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.ss / n - mean**2, 0.0)
        std = np.sqrt(var)
        total = np.zeros(self.dims)
        count = np.zeros(self.dims)
        for offset, cross in zip(self.offsets, self.cross):
            a, b = _pair_slices(*offset)
            with np.errstate(invalid="ignore", divide="ignore"):
                cov = cross / n - mean[a] * mean[b]
                denom = std[a] * std[b]
                rho = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)
            rho = np.where(np.isnan(cov) | np.isnan(denom), np.nan, rho)
            valid = np.isfinite(rho)
            rho = np.where(valid, rho, 0.0)
            for side in (a, b):  # the pair counts for both of its pixels
                total[side] += rho
                count[side] += valid
        with np.errstate(invalid="ignore", divide="ignore"):
            image = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return image.astype(np.float32)


def local_correlations(movie: Any, chunk_size: int | None = None, *,
                       eight_neighbours: bool = True, progress: bool = False) -> np.ndarray:
    """Correlation image: mean Pearson correlation of each pixel with its neighbours.

    The same quantity as CaImAn's ``local_correlations`` (and ``local_correlations_fft``),
    computed streaming over chunks of frames from running sums, sums of squares and
    neighbour cross-products: identical to the computation on the whole movie.

    Parameters
    ----------
    movie
        (frames, y, x) array-like supporting ``movie[a:b]``.
    chunk_size
        Frames per chunk; about 4 Mpixel by default.
    eight_neighbours
        Use the 8 surrounding pixels (default, as CaImAn) or only the 4 edge neighbours.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    np.ndarray
        (y, x) float32 image in [-1, 1]. Border pixels average over their fewer neighbours.
    """
    chunk = chunk_size or _default_chunk(movie.shape)
    acc = _NeighbourCorrelation(tuple(int(v) for v in movie.shape[1:]), eight_neighbours)
    for frames in _chunks(movie, chunk, progress, "correlation image"):
        acc.add(frames)
    return acc.image()


# --------------------------------------------------------------------------------------------
# CNMF-E images: correlation and peak-to-noise ratio of the filtered movie
# --------------------------------------------------------------------------------------------


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
    corr = _NeighbourCorrelation(dims, eight_neighbours=True)
    for frames in _chunks(movie, chunk, progress, "correlation image (filtered)"):
        z = (_filter_frames(frames, kernel) - mean) / safe_noise
        z[z < _CORR_THRESHOLD] = 0.0
        corr.add(z.astype(np.float32))
    return corr.image(), _pnr(mean, peak, noise).astype(np.float32)


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
