"""Lazy (frames, y, x) arrays: frames are computed or read only when indexed.

A reconstructed movie (``A C``, ``b f``) or the residual of a 1000-frame 512x512 fit is a
gigabyte; a notebook usually looks at a few frames. The classes here have mesmerize-core's
interface (``mesmerize_core.arrays``): ``shape``, ``n_frames``, ``dtype``, ``ndim``,
``nbytes``, ``nbytes_gb``, ``min``, ``max``, ``as_numpy()``; the reconstructions add
``spatial``, ``temporal``, ``n_components`` and the ``mean_image``, ``max_image``,
``min_image``, ``std_image`` properties.

Indexing: an int (numpy ints too), a slice, a range or an index array on the frame axis, or a
tuple whose first element is one of those and whose other elements index y and x. An int
gives one (y, x) frame; anything else a (n, y, x) array. Frames past the last one are an
IndexError, for slices too (mesmerize-core's rule), except for the movie readers
(:class:`~mesmerize_helpers.io.movies.LazyFrames`), which clip slices as numpy does.
"""

from __future__ import annotations

import itertools
import warnings
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "LazyArray", "LazyArrayRCB", "LazyArrayRCM", "LazyArrayResiduals", "LazyRingBackground",
]

#: Frames per block when a whole lazy array is reduced (projections, ``as_numpy``).
_CHUNK = 200


class LazyArray:
    """Base of the lazy (frames, y, x) arrays; subclasses implement :meth:`_frames`.

    Subclasses set ``self._shape`` (a 3-tuple) and ``self._dtype``, and may override
    :attr:`min` and :attr:`max` (by default those of the first frame, with a warning).
    """

    #: Slices reaching past the last frame raise IndexError (mesmerize-core's arrays).
    _strict_bounds = True
    _shape: tuple[int, int, int]
    _dtype: np.dtype

    # --- mesmerize-core's properties ----------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_frames, y, x)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """Element type of the computed frames."""
        return self._dtype

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self._shape[0]

    @property
    def ndim(self) -> int:
        """Number of dimensions (3)."""
        return len(self._shape)

    @property
    def nbytes(self) -> int:
        """Bytes the array would take if computed in full."""
        return int(np.prod(self._shape, dtype=np.int64)) * np.dtype(self._dtype).itemsize

    @property
    def nbytes_gb(self) -> float:
        """:attr:`nbytes` in gigabytes (1e9 bytes)."""
        return self.nbytes / 1e9

    @property
    def min(self) -> float:
        """Minimum value; this default looks at the first frame only (warns)."""
        warnings.warn(f"{type(self).__name__}.min looks at the first frame only.", stacklevel=2)
        return float(np.nanmin(self[0]))

    @property
    def max(self) -> float:
        """Maximum value; this default looks at the first frame only (warns)."""
        warnings.warn(f"{type(self).__name__}.max looks at the first frame only.", stacklevel=2)
        return float(np.nanmax(self[0]))

    def __len__(self) -> int:
        return self._shape[0]

    # --- computing frames ------------------------------------------------------------

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        """Frames ``indices`` (non-negative ints), (len(indices), y, x)."""
        raise NotImplementedError

    def _compute_at_indices(self, indices: int | slice) -> np.ndarray:
        """mesmerize-core's hook name: the frame(s) at an int or a slice."""
        return self[indices]

    def _frame_indices(self, first: Any) -> tuple[np.ndarray, bool]:
        """Frame numbers selected by ``first`` and whether it was a scalar."""
        n = self._shape[0]
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            if not -n <= first < n:
                raise IndexError(f"frame {first} is out of range for {n} frames")
            return np.array([int(first) % n]), True
        if isinstance(first, range):
            first = slice(first.start, first.stop, first.step)
        if isinstance(first, slice):
            if self._strict_bounds:
                for name in ("start", "stop"):
                    value = getattr(first, name)
                    if value is not None and value > n:
                        raise IndexError(f"slice {name} {value} is past the last frame "
                                         f"(n_frames = {n})")
            return np.arange(*first.indices(n)), False
        indices = np.asarray(first)
        if indices.dtype == bool:
            return np.flatnonzero(indices), False
        if indices.dtype.kind not in "iu":
            raise IndexError(f"cannot index frames with {type(first).__name__} {first!r}")
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"frame indices out of range for {n} frames")
        return indices.ravel() % n if n else indices.ravel(), False

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > len(self._shape):
            raise IndexError(f"too many indices ({len(key)}) for a {len(self._shape)}-d array")
        indices, scalar = self._frame_indices(key[0])
        frames = self._frames(indices) if len(indices) else \
            np.zeros((0, *self._shape[1:]), self._dtype)
        frames = frames[0] if scalar else frames
        rest = key[1:]
        if not rest:
            return frames
        return frames[rest] if scalar else frames[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self._all_frames()
        return frames if dtype is None else frames.astype(dtype)

    def _all_frames(self) -> np.ndarray:
        out = np.empty(self._shape, dtype=self._dtype)
        for start in range(0, self._shape[0], _CHUNK):
            out[start:start + _CHUNK] = self._frames(
                np.arange(start, min(start + _CHUNK, self._shape[0])))
        return out

    def as_numpy(self) -> np.ndarray:
        """The whole array in memory (warns with its size: it may be very large)."""
        warnings.warn(f"Computing the whole {type(self).__name__} in memory: "
                      f"{self.nbytes_gb:.2f} GB.", stacklevel=2)
        return self._all_frames()

    def _reduce_frames(self) -> dict[str, np.ndarray]:
        """Mean, max, min and std over frames, computed block by block (float64 sums)."""
        y, x = self._shape[1:]
        total, squares = np.zeros((y, x)), np.zeros((y, x))
        high, low = np.full((y, x), -np.inf), np.full((y, x), np.inf)
        for start in range(0, self._shape[0], _CHUNK):
            block = np.asarray(self._frames(np.arange(start, min(start + _CHUNK, self._shape[0]))),
                               dtype=np.float64)
            total += block.sum(axis=0)
            squares += (block ** 2).sum(axis=0)
            high, low = np.maximum(high, block.max(axis=0)), np.minimum(low, block.min(axis=0))
        n = max(self._shape[0], 1)
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean ** 2, 0))
        return {"mean": mean, "max": high, "min": low, "std": std}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape [frames, y, x] = {self._shape}, "
                f"dtype={np.dtype(self._dtype).name}; frames are computed when indexed)")


