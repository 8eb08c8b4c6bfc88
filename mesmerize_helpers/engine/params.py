"""Checking CaImAn-style parameter dicts against what a step of the engine understands.

Every step of the built-in engine declares the CaImAn ``CNMFParams`` keys it implements,
with their defaults. A params dict may hold keys of other steps too (CaImAn keeps all groups
in one object, and a cnmf item's ``"main"`` often carries ``fr`` or motion keys): those are
ignored. A key that is in no CaImAn group at all is almost always a typo and is an error that
names the nearest valid key.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage


def _expand_core() -> np.ndarray:
    # CaImAn's default spatial "expandCore": a radius-2 diamond
    return ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), 2).astype(int)


#: CaImAn 1.12's ``CNMFParams`` groups with their default values (what ``CNMFParams()``
#: holds before ``change_params``; file- and install-dependent values are None). Used to
#: tell a typo from a valid key that a step of the built-in engine does not use, and to fill
#: the ``params`` of ``s.cnmf.get_output()`` as CaImAn's object would have them.
CAIMAN_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "fnames": None, "dims": None, "fr": 30, "decay_time": 0.4, "dxy": (1, 1),
        "var_name_hdf5": "mov", "caiman_version": None, "last_commit": None,
        "mmap_F": None, "mmap_C": None,
    },
    "patch": {
        "border_pix": 0, "del_duplicates": False, "in_memory": True,
        "low_rank_background": True, "memory_fact": 1, "n_processes": 1, "nb_patch": 1,
        "only_init": True, "p_patch": 0, "remove_very_bad_comps": False, "rf": None,
        "skip_refinement": False, "p_ssub": 2, "stride": None, "p_tsub": 2,
    },
    "preprocess": {
        "check_nan": True, "compute_g": False, "include_noise": False, "lags": 5,
        "max_num_samples_fft": 3 * 1024, "n_pixels_per_process": None, "noise_method": "mean",
        "noise_range": [0.25, 0.5], "p": 2, "pixels": None, "sn": None,
    },
    "init": {
        "K": 30, "SC_kernel": "heat", "SC_sigma": 1, "SC_thr": 0, "SC_normalize": True,
        "SC_use_NN": False, "SC_nnn": 20, "alpha_snmf": 0.5, "center_psf": False,
        "gSig": [5, 5], "gSiz": None, "greedyroi_nmf_init_method": "nndsvdar",
        "greedyroi_nmf_max_iter": 200, "init_iter": 2, "kernel": None, "lambda_gnmf": 1,
        "snmf_l1_ratio": 0.0, "maxIter": 5, "max_iter_snmf": 500,
        "method_init": "greedy_roi", "min_corr": 0.85, "min_pnr": 20, "nIter": 5, "nb": 1,
        "normalize_init": True, "options_local_NMF": None, "perc_baseline_snmf": 20,
        "ring_size_factor": 1.5, "rolling_length": 100, "rolling_sum": True,
        "seed_method": "auto", "sigma_smooth_snmf": (0.5, 0.5, 0.5), "ssub": 2, "ssub_B": 2,
        "tsub": 2,
    },
    "spatial": {
        "block_size_spat": 5000, "dist": 3, "expandCore": _expand_core(), "extract_cc": True,
        "maxthr": 0.1, "medw": None, "method_exp": "dilate", "method_ls": "lasso_lars",
        "n_pixels_per_process": None, "nb": 1, "normalize_yyt_one": True, "nrgthr": 0.9999,
        "num_blocks_per_run_spat": 20, "se": None, "ss": None, "thr_method": "nrg",
        "update_background_components": True,
    },
    "temporal": {
        "ITER": 2, "bas_nonneg": False, "block_size_temp": 5000, "fudge_factor": 0.96,
        "lags": 5, "optimize_g": False, "memory_efficient": False,
        "method_deconvolution": "oasis", "method_ar": None, "nb": 1, "noise_method": "mean",
        "noise_range": [0.25, 0.5], "num_blocks_per_run_temp": 20, "p": 2, "s_min": None,
        "solvers": ["ECOS", "SCS"], "verbosity": False,
    },
    "merging": {"do_merge": True, "merge_thr": 0.8, "merge_parallel": False,
                "max_merge_area": None},
    "quality": {
        "SNR_lowest": 0.5, "cnn_lowest": 0.1, "gSig_range": None, "min_SNR": 2.5,
        "min_cnn_thr": 0.9, "rval_lowest": -1, "rval_thr": 0.8, "use_cnn": True,
        "use_ecc": False, "max_ecc": 3,
    },
    "online": {
        "N_samples_exceptionality": None, "batch_update_suff_stat": False,
        "dist_shape_update": False, "ds_factor": 1, "epochs": 1, "expected_comps": 500,
        "full_XXt": False, "init_batch": 200, "init_method": "bare", "iters_shape": 5,
        "max_comp_update_shape": np.inf, "max_num_added": 5, "max_shifts_online": 10,
        "min_SNR": 2.5, "min_num_trial": 5, "minibatch_shape": 100, "minibatch_suff_stat": 5,
        "motion_correct": True, "movie_name_online": "online_movie.mp4", "normalize": False,
        "n_refit": 0, "num_times_comp_updated": np.inf, "opencv_codec": "H264",
        "path_to_model": None, "ring_CNN": False, "rval_thr": 0.8, "save_online_movie": False,
        "show_movie": False, "simultaneously": False, "sniper_mode": False,
        "stop_detection": False, "test_both": False, "thresh_CNN_noisy": 0.5,
        "thresh_fitness_delta": -50, "thresh_fitness_raw": None, "thresh_overlap": 0.5,
        "update_freq": 200, "update_num_comps": True, "use_corr_img": False,
        "use_dense": True, "use_peak_max": True, "W_update_factor": 1,
    },
    "motion": {
        "border_nan": "copy", "gSig_filt": None, "is3D": False, "max_deviation_rigid": 3,
        "max_shifts": (6, 6), "min_mov": None, "niter_els": 1, "niter_rig": 1,
        "nonneg_movie": True, "num_frames_split": 80, "num_splits_to_process_els": None,
        "num_splits_to_process_rig": None, "overlaps": (32, 32), "pw_rigid": False,
        "shifts_interpolate": False, "shifts_opencv": True, "splits_els": 14,
        "splits_rig": 14, "strides": (96, 96), "upsample_factor_grid": 4, "use_cuda": False,
        "indices": (slice(None), slice(None)),
    },
    "ring_CNN": {
        "n_channels": 2, "use_bias": False, "use_add": False, "pct": 0.01, "patience": 3,
        "max_epochs": 100, "width": 5, "loss_fn": "pct", "lr": 1e-3, "lr_scheduler": None,
        "path_to_model": None, "remove_activity": False, "reuse_model": False,
    },
}

#: Every key of CaImAn's CNMFParams groups, by group.
CAIMAN_PARAM_GROUPS: dict[str, frozenset[str]] = {
    group: frozenset(keys) for group, keys in CAIMAN_DEFAULTS.items()
}

CAIMAN_PARAM_KEYS: frozenset[str] = frozenset().union(*CAIMAN_PARAM_GROUPS.values())


class UnknownParameterError(ValueError):
    """A params key that no CaImAn parameter group (and no engine step) knows."""


def nearest_key(key: str, valid: Iterable[str]) -> str | None:
    """Return the valid key closest in spelling to ``key``, or None if none is close."""
    valid = list(valid)
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not match:  # case-only typos such as "gsig" for "gSig"
        lower = {v.lower(): v for v in valid}
        match = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.5)
        match = [lower[m] for m in match]
    return match[0] if match else None


def resolve_params(
    params: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    *,
    step: str,
    unsupported: Iterable[str] = (),
) -> dict[str, Any]:
    """Merge a CaImAn-style params dict over a step's defaults, checking every key.

    Parameters
    ----------
    params
        The ``"main"`` dict of an item (CaImAn parameter names), or None.
    defaults
        The keys this step implements, with their default values.
    step
        Name of the step (``"mcorr"``, ``"cnmf"``, ...), used in messages.
    unsupported
        Keys that this step's CaImAn counterpart uses but the built-in engine does not
        implement. Setting one gives a single warning; the value is ignored.

    Returns
    -------
    dict
        ``defaults`` updated with the values given for keys in ``defaults``.

    Raises
    ------
    UnknownParameterError
        For a key that is neither in ``defaults`` nor in any CaImAn parameter group.
    """
    params = dict(params or {})
    resolved = dict(defaults)
    unsupported = set(unsupported)
    ignored = []
    for key, value in params.items():
        if key in defaults:
            resolved[key] = value
        elif key in unsupported:
            ignored.append(key)
        elif key not in CAIMAN_PARAM_KEYS:
            valid = set(defaults) | CAIMAN_PARAM_KEYS
            hint = nearest_key(key, valid)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise UnknownParameterError(
                f"Unknown {step} parameter {key!r}.{did_you_mean} "
                f"Valid {step} parameters are: {', '.join(sorted(defaults))}."
            )
    if ignored:
        warnings.warn(
            f"The built-in engine does not implement the {step} parameter(s) "
            f"{', '.join(sorted(ignored))}; they are ignored (use engine: caiman for them).",
            UserWarning,
            stacklevel=2,
        )
    return resolved


def as_pair(value: Any, name: str) -> tuple[int, int] | tuple[float, float]:
    """Return a scalar or 2-sequence parameter as a (y, x) pair, rejecting other shapes."""
    if value is None:
        raise ValueError(f"Parameter {name!r} must not be None here.")
    if isinstance(value, (int, float)):
        return (value, value)
    seq = list(value)
    if len(seq) != 2:
        raise ValueError(f"Parameter {name!r} must be a number or a pair (y, x); got {value!r}.")
    return (seq[0], seq[1])


def changed_from_default(params: Mapping[str, Any], caiman_defaults: Mapping[str, Any]) -> list[str]:
    """Keys of ``params`` that a step does not implement and that differ from CaImAn's
    default (a default value changes nothing, so only those deserve a warning)."""
    return [k for k, v in params.items() if k in caiman_defaults and v != caiman_defaults[k]]


def resolve_step(params: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                 unsupported_defaults: Mapping[str, Any], step: str
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params as given and resolved for ``step`` (:func:`resolve_params`), with one
    warning for keys changed from CaImAn's ``unsupported_defaults`` (not honoured).

    Returns
    -------
    raw, P
        A copy of ``params``; the resolved params.
    """
    raw = dict(params or {})
    unsupported = changed_from_default(raw, unsupported_defaults)
    return raw, resolve_params(raw, defaults, step=step, unsupported=unsupported)


