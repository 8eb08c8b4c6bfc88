"""CNMF on one field (the whole frame or one patch): parameters, initialization and the
alternating spatial / temporal updates with merging.

Steps (one module each): initialization (:mod:`.initialization`, greedy or from user
masks), spatial (:mod:`.spatial`, with the shaping of :mod:`.shaping`) and temporal
(:mod:`.temporal`) updates, merging (:mod:`.merging`). :mod:`.patches` runs this on each
patch; :mod:`.cnmf` is the entry point. The movie is the (pixels, T) matrix ``Y``, a
:class:`~.data.DataMatrix` read a block at a time; each step reads it where its docstring
says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .background import init_background
from .data import Workspace, as_data
from .evaluate import footprint_areas, max_area
from .footprints import as_footprints, from_columns
from .initialization import (
    downsample_data,
    greedy_roi,
    masks_to_A,
    upsample_footprints,
)
from .merging import merge_components
from .model import CNMFModel, normalize_components
from .noise import ar_from_decay_time, noise_fft, pixel_noise
from .params import check_source_extraction, resolve_step
from .shaping import SHAPE_DEFAULTS, shaping_params
from .spatial import dilated_supports, update_spatial
from .temporal import update_temporal

__all__ = [
    "CNMF_DEFAULTS", "cnmf_params", "initialize_greedy", "initialize_from_masks",
    "temporal_step", "spatial_step", "merge_step", "refine", "fit_field",
]


#: CaImAn ``CNMFParams`` keys the built-in CNMF implements, with CaImAn's defaults.
CNMF_DEFAULTS: dict[str, Any] = {
    # data
    "fr": 30.0, "decay_time": 0.4,
    # init
    "K": 30, "gSig": [5, 5], "gSiz": None, "method_init": "greedy_roi", "nb": 1,
    "ssub": 2, "tsub": 2, "nIter": 5, "normalize_init": True,
    # patches
    # del_duplicates: duplicates across patches are always merged (see .merging)
    "rf": None, "stride": None, "nb_patch": 1, "only_init": True, "del_duplicates": False,
    # preprocess / temporal
    "p": 2, "ITER": 2, "bas_nonneg": True, "s_min": None, "noise_range": [0.25, 0.5],
    "noise_method": "mean", "lags": 5, "fudge_factor": 0.96, "optimize_g": False,
    "method_deconvolution": "oasis",
    # spatial (and CaImAn's thresholding of footprints, see .shaping)
    "update_background_components": True, **SHAPE_DEFAULTS,
    # merging
    "do_merge": True, "merge_thr": 0.8,
    # quality
    "min_SNR": 2.5, "SNR_lowest": 0.5, "rval_thr": 0.8, "rval_lowest": -1,
    "use_cnn": True, "min_cnn_thr": 0.9, "cnn_lowest": 0.1,
}

# CaImAn keys of the steps above that change results but are not implemented here, with
# CaImAn's default: setting one to anything else gives a warning (a default value is harmless).
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "center_psf": False, "ring_size_factor": 1.5, "min_corr": 0.85, "min_pnr": 20,
    "ssub_B": 2, "low_rank_background": True, "alpha_snmf": 0.5, "use_ecc": False,
    "max_ecc": 3, "max_merge_area": None, "p_ssub": 2, "p_tsub": 2, "p_patch": 0,
    "remove_very_bad_comps": False, "rolling_sum": True, "seed_method": "auto",
    "method_exp": "dilate", "method_ls": "lasso_lars", "memory_efficient": False,
    "greedyroi_nmf_init_method": "greedy", "init_iter": 2, "border_pix": 0,
}



# ----------------------------------------------------------------------------------- params


def cnmf_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a CaImAn params dict for CNMF and fill in defaults.

    Keys of other CaImAn groups are ignored; an unknown key raises
    :class:`~mesmerize_helpers.engine.params.UnknownParameterError`; a CaImAn key set to a
    value the built-in engine cannot honour gives one warning.
    """
    params, P = resolve_step(params, CNMF_DEFAULTS, _UNSUPPORTED_DEFAULTS, "cnmf")
    if P["method_init"] != "greedy_roi":
        raise ValueError(
            f"method_init={P['method_init']!r} is not implemented by the built-in CNMF "
            "(use 'greedy_roi'; 'corr_pnr' is CNMF-E, for one-photon data)."
        )
    P = check_source_extraction(params, P, gsiz_per_gsig=2)
    shaping_params(P)  # clear errors for bad thresholding keys now, not in the first update
    return P