def _to_images(pixels_by_frames: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """(pixels, n) in CaImAn's Fortran pixel order -> (n, y, x)."""
    n = pixels_by_frames.shape[1]
    return np.asarray(pixels_by_frames).reshape(dims[1], dims[0], n).transpose(2, 1, 0)


class LazyArrayRCM(LazyArray):
    """Reconstructed movie ``A C``: frame t is ``spatial @ temporal[:, t]`` as an image.

    Parameters
    ----------
    spatial
        (pixels, K) footprints, sparse or dense, Fortran pixel order on ``frame_dims``.
    temporal
        (K, T) traces.
    frame_dims
        (y, x).
    """

    def __init__(self, spatial: Any, temporal: np.ndarray, frame_dims: tuple[int, int]):
        temporal = np.asarray(temporal)
        if spatial.shape[1] != temporal.shape[0]:
            raise ValueError(f"{temporal.shape[0]} temporal components for "
                             f"{spatial.shape[1]} spatial components.")
        self._spatial = spatial.tocsc() if sp.issparse(spatial) else np.asarray(spatial)
        self._temporal = temporal
        self._dims = (int(frame_dims[0]), int(frame_dims[1]))
        self._shape = (int(temporal.shape[1]), *self._dims)
        self._dtype = np.result_type(self._spatial.dtype, temporal.dtype)

    @property
    def spatial(self) -> Any:
        """(pixels, K) footprints."""
        return self._spatial

    @property
    def temporal(self) -> np.ndarray:
        """(K, T) traces."""
        return self._temporal

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self._spatial.shape[1])

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        if self.n_components == 0:
            return np.zeros((len(indices), *self._dims), self._dtype)
        return _to_images(np.asarray(self._spatial @ self._temporal[:, indices]), self._dims)

    def _image(self, trace_summary: np.ndarray) -> np.ndarray:
        if self.n_components == 0:
            return np.zeros(self._dims, self._dtype)
        flat = np.asarray(self._spatial @ trace_summary).ravel()
        return flat.reshape(self._dims, order="F")

    @cached_property
    def _trace_summaries(self) -> dict[str, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN traces
            t = self._temporal
            if t.shape[1] == 0:
                zeros = np.zeros(t.shape[0])
                return {"mean": zeros, "max": zeros, "min": zeros, "std": zeros}
            return {"mean": np.nanmean(t, axis=1), "max": np.nanmax(t, axis=1),
                    "min": np.nanmin(t, axis=1), "std": np.nanstd(t, axis=1)}

    @property
    def mean_image(self) -> np.ndarray:
        """Mean over frames, (y, x) (exact: ``A`` times each trace's mean)."""
        return self._image(self._trace_summaries["mean"])

    @property
    def max_image(self) -> np.ndarray:
        """``A`` times each trace's maximum, (y, x), as mesmerize-core (an upper bound of
        the per-pixel maximum where footprints overlap)."""
        return self._image(self._trace_summaries["max"])

    @property
    def min_image(self) -> np.ndarray:
        """``A`` times each trace's minimum, (y, x), as mesmerize-core."""
        return self._image(self._trace_summaries["min"])

    @property
    def std_image(self) -> np.ndarray:
        """``A`` times each trace's standard deviation, (y, x), as mesmerize-core."""
        return self._image(self._trace_summaries["std"])

    @cached_property
    def _bounds(self) -> tuple[float, float]:
        # mesmerize-core's estimate (products of each factor's extremes), widened by
        # A @ min(C) and A @ max(C), which bound every frame where A >= 0 (footprints
        # overlap: a pixel can exceed every single product)
        if self.n_components == 0 or self._shape[0] == 0:
            return 0.0, 0.0
        s = self._spatial
        s_max = np.asarray(s.max(axis=0).toarray() if sp.issparse(s) else s.max(axis=0)).ravel()
        s_min = np.asarray(s.min(axis=0).toarray() if sp.issparse(s) else s.min(axis=0)).ravel()
        summary = self._trace_summaries
        products = [t * f for t, f in itertools.product((summary["min"], summary["max"]),
                                                        (s_min, s_max))]
        low = min(float(np.nanmin(products)), float(np.nanmin(self.min_image)))
        high = max(float(np.nanmax(products)), float(np.nanmax(self.max_image)))
        return low, high

    @property
    def min(self) -> float:
        """A lower bound of the values, computed from the factors (no pass over frames)."""
        return self._bounds[0]

    @property
    def max(self) -> float:
        """An upper bound of the values, computed from the factors (no pass over frames)."""
        return self._bounds[1]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, n_components={self.n_components})"


