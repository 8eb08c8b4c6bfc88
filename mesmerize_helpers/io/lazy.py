"""Lazy (frames, y, x) movies computed from CNMF factors, one requested frame range at a time.

A reconstructed movie (``A C``, ``b f``) or the residual of a 1000-frame 512x512 fit is a
gigabyte; a notebook usually looks at a few frames. These arrays compute only what is sliced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


class LazyArray:
    """Base: a read-only ``(frames, y, x)`` float32 array; subclasses implement ``_frames``.

    Indexing accepts an int, a slice or a range (or an index array) on the first axis, and any
    further indices on y and x.
    """

    def __init__(self, n_frames: int, dims: tuple[int, int]):
        self.shape = (int(n_frames), int(dims[0]), int(dims[1]))
        self.dims = (int(dims[0]), int(dims[1]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_images(self, pixels_by_frames: np.ndarray) -> np.ndarray:
        """(pixels, n) in CaImAn's Fortran pixel order -> (n, y, x)."""
        n = pixels_by_frames.shape[1]
        return np.asarray(pixels_by_frames, dtype=np.float32).T.reshape(
            (n, self.dims[1], self.dims[0])
        ).transpose(0, 2, 1)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        scalar = isinstance(first, (int, np.integer))
        if scalar:
            if not -self.shape[0] <= first < self.shape[0]:
                raise IndexError(f"frame {first} out of range for {self.shape[0]} frames")
            indices = np.array([int(first) % self.shape[0]])
        elif isinstance(first, slice):
            indices = np.arange(*first.indices(self.shape[0]))
        else:
            indices = np.arange(self.shape[0])[np.asarray(first)]
        frames = self._frames(indices)
        if scalar:
            frames = frames[0]
        return frames[rest] if rest else frames

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self[:]
        return frames if dtype is None else frames.astype(dtype)

    def max_image(self, chunk: int = 500) -> np.ndarray:
        """The maximum projection, (y, x), computed chunk by chunk."""
        return self._reduce(np.max, chunk)

    def mean_image(self, chunk: int = 500) -> np.ndarray:
        """The mean projection, (y, x), computed chunk by chunk."""
        total = np.zeros(self.dims, dtype=np.float64)
        for start in range(0, self.shape[0], chunk):
            total += self[start:start + chunk].sum(axis=0)
        return (total / self.shape[0]).astype(np.float32)

    def _reduce(self, func: Any, chunk: int) -> np.ndarray:
        parts = [func(self[s:s + chunk], axis=0) for s in range(0, self.shape[0], chunk)]
        return func(np.stack(parts), axis=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype=float32)"


class LazyProduct(LazyArray):
    """The movie ``W @ H[:, frames]`` for spatial factors W (pixels, k) and traces H (k, T).

    Used for ``rcm`` (``A C``, the reconstructed neurons) and ``rcb`` (``b f``, the background).
    """

    def __init__(self, W: Any, H: np.ndarray, dims: tuple[int, int]):
        super().__init__(H.shape[1], dims)
        self.W = W.tocsc() if sp.issparse(W) else np.asarray(W)
        self.H = np.asarray(H)

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        if self.H.shape[0] == 0:
            return np.zeros((len(indices), *self.dims), dtype=np.float32)
        product = self.W @ self.H[:, indices]
        return self._to_images(np.asarray(product))


class LazyResidual(LazyArray):
    """``Y - rcm - rcb``: what the model leaves of the movie, frame by frame."""

    def __init__(self, movie: Any, rcm: LazyArray, rcb: LazyArray):
        super().__init__(rcm.shape[0], rcm.dims)
        self.movie, self.rcm, self.rcb = movie, rcm, rcb

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) and np.all(np.diff(indices) == 1):
            data = np.asarray(self.movie[int(indices[0]):int(indices[-1]) + 1], dtype=np.float32)
        else:
            data = np.stack([np.asarray(self.movie[int(i)], dtype=np.float32) for i in indices]) \
                if len(indices) else np.zeros((0, *self.dims), np.float32)
        return data - self.rcm._frames(indices) - self.rcb._frames(indices)


class LazyFrameFunction(LazyArray):
    """Frames computed by a function of their indices, e.g. CNMF-E's ring background.

    Parameters
    ----------
    compute
        ``compute(indices) -> (len(indices), y, x)`` float32.
    """

    def __init__(self, n_frames: int, dims: tuple[int, int], compute: Any):
        super().__init__(n_frames, dims)
        self._compute = compute

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, *self.dims), dtype=np.float32)
        return np.asarray(self._compute(indices), dtype=np.float32)
