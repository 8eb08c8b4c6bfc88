"""mesmerize-core's lazy movie readers: :class:`LazyTiff` and :class:`LazyVideo`.

Both read only the frames that are indexed and have the lazy-array interface of
:mod:`.lazy` (``shape``, ``n_frames``, ``min``, ``max``, ``as_numpy()``, ...). The batch's
own readers (:func:`~mesmerize_helpers.io.movies.open_movie`) memory-map TIFFs when they can;
these are for notebooks, e.g. ``row.caiman.get_input_movie(reader=LazyTiff)``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from .lazy import LazyArray

__all__ = ["LazyTiff", "LazyVideo"]


class LazyTiff(LazyArray):
    """A multi-page TIFF movie, read page by page when indexed.

    Parameters
    ----------
    path
        The TIFF file.
    shape
        (frames, y, x) to use instead of the one found in the file (e.g. for a file whose
        metadata are wrong).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int] | None = None):
        import tifffile

        self.path = os.fspath(path)
        self._tif = tifffile.TiffFile(self.path)
        page_shape = self._tif.pages[0].shape
        if len(page_shape) != 2:
            raise ValueError(f"{self.path}: pages of shape {page_shape}; LazyTiff reads "
                             "single-channel (y, x) pages.")
        self._shape = tuple(int(n) for n in shape) if shape is not None else (
            len(self._tif.pages), *(int(n) for n in page_shape))
        self._dtype = np.dtype(self._tif.pages[0].dtype)

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        data = self._tif.asarray(key=[int(i) for i in indices])
        return np.asarray(data).reshape((len(indices), *self._shape[1:]))

    def close(self) -> None:
        """Close the file."""
        self._tif.close()


class LazyVideo(LazyArray):
    """A video file (anything OpenCV reads: avi, mp4, ...), decoded frame by frame.

    mesmerize-core's ``LazyVideo`` wraps ``decord``; this one uses OpenCV, which the project
    already depends on. Colour frames are returned as (y, x, 3) RGB, or grey (y, x) with
    ``as_grayscale``.

    Parameters
    ----------
    path
        The video file.
    min_max
        (min, max) of the whole video, if known; else those of frame 10 (or 0).
    as_grayscale
        Return grey frames: ``rgb_weights`` applied to R, G, B.
    rgb_weights
        Weights of R, G and B for ``as_grayscale``.
    **kwargs
        Accepted for compatibility with mesmerize-core's ``decord`` options; ignored.
    """

    def __init__(self, path: str | os.PathLike, min_max: tuple[float, float] | None = None,
                 as_grayscale: bool = False,
                 rgb_weights: tuple[float, float, float] = (0.299, 0.587, 0.114), **kwargs: Any):
        import cv2

        self.path = os.fspath(path)
        self._capture = cv2.VideoCapture(self.path)
        if not self._capture.isOpened():
            raise OSError(f"OpenCV cannot open the video {self.path}.")
        n_frames = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._next = 0  # the frame the decoder returns next (avoids seeking when reading on)
        first = self._decode(min(10, n_frames - 1) if n_frames > 0 else 0)
        self._is_color = first.ndim == 3
        self.as_grayscale, self.rgb_weights = as_grayscale, tuple(rgb_weights)
        frame = self._convert(first[None])[0]
        self._shape = (n_frames, *first.shape[:2])
        self._frame_shape = frame.shape
        self._dtype = frame.dtype
        self._min, self._max = min_max if min_max is not None else (frame.min(), frame.max())
        if kwargs:
            warnings.warn(f"LazyVideo ignores {sorted(kwargs)} (decord options).", stacklevel=2)

    def _decode(self, index: int) -> np.ndarray:
        import cv2

        if index != self._next:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._capture.read()
        if not ok:
            raise IndexError(f"{self.path}: cannot decode frame {index}.")
        self._next = index + 1
        if frame.ndim == 3:
            frame = frame[..., ::-1] if frame.shape[2] == 3 else frame[..., 2::-1]  # BGR(A) -> RGB
        return np.ascontiguousarray(frame)

    def _convert(self, frames: np.ndarray) -> np.ndarray:
        if self.as_grayscale and frames.ndim == 4:
            return frames[..., :3].astype(np.float64) @ np.asarray(self.rgb_weights)
        return frames

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        return self._convert(np.stack([self._decode(int(i)) for i in indices]))

    def _all_frames(self) -> np.ndarray:
        return self._frames(np.arange(self._shape[0]))

    @property
    def min(self) -> float:
        """``min_max[0]`` if given, else the minimum of frame 10."""
        return float(self._min)

    @property
    def max(self) -> float:
        """``min_max[1]`` if given, else the maximum of frame 10."""
        return float(self._max)

    def close(self) -> None:
        """Release the decoder."""
        self._capture.release()