# ----------------------------------------------------------------------------------- steps


def initialize_greedy(
    Y: Any, dims: tuple[int, int], P: Mapping[str, Any], K: int, nb: int = 1
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Greedy initialization of K components on (pixels, T) data, with downsampling.

    Before the search, the ``nb`` main time courses of the spatially smoothed movie
    (neuropil, laser power, global fluctuations) are regressed out of every pixel, so that
    the search finds local sources rather than places where the background is strong.

    Memory: the movie downsampled by ``ssub`` and ``tsub``, a few times
    (:func:`~.patches.greedy_bytes`); the data (an array or a :class:`~.data.DataMatrix`)
    is read in blocks.

    Returns
    -------
    A, C
        (pixels, K') sparse footprints (movie units) and (K', T) traces.
    """
    data = as_data(Y, dims)
    T = data.n_frames
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    # a float32 working copy (the search subtracts from it), downsampled while read
    small = downsample_data(data, ssub, tsub)
    Ts, hs, ws = small.shape
    med = np.median(small, axis=0)
    flat = small.reshape(Ts, -1)
    sn = noise_fft(flat.T, P["noise_range"], P["noise_method"]).reshape(hs, ws)
    # floor the noise: dark, nearly constant pixels (a black border, saturated or clipped
    # regions) would otherwise turn into huge normalized values and win the greedy search
    sn = np.maximum(sn, 0.25 * max(float(np.median(sn)), 1e-12))
    # noise normalization makes the greedy score a signal-to-noise measure: bright but
    # noisy pixels (shot noise grows with brightness) do not win over dim active cells
    Yn = small
    Yn -= med
    if P["normalize_init"]:
        Yn /= sn
    gSig = tuple(s / ssub for s in P["gSig"])
    gSiz = tuple(max(int(round(s / ssub)), 3) for s in P["gSiz"])
    if ssub == 1 and tsub == 1:
        # Only at full resolution. Until the movie was read in blocks, the downsampled copy
        # had a transposed memory layout, on which the in-place regression acted on a copy
        # and changed nothing: kept so, as the results (and the params users tuned) are.
        Yn = regress_out_background(Yn, nb, 3.0 * float(np.mean(gSig)))
    A_s, C_s, _ = greedy_roi(Yn, K, gSig, gSiz, n_iter=int(P["nIter"]))
    if P["normalize_init"]:
        A_s = as_footprints(sp.diags(sn.ravel(order="F")) @ A_s)
    A = upsample_footprints(A_s, (hs, ws), dims) if ssub > 1 else A_s
    C = np.repeat(C_s, tsub, axis=1)[:, :T]
    if C.shape[1] < T:  # frames dropped by temporal downsampling: hold the last value
        C = np.hstack([C, np.repeat(C[:, -1:], T - C.shape[1], axis=1)])
    return A, C.astype(np.float32)


def regress_out_background(movie: np.ndarray, nb: int, sigma: float) -> np.ndarray:
    """Remove from every pixel of a (T, h, w) movie its projection on the ``nb`` leading
    time courses of the movie blurred by ``sigma`` px (in place).

    Blurring at several soma widths averages cells away, so the leading time courses are
    those of the background; cells' own activity is not common to the field and stays.
    """
    T, h, w = movie.shape
    if nb <= 0 or T < 3:
        return movie
    import cv2

    step = max(int(sigma // 2), 1)
    k = 2 * int(np.ceil(2 * sigma)) + 1
    smooth = np.stack([
        cv2.GaussianBlur(f, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)[::step, ::step]
        for f in movie
    ]).reshape(T, -1)
    smooth -= smooth.mean(axis=0)
    U = np.linalg.svd(smooth.astype(np.float64), full_matrices=False)[0][:, :nb]
    U = U.astype(np.float32)  # (T, nb) orthonormal time courses
    flat = movie.reshape(T, -1)
    flat -= U @ (U.T @ flat)
    return movie


def initialize_from_masks(
    Y: Any, dims: tuple[int, int], Ain: Any, nb: int
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Footprints from user masks; traces by non-negative least squares above the baseline.

    Returns
    -------
    A, C
        (pixels, n) sparse footprints with unit norm and (n, T) traces.
    """
    data = as_data(Y, dims)
    A = masks_to_A(Ain, dims)
    step = max(data.n_frames // 200, 1)
    base = np.percentile(data.take(None, slice(None, None, step)), 20, axis=1)  # baseline
    AtA = (A.T @ A).toarray()
    proj = data.project(A) - (A.T @ base)[:, None]
    C = np.linalg.lstsq(AtA + 1e-6 * np.eye(len(AtA)), proj, rcond=None)[0]
    return A, np.maximum(C, 0).astype(np.float32)


def temporal_step(
    Y: Any, m: CNMFModel, P: Mapping[str, Any], reuse_g: bool, drop_background: bool = False
) -> CNMFModel:
    """Update traces, background traces, spikes and residuals; drop silent components and,
    with ``drop_background``, components that copy a background trace."""
    p = int(P["p"])
    res = update_temporal(
        Y, m.A, m.C, m.b, m.f,
        p=p, g_prior=ar_from_decay_time(P["decay_time"], P["fr"], p),
        g=m.g if (reuse_g and m.g is not None) else None,
        n_iter=int(P["ITER"]), bas_nonneg=bool(P["bas_nonneg"]), s_min=P["s_min"],
        noise_range=P["noise_range"], noise_method=P["noise_method"], lags=int(P["lags"]),
        fudge_factor=float(P["fudge_factor"]), optimize_g=int(bool(P["optimize_g"])),
    )
    m = replace(m, C=res.C, f=res.f, S=res.S, YrA=res.YrA, bl=res.bl, c1=res.c1, g=res.g,
                neurons_sn=res.neurons_sn)
    return normalize_components(drop_background_like(m) if drop_background else m)


#: A component whose trace correlates above this with a background trace is background.
BACKGROUND_CORR_THR = 0.8


def drop_background_like(m: CNMFModel, thr: float = BACKGROUND_CORR_THR) -> CNMFModel:
    """Remove components whose traces copy a background trace (e.g. a neuropil patch).

    Such a component holds part of the background (neuropil fluctuates in step over the
    whole field); once removed, the background footprints take its pixels back at the next
    spatial update. With more background components than the data need, a spare one can
    copy an active cell instead; user-given masks (``Ain``) are therefore never removed this
    way, only components found by the greedy search.
    """
    K = m.C.shape[0]
    if K == 0 or m.f.shape[0] == 0:
        return m

    def z(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(axis=1, keepdims=True)
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(n > 0, n, np.inf)

    corr = np.abs(z(m.C) @ z(m.f).T).max(axis=1)
    return m.keep(np.flatnonzero(corr <= thr))


#: Footprints stay within this many gSig of their centre of mass.
MAX_RADIUS_FACTOR = 3.0


def growth_radius(P: Mapping[str, Any]) -> int:
    """How far (px) a footprint may grow at one spatial update, and beyond a seed mask."""
    return max(int(np.ceil(np.mean(P["gSig"]))), 2)


def seed_regions(A: Any, dims: tuple[int, int], radius: int) -> sp.csc_matrix:
    """(pixels, n) sparse bool: each seed footprint's pixels dilated by ``radius`` px.

    A seeded component stays there: the user's mask says which cell it is, so the fit may
    refine its outline but not move it onto a neighbour whose activity is unexplained (a
    silent seed would otherwise wander to the nearest active cell or piece of neuropil).
    """
    sup = dilated_supports(A, dims, radius)
    return from_columns(sup, [np.ones(s.size, bool) for s in sup], A.shape[0], bool)


def spatial_step(
    Y: Any, dims: tuple[int, int], m: CNMFModel, P: Mapping[str, Any],
    sn: np.ndarray, prune: bool = True,
) -> CNMFModel:
    """Update footprints and background footprints, shape the footprints (``sn``: (pixels,)
    noise of ``Y``, see :mod:`.shaping`; unseeded ones as their excess over their surround,
    :func:`~.spatial.surround_levels`); drop empty and oversized components.

    A footprint spread over many times the area of a soma is background that a component
    has taken over (typically neuropil); removing it lets the background model take it back.
    """
    A, b = update_spatial(
        Y, m.A, m.C, m.b, m.f, dims, radius=growth_radius(P),
        update_background=bool(P["update_background_components"]),
        max_radius=MAX_RADIUS_FACTOR * float(max(P["gSig"])), allowed=m.region,
        shaping=shaping_params(P), sn=sn, surround=m.region is None,
    )
    m = replace(m, A=A, b=b)
    if prune:
        m = m.keep(np.flatnonzero(footprint_areas(A) <= max_area(P)))
    return normalize_components(m)


def merge_step(m: CNMFModel, P: Mapping[str, Any]) -> tuple[CNMFModel, int]:
    """Merge overlapping correlated components (per-trace results are reset)."""
    if not P["do_merge"] or m.A.shape[1] < 2:
        return m, 0
    A, C, n, origins = merge_components(m.A, m.C, float(P["merge_thr"]), return_origins=True)
    if n == 0:
        return m, 0
    # a merged component may lie wherever any of its members could
    region = None
    if m.region is not None:
        sup = [np.unique(m.region[:, o].indices) for o in origins]
        region = from_columns(sup, [np.ones(s.size, bool) for s in sup], A.shape[0], bool)
    return normalize_components(CNMFModel(A, C, b=m.b, f=m.f, region=region)), n


def refine(
    Y: Any,
    dims: tuple[int, int],
    m: CNMFModel,
    P: Mapping[str, Any],
    sn: np.ndarray,
    progress: Any = None,
    drop_background: bool = False,
) -> CNMFModel:
    """One round of CNMF: spatial and temporal updates, then merge and update again until
    nothing is left to merge (at most three times). ``sn``: (pixels,) noise of ``Y``.

    ``drop_background`` removes components that copy a background trace (see
    :func:`drop_background_like`): pieces of neuropil that the greedy search took for
    sources.
    """
    m = spatial_step(Y, dims, m, P, sn)
    m = temporal_step(Y, m, P, reuse_g=False, drop_background=drop_background)
    for _ in range(3):
        m, n_merged = merge_step(m, P)
        if n_merged == 0:
            break
        m = spatial_step(Y, dims, m, P, sn)
        m = temporal_step(Y, m, P, reuse_g=False, drop_background=drop_background)
    if progress is not None:
        progress.update(1)
    return m


def fit_field(
    Y: Any,
    dims: tuple[int, int],
    P: Mapping[str, Any],
    *,
    K: int,
    nb: int,
    Ain: Any = None,
    rounds: int = 1,
    sn: np.ndarray | None = None,
    workspace: Workspace | None = None,
) -> CNMFModel:
    """Initialize and refine CNMF on one field (the whole frame or one patch); ``sn`` is
    the (pixels,) noise of ``Y`` (computed here when None)."""
    if sn is None:
        sn = pixel_noise(Y, P["noise_range"], P["noise_method"])
    if Ain is not None:
        A, C = initialize_from_masks(Y, dims, Ain, nb)
    else:
        A, C = initialize_greedy(Y, dims, P, K, nb)
    A = as_footprints(A)
    b, f = init_background(Y, A, C, nb, workspace=workspace)
    region = None if Ain is None else seed_regions(A, dims, growth_radius(P))
    m = CNMFModel(A, C, b=b, f=f, region=region)
    if Ain is not None:  # traces first: the masks are the reliable part
        m = temporal_step(Y, m, P, reuse_g=False)
    for _ in range(rounds):
        m = refine(Y, dims, m, P, sn, drop_background=Ain is None)
    return m
