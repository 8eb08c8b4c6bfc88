"""The pixel-major copy of a movie that source extraction reads (CaImAn's ``Yr``).

CNMF and CNMF-E read each pixel's whole trace many times; a registered movie is stored frame
by frame. So every source-extraction input gets one float32 (pixels, frames) copy, each
pixel's trace contiguous and pixels in Fortran order on (y, x): CaImAn's C-order memmap,
named as CaImAn names them (``caiman.load_memmap`` reads it) and by the run that wrote it.
An mcorr item writes it from its registered movie once registered
(:func:`write_pixel_major`: band by band, every byte written once) and every cnmf/cnmfe item
on it reads it; a cnmf item on a raw movie writes its own the same way (from the movie file
itself when it is a plain file of frames, else from a temporary decoded copy). It lives in
the item folder of the item that wrote it, is replaced by that item's next run and removed
with the item.

Here also the working matrices of a fit (:class:`FileWorkspace`): in memory when they fit
the job's budget, else in an unlinked temporary file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .outputs import _pread_into, _preallocate, _pwrite_all

__all__ = ["YR_GLOB", "yr_name", "PixelMajorWriter", "write_pixel_major",
           "FileWorkspace", "FileFrames"]


#: The pixel-major copy of a movie that source extraction reads (CaImAn's ``Yr``): named
#: by the run that wrote it and by its shape, as CaImAn names its C-order memmaps (so that
#: ``caiman.load_memmap`` reads it).
YR_GLOB = "Yr-*_d1_*_d2_*_d3_1_order_C_frames_*.mmap"


def yr_name(run_id: str, dims: tuple[int, int], n_frames: int) -> str:
    """File name of the pixel-major movie of run ``run_id`` (see :data:`YR_GLOB`)."""
    return f"Yr-{run_id}_d1_{int(dims[0])}_d2_{int(dims[1])}_d3_1_order_C_frames_{int(n_frames)}.mmap"


class PixelMajorWriter:
    """A float32 (pixels, T) C-order file (each pixel's trace contiguous) written in blocks.

    ``write(row, frame, values)`` puts a (rows, frames) block in place: whole rows with one
    ``pwrite``; a block of frames through a writable mapping whose pages are released from
    the process after each block (the OS writes them to the file), so the process's memory
    stays that of a block. The file's space is allocated up front (a full disk is an
    ``OSError`` here, not a crash later).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int]) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        with open(self.path, "wb") as f:
            f.truncate(self.shape[0] * self.shape[1] * 4)
        try:
            _preallocate(self.path)
        except OSError:
            self.path.unlink(missing_ok=True)
            raise
        self._fd = os.open(self.path, os.O_RDWR)
        self._mm: np.memmap | None = None

    def write(self, row: int, frame: int, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32)
        n, m = values.shape
        if frame == 0 and m == self.shape[1]:
            _pwrite_all(self._fd, np.ascontiguousarray(values), row * self.shape[1] * 4)
            return
        if self._mm is None:
            self._mm = np.memmap(self.path, np.float32, "r+", shape=self.shape)
        # a few MB of the file's pages mapped at a time (a row's part may not fill a page)
        step = max((8 << 20) // max(m * 4, 4096), 1)
        for r in range(0, n, step):
            self._mm[row + r:row + min(r + step, n), frame:frame + m] = values[r:r + step]
            _release(self._mm, row + r, row + min(r + step, n))

    def close(self) -> None:
        if self._mm is not None:
            self._mm.flush()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PixelMajorWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _release(mm: np.memmap, lo: int, hi: int) -> None:
    """Drop rows ``lo:hi`` of a (rows, T) memmap from the process's memory."""
    import mmap

    raw = getattr(mm, "_mmap", None)
    if raw is None or hi <= lo:
        return
    row_bytes = mm.shape[1] * 4
    start = lo * row_bytes // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        raw.madvise(mmap.MADV_DONTNEED, start, min(hi * row_bytes, len(raw)) - start)
    except (ValueError, OSError):
        pass


class PixelMajorCopy(NamedTuple):
    """What :func:`write_pixel_major` saw in the movie."""

    #: pixels with missing values (NaN), filled with their mean over the other frames
    missing_pixels: int
    #: values that were NaN or infinite
    nonfinite_values: int


#: Smallest band of :func:`write_pixel_major` (bytes).
MIN_BAND_BYTES = 64 << 20


def write_pixel_major(frames: Any, path: str | os.PathLike, band_bytes: int | None = None,
                      warn: bool = True, progress: bool = False) -> PixelMajorCopy:
    """Write the pixel-major copy (:data:`YR_GLOB`) of a movie stored frame by frame.

    The copy is written band by band: a band of image rows of every frame (a part of one
    row when a whole row of a long movie exceeds ``band_bytes``) is read with one ``pread``
    per frame, transposed in memory, and each of its columns goes out as one write of
    whole pixel traces (pixels ``y + x * height`` are consecutive rows of the file). Every
    byte of the file is written once. Writing frames as they come instead puts a few
    hundred bytes into each pixel's trace per block of frames,
    and the OS writes each page of the file back again and again: 16 times the file's size
    for 4,096 frames of 512 x 512 in blocks of 256 frames, growing with the movie's length.
    Missing values (NaN) are filled with their pixel's mean over the other frames (0 for a
    pixel missing in every frame), with one warning unless ``warn`` is False.

    Parameters
    ----------
    frames
        The movie, (T, y, x): a :class:`~.outputs.FrameReader` (a C-contiguous file of
        whole frames, e.g. the registered ``mcorr.npy``).
    path
        The file to write (replaced).
    band_bytes
        Largest band, bytes as float32 (the job holds it twice: as read and transposed);
        default 256 MB. A band holds 16 image rows of every frame, at least
        :data:`MIN_BAND_BYTES` (long movies: fewer reads; short ones: buffers that stay in
        the caches and are reused from band to band).

    Returns
    -------
    PixelMajorCopy
        How many pixels had missing values, and how many values were NaN or infinite
        (the registered movie's count for its manifest, without reading it again).
    """
    import warnings

    from tqdm.auto import tqdm

    from .engine.model import fill_missing

    T, h, w = (int(v) for v in frames.shape)
    trace = T * 4  # bytes of one pixel's trace
    band_bytes = min(int(band_bytes or (256 << 20)), max(16 * trace * w, MIN_BAND_BYTES))
    n_rows = max(min(band_bytes // (trace * w), h), 1)
    n_cols = w if band_bytes >= trace * w else max(min(band_bytes // trace, w), 1)
    bands = [(slice(y, min(y + n_rows, h)), slice(x, min(x + n_cols, w)))
             for y in range(0, h, n_rows) for x in range(0, w, n_cols)]
    # one buffer each for the band as read and transposed, reused (fresh pages cost more
    # than the copy)
    read_buffer = np.empty(T * n_rows * n_cols, frames.dtype)
    traces_buffer = np.empty(T * n_rows * n_cols, np.float32)
    missing = nonfinite = 0
    floating = np.issubdtype(np.dtype(frames.dtype), np.floating)
    with PixelMajorWriter(path, (h * w, T)) as out:
        for ys, xs in tqdm(bands, desc="pixel-major copy", disable=not progress):
            shape = (T, ys.stop - ys.start, xs.stop - xs.start)
            band = frames.window(ys, xs, out=read_buffer[:np.prod(shape)].reshape(shape))
            if floating:
                nonfinite += band.size - int(np.count_nonzero(np.isfinite(band)))
            traces = traces_buffer[:band.size].reshape(shape[2], shape[1], T)
            for r in range(band.shape[1]):  # (columns, rows, T), an image row at a time
                traces[:, r] = _transpose(band[:, r])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                missing += fill_missing(traces.reshape(-1, T))
            for i, column in enumerate(traces):  # pixels y + x * h, y in ys: one run
                out.write(ys.start + (xs.start + i) * h, 0, column)
    if missing and warn:
        warnings.warn(f"{missing} pixel(s) of the movie have missing values (NaN), e.g. the "
                      "borders left by motion correction with border_nan=True; each NaN is "
                      "replaced by its pixel's mean over the other frames (border_nan='copy' "
                      "in the mcorr params avoids them).", UserWarning, stacklevel=2)
    return PixelMajorCopy(missing, nonfinite)


def _transpose(a: np.ndarray) -> np.ndarray:
    """The transpose of a 2-D array as a new C-contiguous array: OpenCV's blocked transpose
    (numpy's strided copy of a large transposed view runs 8x slower)."""
    import cv2

    a = np.ascontiguousarray(a)
    if a.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64):
        return cv2.transpose(a)
    return np.ascontiguousarray(a.T)


class FileWorkspace:
    """Working matrices of a fit (CNMF-E's ``Y - B``): in memory when they fit the budget,
    else in a temporary pixel-major file in ``folder`` (a run's staging folder), unlinked as
    soon as it is written and mapped (its space is freed when the fit drops it, or the
    process ends)."""

    files = True

    def __init__(self, folder: str | os.PathLike, budget: Any, limit: int | None = None
                 ) -> None:
        self.folder = Path(folder)
        self.budget = budget
        #: arrays over this many bytes go to a file (default: half the budget's work bytes)
        self.limit = limit

    def _in_memory(self, nbytes: int) -> bool:
        if self.limit is not None:
            return nbytes <= self.limit
        work = self.budget.work_bytes()
        return work is None or nbytes <= work // 2

    def matrix(self, shape: tuple[int, int]) -> Any:
        from .engine.data import MemoryWorkspace

        if self._in_memory(shape[0] * shape[1] * 4):
            return MemoryWorkspace(self.budget).matrix(shape)
        return _FileMatrix(self.folder, shape, self.budget)

    def frames(self, shape: tuple[int, int, int]) -> Any:
        """A (T, y, x) float32 movie read and written by slices of frames (see
        ``engine.data.Workspace.frames``): an array, or an unlinked file read and written
        with ``pread``/``pwrite`` (its pages are the OS's cache, not the process's memory)."""
        if self._in_memory(int(np.prod(shape)) * 4):
            return np.empty(shape, np.float32)
        return FileFrames(self.folder, shape)

    def spilling(self, limit: int) -> FileWorkspace:
        return FileWorkspace(self.folder, self.budget, int(limit))


class FileFrames:
    """A float32 (T, y, x) movie in an unlinked temporary file, by slices of frames:
    ``store[t0:t1]`` reads (a new array), ``store[t0:t1] = values`` writes."""

    def __init__(self, folder: str | os.PathLike, shape: tuple[int, int, int]) -> None:
        import secrets
        import tempfile

        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self._frame_bytes = self.shape[1] * self.shape[2] * 4
        fd, name = tempfile.mkstemp(prefix=f".frames-{secrets.token_hex(4)}-", suffix=".f32",
                                    dir=folder)
        os.unlink(name)  # the space is freed when the store is dropped or the process ends
        self._fd = fd
        size = self.shape[0] * self._frame_bytes
        try:
            os.ftruncate(fd, size)
            if hasattr(os, "posix_fallocate") and size:  # a full disk fails here
                os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # (cannot reserve: go on)
                os.close(fd)
                raise OSError(err.errno, f"{os.strerror(err.errno)}: cannot allocate "
                              f"{size / 1e6:.0f} MB of temporary frames in", str(folder)
                              ) from None

    def __len__(self) -> int:
        return self.shape[0]

    def _range(self, key: slice) -> tuple[int, int]:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileFrames reads and writes slices of consecutive frames.")
        t0, t1, _ = key.indices(self.shape[0])
        return t0, max(t1, t0)

    def __getitem__(self, key: slice) -> np.ndarray:
        t0, t1 = self._range(key)
        out = np.empty((t1 - t0,) + self.shape[1:], np.float32)
        if t1 > t0:
            _pread_into(self._fd, out, t0 * self._frame_bytes, "temporary frames ended early")
        return out

    def __setitem__(self, key: slice, values: np.ndarray) -> None:
        t0, t1 = self._range(key)
        data = np.ascontiguousarray(np.broadcast_to(values, (t1 - t0,) + self.shape[1:]),
                                    np.float32)
        _pwrite_all(self._fd, data, t0 * self._frame_bytes)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class _FileMatrix:
    def __init__(self, folder: Path, shape: tuple[int, int], budget: Any) -> None:
        import secrets

        self.path = folder / f".work-{secrets.token_hex(4)}.f32"
        self.budget = budget
        self._writer = PixelMajorWriter(self.path, shape)

    def write(self, row: int, frame: int, values: np.ndarray) -> None:
        self._writer.write(row, frame, values)

    def done(self, dims: tuple[int, int]) -> Any:
        from .engine.data import DataMatrix

        self._writer.close()
        try:
            Y = np.memmap(self.path, np.float32, "r", shape=self._writer.shape)
            return DataMatrix(Y, dims, self.budget)
        finally:
            self.path.unlink(missing_ok=True)
