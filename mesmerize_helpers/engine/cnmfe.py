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

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .cnmf_field import CNMF_DEFAULTS
from .corr_pnr import init_neurons_corr_pnr
from .data import Budget, DataMatrix, MemoryWorkspace, Workspace, as_data
from .footprints import areas, as_footprints
from .initialization import (
    downsample_data,
    seed_of_components,
    upsample_footprints,
)
from .merging import merge_components
from .model import (
    Components,
    Estimates,
    fit_input,
    normalize_components,
    to_estimates,
)
from .noise import ar_from_decay_time, pixel_noise
from .params import as_pair, changed_from_default, check_source_extraction, resolve_params
from .ring import (
    compute_W,
    ring_radius,
    subtract_background,
)
from .shaping import SHAPE_DEFAULTS, shaping_params
from .spatial import update_spatial
from .temporal import update_temporal

__all__ = [
    "CNMFE_DEFAULTS", "cnmfe_params", "fit_cnmfe", "evaluate_components", "background_frames",
    "BackgroundFree", "init_bytes", "patch_bytes",
]

# the results in use (background of any frame, evaluation): re-exported from here
from .cnmfe_results import BackgroundFree, background_frames, evaluate_components  # noqa: E402

#: CaImAn ``CNMFParams`` keys the built-in CNMF-E implements, with defaults for one-photon
#: data (those of CaImAn's CNMF-E demo where they differ from CaImAn's 2p defaults).
CNMFE_DEFAULTS: dict[str, Any] = {
    # temporal, spatial, merging and quality steps are CNMF's, with CNMF's defaults
    **{key: CNMF_DEFAULTS[key] for key in (
        "decay_time", "rf", "stride", "only_init", "ITER", "bas_nonneg", "s_min",
        "noise_range", "noise_method", "lags", "fudge_factor", "optimize_g",
        "method_deconvolution", "update_background_components", "do_merge", "SNR_lowest",
        "rval_lowest", "min_cnn_thr", "cnn_lowest", *SHAPE_DEFAULTS,
    )},
    # one-photon: corr-PNR seeding and the ring background (CaImAn's CNMF-E demo values)
    "fr": 10.0, "method_init": "corr_pnr", "K": None, "gSig": [3, 3], "gSiz": None,
    "center_psf": True, "min_corr": 0.8, "min_pnr": 10.0, "ring_size_factor": 1.5, "nb": 0,
    "ssub_B": 2, "ssub": 1, "tsub": 1, "init_iter": 2, "normalize_init": False,
    "seed_method": "auto", "nb_patch": 0, "low_rank_background": None, "border_pix": 0,
    "del_duplicates": True, "p": 1, "merge_thr": 0.7, "min_SNR": 3.0, "rval_thr": 0.85,
    "use_cnn": False,
}

# CaImAn keys of these steps that change results but are not implemented here, with
# CaImAn's default: another value gives one warning.
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "alpha_snmf": 0.5, "use_ecc": False, "max_ecc": 3, "max_merge_area": None, "p_ssub": 2,
    "p_tsub": 2, "p_patch": 0, "remove_very_bad_comps": False, "rolling_sum": True,
    "method_exp": "dilate", "method_ls": "lasso_lars", "memory_efficient": False,
    "greedyroi_nmf_init_method": "greedy", "nIter": 5,
}

#: Footprint pixels above this fraction of the peak make up a component's area.
_AREA_THR = 0.2
#: Largest plausible area of a neuron, in units of ``gSiz_y * gSiz_x``: bigger footprints
#: are background taken over by a component and are dropped.
_MAX_AREA_FACTOR = 1.5


# ----------------------------------------------------------------------------------- params