def check_source_extraction(raw: Mapping[str, Any], P: dict[str, Any],
                            gsiz_per_gsig: float) -> dict[str, Any]:
    """Checks shared by CNMF and CNMF-E on resolved params ``P`` (``raw``: as given).

    Warns once for ``use_cnn`` and for a deconvolution method other than OASIS, rejects an
    AR order ``p`` outside 0-2, turns ``gSig`` into a float (y, x) pair (pixels) and
    ``gSiz`` into an int pair (``gsiz_per_gsig * gSig + 1`` when None), and
    ``noise_range`` into a tuple.
    """
    if raw.get("use_cnn"):
        warnings.warn("use_cnn: the CNN classifier is not part of the built-in engine; "
                      "components are evaluated on SNR and spatial consistency only.",
                      UserWarning, stacklevel=3)
    if P["method_deconvolution"] != "oasis":
        warnings.warn("Only method_deconvolution='oasis' is implemented; using it.",
                      UserWarning, stacklevel=3)
    if int(P["p"]) not in (0, 1, 2):
        raise ValueError(f"p must be 0, 1 or 2; got {P['p']!r}.")
    gSig = as_pair(P["gSig"], "gSig")
    P["gSig"] = (float(gSig[0]), float(gSig[1]))
    if P["gSiz"] is None:
        P["gSiz"] = tuple(int(round(gsiz_per_gsig * s + 1)) for s in P["gSig"])
    else:
        P["gSiz"] = tuple(int(s) for s in as_pair(P["gSiz"], "gSiz"))
    P["noise_range"] = tuple(P["noise_range"])
    return P


