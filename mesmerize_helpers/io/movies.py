"""Movie readers: every reader returns a lazy ``(frames, y, x)`` array that reads on slicing.

Built in: TIFF (multi-page, BigTIFF, ImageJ hyperstacks, any bit depth), ``.npy``, HDF5
(dataset ``var_name_hdf5``) and CaImAn ``.mmap``. Anything else takes a user callable
``reader(path) -> array (frames, y, x)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .lazy import LazyArray

Reader = Callable[[Path], Any]


class MovieReadError(ValueError):
    """A movie file could not be read; the message names the file and the readers tried."""


class LazyFrames(LazyArray):
    """A read-only ``(frames, y, x)`` movie that reads frames from disk when indexed.

    It has the interface of mesmerize-core's lazy arrays (:mod:`.lazy`) but clips slices at
    the last frame as numpy does, so chunked loops (``movie[i:i + 200]``) just work.

    Parameters
    ----------
    shape
        ``(frames, y, x)``.
    dtype
        The element type of the frames returned.
    read
        ``read(start, stop) -> ndarray (stop - start, y, x)``.
    """

    _strict_bounds = False

    def __init__(self, shape: tuple[int, int, int], dtype: Any, read: Callable[[int, int], np.ndarray]):
        self._shape = tuple(int(n) for n in shape)
        self._dtype = np.dtype(dtype)
        self._read = read

    def _frames(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) and np.all(np.diff(indices) == 1):
            return np.asarray(self._read(int(indices[0]), int(indices[-1]) + 1))
        out = np.empty((len(indices), *self._shape[1:]), dtype=self._dtype)
        for i, index in enumerate(indices):
            out[i] = self._read(int(index), int(index) + 1)[0]
        return out


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


#: Metadata datasets some tools add to HDF5 movies, never the movie itself.
_HDF5_IGNORED = ("__DATA_TYPES__",)


def _hdf5_dataset(f: Any, path: Path, var_name_hdf5: str) -> str:
    """The name of the movie dataset: ``var_name_hdf5`` (NWB: ``acquisition/<name>/data``),
    or the only dataset of a file that holds just one, whatever its name (mesmerize-core's
    rule, so a file saved with another name than ``"mov"`` still opens)."""
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name)
                 if isinstance(obj, h5py.Dataset) and name.split("/")[-1] not in _HDF5_IGNORED
                 else None)
    wanted = f"acquisition/{var_name_hdf5}/data" if path.suffix.lower() == ".nwb" else var_name_hdf5
    if wanted in f and isinstance(f[wanted], h5py.Dataset):
        return wanted
    if len(names) == 1:
        return names[0]
    raise MovieReadError(
        f"{path} has no dataset {wanted!r} (it has: {', '.join(names) or 'none'}); "
        "set 'var_name_hdf5' in params['main']."
    )


def read_hdf5(path: Path, var_name_hdf5: str = "mov") -> LazyFrames:
    """An HDF5 movie (also ``.nwb``, MATLAB v7.3 ``.mat``), read by frame ranges: dataset
    ``var_name_hdf5``, or the file's only dataset."""
    import h5py

    with h5py.File(path, "r") as f:
        name = _hdf5_dataset(f, path, var_name_hdf5)
        shape = _as_frames(f[name].shape, path)
        dtype = f[name].dtype

    def read(start: int, stop: int) -> np.ndarray:
        with h5py.File(path, "r") as f:
            return np.asarray(f[name][start:stop]).reshape((stop - start, *shape[1:]))

    return LazyFrames(shape, dtype, read)


_MMAP_NAME = re.compile(r"_d1_(\d+)_d2_(\d+)_d3_(\d+)_order_([CF])_frames_(\d+)")


def read_caiman_mmap(path: Path, mode: str = "r") -> np.memmap:
    """A CaImAn ``.mmap`` file as a (frames, y, x) memmap view (no copy).

    The file is float32 (pixels, frames) with pixels in Fortran order (``y + x * d1``); the
    name gives the size and the storage order: ``..._d1_<y>_d2_<x>_d3_<z>_order_<C|F>_frames_<T>``
    (the last such group when a name holds several, as CaImAn appends its own).
    ``order_F`` files store each frame contiguously, ``order_C`` ones each pixel's trace.
    """
    yr, (d1, d2) = caiman_mmap_matrix(path, mode)
    return np.reshape(yr.T, (yr.shape[1], d1, d2), order="F")


