"""Movie readers: every reader returns a lazy ``(frames, y, x)`` array that reads on slicing.

Built in: TIFF (multi-page, BigTIFF, ImageJ hyperstacks, any bit depth), ``.npy``, HDF5
(dataset ``var_name_hdf5``) and CaImAn ``.mmap``. Anything else takes a user callable
``reader(path) -> array (frames, y, x)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Reader = Callable[[Path], Any]


class MovieReadError(ValueError):
    """A movie file could not be read; the message names the file and the readers tried."""


class LazyFrames:
    """A read-only ``(frames, y, x)`` array view that reads frames from disk when sliced.

    Parameters
    ----------
    shape
        ``(frames, y, x)``.
    dtype
        The element type of the frames returned.
    read
        ``read(start, stop) -> ndarray (stop - start, y, x)``.
    """

    def __init__(self, shape: tuple[int, int, int], dtype: Any, read: Callable[[int, int], np.ndarray]):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self._read = read

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index = int(first) + (self.shape[0] if first < 0 else 0)
            if not 0 <= index < self.shape[0]:
                raise IndexError(f"frame {first} out of range for {self.shape[0]} frames")
            return self._read(index, index + 1)[0][rest] if rest else self._read(index, index + 1)[0]
        if isinstance(first, range):
            first = np.asarray(first)
        if isinstance(first, slice):
            start, stop, step = first.indices(self.shape[0])
            if step == 1:
                frames = self._read(start, max(start, stop))
            else:
                frames = self._read_many(range(start, stop, step))
        else:
            frames = self._read_many(np.arange(self.shape[0])[first])
        return frames[(slice(None), *rest)] if rest else frames

    def _read_many(self, indices: Any) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        for i, index in enumerate(indices):
            out[i] = self._read(int(index), int(index) + 1)[0]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self._read(0, self.shape[0])
        return frames if dtype is None else frames.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, dtype={self.dtype})"


def _as_frames(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """Squeeze a stored shape to (frames, y, x), refusing real extra dimensions."""
    core = [n for n in shape[:-2] if n != 1]
    if len(core) > 1:
        raise MovieReadError(
            f"{path} has shape {shape}: more than one non-singleton dimension besides y, x "
            "(channels or z planes?). Split it into one (frames, y, x) movie per channel/plane."
        )
    frames = core[0] if core else 1
    return (frames, shape[-2], shape[-1])


def read_tiff(path: Path) -> np.ndarray | LazyFrames:
    """A TIFF movie: a memmap when the data are contiguous and uncompressed, else lazy pages."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape = _as_frames(series.shape, path)
        dtype = series.dtype
        n_pages = len(series.pages) if hasattr(series, "pages") else len(tif.pages)
    try:
        return tifffile.memmap(path, mode="r").reshape(shape)
    except ValueError:
        pass  # compressed or scattered pages: read them on demand

    frames_per_page = shape[0] // max(n_pages, 1) or 1

    def read(start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *shape[1:]), dtype=dtype)
        with tifffile.TiffFile(path) as tif:
            if frames_per_page == 1:
                data = tif.series[0].asarray(key=range(start, stop))
            else:  # one page holds several frames (rare): read all, keep the slice
                data = tif.series[0].asarray().reshape(shape)[start:stop]
        return np.asarray(data).reshape((stop - start, *shape[1:]))

    return LazyFrames(shape, dtype, read)


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` movie, memory-mapped read-only."""
    array = np.load(path, mmap_mode="r")
    return array.reshape(_as_frames(array.shape, path))


def read_hdf5(path: Path, var_name_hdf5: str = "mov") -> LazyFrames:
    """An HDF5 movie stored as dataset ``var_name_hdf5``, read by frame ranges."""
    import h5py

    with h5py.File(path, "r") as f:
        if var_name_hdf5 not in f:
            names: list[str] = []
            f.visit(names.append)
            raise MovieReadError(
                f"{path} has no dataset {var_name_hdf5!r} (it has: {', '.join(names) or 'none'}); "
                "set 'var_name_hdf5' in params['main']."
            )
        dataset = f[var_name_hdf5]
        shape = _as_frames(dataset.shape, path)
        dtype = dataset.dtype

    def read(start: int, stop: int) -> np.ndarray:
        with h5py.File(path, "r") as f:
            return np.asarray(f[var_name_hdf5][start:stop]).reshape((stop - start, *shape[1:]))

    return LazyFrames(shape, dtype, read)


_MMAP_NAME = re.compile(r"_d1_(\d+)_d2_(\d+)_d3_(\d+)_order_([CF])_frames_(\d+)")


def read_caiman_mmap(path: Path) -> LazyFrames:
    """A CaImAn ``.mmap`` file: (pixels, frames) float32, dims and order in the file name."""
    match = _MMAP_NAME.search(path.name)
    if match is None:
        raise MovieReadError(
            f"{path}: a CaImAn .mmap name must contain _d1_<y>_d2_<x>_d3_<z>_order_<C|F>_frames_<T>."
        )
    d1, d2, d3, order, n_frames = match.groups()
    d1, d2, d3, n_frames = int(d1), int(d2), int(d3), int(n_frames)
    if d3 != 1:
        raise MovieReadError(f"{path}: 3D (d3={d3}) CaImAn memmaps are not supported.")
    yr = np.memmap(path, mode="r", dtype=np.float32, shape=(d1 * d2, n_frames), order=order)

    def read(start: int, stop: int) -> np.ndarray:
        # CaImAn flattens pixels in Fortran order: pixel index = y + x * d1
        block = np.asarray(yr[:, start:stop]).T
        return block.reshape((stop - start, d2, d1)).transpose(0, 2, 1)

    return LazyFrames((n_frames, d1, d2), np.float32, read)


BUILTIN_READERS: dict[str, Reader] = {
    ".tif": read_tiff,
    ".tiff": read_tiff,
    ".btf": read_tiff,
    ".npy": read_npy,
    ".h5": read_hdf5,
    ".hdf5": read_hdf5,
    ".mmap": read_caiman_mmap,
}


def open_movie(
    path: str | os.PathLike,
    reader: Reader | None = None,
    var_name_hdf5: str = "mov",
) -> Any:
    """Open a movie as a lazy ``(frames, y, x)`` array.

    Parameters
    ----------
    path
        The movie file.
    reader
        Optional callable ``reader(path) -> array (frames, y, x)`` for formats not built in.
    var_name_hdf5
        Dataset name inside HDF5 files.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    MovieReadError
        If no reader fits the file or the reader fails; the message names the file and the
        readers tried.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Movie {path} does not exist.")
    if reader is not None:
        name = getattr(reader, "__name__", repr(reader))
        try:
            movie = reader(path)
        except Exception as err:
            raise MovieReadError(f"Reader {name} failed on {path}: {err}") from err
        if getattr(movie, "ndim", len(getattr(movie, "shape", ()))) != 3:
            raise MovieReadError(
                f"Reader {name} returned shape {getattr(movie, 'shape', None)} for {path}; "
                "expected (frames, y, x)."
            )
        return movie
    suffix = path.suffix.lower()
    builtin = BUILTIN_READERS.get(suffix)
    if builtin is None:
        raise MovieReadError(
            f"No reader for {path} (suffix {suffix!r}). Built-in readers: "
            f"{', '.join(sorted(BUILTIN_READERS))}; pass reader=callable(path) -> (frames, y, x) "
            "for other formats."
        )
    try:
        if builtin is read_hdf5:
            return read_hdf5(path, var_name_hdf5)
        return builtin(path)
    except MovieReadError:
        raise
    except Exception as err:
        raise MovieReadError(
            f"Cannot read {path} with the {builtin.__name__} reader ({type(err).__name__}: {err}). "
            "Is the file complete and of the format its suffix says?"
        ) from err