class LazyArrayRCB(LazyArrayRCM):
    """Reconstructed low-rank background ``b f`` (same interface as :class:`LazyArrayRCM`)."""


class LazyRingBackground(LazyArray):
    """CNMF-E's ring-model background, ``b0 + W (Y - A C - b0)``, frame by frame.

    It has no low-rank factors; ``mean_image``, ``max_image``, ``min_image`` and
    ``std_image`` are true projections, computed in one pass over the movie when first used.

    Parameters
    ----------
    n_frames, frame_dims
        Shape of the movie, (y, x).
    compute
        ``compute(indices) -> (len(indices), y, x)`` float32 background frames.
    """

    def __init__(self, n_frames: int, frame_dims: tuple[int, int], compute: Any):
        self._shape = (int(n_frames), int(frame_dims[0]), int(frame_dims[1]))
        self._dtype = np.dtype(np.float32)
        self._compute = compute

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._compute(indices), dtype=np.float32)

    @cached_property
    def _projections(self) -> dict[str, np.ndarray]:
        return self._reduce_frames()

    mean_image = property(lambda self: self._projections["mean"], doc="Mean over frames.")
    max_image = property(lambda self: self._projections["max"], doc="Maximum over frames.")
    min_image = property(lambda self: self._projections["min"], doc="Minimum over frames.")
    std_image = property(lambda self: self._projections["std"], doc="Standard deviation.")
    min = property(lambda self: float(self._projections["min"].min()), doc="Minimum value.")
    max = property(lambda self: float(self._projections["max"].max()), doc="Maximum value.")


class LazyArrayResiduals(LazyArray):
    """Residuals ``Y - (A C) - background``, frame by frame.

    Parameters
    ----------
    raw_movie
        The movie CNMF was fitted on, (frames, y, x) array-like.
    rcm, rcb
        The reconstructed movie and background (lazy arrays of the same shape).
    timeout
        Accepted for mesmerize-core compatibility; unused.
    """

    def __init__(self, raw_movie: Any, rcm: LazyArray, rcb: LazyArray, timeout: int = 10):
        self._raw_movie, self._rcm, self._rcb = raw_movie, rcm, rcb
        self._shape = tuple(int(n) for n in raw_movie.shape[:3])
        if self._shape != tuple(rcm.shape):
            raise ValueError(f"movie shape {self._shape} differs from the reconstruction's "
                             f"{tuple(rcm.shape)}")
        self._dtype = np.result_type(np.float32, rcm.dtype, rcb.dtype)

    def _movie_frames(self, indices: np.ndarray) -> np.ndarray:
        if np.all(np.diff(indices) == 1):  # one contiguous read
            return np.asarray(self._raw_movie[int(indices[0]):int(indices[-1]) + 1])
        return np.stack([np.asarray(self._raw_movie[int(i)]) for i in indices])

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        movie = self._movie_frames(indices).astype(self._dtype, copy=False)
        return movie - self._rcm._frames(indices) - self._rcb._frames(indices)

    @property
    def min(self) -> float:
        """Minimum of the first movie frame (warns), as mesmerize-core."""
        warnings.warn("LazyArrayResiduals.min is that of the first movie frame.", stacklevel=2)
        return float(np.nanmin(np.asarray(self._raw_movie[0])))

    @property
    def max(self) -> float:
        """Maximum of the first movie frame (warns), as mesmerize-core."""
        warnings.warn("LazyArrayResiduals.max is that of the first movie frame.", stacklevel=2)
        return float(np.nanmax(np.asarray(self._raw_movie[0])))