def caiman_mmap_matrix(path: str | os.PathLike, mode: str = "r"
                       ) -> tuple[np.memmap, tuple[int, int]]:
    """A CaImAn ``.mmap`` file as CaImAn's ``Yr``, the (pixels, frames) float32 memmap (in
    the file's order), and the frame size (y, x); see :func:`read_caiman_mmap`."""
    path = Path(path)
    matches = list(_MMAP_NAME.finditer(path.name))
    if not matches:
        raise MovieReadError(
            f"{path}: a CaImAn .mmap name must contain _d1_<y>_d2_<x>_d3_<z>_order_<C|F>_frames_<T>."
        )
    d1, d2, d3, order, n_frames = matches[-1].groups()
    d1, d2, d3, n_frames = int(d1), int(d2), int(d3), int(n_frames)
    if d3 != 1:
        raise MovieReadError(f"{path}: 3D (d3={d3}) CaImAn memmaps are not supported.")
    expected = 4 * d1 * d2 * n_frames
    if path.stat().st_size != expected:
        raise MovieReadError(f"{path} has {path.stat().st_size} bytes; its name says "
                             f"{n_frames} float32 frames of {d1} x {d2} ({expected} bytes).")
    yr = np.memmap(path, mode=mode, dtype=np.float32, shape=(d1 * d2, n_frames), order=order)
    return yr, (d1, d2)


BUILTIN_READERS: dict[str, Reader] = {
    ".tif": read_tiff,
    ".tiff": read_tiff,
    ".btf": read_tiff,
    ".npy": read_npy,
    ".h5": read_hdf5,
    ".hdf5": read_hdf5,
    ".nwb": read_hdf5,
    ".mat": read_hdf5,
    ".mmap": read_caiman_mmap,
    ".memmap": read_caiman_mmap,
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


def open_memmap(path: str | os.PathLike, mode: str = "r") -> np.memmap:
    """A registered or CNMF-input movie as a (frames, y, x) memmap: our C-order ``.npy``, or
    a CaImAn ``.mmap`` (as a mesmerize-core batch holds them).

    Parameters
    ----------
    mode
        numpy's memmap mode: ``"r"``, ``"r+"``, ``"c"`` (``"w+"`` would erase the movie and
        is refused).
    """
    path = Path(path)
    if mode not in ("r", "r+", "c"):
        raise ValueError(f"mode must be 'r', 'r+' or 'c' for an existing movie, got {mode!r}.")
    if path.suffix.lower() in (".mmap", ".memmap"):
        return read_caiman_mmap(path, mode)
    return np.load(path, mmap_mode=mode)


def read_input_movie(path: str | os.PathLike, params: Mapping[str, Any],
                     reader: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """An item's input movie as mesmerize-core's ``get_input_movie`` reads it.

    ``reader(str(path), **kwargs)`` when given (any callable returning an array-like), else
    the built-in reader of the file's format (:func:`open_movie`). Both get
    ``var_name_hdf5`` when the item's ``params["main"]`` sets it (flat or in the ``"data"``
    group).

    Raises
    ------
    TypeError
        When ``reader`` is not callable, or the built-in readers get other ``kwargs``.
    """
    main = params.get("main", {})
    if "var_name_hdf5" in main:
        kwargs["var_name_hdf5"] = main["var_name_hdf5"]
    elif isinstance(main.get("data"), Mapping) and "var_name_hdf5" in main["data"]:
        kwargs["var_name_hdf5"] = main["data"]["var_name_hdf5"]
    if reader is not None:
        if not callable(reader):
            raise TypeError(f"reader must be callable (path, **kwargs) -> array; got "
                            f"{type(reader).__name__}.")
        return reader(str(path), **kwargs)
    var_name = kwargs.pop("var_name_hdf5", "mov")
    if kwargs:
        raise TypeError(f"The built-in movie readers take no {sorted(kwargs)}; pass a reader "
                        "that does.")
    return open_movie(path, var_name_hdf5=var_name)
