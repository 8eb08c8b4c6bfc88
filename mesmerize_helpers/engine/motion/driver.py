"""motion_correct: the passes over the movie, threads, progress."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import cv2
import numpy as np

from .config import MotionResult, parse_params
from .registration import Registrar
from .template import SplitTemplate, frame_chunks, initial_template, read_frames, read_sample
from .weighting import highpass_kernel

# Number of pixels (frames x y x x) processed at once when chunk_size is not given.
_CHUNK_PIXELS = 2**22
# Frames at the start of the movie whose minimum sets add_to_movie (CaImAn reads 400).
_MIN_MOV_FRAMES = 400


def _min_mov(movie: Any, n_frames: int, chunk: int) -> float:
    """Minimum of the first frames (CaImAn's ``min_mov``)."""
    stop = min(n_frames, _MIN_MOV_FRAMES)
    # in the movie's own dtype: no conversion of 400 frames to float
    return float(min(np.min(np.asarray(movie[a:b])) for a, b in frame_chunks(stop, chunk)))


def _default_chunk(dims: tuple[int, int]) -> int:
    return max(1, _CHUNK_PIXELS // (dims[0] * dims[1]))


def _run_pass(movie: Any, reg: Registrar, n_frames: int, chunk: int, splits: int,
              out: Any, add: float, bar: Any, accumulate: Any = None
              ) -> tuple[np.ndarray, ...]:
    """Register the whole movie once; write it into ``out`` and feed it to ``accumulate``
    (both optional)."""
    dims = reg.shape
    shifts_rig = np.zeros((n_frames, 2), dtype=np.float32)
    shifts_pw = None
    if reg.piecewise:
        shifts_pw = np.zeros((n_frames, len(reg.starts_y), len(reg.starts_x), 2), np.float32)
    acc = SplitTemplate(n_frames, dims, splits)
    for a, b in frame_chunks(n_frames, chunk):
        rig, pw, registered = reg.register(read_frames(movie, a, b))
        shifts_rig[a:b] = rig
        if pw is not None:
            shifts_pw[a:b] = pw
        acc.add(registered, a)
        if add and (out is not None or accumulate is not None):
            registered += np.float32(add)
        if accumulate is not None:
            accumulate.add(registered)
        if out is not None:
            out[a:b] = registered
        bar.update(b - a)
    return shifts_rig, shifts_pw, acc.template()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="motion correction")


@functools.cache
def _openblas_libs() -> list[tuple[Any, Any]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as maps:
            text = maps.read()
        paths = {line.split()[-1] for line in text.splitlines() if "openblas" in line}
    except OSError:
        return []
    found = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("openblas", ""), ("scipy_openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "64_")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                found.append((get, put))
                break
    return found


@contextlib.contextmanager
def _thread_limits(workers: int) -> Iterator[None]:
    """Run with OpenCV limited to one thread when workers == 1, and (best effort) OpenBLAS
    limited to one thread always.

    The small batched matrix products of the sub-pixel search are many times slower with
    OpenBLAS's threads competing for the cores with FFTs and other jobs (measured: 2-3x
    slower overall at 512x512); Snakemake runs one job per core, so one thread is the right
    default. Previous settings are restored.
    """
    cv_threads = cv2.getNumThreads()
    blas = _openblas_libs()
    blas_threads = [get() for get, _ in blas]
    cv2.setNumThreads(1 if workers == 1 else -1)
    for _, put in blas:
        put(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        for (_, put), n in zip(blas, blas_threads):
            put(n)


def motion_correct(movie: Any, params: Mapping[str, Any] | None = None,
                   out: Any = None, *, chunk_size: int | None = None,
                   progress: bool = True, workers: int = 1,
                   accumulate: Any = None) -> MotionResult:
    """Rigid or piecewise-rigid (NoRMCorre) motion correction of a movie, streamed in chunks.

    Parameters
    ----------
    movie
        (frames, y, x) array-like of any numeric dtype supporting ``movie[a:b]`` (ndarray,
        memmap, lazy reader). It is read chunk by chunk, never whole.
    params
        CaImAn params ``"main"`` dict; motion keys are used (see :data:`MOTION_DEFAULTS`),
        keys of other CaImAn groups are ignored, unknown keys raise
        :class:`~mesmerize_helpers.engine.params.UnknownParameterError`. Lists are accepted
        where CaImAn has tuples.
    out
        Writable (frames, y, x) float32 array-like (an ndarray, an ``open_memmap``, or any
        object with ``shape`` and ``out[a:b] = frames``, written once in increasing order)
        that receives the registered movie (plus ``add_to_movie``). Allocated in memory if
        None.
    chunk_size
        Frames processed at once; by default about 4 Mpixel per chunk.
    progress
        Show a tqdm progress bar over frames (of all passes).
    workers
        Threads for scipy.fft and OpenCV; 1 (default) keeps the step single-threaded, -1
        uses all cores.
    accumulate
        Object with an ``add(frames)`` method (e.g.
        :class:`~mesmerize_helpers.engine.images.SummaryAccumulator`), given every chunk of
        the registered movie as it is written, in order: summary images in the same pass.

    Returns
    -------
    MotionResult
        Template, rigid and patch shifts (pixels, applied to the frames), patch centres.

    Notes
    -----
    Memory use is a few chunks plus the shift arrays and ``splits_rig`` template accumulators;
    it does not grow with the number of frames. The movie is read once to find ``min_mov``
    (first 400 frames), once for the template sample, then once per pass:
    ``niter_rig - 1`` rigid refinement passes, ``niter_els - 1`` piecewise ones (pw_rigid),
    and the final pass that writes ``out``.
    """
    cfg = parse_params(params)
    n_frames, h, w = (int(v) for v in movie.shape)
    dims = (h, w)
    chunk = max(1, int(chunk_size)) if chunk_size else _default_chunk(dims)
    if out is None:
        out = np.empty((n_frames, h, w), dtype=np.float32)
    elif tuple(out.shape) != (n_frames, h, w):
        raise ValueError(f"out has shape {out.shape}, expected {(n_frames, h, w)}.")

    with _thread_limits(workers):
        kernel = None if cfg.gSig_filt is None else highpass_kernel(cfg.gSig_filt)
        piecewise = cfg.pw_rigid and cfg.max_deviation_rigid > 0
        if cfg.nonneg_movie:
            min_mov = cfg.min_mov if cfg.min_mov is not None else _min_mov(movie, n_frames, chunk)
            add = 0.0 - min_mov  # not -0.0
        else:
            add = 0.0
        template, weights = initial_template(read_sample(movie, n_frames, dims, chunk), cfg,
                                             kernel, workers, chunk)

        # Refinement passes over the whole movie, then the final pass writing the output.
        passes = [False] * (cfg.niter_rig - 1) + [True] * ((cfg.niter_els - 1) * piecewise)
        bar = _progress_bar(n_frames * (len(passes) + 1), progress)
        try:
            for pw in passes:
                reg = Registrar(template, cfg, kernel, pw, "copy", workers, weights)
                splits = cfg.splits_els if pw else cfg.splits_rig
                template = _run_pass(movie, reg, n_frames, chunk, splits, None, 0.0, bar)[2]
            reg = Registrar(template, cfg, kernel, piecewise, cfg.border_nan, workers, weights)
            splits = cfg.splits_els if piecewise else cfg.splits_rig
            shifts_rig, shifts_pw, final = _run_pass(movie, reg, n_frames, chunk, splits, out,
                                                     add, bar, accumulate)
        finally:
            bar.close()

    applied = shifts_pw if shifts_pw is not None else shifts_rig
    border = int(np.ceil(np.abs(applied).max())) if n_frames else 0
    return MotionResult(
        template=(final + np.float32(add)).astype(np.float32),
        shifts_rig=shifts_rig,
        shifts_pw=shifts_pw,
        patch_centers=reg.patch_centers if piecewise else None,
        add_to_movie=float(add),
        border_to_0=border,
    )
