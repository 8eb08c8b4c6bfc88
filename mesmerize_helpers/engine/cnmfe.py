"""CNMF-E: source extraction for one-photon (microendoscope) movies (Zhou et al. 2018).

The model is CNMF's ``Y ~ A C + B`` with a background ``B`` that a low-rank ``b f`` cannot
describe (bright, spatially complex, drifting). Only two steps differ from CNMF
(:mod:`.cnmf`), whose spatial, temporal, merging and evaluation code is reused:

- **initialization** (:mod:`.corr_pnr`): seeds from the correlation x peak-to-noise-ratio
  image of the movie band-pass filtered at the neuron's scale;
- **background** (:mod:`.ring`): the ring model ``B = b0 1' + W (Y - A C - b0 1')``,
  estimated by least squares on a grid downsampled by ``ssub_B``.

The fit alternates, as CaImAn's ``greedyROI_corr``, ``init_iter`` times: estimate the ring
background for the current neurons, update footprints and traces on ``Y - B`` (HALS and
OASIS, :mod:`.spatial` / :mod:`.temporal`), look for more neurons in what is left, merge.
A last round (and one more with ``refit``) re-estimates the background and the neurons.

Background parameter ``nb`` (CaImAn's semantics for ``method_init='corr_pnr'``):

- ``nb = 0`` (default): the exact ring model; ``W`` (sparse, on the downsampled grid),
  ``b0`` and ``ssub_B`` are returned in ``Estimates.extra`` and ``b``/``f`` are empty.
  The background of any frame is :func:`~.ring.ring_background` of ``Y - A C``.
- ``nb > 0``: neurons are fitted with the ring model, then the ring background of the whole
  movie is approximated by a rank-``nb`` non-negative factorization returned as ``b``/``f``
  (``W`` is not returned), so that the results look like CNMF's.
- ``nb = -1``: CaImAn returns the full-rank background itself (``b`` the identity, ``f``
  the (pixels, T) background movie) and does not update it after initialization
  (``update_background_components`` is set to False). Here too the ring model of the first
  background estimate is kept for the rest of the fit, and the background is returned in
  its compact form (``W``, ``b0``, as for ``nb = 0``): the frames it gives are what CaImAn
  stores in ``f``, without a movie-sized array. ``extra["nb"]`` records -1.

``update_background_components=False`` (any ``nb``) likewise keeps the first ring model.
- ``nb < -1`` (CaImAn: "no background returned") is rejected.

Pixels are flattened in Fortran order on (y, x), as in CaImAn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from .cnmfe_seeded import fit_seeded
from .cnmfe_steps import (
    CNMFE_DEFAULTS,
    _empty_bg,
    _Fit,
    _radius,
    background_step,
    cnmfe_params,
    init_bytes,
    initialize,
    patch_bytes,
    refine,
    spatial_step,
    temporal_step,
)
from .data import Budget, DataMatrix, MemoryWorkspace, Workspace, as_data
from .initialization import seed_of_components
from .merging import merge_components
from .model import Estimates, fit_input, normalize_components, to_estimates
from .noise import pixel_noise

__all__ = [
    "CNMFE_DEFAULTS", "cnmfe_params", "fit_cnmfe", "evaluate_components", "background_frames",
    "BackgroundFree", "init_bytes", "patch_bytes",
]

# the results in use (background of any frame, evaluation): re-exported from here
from .cnmfe_results import BackgroundFree, background_frames, evaluate_components  # noqa: E402


def fit_field(Y: Any, dims: tuple[int, int], P: Mapping[str, Any],
              sn: np.ndarray | None = None, workspace: Workspace | None = None) -> _Fit:
    """CNMF-E on one field (the whole frame or a patch), as CaImAn's ``greedyROI_corr``.

    ``init_iter`` rounds of: ring background for the current neurons, spatial and temporal
    updates on ``Y - B``, and (except in the last round) a search for more neurons in the
    residual ``Y - B - A C``; then a last round with merging. ``sn``: (pixels,) noise of
    ``Y`` (computed here when None). ``Y - B`` goes into ``workspace`` (default: memory).
    """
    Y = as_data(Y, dims)
    if sn is None:
        sn = pixel_noise(Y, P["noise_range"], P["noise_method"])
    K = None if P["K"] is None else int(P["K"])
    A, C = initialize(Y, dims, P, K, workspace=workspace)
    m = normalize_components(_Fit(A, C))
    n_iter = max(int(P["init_iter"]), 1)
    for it in range(n_iter):
        m, Yb = background_step(Y, dims, m, P, workspace)
        m = spatial_step(Yb, dims, m, P, sn)
        m = temporal_step(Yb, m, P)
        if it == n_iter - 1:
            break
        remaining = None if K is None else K - m.K
        if remaining is not None and remaining <= 0:
            continue
        # more neurons in what the current ones and the background leave
        A2, C2 = initialize(Yb, dims, P, remaining, minus=(m.A, m.C) if m.K else None,
                            workspace=workspace)
        if A2.shape[1]:
            new = normalize_components(_Fit(A2, C2))
            m = _Fit(sp.hstack([m.A, new.A], format="csc"), np.vstack([m.C, new.C]), W=m.W,
                     b0=m.b0)
            m = temporal_step(Yb, m, P)
    del Yb
    m, _ = refine(Y, dims, m, P, sn, workspace)
    return m


# ----------------------------------------------------------------------------------- patches


def _fit_patch(Yp: DataMatrix, dims_p: tuple[int, int], P: Mapping[str, Any],
               workspace: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CNMF-E on one patch, with its own ring background: (patch pixels, K') and (K', T).

    Without ``workspace`` the patch's data is read once into memory (counted in
    :func:`patch_bytes`); with one, it is read from its file a block at a time and the
    fit's working movies (``Y - B``, the seeding's copies) go to ``workspace``'s files.
    """
    if workspace is None:
        m = fit_field(Yp.materialize(), dims_p, P)
    else:
        m = fit_field(Yp, dims_p, P, workspace=workspace)
    return m.A, m.C