def cnmfe_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a CaImAn params dict for CNMF-E and fill in defaults.

    Keys of other CaImAn groups are ignored; an unknown key raises
    :class:`~mesmerize_helpers.engine.params.UnknownParameterError`; a CaImAn key set to a
    value the built-in engine cannot honour gives one warning.

    Raises
    ------
    ValueError
        For ``method_init`` other than ``'corr_pnr'`` (CNMF-E's initialization; use CNMF,
        ``algo='cnmf'``, for ``'greedy_roi'``), ``ring_size_factor=None`` (no ring model:
        that is CNMF), ``nb < -1``, or ``p`` not in 0, 1, 2.
    """
    params = dict(params or {})
    unsupported = changed_from_default(params, _UNSUPPORTED_DEFAULTS)
    P = resolve_params(params, CNMFE_DEFAULTS, step="cnmfe", unsupported=unsupported)
    if P["method_init"] != "corr_pnr":
        raise ValueError(
            f"method_init={P['method_init']!r} is not CNMF-E: the built-in CNMF-E only "
            "implements method_init='corr_pnr'. For 'greedy_roi' (two-photon data) run CNMF "
            "(algo 'cnmf', engine.cnmf.fit_cnmf)."
        )
    if P["ring_size_factor"] is None or float(P["ring_size_factor"]) <= 0:
        raise ValueError("ring_size_factor must be a positive number for CNMF-E (the ring "
                         "model); without it CaImAn runs CNMF with a low-rank background.")
    P["nb"] = int(P["nb"])
    if P["nb"] < -1:
        raise ValueError(f"nb={P['nb']} (no background) is not supported; use 0 (ring model), "
                         "-1 (full-rank ring background) or > 0 (low-rank approximation).")
    if P["nb"] == -1:
        # CaImAn: a full-rank background is fixed after initialization
        P["update_background_components"] = False
    P = check_source_extraction(params, P)
    if P["seed_method"] != "auto":
        warnings.warn(f"seed_method={P['seed_method']!r}: only 'auto' is implemented "
                      "(no interactive seeding); using it.", UserWarning, stacklevel=2)
    if P["normalize_init"]:
        warnings.warn("normalize_init=True is ignored with the ring model (CaImAn sets it "
                      "to False for CNMF-E too).", UserWarning, stacklevel=2)
    if P["gSiz"] is None:
        # CNMF-E's usual neuron diameter is about 4 gSig + 1 (CaImAn's CNMF-E demo)
        P["gSiz"] = tuple(int(round(4 * s + 1)) for s in P["gSig"])
    else:
        P["gSiz"] = tuple(int(s) for s in as_pair(P["gSiz"], "gSiz"))
    # odd sizes, as CaImAn, so that a box is centred on its seed
    P["gSiz"] = tuple(s + 1 if s % 2 == 0 else s for s in P["gSiz"])
    P["noise_range"] = tuple(P["noise_range"])
    P["ssub_B"] = max(int(P["ssub_B"]), 1)
    shaping_params(P)  # clear errors for bad thresholding keys now, not in the first update
    return P


# ----------------------------------------------------------------------------------- model


@dataclass
class _Fit(Components):
    """CNMF-E's working state: components plus the ring model (``W``, ``b0``)."""

    W: sp.csc_matrix | None = None
    b0: np.ndarray | None = None


