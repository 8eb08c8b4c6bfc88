"""CNMF source extraction for two-photon movies: orchestration, defaults and results.

The model is CaImAn's: the movie, as a (pixels, T) matrix ``Y``, is approximated by
``A C + b f`` plus noise, where ``A`` (pixels, K) are non-negative localised footprints,
``C`` (K, T) their calcium traces following AR(p) dynamics driven by sparse non-negative
spikes ``S``, and ``b f`` a rank-``nb`` non-negative background. Pixels are flattened in
Fortran order on (y, x) (index ``y + x * height``), as in CaImAn, so that ``A`` can be used
with CaImAn's tools.

Layers, bottom up: the data matrix, the working state and the results (:mod:`.model`);
per-pixel noise (:mod:`.noise`); the steps, one module each: initialization
(:mod:`.initialization`, greedy or from user masks), alternating spatial (:mod:`.spatial`,
footprints shaped by :mod:`.shaping`) and temporal (:mod:`.temporal`) updates, merging
(:mod:`.merging`), quality evaluation (:mod:`.evaluate`) and dF/F (:mod:`.dff`); CNMF on
one field (:mod:`.cnmf_field`); optional patches (:mod:`.patches`); and this module, the
entry point (:func:`fit_cnmf`, :func:`evaluate_components`).
Footprints are sparse throughout (:mod:`.footprints`), so that time and memory grow with the
movie, not with pixels x components.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .cnmf_field import CNMF_DEFAULTS, cnmf_params, fit_field, refine
from .data import Budget, Workspace
from .dff import detrend_df_f
from .evaluate import evaluate_components as _evaluate
from .initialization import seed_of_components
from .model import (
    Components,
    Estimates,
    Y_to_movie,
    data_matrix,
    fit_input,
    movie_to_Y,
    to_estimates,
)
from .patches import fit_patches, greedy_bytes

__all__ = [
    "CNMF_DEFAULTS", "Estimates", "Components", "fit_cnmf", "evaluate_components", "data_matrix",
    "detrend_df_f", "movie_to_Y", "Y_to_movie", "to_estimates", "cnmf_params",
]


def fit_cnmf(
    movie: Any,
    params: Mapping[str, Any] | None,
    *,
    Ain: Any = None,
    refit: bool = True,
    n_processes: int = 1,
    progress: bool = True,
    patch_results: list[tuple[np.ndarray, np.ndarray]] | None = None,
    budget: Budget | None = None,
    workspace: Workspace | None = None,
) -> Estimates:
    """Fit CNMF to a two-photon movie.

    Parameters
    ----------
    movie
        (T, y, x) array-like (ndarray, memmap, lazy array with slicing), copied into memory
        as the (pixels, T) data matrix; or that matrix as a :class:`~.data.DataMatrix`
        (e.g. a pixel-major file, read a block at a time). Read, never modified.
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
    budget
        Memory budget that sizes the blocks read (default: that of a ``DataMatrix``
        ``movie``, else unlimited). A step that cannot fit it raises
        :class:`~.data.MemoryBudgetError` before it starts.
    workspace
        Where working matrices go (the background's bin means of a long movie, see
        :func:`~.background.init_background`; default: memory).

    Returns
    -------
    Estimates
        Components are not yet evaluated (see :func:`evaluate_components`).
    """
    from tqdm.auto import tqdm

    P = cnmf_params(params)
    Y, masks, use_patches, sn = fit_input(
        movie, P, Ain, budget, greedy_bytes,
        "use patches (rf, stride) or more downsampling (tsub, ssub)")
    dims = Y.dims
    nb = int(P["nb"])
    bar = tqdm(total=1 + int(refit) + int(use_patches), desc="cnmf", disable=not progress)
    try:
        if use_patches:
            m = fit_patches(Y, dims, P, n_processes=n_processes, progress=progress,
                            results=patch_results, workspace=workspace)
            bar.update(1)
            m = refine(Y, dims, m, P, sn, bar, drop_background=True)
        else:
            m = fit_field(Y, dims, P, K=int(P["K"]), nb=nb, Ain=masks, sn=sn,
                          workspace=workspace)
            bar.update(1)
        if refit:
            m = refine(Y, dims, m, P, sn, bar, drop_background=masks is None)
    finally:
        bar.close()
    est = to_estimates(m, sn, dims, int(P["p"]))
    if masks is not None:
        est.seed_index = seed_of_components(est.A, masks)
    est.extra["params"] = {k: v for k, v in P.items()}
    return est


def evaluate_components(estimates: Estimates, movie: Any, params: Mapping[str, Any]) -> Estimates:
    """Classify components as accepted / rejected (see :mod:`.evaluate`); sets metrics.
    ``movie``: as for :func:`fit_cnmf`."""
    return _evaluate(estimates, movie, cnmf_params(params))