def streamed_patch_bytes(budget: Budget) -> int:
    """Working memory (bytes) of CNMF-E on a patch read from its file (:func:`_fit_patch`
    with a workspace), whatever the patch's frames: as every step reading the data by
    blocks, a block and up to three temporaries of its size."""
    return int(4 * (budget.block_bytes() or 0))


def fit_patches(
    Y: DataMatrix, dims: tuple[int, int], P: Mapping[str, Any], *, n_processes: int = 1,
    progress: bool = True, workspace: Workspace | None = None,
) -> _Fit:
    """CNMF-E on each patch (its own ring background), assembled on the whole field.

    Patches are squares of side ``2 rf`` overlapping by ``stride`` px (CaImAn's meaning).
    A neuron found in two overlapping patches gives two near-identical footprints with
    correlated traces; they are merged. The whole-field refinement then re-estimates one
    ring background for the whole field.

    A patch is fitted in memory when its data and working copies (:func:`patch_bytes`) fit
    the budget; otherwise (a long movie), when ``workspace`` has files, from its file a
    block of frames at a time, its working movies in ``workspace``'s files: the same fit,
    slower, in memory that does not grow with the frames.
    """
    from functools import partial

    from .patches import _patch_pixels, fit_all_patches, patch_slices, place_in_field

    d, T = Y.shape
    slices = patch_slices(dims, P["rf"], P["stride"])
    pix = [_patch_pixels(dims, sl) for sl in slices]
    pdims = [(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) for sl in slices]
    largest = max((len(p) for p in pix), default=0)
    work = Y.budget.work_bytes()
    streamed = (workspace is not None and workspace.files and work is not None
                and patch_bytes(largest, T, P) > work
                and streamed_patch_bytes(Y.budget) <= work)
    if streamed:
        ws = workspace.spilling(0)  # every working movie in a file
        fit_patch, need = partial(_fit_patch, workspace=ws), (
            lambda n, t, p: streamed_patch_bytes(Y.budget))
    else:
        fit_patch, need = _fit_patch, patch_bytes
    results = fit_all_patches(Y, pix, pdims, P, n_processes, progress, fit_patch=fit_patch,
                              need=need)
    A, C = place_in_field(pix, results, d, T)
    if A.shape[1] == 0:
        return _Fit(A, C)
    # the traces of the patches are clean (each patch had its own background), so duplicates
    # are recognised by overlap and correlation as well as by near-identical footprints
    A, C, _ = merge_components(A, C, float(P["merge_thr"]))
    return normalize_components(_Fit(A, C))


# ----------------------------------------------------------------------------------- results


