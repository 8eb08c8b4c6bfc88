"""Summary images of a movie, computed streaming over frames in chunks.

Every function reads ``movie[a:b]`` chunk by chunk (any (frames, y, x) array-like: ndarray,
memmap, lazy reader), so memory does not grow with the number of frames, and gives the same
result (up to float rounding) as the computation on the whole movie at once:

- :class:`SummaryAccumulator`: fed chunk by chunk (by motion correction, while each
  registered chunk is in memory), it makes the images below in that one pass;
  :func:`summary_images` runs it over a movie;
- :func:`projections`: mean, max and standard-deviation images (NaN-aware, like
  mesmerize-core's ``np.nan*`` projections of a registered movie with NaN borders);
- :func:`local_correlations`: CaImAn's correlation image, the mean Pearson correlation of each
  pixel's trace with its 8 (or 4) neighbours, from running sums, sums of squares and
  neighbour cross-products;

CNMF-E's seeding images (PNR, filtered correlation image) are in :mod:`.pnr_images`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "SummaryAccumulator",
    "summary_images",
    "projections",
    "local_correlations",
]

# Pixels (frames x y x x) per chunk when chunk_size is not given (~32 MB as float64).
_CHUNK_PIXELS = 2**22

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
# Projections and local correlations: one accumulator, fed chunk by chunk
# --------------------------------------------------------------------------------------------


class SummaryAccumulator:
    """Running sums for the mean / max / std projections and the local correlation image.

    Fed with chunks of frames in order (:meth:`add`), e.g. by motion correction while each
    registered chunk is in memory, it gives the same images as the whole movie would
    (:meth:`images`), whatever the chunking. Per pixel it keeps the count, sum and sum of
    squares of its finite values about a reference (the first chunk's mean, which keeps the
    variance free of cancellation on a large baseline) and its maximum; per neighbour pair
    the sum of products. Sums are float64; each chunk's products are formed in float32.

    Parameters
    ----------
    dims
        (y, x) frame size.
    correlation
        Also accumulate the local correlation image (four products per pixel and frame).
    eight_neighbours
        Correlate with the 8 surrounding pixels (as CaImAn) or only the 4 edge neighbours.
    """

    def __init__(self, dims: tuple[int, int], correlation: bool = True,
                 eight_neighbours: bool = True) -> None:
        self.dims = (int(dims[0]), int(dims[1]))
        self.n_frames = 0
        self.ref: np.ndarray | None = None
        self.count = np.zeros(self.dims)
        self.total = np.zeros(self.dims)
        self.total_sq = np.zeros(self.dims)
        self.peak = np.full(self.dims, -np.inf, dtype=np.float32)
        self.has_nan = np.zeros(self.dims, dtype=bool)
        self.offsets = (_OFFSETS_8 if eight_neighbours else _OFFSETS_4) if correlation else ()
        self.cross = [np.zeros(_pair_shape(self.dims, o)) for o in self.offsets]

    def add(self, frames: np.ndarray) -> None:
        """Accumulate a (n, y, x) chunk (any real dtype; NaN marks missing data)."""
        frames = np.asarray(frames, dtype=np.float32)
        if not len(frames):
            return
        self._set_reference(frames)
        x = frames - self.ref
        chunk_sum = x.sum(axis=0, dtype=np.float64)
        chunk_sq = np.einsum("tyx,tyx->yx", x, x).astype(np.float64)
        chunk_max = frames.max(axis=0)
        chunk_count: Any = len(x)
        holes = np.isnan(chunk_sum)
        if holes.any():  # missing data (registration borders): redo just those pixels
            self.has_nan |= holes
            sub = x[:, holes]
            finite = np.isfinite(sub)
            zeroed = np.where(finite, sub, 0.0)
            chunk_sum[holes] = zeroed.sum(axis=0)
            chunk_sq[holes] = (zeroed * zeroed).sum(axis=0)
            chunk_max[holes] = np.max(np.where(finite, frames[:, holes], -np.inf), axis=0)
            chunk_count = np.full(self.dims, len(x))
            chunk_count[holes] = finite.sum(axis=0)
        self.n_frames += len(x)
        self.count += chunk_count
        self.total += chunk_sum
        self.total_sq += chunk_sq
        np.maximum(self.peak, chunk_max, out=self.peak)
        for k, offset in enumerate(self.offsets):
            a, b = _pair_slices(*offset)
            self.cross[k] += np.einsum("tyx,tyx->yx", x[(slice(None), *a)], x[(slice(None), *b)])

    def _set_reference(self, frames: np.ndarray) -> None:
        """Reference of each pixel: its mean over the first chunk where it has data (the
        sums are centred on it; a pixel's sums are all zero until then)."""
        if self.ref is None:
            self.ref = np.zeros(self.dims, np.float32)
            fresh: Any = slice(None)
        else:
            fresh = self.count == 0
            if not fresh.any():
                return
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.ref[fresh] = np.nan_to_num(np.nanmean(frames[:, fresh], axis=0))

    def projections(self) -> dict[str, np.ndarray]:
        """``"mean"``, ``"max"``, ``"std"``: (y, x) float32, NaN-aware (ddof 0); a pixel
        without any finite value is NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_c = self.total / self.count
            var = np.maximum(self.total_sq / self.count - mean_c**2, 0.0)
        ref = np.zeros(self.dims, np.float32) if self.ref is None else self.ref
        peak = np.where(np.isinf(self.peak), np.nan, self.peak)
        return {"mean": (mean_c + ref).astype(np.float32), "max": peak.astype(np.float32),
                "std": np.sqrt(var).astype(np.float32)}

    def correlation_image(self) -> np.ndarray:
        """(y, x) float32 mean correlation of each pixel with its neighbours.

        A pair involving a constant pixel has correlation 0 (CaImAn divides by an infinite
        std); pixels missing data (NaN) in any frame are left out of their neighbours' means;
        pixels with no finite pair get 0 (as mesmerize-core does with NaN correlation values).
        """
        if not self.offsets:
            raise ValueError("This accumulator was made with correlation=False.")
        n = max(self.n_frames, 1)
        mean = np.where(self.has_nan, np.nan, self.total / n)
        var = np.maximum(self.total_sq / n - mean**2, 0.0)
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

    def images(self) -> dict[str, np.ndarray]:
        """The projections, plus ``"corr"`` when correlations are accumulated."""
        out = self.projections()
        if self.offsets:
            out["corr"] = self.correlation_image()
        return out


def _fill(acc: SummaryAccumulator, movie: Any, chunk_size: int | None, progress: bool,
          desc: str) -> SummaryAccumulator:
    """Feed ``acc`` every frame of ``movie``, a chunk at a time."""
    for frames in _chunks(movie, chunk_size or _default_chunk(movie.shape), progress, desc):
        acc.add(frames)
    return acc


def _pair_shape(dims: tuple[int, int], offset: tuple[int, int]) -> tuple[int, int]:
    return dims[0] - abs(offset[0]), dims[1] - abs(offset[1])


def summary_images(movie: Any, chunk_size: int | None = None, *, correlation: bool = True,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Mean, max, std projections and (``correlation``) the local correlation image of a
    movie, in one streaming pass (see :class:`SummaryAccumulator`).

    Parameters
    ----------
    movie
        (frames, y, x) array-like supporting ``movie[a:b]``.
    chunk_size
        Frames per chunk; about 4 Mpixel by default.
    correlation
        Include ``"corr"``, the 8-neighbour correlation image.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``"mean"``, ``"max"``, ``"std"`` (and ``"corr"``): (y, x) float32 images.
    """
    acc = SummaryAccumulator(tuple(int(v) for v in movie.shape[1:]), correlation=correlation)
    return _fill(acc, movie, chunk_size, progress, "summary images").images()


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
    return summary_images(movie, chunk_size, correlation=False, progress=progress)


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
    acc = SummaryAccumulator(tuple(int(v) for v in movie.shape[1:]),
                             eight_neighbours=eight_neighbours)
    return _fill(acc, movie, chunk_size, progress, "correlation image").correlation_image()
