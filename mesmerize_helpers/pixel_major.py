"""The pixel-major copy of a movie that source extraction reads (CaImAn's ``Yr``).

CNMF and CNMF-E read each pixel's whole trace many times; a registered movie is stored frame
by frame. So every source-extraction input gets one float32 (pixels, frames) copy, each
pixel's trace contiguous and pixels in Fortran order on (y, x): CaImAn's C-order memmap,
named as CaImAn names them (``caiman.load_memmap`` reads it) and by the run that wrote it.
An mcorr item writes it from its registered movie once registered
(:func:`write_pixel_major`: band by band, every byte written once) and every cnmf/cnmfe item
on it reads it; a cnmf item on a raw movie writes its own (from a plain file of frames the
same way, from other movies as the frames come: :class:`YrWriter`). It lives in the item folder of the
item that wrote it, is replaced by that item's next run and removed with the item.

Here also the working matrices of a fit (:class:`FileWorkspace`): in memory when they fit
the job's budget, else in an unlinked temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import _preallocate

__all__ = ["YR_GLOB", "yr_name", "PixelMajorWriter", "YrWriter", "write_pixel_major",
           "FileWorkspace"]


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
            data = np.ascontiguousarray(values)
            view, position = memoryview(data).cast("B"), row * self.shape[1] * 4
            while view:
                written = os.pwrite(self._fd, view, position)
                view, position = view[written:], position + written
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


class YrWriter:
    """Writes a movie's pixel-major copy (:data:`YR_GLOB`) from its frames, in order.

    Used as the write side of a (frames, y, x) array, ``writer[a:b] = frames`` (chunks in
    increasing order, e.g. by motion correction next to :class:`MovieWriter`), or with
    :meth:`add`. Frames are gathered into a buffer of ``buffer_bytes`` and written as
    blocks of frames (pixels in Fortran order on (y, x)). Missing values (NaN: the borders
    that ``border_nan=True`` leaves) are filled on :meth:`close` with the pixel's mean over
    its other frames (0 for a pixel missing in every frame), as the in-memory fit did, with
    one warning unless ``warn`` is False (an mcorr item: its children warn when they read
    it).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int],
                 buffer_bytes: int = 128 << 20, warn: bool = True) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.warn = warn
        T, h, w = self.shape
        self.path = Path(path)
        self._file = PixelMajorWriter(self.path, (h * w, T))
        self._n_buf = int(max(min(buffer_bytes // (h * w * 4), T), 1))
        self._buf = np.empty((h * w, self._n_buf), np.float32)
        self._start = self._count = 0
        self._nan = np.zeros(h * w, bool)

    def __setitem__(self, key: slice, frames: np.ndarray) -> None:
        start, stop, _ = key.indices(self.shape[0])
        if start != self._start + self._count:
            self.flush()
            self._start = start
        self.add(frames)

    def add(self, frames: np.ndarray) -> None:
        """Append a (n, y, x) chunk of frames."""
        frames = np.asarray(frames, np.float32)
        i = 0
        while i < len(frames):
            n = min(self._n_buf - self._count, len(frames) - i)
            # (n, y, x) -> (x, y, n) -> rows y + x * height: Fortran order on (y, x)
            self._buf[:, self._count:self._count + n] = (
                frames[i:i + n].transpose(2, 1, 0).reshape(-1, n))
            self._count += n
            i += n
            if self._count == self._n_buf:
                self.flush()

    def flush(self) -> None:
        if self._count:
            block = self._buf[:, :self._count]
            self._nan |= np.isnan(block).any(axis=1)
            self._file.write(0, self._start, block)
            self._start += self._count
            self._count = 0

    def close(self) -> int:
        """Write what is buffered, fill missing values; the number of pixels that had NaN
        (with a warning if ``warn``)."""
        import warnings

        from .engine.model import fill_missing

        self.flush()
        self._buf = np.empty((0, 0), np.float32)
        rows = np.flatnonzero(self._nan)
        for i in range(0, len(rows), 256):  # NaN pixels are rare: a few rows at a time
            chunk = rows[i:i + 256]
            yr = np.memmap(self.path, np.float32, "r", shape=self._file.shape)
            values = np.array(yr[chunk])
            del yr
            with warnings.catch_warnings():
                if not self.warn:
                    warnings.simplefilter("ignore", UserWarning)
                fill_missing(values)
            for r, v in zip(chunk, values):
                self._file.write(int(r), 0, v[None])
        self._file.close()
        return len(rows)

    def __enter__(self) -> YrWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()


#: Smallest band of :func:`write_pixel_major` (bytes).
MIN_BAND_BYTES = 64 << 20


def write_pixel_major(frames: Any, path: str | os.PathLike, band_bytes: int | None = None,
                      warn: bool = True, progress: bool = False) -> int:
    """Write the pixel-major copy (:data:`YR_GLOB`) of a movie stored frame by frame.

    The copy is written band by band: a band of image rows of every frame (a part of one
    row when a whole row of a long movie exceeds ``band_bytes``) is read with one ``pread``
    per frame, transposed in memory, and each of its columns goes out as one write of
    whole pixel traces (pixels ``y + x * height`` are consecutive rows of the file). Every
    byte of the file is written once. Writing frames as they come instead
    (:class:`YrWriter`) puts a few hundred bytes into each pixel's trace per block of frames,
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
    int
        The number of pixels that had missing values.
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
    missing = 0
    with PixelMajorWriter(path, (h * w, T)) as out:
        for ys, xs in tqdm(bands, desc="pixel-major copy", disable=not progress):
            shape = (T, ys.stop - ys.start, xs.stop - xs.start)
            band = frames.window(ys, xs, out=read_buffer[:np.prod(shape)].reshape(shape))
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
    return missing


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

    def __init__(self, folder: str | os.PathLike, budget: Any) -> None:
        self.folder = Path(folder)
        self.budget = budget

    def matrix(self, shape: tuple[int, int]) -> Any:
        from .engine.data import MemoryWorkspace

        work = self.budget.work_bytes()
        if work is None or shape[0] * shape[1] * 4 <= work // 2:
            return MemoryWorkspace(self.budget).matrix(shape)
        return _FileMatrix(self.folder, shape, self.budget)


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
