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

# Every key of CaImAn's CNMFParams groups (CaImAn 1.12), by group. Used to tell a typo
# from a valid key that a given step of the built-in engine simply does not use.
CAIMAN_PARAM_GROUPS: dict[str, frozenset[str]] = {
    "data": frozenset({
        "fnames", "dims", "fr", "decay_time", "dxy", "var_name_hdf5", "caiman_version",
        "last_commit", "mmap_F", "mmap_C",
    }),
    "patch": frozenset({
        "border_pix", "del_duplicates", "in_memory", "low_rank_background", "memory_fact",
        "n_processes", "nb_patch", "only_init", "p_patch", "remove_very_bad_comps", "rf",
        "skip_refinement", "p_ssub", "stride", "p_tsub",
    }),
    "preprocess": frozenset({
        "check_nan", "compute_g", "include_noise", "lags", "max_num_samples_fft", "n_pixels_per_process",
        "noise_method", "noise_range", "p", "pixels", "sn",
    }),
    "init": frozenset({
        "K", "SC_kernel", "SC_sigma", "SC_thr", "SC_normalize", "SC_use_NN", "SC_nnn",
        "alpha_snmf", "center_psf", "gSig", "gSiz", "init_iter", "kernel", "lambda_gnmf",
        "maxIter", "max_iter_snmf", "method_init", "min_corr", "min_pnr", "nIter", "nb",
        "normalize_init", "options_local_NMF", "perc_baseline_snmf", "ring_size_factor",
        "rolling_length", "rolling_sum", "seed_method", "sigma_smooth_snmf", "ssub", "ssub_B",
        "tsub", "greedyroi_nmf_init_method", "greedyroi_nmf_max_iter",
    }),
    "spatial": frozenset({
        "block_size_spat", "dist", "expandCore", "extract_cc", "maxthr", "medw", "method_exp",
        "method_ls", "n_pixels_per_process", "nb", "normalize_yyt_one", "nrgthr",
        "num_blocks_per_run_spat", "se", "ss", "thr_method", "update_background_components",
    }),
    "temporal": frozenset({
        "ITER", "bas_nonneg", "block_size_temp", "fudge_factor", "lags", "optimize_g",
        "memory_efficient", "method_deconvolution", "method_ar", "noise_method", "noise_range",
        "num_blocks_per_run_temp", "p", "s_min", "solvers", "verbosity",
    }),
    "merging": frozenset({"do_merge", "merge_thr", "merge_parallel", "max_merge_area"}),
    "quality": frozenset({
        "SNR_lowest", "cnn_lowest", "gSig_range", "min_SNR", "min_cnn_thr", "rval_lowest",
        "rval_thr", "use_cnn", "use_ecc", "max_ecc",
    }),
    "motion": frozenset({
        "border_nan", "gSig_filt", "is3D", "max_deviation_rigid", "max_shifts", "min_mov",
        "niter_els", "niter_rig", "nonneg_movie", "num_frames_split", "num_splits_to_process_els",
        "num_splits_to_process_rig", "overlaps", "pw_rigid", "shifts_opencv", "splits_els",
        "splits_rig", "strides", "upsample_factor_grid", "use_cuda", "indices",
        "shifts_interpolate",
    }),
    "online": frozenset({
        "N_samples_exceptionality", "batch_update_suff_stat", "dist_shape_update", "ds_factor",
        "epochs", "expected_comps", "full_XXt", "init_batch", "init_method", "iters_shape",
        "max_comp_update_shape", "max_num_added", "max_shifts_online", "min_SNR", "min_num_trial",
        "minibatch_shape", "minibatch_suff_stat", "motion_correct", "movie_name_online",
        "normalize", "n_refit", "num_times_comp_updated", "opencv_codec", "path_to_model",
        "ring_CNN", "rval_thr", "save_online_movie", "show_movie", "simultaneously",
        "sniper_mode", "stop_detection", "test_both", "thresh_CNN_noisy", "thresh_fitness_delta",
        "thresh_fitness_raw", "thresh_overlap", "update_freq", "update_num_comps",
        "use_corr_img", "use_dense", "use_peak_max", "W_update_factor",
    }),
    "ring_CNN": frozenset({
        "n_channels", "use_bias", "use_add", "pct", "patience", "max_epochs", "width",
        "loss_fn", "lr", "lr_scheduler", "path_to_model", "remove_activity", "reuse_model",
    }),
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


def check_source_extraction(raw: Mapping[str, Any], P: dict[str, Any]) -> dict[str, Any]:
    """Checks shared by CNMF and CNMF-E on resolved params ``P`` (``raw``: as given).

    Warns once for ``use_cnn`` and for a deconvolution method other than OASIS, rejects an
    AR order ``p`` outside 0-2, and turns ``gSig`` into a float (y, x) pair (pixels).
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
    return P
