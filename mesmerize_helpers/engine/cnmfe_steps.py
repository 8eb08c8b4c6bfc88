"""CNMF-E's params and the steps of its fit (:mod:`.cnmfe` puts them together).

The params (CaImAn's keys, CNMF-E demo defaults), the working model (components plus the
ring background ``W``, ``b0``), and the steps every CNMF-E fit is made of: the corr-PNR
initialization, the ring background, and the spatial, temporal and merge updates on the
background-free data ``Y - B``. The activity fit (:mod:`.cnmfe`) and the seeded fit
(:mod:`.cnmfe_seeded`) share them; the results module (:mod:`.cnmfe_results`) reads the
params.
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
from .data import DataMatrix, Workspace, as_data
from .footprints import areas, as_footprints
from .initialization import downsample_data, upsample_footprints
from .merging import merge_components
from .model import Components, normalize_components
from .noise import ar_from_decay_time
from .params import check_source_extraction, resolve_step
from .ring import compute_W, ring_radius, subtract_background
from .shaping import SHAPE_DEFAULTS, shaping_params
from .spatial import update_spatial
from .temporal import update_temporal

__all__ = [
    "CNMFE_DEFAULTS", "cnmfe_params", "initialize", "init_bytes", "patch_bytes",
    "background_step", "spatial_step", "temporal_step", "merge_step", "refine",
]

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
    params, P = resolve_step(params, CNMFE_DEFAULTS, _UNSUPPORTED_DEFAULTS, "cnmfe")
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
    # CNMF-E's usual neuron diameter is about 4 gSig + 1 (CaImAn's CNMF-E demo)
    P = check_source_extraction(params, P, gsiz_per_gsig=4)
    if P["seed_method"] != "auto":
        warnings.warn(f"seed_method={P['seed_method']!r}: only 'auto' is implemented "
                      "(no interactive seeding); using it.", UserWarning, stacklevel=2)
    if P["normalize_init"]:
        warnings.warn("normalize_init=True is ignored with the ring model (CaImAn sets it "
                      "to False for CNMF-E too).", UserWarning, stacklevel=2)
    # odd sizes, as CaImAn, so that a box is centred on its seed
    P["gSiz"] = tuple(s + 1 if s % 2 == 0 else s for s in P["gSiz"])
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
    minus: Any = None, workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corr-PNR initialization on (pixels, T) data (optionally on a downsampled copy).

    With ``ssub``/``tsub`` > 1 the seeding runs on the block-averaged movie, whose noise is
    ``sqrt(ssub^2 tsub)`` times lower, so ``min_pnr`` is scaled up by that (as CaImAn);
    footprints and traces are brought back to full resolution.

    Spatial downsampling shrinks neurons to a few pixels, where the 3x3 median filter of
    the seed search removes most seeds: keep ``ssub=1`` unless ``gSig / ssub >= 3`` px.
    ``tsub=2`` halves the seeding time with little loss (lower ``min_pnr`` accordingly).

    ``Y`` is an array or a :class:`~.data.DataMatrix`; the seeding works in a copy of the
    (downsampled) movie and its filtered copy, in memory (:func:`init_bytes`) or, when
    ``workspace`` puts them in files, read a block of frames at a time. ``minus``:
    optional ``(A, C)`` whose product is subtracted from the data (seeding in a residual).

    Returns
    -------
    A, C
        (pixels, K) footprints (counts per unit of C) and (K, T) traces.
    """
    data = as_data(Y, dims)
    T = data.n_frames
    ssub, tsub = max(int(P["ssub"]), 1), max(int(P["tsub"]), 1)
    small = None if workspace is None else workspace.frames((T // tsub, dims[0] // ssub,
                                                             dims[1] // ssub))
    small = downsample_data(data, ssub, tsub, minus=minus, out=small)  # the working copy
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
        workspace=workspace, budget=data.budget,
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
