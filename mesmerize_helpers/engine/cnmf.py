"""CNMF source extraction for two-photon movies: orchestration, defaults and results.

The model is CaImAn's: the movie, as a (pixels, T) matrix ``Y``, is approximated by
``A C + b f`` plus noise, where ``A`` (pixels, K) are non-negative localised footprints,
``C`` (K, T) their calcium traces following AR(p) dynamics driven by sparse non-negative
spikes ``S``, and ``b f`` a rank-``nb`` non-negative background. Pixels are flattened in
Fortran order on (y, x) (index ``y + x * height``), as in CaImAn, so that ``A`` can be used
with CaImAn's tools.

Steps (one module each): per-pixel noise (:mod:`.noise`), initialization
(:mod:`.initialization`, greedy or from user masks), alternating spatial (:mod:`.spatial`)
and temporal (:mod:`.temporal`) updates, merging (:mod:`.merging`), optional patches
(:mod:`.patches`), then quality evaluation (:mod:`.evaluate`) and dF/F (:mod:`.dff`).
Footprints are sparse throughout (:mod:`.footprints`), so that time and memory grow with the
movie, not with pixels x components.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .background import init_background
from .dff import detrend_df_f  # noqa: F401 (part of this module's API, as in CaImAn)
from .footprints import areas, as_footprints, column_norms, from_columns, scale_columns
from .initialization import (
    downsample,
    greedy_roi,
    masks_matrix,
    masks_to_A,
    seed_of_components,
    upsample_footprints,
)
from .merging import merge_components
from .noise import ar_from_decay_time, noise_fft, pixel_noise
from .params import as_pair, changed_from_default, check_source_extraction, resolve_params
from .spatial import dilated_supports, update_spatial
from .temporal import update_temporal

__all__ = [
    "CNMF_DEFAULTS", "Estimates", "fit_cnmf", "evaluate_components", "detrend_df_f",
    "movie_to_Y",
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
    # spatial
    "update_background_components": True,
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


@dataclass
class Estimates:
    """Results of CNMF, mirroring CaImAn's ``Estimates`` (K components, nb background).

    Attributes
    ----------
    A
        scipy.sparse.csc_matrix (pixels, K), footprints with unit L2 norm; pixels in Fortran
        order on ``dims`` (``A[:, k].toarray().reshape(dims, order="F")`` is an image).
    b
        (pixels, nb) background footprints.
    C
        (K, T) denoised calcium traces (baseline removed), in units of movie counts times
        footprint norm.
    f
        (nb, T) background traces.
    S
        (K, T) deconvolved spikes (same units as C).
    YrA
        (K, T) residual traces: the raw trace of each component minus C (so ``C + YrA`` is
        the raw, unmixed fluorescence, baseline ``bl`` included).
    R
        (K, T) residual traces (the same array as YrA, CaImAn's name).
    sn
        (pixels,) noise standard deviation of each pixel (counts).
    g
        (K, p) AR coefficients per component.
    bl, c1, neurons_sn
        (K,) baseline, initial calcium value and noise level of each raw trace.
    dims
        (y, x) frame size.
    idx_components, idx_components_bad
        Indices of accepted / rejected components (None before evaluation).
    SNR_comp, r_values, cnn_preds
        Per-component quality metrics (None before evaluation; cnn_preds is all NaN, the
        CNN classifier is not part of the built-in engine).
    F_dff
        (K, T) dF/F, None until computed.
    seed_index
        Seeded fits (``Ain``) only: (K,) index of the user mask (column of ``Ain``) each
        component lies on (the one holding most of its footprint), -1 if none; masks that no
        component lies on were dropped (no activity) or merged into another.
    """

    A: sp.csc_matrix
    b: np.ndarray
    C: np.ndarray
    f: np.ndarray
    S: np.ndarray
    YrA: np.ndarray
    sn: np.ndarray
    g: np.ndarray
    bl: np.ndarray
    c1: np.ndarray
    neurons_sn: np.ndarray
    dims: tuple[int, int]
    R: np.ndarray | None = None
    idx_components: np.ndarray | None = None
    idx_components_bad: np.ndarray | None = None
    SNR_comp: np.ndarray | None = None
    r_values: np.ndarray | None = None
    cnn_preds: np.ndarray | None = None
    F_dff: np.ndarray | None = None
    seed_index: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.A = sp.csc_matrix(self.A)
        self.dims = (int(self.dims[0]), int(self.dims[1]))
        if self.R is None:
            self.R = self.YrA

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.A.shape[1])

    def footprints(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Footprints as images, (K, y, x) float32 (optionally only components ``idx``)."""
        A = self.A if idx is None else self.A[:, np.asarray(idx, int)]
        dense = np.asarray(A.toarray(), np.float32)
        return dense.reshape(*self.dims[::-1], -1).transpose(2, 1, 0)

    def select(self, idx: np.ndarray) -> Estimates:
        """A copy keeping only components ``idx`` (evaluation results are dropped)."""
        idx = np.asarray(idx, int)
        keep = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("C", "S", "YrA", "g", "bl", "c1", "neurons_sn", "F_dff", "seed_index"):
            if keep[name] is not None:
                keep[name] = keep[name][idx]
        keep["A"] = self.A[:, idx]
        keep["R"] = keep["YrA"]
        for name in ("idx_components", "idx_components_bad", "SNR_comp", "r_values",
                     "cnn_preds"):
            keep[name] = None
        return Estimates(**keep)


@dataclass
class Components:
    """Working state of a fit, shared by CNMF and CNMF-E: sparse footprints, traces and the
    per-trace results of the temporal step (None until computed)."""

    A: sp.csc_matrix  # (pixels, K) float32 (see .footprints)
    C: np.ndarray  # (K, T)
    S: np.ndarray | None = None
    YrA: np.ndarray | None = None
    bl: np.ndarray | None = None
    c1: np.ndarray | None = None
    g: np.ndarray | None = None
    neurons_sn: np.ndarray | None = None

    @property
    def K(self) -> int:
        return int(self.A.shape[1])

    def keep(self, idx: np.ndarray) -> Any:
        """A copy with components ``idx`` only (other fields are shared)."""
        rows = {name: getattr(self, name)[idx] for name in ("C", *_PER_TRACE)
                if getattr(self, name) is not None}
        return replace(self, A=self.A[:, idx], **rows)


#: Per-component results of the temporal step (one row or value per component).
_PER_TRACE = ("S", "YrA", "bl", "c1", "g", "neurons_sn")


@dataclass
class _Model(Components):
    """CNMF's working state: components plus the low-rank background."""

    b: np.ndarray | None = None  # (pixels, nb)
    f: np.ndarray | None = None  # (nb, T)
    # (pixels, K) sparse bool: where each footprint may lie (None: no limit); seeded fits
    region: sp.csc_matrix | None = None

    def keep(self, idx: np.ndarray) -> _Model:
        m = super().keep(idx)
        if self.region is not None:
            m.region = self.region[:, idx]
        return m


# ----------------------------------------------------------------------------------- params


def cnmf_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a CaImAn params dict for CNMF and fill in defaults.

    Keys of other CaImAn groups are ignored; an unknown key raises
    :class:`~mesmerize_helpers.engine.params.UnknownParameterError`; a CaImAn key set to a
    value the built-in engine cannot honour gives one warning.
    """
    params = dict(params or {})
    unsupported = changed_from_default(params, _UNSUPPORTED_DEFAULTS)
    P = resolve_params(params, CNMF_DEFAULTS, step="cnmf", unsupported=unsupported)
    if P["method_init"] != "greedy_roi":
        raise ValueError(
            f"method_init={P['method_init']!r} is not implemented by the built-in CNMF "
            "(use 'greedy_roi'; 'corr_pnr' is CNMF-E, for one-photon data)."
        )
    P = check_source_extraction(params, P)
    if P["gSiz"] is None:
        P["gSiz"] = tuple(int(round(2 * s + 1)) for s in P["gSig"])
    else:
        P["gSiz"] = tuple(int(s) for s in as_pair(P["gSiz"], "gSiz"))
    P["noise_range"] = tuple(P["noise_range"])
    return P


# ----------------------------------------------------------------------------------- data


def movie_to_Y(movie: Any, chunk: int = 500) -> tuple[np.ndarray, tuple[int, int]]:
    """Copy a (T, y, x) movie into a float32 (pixels, T) matrix in Fortran pixel order.

    The movie is read in chunks of frames (it may be a memmap or a lazy array) and never
    modified.

    Returns
    -------
    Y, dims
        (y*x, T) float32 C-contiguous (each pixel's time series contiguous) and (y, x).
    """
    T, h, w = (int(s) for s in movie.shape)
    Y = np.empty((h * w, T), np.float32)
    for t0 in range(0, T, chunk):
        block = np.asarray(movie[t0:t0 + chunk], dtype=np.float32)  # (t, h, w)
        # (t, h, w) -> (w, h, t) -> rows y + x*h : Fortran order on (y, x)
        Y[:, t0:t0 + len(block)] = block.transpose(2, 1, 0).reshape(h * w, -1)
    return Y, (h, w)


def Y_to_movie(Y: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """View a (pixels, T) Fortran-order matrix as a (T, y, x) movie (no copy)."""
    return Y.reshape(dims[1], dims[0], -1).transpose(2, 1, 0)


def normalize_components(model: Components) -> Components:
    """Scale footprints to unit L2 norm (traces scaled the other way); drop empty or silent
    components (CNMF's or CNMF-E's working state)."""
    model.A = as_footprints(model.A)
    nrm = column_norms(model.A)
    alive = np.flatnonzero((nrm > 0) & (model.C.max(axis=1, initial=0) > 0))
    m = model.keep(alive)
    nrm = nrm[alive]
    m.A = scale_columns(m.A, 1 / nrm)
    m.C = (m.C * nrm[:, None]).astype(np.float32)
    for name in ("S", "YrA"):
        if getattr(m, name) is not None:
            setattr(m, name, (getattr(m, name) * nrm[:, None]).astype(np.float32))
    for name in ("bl", "c1", "neurons_sn"):
        if getattr(m, name) is not None:
            setattr(m, name, getattr(m, name) * nrm)
    return m


# ----------------------------------------------------------------------------------- steps


def initialize_greedy(
    Y: np.ndarray, dims: tuple[int, int], P: Mapping[str, Any], K: int, nb: int = 1
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Greedy initialization of K components on (pixels, T) data, with downsampling.

    Before the search, the ``nb`` main time courses of the spatially smoothed movie
    (neuropil, laser power, global fluctuations) are regressed out of every pixel, so that
    the search finds local sources rather than places where the background is strong.

    Returns
    -------
    A, C
        (pixels, K') sparse footprints (movie units) and (K', T) traces.
    """
    T = Y.shape[1]
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    movie = Y_to_movie(Y, dims)
    # a float32 working copy (the search subtracts from it); memory: one movie
    if ssub > 1 or tsub > 1:
        small = downsample(movie, ssub, tsub)
    else:
        small = np.ascontiguousarray(movie, dtype=np.float32)
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
    Y: np.ndarray, dims: tuple[int, int], Ain: Any, nb: int
) -> tuple[sp.csc_matrix, np.ndarray]:
    """Footprints from user masks; traces by non-negative least squares above the baseline.

    Returns
    -------
    A, C
        (pixels, n) sparse footprints with unit norm and (n, T) traces.
    """
    A = masks_to_A(Ain, dims)
    base = np.percentile(Y[:, :: max(Y.shape[1] // 200, 1)], 20, axis=1)  # rough baseline
    AtA = (A.T @ A).toarray()
    proj = np.asarray(A.T @ Y) - (A.T @ base)[:, None]
    C = np.linalg.lstsq(AtA + 1e-6 * np.eye(len(AtA)), proj, rcond=None)[0]
    return A, np.maximum(C, 0).astype(np.float32)


def temporal_step(
    Y: np.ndarray, m: _Model, P: Mapping[str, Any], reuse_g: bool, drop_background: bool = False
) -> _Model:
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


def drop_background_like(m: _Model, thr: float = BACKGROUND_CORR_THR) -> _Model:
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
#: Footprint pixels above this fraction of the peak make up a component's area.
AREA_THR = 0.2
#: Largest area of a soma, in units of ``pi * gSig_y * gSig_x`` (a disk of radius 3 gSig).
MAX_AREA_FACTOR = 9.0
#: Smallest area of a soma, same units (a disk of radius ~0.8 gSig): smaller components are
#: bright specks (dendrites, boutons) or noise.
MIN_AREA_FACTOR = 0.6


def footprint_areas(A: Any) -> np.ndarray:
    """(K,) number of pixels of each (pixels, K) footprint (sparse or dense) above
    ``AREA_THR`` times its peak."""
    return areas(A, AREA_THR)


def max_area(P: Mapping[str, Any]) -> float:
    """Largest plausible soma area (px) for the ``gSig`` of the params."""
    return MAX_AREA_FACTOR * np.pi * P["gSig"][0] * P["gSig"][1]


def min_area(P: Mapping[str, Any]) -> float:
    """Smallest plausible soma area (px) for the ``gSig`` of the params."""
    return MIN_AREA_FACTOR * np.pi * P["gSig"][0] * P["gSig"][1]


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
    Y: np.ndarray, dims: tuple[int, int], m: _Model, P: Mapping[str, Any], prune: bool = True
) -> _Model:
    """Update footprints and background footprints; drop empty and oversized components.

    A footprint spread over many times the area of a soma is background that a component
    has taken over (typically neuropil); removing it lets the background model take it back.
    """
    A, b = update_spatial(
        Y, m.A, m.C, m.b, m.f, dims, radius=growth_radius(P),
        update_background=bool(P["update_background_components"]),
        max_radius=MAX_RADIUS_FACTOR * float(max(P["gSig"])), allowed=m.region,
    )
    m = replace(m, A=A, b=b)
    if prune:
        m = m.keep(np.flatnonzero(footprint_areas(A) <= max_area(P)))
    return normalize_components(m)


def merge_step(m: _Model, P: Mapping[str, Any]) -> tuple[_Model, int]:
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
    return normalize_components(_Model(A, C, b=m.b, f=m.f, region=region)), n


def refine(
    Y: np.ndarray,
    dims: tuple[int, int],
    m: _Model,
    P: Mapping[str, Any],
    progress: Any = None,
    drop_background: bool = False,
) -> _Model:
    """One round of CNMF: spatial and temporal updates, then merge and update again until
    nothing is left to merge (at most three times).

    ``drop_background`` removes components that copy a background trace (see
    :func:`drop_background_like`): pieces of neuropil that the greedy search took for
    sources.
    """
    m = spatial_step(Y, dims, m, P)
    m = temporal_step(Y, m, P, reuse_g=False, drop_background=drop_background)
    for _ in range(3):
        m, n_merged = merge_step(m, P)
        if n_merged == 0:
            break
        m = spatial_step(Y, dims, m, P)
        m = temporal_step(Y, m, P, reuse_g=False, drop_background=drop_background)
    if progress is not None:
        progress.update(1)
    return m


def to_estimates(
    m: Any, sn: np.ndarray, dims: tuple[int, int], p: int,
    b: np.ndarray | None = None, f: np.ndarray | None = None,
) -> Estimates:
    """Package a working model as :class:`Estimates` (sparse A, float32 arrays).

    ``m`` has CNMF's (or CNMF-E's) working fields: A, C and the per-trace results (None where
    not computed yet). The background is ``m.b``/``m.f`` unless ``b``/``f`` are given
    (CNMF-E's working state has a ring model instead).
    """
    K = m.A.shape[1]
    T = m.C.shape[1]
    b = m.b if b is None else b
    f = m.f if f is None else f

    def arr(x: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, np.float32) if x is None else np.asarray(x)

    return Estimates(
        A=sp.csc_matrix(m.A), b=b.astype(np.float32), C=m.C.astype(np.float32),
        f=f.astype(np.float32), S=arr(m.S, (K, T)).astype(np.float32),
        YrA=arr(m.YrA, (K, T)).astype(np.float32), sn=sn.astype(np.float32),
        g=arr(m.g, (K, p)), bl=arr(m.bl, (K,)), c1=arr(m.c1, (K,)),
        neurons_sn=arr(m.neurons_sn, (K,)), dims=dims,
    )


def fit_field(
    Y: np.ndarray,
    dims: tuple[int, int],
    P: Mapping[str, Any],
    *,
    K: int,
    nb: int,
    Ain: Any = None,
    rounds: int = 1,
) -> _Model:
    """Initialize and refine CNMF on one field (the whole frame or one patch)."""
    if Ain is not None:
        A, C = initialize_from_masks(Y, dims, Ain, nb)
    else:
        A, C = initialize_greedy(Y, dims, P, K, nb)
    A = as_footprints(A)
    b, f = init_background(Y, A, C, nb)
    region = None if Ain is None else seed_regions(A, dims, growth_radius(P))
    m = _Model(A, C, b=b, f=f, region=region)
    if Ain is not None:  # traces first: the masks are the reliable part
        m = temporal_step(Y, m, P, reuse_g=False)
    for _ in range(rounds):
        m = refine(Y, dims, m, P, drop_background=Ain is None)
    return m


def fit_cnmf(
    movie: Any,
    params: Mapping[str, Any] | None,
    *,
    Ain: Any = None,
    refit: bool = True,
    n_processes: int = 1,
    progress: bool = True,
    patch_results: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Estimates:
    """Fit CNMF to a two-photon movie.

    Parameters
    ----------
    movie
        (T, y, x) array-like (ndarray, memmap, lazy array with slicing); read, never modified.
    params
        CaImAn params (the item's ``"main"`` dict). Keys of other steps are ignored.
        ``rf``/``stride`` select patches (``rf`` is the half-size of a patch in px, ``stride``
        the overlap in px); ``K`` is then the number of components per patch.
    Ain
        Optional seed footprints: (y, x, n) boolean or float masks (CaImAn's convention),
        (n, y, x) masks, or a (pixels, n) Fortran-order matrix. Greedy initialization and
        patches are skipped; each footprint is refined within ``gSig`` px of its mask (see
        :func:`seed_regions`), and one left with no activity there is dropped;
        ``Estimates.seed_index`` says which mask each component lies on.
    refit
        Run a second round of whole-field updates seeded with the first fit (CaImAn's
        ``cnm.refit``).
    n_processes
        Worker processes for patches (1: in this process).
    progress
        Show a tqdm progress bar.
    patch_results
        With patches, the fits of all patches made beforehand (e.g. by separate jobs) with
        :func:`~mesmerize_helpers.engine.patches.fit_movie_patch`, in patch order.

    Returns
    -------
    Estimates
        Components are not yet evaluated (see :func:`evaluate_components`).
    """
    from tqdm.auto import tqdm

    P = cnmf_params(params)
    Y, dims = movie_to_Y(movie)
    sn = pixel_noise(Y, P["noise_range"], P["noise_method"])
    nb = int(P["nb"])
    masks = None if Ain is None else masks_matrix(Ain, dims)  # read the user's masks once
    use_patches = masks is None and P["rf"] is not None
    bar = tqdm(total=1 + int(refit) + int(use_patches), desc="cnmf", disable=not progress)
    try:
        if use_patches:
            from .patches import fit_patches

            m = fit_patches(Y, dims, P, n_processes=n_processes, progress=progress,
                            results=patch_results)
            bar.update(1)
            m = refine(Y, dims, m, P, bar, drop_background=True)
        else:
            m = fit_field(Y, dims, P, K=int(P["K"]), nb=nb, Ain=masks)
            bar.update(1)
        if refit:
            m = refine(Y, dims, m, P, bar, drop_background=masks is None)
    finally:
        bar.close()
    est = to_estimates(m, sn, dims, int(P["p"]))
    if masks is not None:
        est.seed_index = seed_of_components(est.A, masks)
    est.extra["params"] = {k: v for k, v in P.items()}
    return est


def evaluate_components(estimates: Estimates, movie: Any, params: Mapping[str, Any]) -> Estimates:
    """Classify components as accepted / rejected (see :mod:`.evaluate`); sets metrics."""
    from .evaluate import evaluate_components as _evaluate

    return _evaluate(estimates, movie, cnmf_params(params))