def _empty_bg(d: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((d, 0), np.float32), np.zeros((0, T), np.float32)


def _radius(P: Mapping[str, Any]) -> float:
    return ring_radius(P["ring_size_factor"], P["gSiz"])


# ----------------------------------------------------------------------------------- steps


def initialize(
    Y: Any, dims: tuple[int, int], P: Mapping[str, Any], max_number: int | None,
    minus: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corr-PNR initialization on (pixels, T) data (optionally on a downsampled copy).

    With ``ssub``/``tsub`` > 1 the seeding runs on the block-averaged movie, whose noise is
    ``sqrt(ssub^2 tsub)`` times lower, so ``min_pnr`` is scaled up by that (as CaImAn);
    footprints and traces are brought back to full resolution.

    Spatial downsampling shrinks neurons to a few pixels, where the 3x3 median filter of
    the seed search removes most seeds: keep ``ssub=1`` unless ``gSig / ssub >= 3`` px.
    ``tsub=2`` halves the seeding time with little loss (lower ``min_pnr`` accordingly).

    ``Y`` is an array or a :class:`~.data.DataMatrix`; the seeding works in a copy of the
    (downsampled) movie, read a block at a time (memory: :func:`init_bytes`). ``minus``:
    optional ``(A, C)`` whose product is subtracted from the data (seeding in a residual).

    Returns
    -------
    A, C
        (pixels, K) footprints (counts per unit of C) and (K, T) traces.
    """
    data = as_data(Y, dims)
    T = data.n_frames
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    small = downsample_data(data, ssub, tsub, minus=minus)  # the seeding's working copy
    p = int(P["p"])
    res = init_neurons_corr_pnr(
        small,
        gSig=tuple(s / ssub for s in P["gSig"]),
        gSiz=int(round(P["gSiz"][0] / ssub)), center_psf=bool(P["center_psf"]),
        min_corr=float(P["min_corr"]),
        min_pnr=float(P["min_pnr"]) * np.sqrt(ssub * ssub * tsub),
        max_number=max_number, p=min(p, 1),
        g_prior=ar_from_decay_time(P["decay_time"], P["fr"] / tsub, 1),
        noise_range=P["noise_range"], bd=int(P["border_pix"]), overwrite=True,
    )
    A, C = res.A, res.C
    if ssub > 1 and A.shape[1]:
        A = upsample_footprints(A, small.shape[1:], dims)
    if tsub > 1 and C.shape[0]:
        C = np.repeat(C, tsub, axis=1)[:, :T]
        if C.shape[1] < T:  # frames dropped by temporal downsampling: hold the last value
            C = np.hstack([C, np.repeat(C[:, -1:], T - C.shape[1], axis=1)])
    return as_footprints(A), C.astype(np.float32)


def init_bytes(n_pixels: int, n_frames: int, P: Mapping[str, Any]) -> int:
    """Working memory (bytes) of the corr-PNR initialization on ``n_pixels`` x
    ``n_frames``: the downsampled movie and its filtered copy, and their temporaries."""
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    return int(3 * 4 * n_pixels // (ssub * ssub) * (n_frames // tsub))


def patch_bytes(n_pixels: int, n_frames: int, P: Mapping[str, Any]) -> int:
    """Working memory (bytes) of CNMF-E on one patch, in memory: its data, ``Y - B``, the
    initialization's copies (:func:`init_bytes`) and the products of the updates."""
    return int(3 * 4 * n_pixels * n_frames) + init_bytes(n_pixels, n_frames, P)


def background_step(Y: Any, dims: tuple[int, int], m: _Fit, P: Mapping[str, Any],
                    workspace: Workspace | None = None, residual: bool = True
                    ) -> tuple[_Fit, DataMatrix | None]:
    """Re-estimate the ring model for the current neurons; return it and ``Y - B``
    (a matrix of ``workspace``; None without ``residual``).

    With ``update_background_components=False`` the first ring model (``W``, ``b0``) is kept
    and only ``B`` is recomputed for the current neurons.
    """
    if m.W is None or P["update_background_components"]:
        m.W, m.b0 = compute_W(Y, m.A, m.C, dims, _radius(P), P["ssub_B"])
    if not residual:
        return m, None
    return m, subtract_background(Y, m.A, m.C, m.W, m.b0, dims, P["ssub_B"], workspace)


def spatial_step(Yb: Any, dims: tuple[int, int], m: _Fit, P: Mapping[str, Any],
                 sn: np.ndarray) -> _Fit:
    """HALS footprint update on the background-free data, footprints shaped (``sn``: (pixels,)
    noise of the movie, see :mod:`.shaping`); drop empty and oversized ones."""
    d, T = Yb.shape
    if m.K == 0:
        return m
    b, f = _empty_bg(d, T)
    radius = max(int(np.ceil(np.mean(P["gSig"]))), 2)
    A, _ = update_spatial(Yb, m.A, m.C, b, f, dims, radius=radius, update_background=False,
                          shaping=shaping_params(P), sn=sn)
    m.A = A
    ok = areas(A, _AREA_THR) <= _MAX_AREA_FACTOR * P["gSiz"][0] * P["gSiz"][1]
    return normalize_components(m.keep(np.flatnonzero(ok)))


def temporal_step(Yb: Any, m: _Fit, P: Mapping[str, Any]) -> _Fit:
    """OASIS trace update on the background-free data; drop silent components."""
    d, T = Yb.shape
    if m.K == 0:
        return m
    b, f = _empty_bg(d, T)
    p = int(P["p"])
    res = update_temporal(
        Yb, m.A, m.C, b, f, p=p, g_prior=ar_from_decay_time(P["decay_time"], P["fr"], p),
        n_iter=int(P["ITER"]), bas_nonneg=bool(P["bas_nonneg"]), s_min=P["s_min"],
        noise_range=P["noise_range"], noise_method=P["noise_method"], lags=int(P["lags"]),
        fudge_factor=float(P["fudge_factor"]), optimize_g=int(bool(P["optimize_g"])),
    )
    m = _Fit(m.A, res.C, res.S, res.YrA, res.bl, res.c1, res.g, res.neurons_sn, m.W, m.b0)
    return normalize_components(m)


def merge_step(Yb: Any, m: _Fit, P: Mapping[str, Any]) -> tuple[_Fit, int]:
    """Merge overlapping correlated components, then update the merged traces."""
    if not P["do_merge"] or m.K < 2:
        return m, 0
    A, C, n = merge_components(m.A, m.C, float(P["merge_thr"]))
    if n == 0:
        return m, 0
    return temporal_step(Yb, _Fit(A, C, W=m.W, b0=m.b0), P), n


def refine(Y: Any, dims: tuple[int, int], m: _Fit, P: Mapping[str, Any],
           sn: np.ndarray, workspace: Workspace | None = None) -> tuple[_Fit, Any]:
    """Background, then merge, footprints and traces on ``Y - B`` (one CNMF-E round);
    ``sn``: (pixels,) noise of ``Y``.

    Returns the model and the background-free data ``Y - B`` it was fitted to.
    """
    m, Yb = background_step(Y, dims, m, P, workspace)
    m, _ = merge_step(Yb, m, P)
    m = spatial_step(Yb, dims, m, P, sn)
    m = temporal_step(Yb, m, P)
    m, n = merge_step(Yb, m, P)
    if n:
        m = spatial_step(Yb, dims, m, P, sn)
        m = temporal_step(Yb, m, P)
    return m, Yb


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
    A, C = initialize(Y, dims, P, K)
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
        A2, C2 = initialize(Yb, dims, P, remaining, minus=(m.A, m.C) if m.K else None)
        if A2.shape[1]:
            new = normalize_components(_Fit(A2, C2))
            m = _Fit(sp.hstack([m.A, new.A], format="csc"), np.vstack([m.C, new.C]), W=m.W,
                     b0=m.b0)
            m = temporal_step(Yb, m, P)
    del Yb
    m, _ = refine(Y, dims, m, P, sn, workspace)
    return m


# ----------------------------------------------------------------------------------- patches


def _fit_patch(Yp: DataMatrix, dims_p: tuple[int, int], P: Mapping[str, Any]
               ) -> tuple[np.ndarray, np.ndarray]:
    """CNMF-E on one patch, with its own ring background: (patch pixels, K') and (K', T).
    The patch's data is read once into memory (counted in :func:`patch_bytes`)."""
    m = fit_field(Yp.materialize(), dims_p, P)
    return m.A, m.C


def fit_patches(
    Y: DataMatrix, dims: tuple[int, int], P: Mapping[str, Any], *, n_processes: int = 1,
    progress: bool = True,
) -> _Fit:
    """CNMF-E on each patch (its own ring background), assembled on the whole field.

    Patches are squares of side ``2 rf`` overlapping by ``stride`` px (CaImAn's meaning).
    A neuron found in two overlapping patches gives two near-identical footprints with
    correlated traces; they are merged. The whole-field refinement then re-estimates one
    ring background for the whole field.
    """
    from .patches import _patch_pixels, fit_all_patches, patch_slices, place_in_field

    d, T = Y.shape
    slices = patch_slices(dims, P["rf"], P["stride"])
    pix = [_patch_pixels(dims, sl) for sl in slices]
    pdims = [(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) for sl in slices]
    results = fit_all_patches(Y, pix, pdims, P, n_processes, progress, fit_patch=_fit_patch,
                              need=patch_bytes)
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
                           np.zeros((0, T), np.float32), nb)


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
            from .cnmfe_seeded import fit_seeded

            m = fit_seeded(Y, dims, P, masks, sn, workspace, refit=refit)
            bar.update(1 + int(refit))
        elif use_patches:
            m = fit_patches(Y, dims, P, n_processes=n_processes, progress=progress)
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
