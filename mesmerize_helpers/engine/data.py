"""The movie as source extraction reads it: the (pixels, T) data matrix ``Y``, in blocks.

Every step of CNMF and CNMF-E reads the movie through a :class:`DataMatrix`, never as a
whole: noise estimation, patches, the background, the spatial and temporal updates, the ring
model and the evaluation each take the rows (pixels) or frames they need, a block at a time,
so that a job's memory does not grow with the number of frames. The matrix is either an
array in memory (the whole movie fits: the in-RAM path) or a pixel-major float32 file mapped
into memory (CaImAn's ``Yr`` layout: each pixel's trace contiguous, pixels in Fortran order
on ``(y, x)``, index ``y + x * height``), which the job hands in as a ``np.memmap``.

A file's data is read through the mapping (a block of rows as a view, without a copy) or
with ``pread`` into fresh arrays (gathered rows), and the mapped pages are released from the
process (``madvise``) once the next block is read, so that the pages a job has read do not
stay in its resident memory: the operating system still caches the file, but the job's
peak memory is that of its blocks.

How big a block is comes from a :class:`Budget` (the job's ``resources.mem_mb``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from .budget import (  # noqa: F401 (re-exported: the data matrix's budget)
    BASE_BYTES,
    MAX_BLOCK_BYTES,
    MB,
    MIN_BLOCK_BYTES,
    Budget,
    MemoryBudgetError,
    require,
)

__all__ = ["Budget", "DataMatrix", "as_data", "MemoryWorkspace", "Workspace", "MB",
           "MemoryBudgetError", "require", "put_frames", "frames_per_block"]


class DataMatrix:
    """Read access to a float32 (pixels, T) matrix, by blocks of rows or of frames.

    Parameters
    ----------
    Y
        (pixels, T) float32, C order: an ndarray (in memory), or a ``np.memmap`` of a
        pixel-major file (read with ``pread`` and released page by page, see the module).
    dims
        (y, x) frame size; ``pixels == y * x`` (Fortran order) unless ``rows`` is given.
    budget
        Sizes the blocks (default: unlimited, one block).
    rows
        Optional sorted pixel indices into ``Y``: this matrix is then the sub-matrix of those
        rows (a patch), ``dims`` its own frame size.

    Every read returns an array the caller must not write into: a view of ``Y`` (in memory,
    or of a file's mapping for a block of rows, valid as long as the matrix lives) or a
    fresh array.
    """

    def __init__(self, Y: np.ndarray, dims: tuple[int, int], budget: Budget | None = None,
                 rows: np.ndarray | None = None) -> None:
        if Y.ndim != 2 or Y.dtype != np.float32 or not Y.flags.c_contiguous:
            raise ValueError(f"DataMatrix needs a C-order float32 (pixels, T) array; got "
                             f"{Y.dtype} {Y.shape}.")
        self._Y = Y
        self.dims = (int(dims[0]), int(dims[1]))
        self.budget = budget or Budget()
        self._rows = None if rows is None else np.asarray(rows, np.int64)
        n = Y.shape[0] if rows is None else len(self._rows)
        if n != self.dims[0] * self.dims[1]:
            raise ValueError(f"{n} pixels do not make frames of {self.dims}.")
        self.shape = (int(n), int(Y.shape[1]))
        self._file = _file_of(Y)
        self._viewed: tuple[int, int] | None = None

    # --- what it is ----------------------------------------------------------------------

    @property
    def n_pixels(self) -> int:
        return self.shape[0]

    @property
    def n_frames(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def in_memory(self) -> bool:
        """True when the data is an array in memory (reads are views, nothing is copied)."""
        return self._file is None

    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

    @property
    def path(self) -> str | None:
        """The file the data is read from (None in memory)."""
        return None if self._file is None else self._file.path

    def subset(self, pixels: np.ndarray, dims: tuple[int, int]) -> DataMatrix:
        """The rows ``pixels`` (sorted indices into this matrix) as a matrix of frames of
        ``dims`` (a patch, pixels in the patch's Fortran order)."""
        pixels = np.asarray(pixels, np.int64)
        rows = pixels if self._rows is None else self._rows[pixels]
        return DataMatrix(self._Y, dims, self.budget, rows)

    def materialize(self) -> DataMatrix:
        """This matrix with its data in memory (itself when it already is a plain array):
        for data read many times, when it fits."""
        if self.in_memory and self._rows is None:
            return self
        return DataMatrix(np.ascontiguousarray(self.rows(0, self.n_pixels)), self.dims,
                          self.budget)

    def with_budget(self, budget: Budget) -> DataMatrix:
        """The same data read in blocks of another budget."""
        return DataMatrix(self._Y, self.dims, budget, self._rows)

    # --- block sizes -----------------------------------------------------------------------

    def rows_per_block(self, copies: float = 1.0) -> int:
        """Rows per block when a step holds ``copies`` block-sized arrays per row read."""
        limit = self.budget.block_bytes()
        if limit is None:
            return max(self.shape[0], 1)
        per_row = max(self.shape[1] * 4 * copies, 1)
        return int(min(max(limit // per_row, 1), max(self.shape[0], 1)))

    def frames_per_block(self, copies: float = 1.0) -> int:
        """Frames per block of all pixels (see :meth:`rows_per_block`)."""
        limit = self.budget.block_bytes()
        if limit is None:
            return max(self.shape[1], 1)
        per_frame = max(self.shape[0] * 4 * copies, 1)
        return int(min(max(limit // per_frame, 1), max(self.shape[1], 1)))

    def row_blocks(self, copies: float = 1.0) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of consecutive row blocks covering the matrix."""
        step = self.rows_per_block(copies)
        for start in range(0, self.shape[0], step):
            yield start, min(start + step, self.shape[0])

    def frame_blocks(self, copies: float = 1.0) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of consecutive frame blocks covering the matrix."""
        step = self.frames_per_block(copies)
        for start in range(0, self.shape[1], step):
            yield start, min(start + step, self.shape[1])

    # --- reads -------------------------------------------------------------------------------

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, (n, T) float32."""
        if self._rows is not None:
            return self.take_rows(np.arange(start, stop))
        if self._file is None:
            return self._Y[start:stop]
        # a view of the mapped file (no copy): its pages leave the process's memory when
        # the next block is read (or on release()); a view kept longer stays valid
        self.release()
        self._viewed = (start, stop)
        return self._Y[start:stop]

    def release(self) -> None:
        """Drop the pages of the last block read from a file from the process's memory."""
        if self._file is not None and self._viewed is not None:
            self._file.release(*self._viewed)
            self._viewed = None

    def take_rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted, distinct), (len(idx), T) float32."""
        idx = np.asarray(idx, np.int64)
        src = idx if self._rows is None else self._rows[idx]
        if self._file is None:
            return self._Y[src]
        out = np.empty((len(src), self.shape[1]), np.float32)
        for a, b in _runs(src):  # contiguous runs: one read each
            self._file.pread_rows(int(src[a]), out[a:b])
        return out

    def block(self, start: int, stop: int, frames: slice = slice(None)) -> np.ndarray:
        """Rows ``start:stop`` at frames ``frames`` (a slice), (n, n_frames) float32: a view
        of an array in memory, a fresh array read from a file."""
        if self._rows is None and self._file is None:
            return self._Y[start:stop, frames]
        t0, t1, step = frames.indices(self.shape[1])
        if (t0, t1, step) == (0, self.shape[1], 1):
            return self.rows(start, stop)
        return self.take(np.arange(start, stop), frames)

    def frames(self, start: int, stop: int) -> np.ndarray:
        """All pixels at frames ``start:stop``, (pixels, n) float32 (a copy)."""
        return self.take(None, slice(start, stop))

    def take(self, idx: np.ndarray | None, frames: Any) -> np.ndarray:
        """Rows ``idx`` (sorted; None: all) at ``frames`` (a slice or sorted indices),
        (n_rows, n_frames) float32 (a copy)."""
        rows = self._rows if idx is None else (
            np.asarray(idx, np.int64) if self._rows is None else self._rows[np.asarray(idx)])
        if self._file is not None and isinstance(frames, slice):
            return self._copy_mapped(rows, frames)
        if rows is None:
            out = np.array(self._Y[:, frames], np.float32)
        elif isinstance(frames, slice) and len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            out = np.array(self._Y[int(rows[0]):int(rows[-1]) + 1, frames], np.float32)
        elif isinstance(frames, slice):
            out = np.array(self._Y[rows, frames], np.float32)
        else:
            out = np.array(self._Y[np.ix_(rows, np.asarray(frames))], np.float32)
        if self._file is not None:
            lo = 0 if rows is None or not len(rows) else int(rows[0])
            hi = self._Y.shape[0] if rows is None or not len(rows) else int(rows[-1]) + 1
            self._file.release(lo, hi)
        return out

    def _copy_mapped(self, rows: np.ndarray | None, frames: slice) -> np.ndarray:
        """Rows (sorted; None: all) of the mapped file at a slice of frames, copied a block
        of rows at a time, each block's pages released after its copy: a slice of frames
        touches a page of every row (and the OS maps the pages around it), so one copy of a
        wide range mapped GBs (5.3 GB peak for a 480 x 480 x 10,000 ring model)."""
        rows = np.arange(self._Y.shape[0]) if rows is None else rows
        out = np.empty((len(rows), len(range(*frames.indices(self.shape[1])))), np.float32)
        span = max(int((self.budget.block_bytes() or MAX_BLOCK_BYTES) // self._file.row_bytes), 1)
        i = 0
        while i < len(rows):
            j = int(np.searchsorted(rows, rows[i] + span, side="left"))
            lo, hi = int(rows[i]), int(rows[j - 1]) + 1
            if hi - lo == j - i:
                out[i:j] = self._Y[lo:hi, frames]
            else:
                out[i:j] = self._Y[rows[i:j], frames]
            self._file.release(lo, hi)
            i = j
        return out

    def __reduce__(self) -> tuple:
        # worker processes reopen a file instead of receiving its data
        if self._file is not None:
            return (_reopen, (self._file.path, self._file.offset, self._Y.shape, self.dims,
                              self.budget, self._rows))
        data = self._Y if self._rows is None else self._Y[self._rows]  # a patch: its rows
        return (DataMatrix, (np.ascontiguousarray(data), self.dims, self.budget))

    # --- products ----------------------------------------------------------------------------

    def dot(self, V: np.ndarray, copies: float = 1.0) -> np.ndarray:
        """``Y @ V`` for a (T, m) matrix ``V``, (pixels, m) in ``V``'s float32."""
        V = np.ascontiguousarray(V, np.float32)
        out = np.empty((self.shape[0], V.shape[1]), np.float32)
        for a, b in self.row_blocks(copies):
            out[a:b] = self.rows(a, b) @ V
        self.release()
        return out

    def project(self, *Us: Any, dtype: Any = np.float32) -> Any:
        """``U.T @ Y`` for each (pixels, m) matrix ``U`` given (dense or sparse), (m, T) in
        ``dtype`` (a tuple when several are given; the data is read once for all).

        One block: each product in float32 as a whole (a dense ``U`` as ``(Y.T @ U).T``,
        the fast orientation for BLAS); several: partial products of the row blocks summed
        in ``dtype``.
        """
        blocks = list(self.row_blocks())
        whole = len(blocks) == 1
        # sparse: CSC, whose transpose (CSR) sums each output row in pixel order; sliced by
        # rows (CSR) when there are several blocks
        mats = [(sp.csc_matrix if whole else sp.csr_matrix)(U, dtype=np.float32)
                if sp.issparse(U) else np.asarray(U, np.float32) for U in Us]
        outs: list[Any] = [None] * len(mats)
        for a, b in blocks:
            parts = mats if whole else [U[a:b] for U in mats]
            if all(sp.issparse(P) and P.nnz == 0 for P in parts):
                continue
            Yb = self.rows(a, b)
            for i, P in enumerate(parts):
                if sp.issparse(P):
                    if P.nnz == 0:
                        continue
                    part = np.asarray((P if whole else P.tocsc()).T @ Yb)
                else:
                    part = (Yb.T @ np.ascontiguousarray(P)).T
                if whole or outs[i] is None:
                    outs[i] = np.asarray(part, dtype)
                else:
                    outs[i] += part
        self.release()
        result = tuple(np.zeros((U.shape[1], self.shape[1]), dtype) if o is None else o
                       for U, o in zip(mats, outs))
        return result if len(result) > 1 else result[0]

    def row_means(self) -> np.ndarray:
        """(pixels,) float64 mean of each row."""
        out = np.empty(self.shape[0], np.float64)
        for a, b in self.row_blocks():
            out[a:b] = self.rows(a, b).mean(axis=1, dtype=np.float64)
        self.release()
        return out

    def support_dots(self, supports: list[np.ndarray], C: np.ndarray) -> np.ndarray:
        """``Y[supports[k]] @ C[k]`` for every k, concatenated: each footprint's support
        rows projected on its own trace, (sum of support sizes,) float32.

        With the whole matrix in memory, one gather per support (as before); from a file,
        the union of the supports is read a block of rows at a time and each support's
        rows are taken from the blocks they fall in.
        """
        sizes = np.fromiter((s.size for s in supports), np.int64, len(supports))
        ptr = np.concatenate([[0], np.cumsum(sizes)])
        out = np.empty(int(ptr[-1]), np.float32)
        C = np.ascontiguousarray(C, np.float32)
        if self.in_memory and self._rows is None:
            for k, sup in enumerate(supports):
                out[ptr[k]:ptr[k + 1]] = self._Y[sup] @ C[k]
            return out
        pix = np.concatenate(supports) if len(supports) else np.zeros(0, np.int64)
        comp = np.repeat(np.arange(len(supports)), sizes)
        order = np.argsort(pix, kind="stable")
        needed = np.unique(pix)
        per_block = self.rows_per_block()
        for s in range(0, len(needed), per_block):
            rows = needed[s:s + per_block]
            block = self.take_rows(rows)
            lo, hi = np.searchsorted(pix[order], [rows[0], rows[-1] + 1])
            entries = order[lo:hi]  # support entries whose pixel is in this block
            where = np.searchsorted(rows, pix[entries])
            # per component: its entries' rows times its trace
            ec = comp[entries]
            by_comp = np.argsort(ec, kind="stable")
            bounds = np.flatnonzero(np.r_[True, ec[by_comp][1:] != ec[by_comp][:-1], True])
            for i in range(len(bounds) - 1):
                sel = by_comp[bounds[i]:bounds[i + 1]]
                k = int(ec[sel[0]])
                out[entries[sel]] = block[where[sel]] @ C[k]
        return out


def as_data(Y: Any, dims: tuple[int, int] | None = None,
            budget: Budget | None = None) -> DataMatrix:
    """``Y`` as a :class:`DataMatrix` (returned as is when it already is one, unless a
    ``budget`` is given). ``dims`` defaults to (pixels, 1) for steps that do not need the
    frame's shape."""
    if isinstance(Y, DataMatrix):
        return Y if budget is None else Y.with_budget(budget)
    if not isinstance(Y, np.ndarray) and hasattr(Y, "take") and hasattr(Y, "shape"):
        return Y  # another matrix read with take() (e.g. the data minus a background)
    Y = np.ascontiguousarray(Y, np.float32)
    return DataMatrix(Y, dims if dims is not None else (Y.shape[0], 1), budget)


def _runs(idx: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(a, b)`` positions of the runs of consecutive values in sorted ``idx``."""
    if not len(idx):
        return
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(idx)]
    yield from zip(starts.tolist(), stops.tolist())


class _MappedFile:
    """The file behind a ``np.memmap`` of a C-order (rows, T) float32 matrix."""

    def __init__(self, Y: np.memmap) -> None:
        self.path = str(Y.filename)
        self.offset = int(Y.offset)
        self.row_bytes = int(Y.shape[1]) * 4
        self.n_rows = int(Y.shape[0])
        self._mmap = getattr(Y, "_mmap", None)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except (OSError, AttributeError):
            pass

    def pread_rows(self, row: int, out: np.ndarray) -> None:
        """Read rows ``row : row + len(out)`` into ``out`` (C-contiguous)."""
        view = memoryview(out).cast("B")
        position = self.offset + row * self.row_bytes
        while view:
            n = os.preadv(self._fd, [view], position)
            if n <= 0:
                raise OSError(f"{self.path}: file ends before row {row + len(out)}.")
            view, position = view[n:], position + n

    def release(self, lo: int, hi: int) -> None:
        """Drop rows ``lo:hi``'s pages from the process (the OS keeps them cached)."""
        if self._mmap is None or hi <= lo:
            return
        page = mmap.PAGESIZE
        start = (self.offset + lo * self.row_bytes) // page * page
        stop = self.offset + hi * self.row_bytes
        # the mmap object maps the file from offset (offset - offset % ALLOCATIONGRANULARITY)
        base = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, start - base,
                               min(stop - start, len(self._mmap) - (start - base)))
        except (ValueError, OSError, AttributeError):
            pass


def _file_of(Y: np.ndarray) -> _MappedFile | None:
    if isinstance(Y, np.memmap) and getattr(Y, "filename", None) and Y.offset is not None:
        return _MappedFile(Y)
    return None


def _reopen(path: str, offset: int, shape: tuple[int, int], dims: tuple[int, int],
            budget: Budget, rows: np.ndarray | None) -> DataMatrix:
    Y = np.memmap(path, np.float32, "r", offset=offset, shape=tuple(shape))
    return DataMatrix(Y, dims, budget, rows)


class Workspace:
    """Where a fit puts a working matrix the size of the data (CNMF-E's ``Y - B``).

    :class:`MemoryWorkspace` keeps it in memory; a job's workspace (``outputs``) writes it
    to a temporary file in the run's folder when it does not fit the budget.
    """

    budget: Budget = Budget()
    #: True when large arrays go to files (their memory does not count in the job's)
    files: bool = False

    def matrix(self, shape: tuple[int, int]) -> Any:
        """A writable (pixels, T) float32 matrix: an object with ``write(row, frame,
        values)`` (values (n_rows, n_frames), placed at that row and frame) and
        ``done(dims)`` (the finished matrix as a :class:`DataMatrix`)."""
        raise NotImplementedError

    def frames(self, shape: tuple[int, int, int]) -> Any:
        """A writable float32 (T, y, x) movie read and written by slices of frames:
        ``store[t0:t1]`` gives a (n, y, x) array (a view in memory, a copy from a file),
        ``store[t0:t1] = values`` puts frames back (see :func:`put_frames`). In memory it
        is a plain C-order ndarray."""
        return np.empty(shape, np.float32)

    def spilling(self, limit: int) -> Workspace:
        """This workspace, with every array over ``limit`` bytes in a file (when it has
        files: a workspace in memory returns itself)."""
        return self


def put_frames(store: Any, start: int, values: np.ndarray) -> None:
    """Write frames ``start:start + len(values)`` of a frame store (:meth:`Workspace.frames`)
    back; nothing to do when ``values`` is the store's own memory (a view of an array)."""
    if isinstance(store, np.ndarray) and np.shares_memory(store, values):
        return
    store[start:start + len(values)] = values


def frames_per_block(budget: Budget, frame_shape: tuple[int, ...], copies: float = 1.0,
                     n_frames: int | None = None) -> int:
    """Frames of ``frame_shape`` float32 frames per block when a step holds ``copies``
    block-sized arrays (all ``n_frames`` when the budget is unlimited)."""
    limit = budget.block_bytes()
    total = max(int(n_frames or 1), 1)
    if limit is None:
        return total
    per_frame = max(int(np.prod(frame_shape)) * 4 * copies, 1)
    return int(min(max(limit // per_frame, 1), total))


class _ArrayMatrix:
    """A working matrix in memory."""

    def __init__(self, shape: tuple[int, int], budget: Budget) -> None:
        self.array = np.empty(shape, np.float32)
        self.budget = budget

    def write(self, row: int, frame: int, values: np.ndarray) -> None:
        self.array[row:row + values.shape[0], frame:frame + values.shape[1]] = values

    def done(self, dims: tuple[int, int]) -> DataMatrix:
        return DataMatrix(self.array, dims, self.budget)


class MemoryWorkspace(Workspace):
    """Working matrices in memory (the in-RAM path)."""

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()

    def matrix(self, shape: tuple[int, int]) -> _ArrayMatrix:
        return _ArrayMatrix(shape, self.budget)
