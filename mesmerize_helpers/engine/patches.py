"""CNMF on overlapping patches, then merged into whole-field components.

The field is cut into square patches of side ``2 * rf`` px that overlap by ``stride`` px
(CaImAn's meaning of ``rf`` and ``stride``). Each patch is fitted independently with ``K``
components and ``nb_patch`` background components (in worker processes when
``n_processes > 1``); the footprints are then placed back in the full field and components
found twice in overlapping patches (overlapping footprints, correlated traces) are merged.

Each patch reads only its own pixels (:meth:`~.data.DataMatrix.subset`); a worker process
reopens the data file itself instead of receiving the patch's data. As many patches are in
flight at once as the job's memory budget holds (:func:`patch_bytes`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import scipy.sparse as sp

from .background import init_background
from .cnmf_field import cnmf_params, fit_field, initialize_greedy
from .data import DataMatrix, Workspace, require
from .footprints import from_columns
from .merging import merge_components
from .model import CNMFModel, movie_to_Y, normalize_components
from .params import as_pair

__all__ = ["patch_starts", "patch_slices", "n_patches", "fit_movie_patch", "fit_patches",
           "patch_bytes", "greedy_bytes"]


def patch_starts(n: int, size: int, step: int) -> list[int]:
    """Start offsets of windows of ``size`` every ``step`` px covering ``[0, n)``."""
    if n <= size:
        return [0]
    starts = list(range(0, n - size + 1, max(step, 1)))
    if starts[-1] + size < n:  # last window flush with the border
        starts.append(n - size)
    return starts


def patch_slices(dims: tuple[int, int], rf: Any, stride: Any) -> list[tuple[slice, slice]]:
    """(y, x) slices of the patches for half-size ``rf`` and overlap ``stride`` (px)."""
    rf_y, rf_x = (int(v) for v in as_pair(rf, "rf"))
    st = stride if stride is not None else 0
    st_y, st_x = (int(v) for v in as_pair(st, "stride"))
    size = (2 * rf_y, 2 * rf_x)
    ys = patch_starts(dims[0], size[0], size[0] - st_y)
    xs = patch_starts(dims[1], size[1], size[1] - st_x)
    return [(slice(y, min(y + size[0], dims[0])), slice(x, min(x + size[1], dims[1])))
            for y in ys for x in xs]


def _patch_pixels(dims: tuple[int, int], sl: tuple[slice, slice]) -> np.ndarray:
    """Fortran-order indices, in the full field, of the pixels of a patch (in patch order)."""
    yy, xx = np.meshgrid(np.arange(sl[0].start, sl[0].stop), np.arange(sl[1].start, sl[1].stop),
                         indexing="ij")
    return (yy + xx * dims[0]).ravel(order="F")


def _fit_patch(
    Yp: DataMatrix, dims_p: tuple[int, int], P: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Fit one patch; returns its footprints (patch pixels, K') and traces (K', T)."""
    if P["only_init"]:  # CaImAn's default: patches only initialize, the whole field refines
        return initialize_greedy(Yp, dims_p, P, int(P["K"]), int(P["nb_patch"]))
    # a full fit reads the patch many times: once into memory (counted in patch_bytes)
    m = fit_field(Yp.materialize(), dims_p, P, K=int(P["K"]), nb=int(P["nb_patch"]))
    return m.A, m.C