#: Where a key lives in several CaImAn groups, the group whose value the engine uses: later
#: groups win (``init`` holds CaImAn's authoritative ``nb``, ``temporal`` the AR order ``p``
#: of deconvolution, ``quality`` the evaluation thresholds that ``online`` repeats).
_GROUP_PRECEDENCE = ("online", "ring_CNN", "preprocess", "spatial", "patch", "data", "merging",
                     "motion", "temporal", "quality", "init")


def flatten_main(main: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``"main"`` params dict with CaImAn's nested groups merged into flat keys.

    CaImAn (and mesmerize-core) accept ``{"init": {"K": 5}, "merging": {"merge_thr": 0.8},
    "fr": 30}`` as well as flat keys. The engine reads flat keys, so nested groups are merged:
    a key set in several groups takes the value of the group the engine's meaning follows
    (``_GROUP_PRECEDENCE``), and a flat key wins over a nested one; a conflict warns once,
    naming the values.

    Parameters
    ----------
    main
        The item's ``params["main"]``.

    Returns
    -------
    dict
        Flat CaImAn params (a new dict; ``main`` is not modified).
    """
    main = dict(main or {})
    nested = {g: main.pop(g) for g in list(main)
              if g in CAIMAN_DEFAULTS and isinstance(main[g], Mapping)}
    if not nested:
        return main
    flat: dict[str, Any] = {}
    source: dict[str, str] = {}
    conflicts = []
    for group in sorted(nested, key=_GROUP_PRECEDENCE.index):
        for key, value in nested[group].items():
            if key in flat and not _same(flat[key], value):
                conflicts.append(f"{key}: {source[key]}={flat[key]!r}, {group}={value!r}")
            flat[key], source[key] = value, group
    for key, value in main.items():
        if key in flat and not _same(flat[key], value):
            conflicts.append(f"{key}: {source[key]}={flat[key]!r}, flat={value!r}")
        flat[key] = value
    if conflicts:
        warnings.warn("params['main'] sets a key differently in several places; the engine "
                      "uses one value per key (the last named here): " + "; ".join(conflicts),
                      UserWarning, stacklevel=2)
    return flat


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))
    except (TypeError, ValueError):
        return a == b