def _low_rank(Y: DataMatrix, Yb: DataMatrix, nb: int, workspace: Workspace
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``nb`` non-negative factorization of the background ``Y - Yb`` (formed a
    block of rows at a time in ``workspace``)."""
    from .background import init_background

    d, T = Y.shape
    B = workspace.matrix(Y.shape)
    for a, b in Y.row_blocks(copies=3):
        B.write(a, 0, Y.rows(a, b) - Yb.rows(a, b))
    return init_background(B.done(Y.dims), np.zeros((d, 0), np.float32),
                           np.zeros((0, T), np.float32), nb, workspace=workspace)


def _to_estimates(m: _Fit, b: np.ndarray, f: np.ndarray, sn: np.ndarray,
                  dims: tuple[int, int], P: Mapping[str, Any]) -> Estimates:
    nb = int(P["nb"])
    est = to_estimates(m, sn, dims, int(P["p"]), b=b, f=f)
    est.extra["nb"] = nb
    est.extra["ssub_B"] = int(P["ssub_B"])
    est.extra["ring_radius"] = _radius(P)
    if nb <= 0:
        est.extra["W"] = sp.csc_matrix(m.W, dtype=np.float32)
        est.extra["b0"] = np.asarray(m.b0, np.float32)
    est.extra["params"] = dict(P)
    return est


def fit_cnmfe(
    movie: Any,
    params: Mapping[str, Any] | None,
    *,
    refit: bool = True,
    n_processes: int = 1,
    progress: bool = True,
    budget: Budget | None = None,
    workspace: Workspace | None = None,
    Ain: Any = None,
) -> Estimates:
    """Fit CNMF-E to a one-photon movie.

    Parameters
    ----------
    movie
        (T, y, x) array-like (ndarray, memmap, lazy array with slicing), counts, copied
        into memory as the (pixels, T) data matrix; or that matrix as a
        :class:`~.data.DataMatrix` (e.g. a pixel-major file, read a block at a time).
        Read, never modified.
    params
        CaImAn params (the item's ``"main"`` dict), see :data:`CNMFE_DEFAULTS`; keys of
        other steps are ignored. ``rf``/``stride`` select patches (half-size and overlap,
        px); ``K`` is then a maximum per patch (None: no maximum).
    refit
        Run one more whole-field round (background, merge, footprints, traces) seeded with
        the first fit.
    n_processes
        Worker processes for patches (1: in this process).
    progress
        Show a tqdm progress bar.
    budget
        Memory budget that sizes the blocks read (default: that of a ``DataMatrix``
        ``movie``, else unlimited). A step that cannot fit it raises
        :class:`~.data.MemoryBudgetError` before it starts.
    workspace
        Where the background-free data ``Y - B`` goes (default: memory).
    Ain
        Optional seed footprints, as for :func:`~.cnmf.fit_cnmf`: (y, x, n) boolean or float
        masks, (n, y, x) masks, or a (pixels, n) Fortran-order matrix. No search for neurons
        and no patches: the seeded neurons are fitted with the ring background
        (:mod:`.cnmfe_seeded`); ``Estimates.seed_index`` says which mask each lies on.

    Returns
    -------
    Estimates
        Not yet evaluated (see :func:`evaluate_components`). With ``nb <= 0`` the ring model
        is in ``extra["W"]`` (scipy.sparse.csc (pixels_ds, pixels_ds)), ``extra["b0"]``
        ((pixels,) counts) and ``extra["ssub_B"]``; ``b`` is (pixels, 0) and ``f`` (0, T).
    """
    from tqdm.auto import tqdm

    P = cnmfe_params(params)
    Y, masks, use_patches, sn = fit_input(
        movie, P, Ain, budget, init_bytes,
        "use patches (rf, stride) or downsample the initialization (tsub)")
    dims = Y.dims
    workspace = workspace or MemoryWorkspace(Y.budget)
    bar = tqdm(total=2 + int(refit), desc="cnmfe", disable=not progress)
    try:
        if masks is not None:
            m = fit_seeded(Y, dims, P, masks, sn, workspace, refit=refit)
            bar.update(1 + int(refit))
        elif use_patches:
            m = fit_patches(Y, dims, P, n_processes=n_processes, progress=progress,
                            workspace=workspace)
            m, _ = refine(Y, dims, m, P, sn, workspace)
        else:
            m = fit_field(Y, dims, P, sn, workspace)
        bar.update(int(masks is None))
        if refit and masks is None:
            m, _ = refine(Y, dims, m, P, sn, workspace)
            bar.update(1)
        # the ring model that goes with the final neurons (and Y - B for a low-rank b f)
        nb = int(P["nb"])
        m, Yb = background_step(Y, dims, m, P, workspace, residual=nb > 0)
        b, f = _low_rank(Y, Yb, nb, workspace) if nb > 0 else _empty_bg(*Y.shape)
        del Yb
        bar.update(1)
    finally:
        bar.close()
    est = _to_estimates(m, b, f, sn, dims, P)
    if masks is not None:
        est.seed_index = seed_of_components(est.A, masks)
    return est