def greedy_bytes(n_pixels: int, n_frames: int, P: Mapping[str, Any]) -> int:
    """Working memory (bytes) of the greedy initialization of ``n_pixels`` x ``n_frames``:
    the movie downsampled by ``ssub`` and ``tsub``, about four copies (the working copy, its
    centre-surround filtered copy and the temporaries of the background regression)."""
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    return int(4 * 4 * n_pixels // (ssub * ssub) * (n_frames // tsub))


def patch_bytes(n_pixels: int, n_frames: int, P: Mapping[str, Any]) -> int:
    """Working memory (bytes) of fitting one patch of ``n_pixels`` on ``n_frames``: the
    greedy initialization only (``only_init``), or its data about five times (a full fit
    in memory: the data, the initialization's copies, the products)."""
    if P["only_init"]:
        return greedy_bytes(n_pixels, n_frames, P)
    return int(5 * 4 * n_pixels * n_frames)


def n_patches(dims: tuple[int, int], params: Mapping[str, Any]) -> int:
    """Number of patches of a (y, x) field for CaImAn params (0 without ``rf``)."""
    P = cnmf_params(params)
    if P["rf"] is None:
        return 0
    return len(patch_slices((int(dims[0]), int(dims[1])), P["rf"], P["stride"]))


def fit_movie_patch(
    movie: Any, params: Mapping[str, Any], index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit patch ``index`` of a (T, y, x) movie on its own (e.g. in a separate job).

    Only the patch's pixels are read. The results of all patches, in patch order, can be
    handed to ``fit_cnmf(..., patch_results=...)``, which then skips fitting patches.

    Returns
    -------
    A, C
        (patch pixels, K') dense footprints in Fortran order on the patch and (K', T) traces.
    """
    P = cnmf_params(params)
    if P["rf"] is None:
        raise ValueError("fit_movie_patch needs patches: params['rf'] is None.")
    if isinstance(movie, DataMatrix):  # the pixel-major data: read the patch's rows only
        dims = movie.dims
        sl = patch_slices(dims, P["rf"], P["stride"])[index]
        dims_p = (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        Yp = movie.subset(_patch_pixels(dims, sl), dims_p)
    else:
        dims = (int(movie.shape[1]), int(movie.shape[2]))
        sl = patch_slices(dims, P["rf"], P["stride"])[index]

        class _Crop:  # (T, y, x) view of the patch that reads frames in chunks
            shape = (movie.shape[0], sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)

            def __getitem__(self, t: slice) -> np.ndarray:
                return np.asarray(movie[t][:, sl[0], sl[1]])

        Y, dims_p = movie_to_Y(_Crop())
        Yp = DataMatrix(Y, dims_p)
    A, C = _fit_patch(Yp, Yp.dims, P)
    # dense: a patch is small, and a plain array is what a job saves with np.savez
    return np.asarray(A.toarray() if sp.issparse(A) else A, np.float32), C


def _worker_init() -> None:
    """One BLAS thread per worker process: the patches already run in parallel."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl is optional: without it BLAS keeps its default threads
        pass


def fit_all_patches(
    Y: DataMatrix,
    pix: list[np.ndarray],
    pdims: list[tuple[int, int]],
    P: Mapping[str, Any],
    n_processes: int,
    progress: bool,
    fit_patch: Any = None,
    need: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fit every patch, in worker processes when ``n_processes > 1``; results in order.

    ``fit_patch(Yp, dims_p, P) -> (A_p, C_p)`` is CNMF's by default (CNMF-E passes its own);
    it must be a module-level function so that worker processes can import it. Each gets
    its patch as a :class:`~.data.DataMatrix` of the patch's rows. ``need(n_pixels,
    n_frames, P)`` is a patch's working memory in bytes (:func:`patch_bytes` by default):
    a patch that does not fit the budget is an error before any work, and no more patches
    run at once than the budget holds.
    """
    import multiprocessing as mp

    from tqdm.auto import tqdm

    fit_patch = fit_patch or _fit_patch
    need = need or patch_bytes
    largest = max((len(p) for p in pix), default=0)
    per_patch = need(largest, Y.n_frames, P)
    require(Y.budget, per_patch, f"A patch of {largest} pixels on {Y.n_frames} frames",
            "use smaller patches (rf) or more downsampling (tsub, ssub)")
    work = Y.budget.work_bytes()
    # a worker process also holds the interpreter and libraries (~300 MB)
    fits = n_processes if work is None else max(work // (per_patch + 300 * 2**20), 1)
    workers = int(max(min(n_processes, fits, len(pix)), 1))
    subsets = (Y.subset(p, pd) for p, pd in zip(pix, pdims))
    results = []
    bar = tqdm(total=len(pix), desc="patches", disable=not progress)
    if workers > 1:
        ctx = mp.get_context("spawn")  # safe with BLAS threads, unlike fork
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
            # at most `workers` patches in flight: each holds its patch's data
            pending = [ex.submit(fit_patch, sub, sub.dims, dict(P))
                       for sub in itertools.islice(subsets, workers)]
            while pending:
                results.append(pending.pop(0).result())
                bar.update(1)
                for sub in itertools.islice(subsets, 1):
                    pending.append(ex.submit(fit_patch, sub, sub.dims, dict(P)))
    else:
        for sub in subsets:
            results.append(fit_patch(sub, sub.dims, P))
            bar.update(1)
    bar.close()
    return results


def place_in_field(
    pix: list[np.ndarray], results: list[tuple[np.ndarray, np.ndarray]], d: int, T: int
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Put every patch's footprints back in the whole field.

    Returns
    -------
    A, C
        (d, K) ``scipy.sparse.csc_matrix`` float32 footprints and (K, T) float32 traces.
    """
    idx, val, traces = [], [], []
    for p, (A_p, C_p) in zip(pix, results):
        A_p = np.asarray(A_p.toarray() if hasattr(A_p, "toarray") else A_p)
        for k in range(A_p.shape[1]):
            nz = np.flatnonzero(A_p[:, k])
            order = np.argsort(p[nz])
            idx.append(p[nz][order])
            val.append(A_p[nz, k][order])
            traces.append(C_p[k])
    C = np.stack(traces).astype(np.float32) if traces else np.zeros((0, T), np.float32)
    return from_columns(idx, val, d), C


def fit_patches(
    Y: DataMatrix,
    dims: tuple[int, int],
    P: Mapping[str, Any],
    *,
    n_processes: int = 1,
    progress: bool = True,
    results: list[tuple[np.ndarray, np.ndarray]] | None = None,
    workspace: Workspace | None = None,
) -> Any:
    """Fit every patch and assemble whole-field components (``workspace``: see
    :func:`~.background.init_background`).

    Parameters
    ----------
    Y
        (pixels, T) data, Fortran pixel order (each patch reads its own rows).
    dims
        (y, x) frame size.
    P
        Resolved CNMF params (``rf``, ``stride``, ``K``, ``nb``, ``nb_patch``, ``merge_thr``...).
    n_processes
        Worker processes (1: sequential, in this process).
    progress
        Show a progress bar over patches.
    results
        Patch fits made elsewhere (:func:`fit_movie_patch`), one (A, C) per patch in patch
        order; patches are then not fitted here.

    Returns
    -------
    CNMFModel
        Whole-field footprints, traces and a freshly initialized rank-``nb`` background,
        before any whole-field update.
    """
    d, T = Y.shape
    slices = patch_slices(dims, P["rf"], P["stride"])
    pix = [_patch_pixels(dims, sl) for sl in slices]
    pdims = [(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) for sl in slices]
    if results is not None:
        results = list(results)
        if len(results) != len(slices):
            raise ValueError(f"Got {len(results)} patch results for {len(slices)} patches "
                             f"(rf={P['rf']}, stride={P['stride']}, frame {dims}).")
        for p, (A_p, _) in zip(pix, results):
            if A_p.shape[0] != len(p):
                raise ValueError("A patch result does not match its patch's size.")
    else:
        results = fit_all_patches(Y, pix, pdims, P, n_processes, progress)
    A, C = place_in_field(pix, results, d, T)
    if A.shape[1]:
        # the same cell found in two overlapping patches has near-identical footprints.
        # Traces are not compared yet: before the background is fitted, the traces of dim
        # cells are dominated by neuropil and would link unrelated components; the merge
        # step of the whole-field refinement compares them once they are clean.
        A, C, _ = merge_components(A, C, merge_thr=np.inf)
    b, f = init_background(Y, A, C, int(P["nb"]), workspace=workspace)
    return normalize_components(CNMFModel(A, C, b=b, f=f))
