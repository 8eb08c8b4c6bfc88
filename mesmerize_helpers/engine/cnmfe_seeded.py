"""Seeded CNMF-E: the neurons are given as masks (``Ain``), the background is CNMF-E's.

What mesmerize-core does with ``params["Ain_path"]`` on a cnmfe item: CaImAn's ``CNMF`` with
``Ain`` and ``rf=None, only_init=False``, i.e. no search for neurons and the full fit of the
given ones. Here the fit is CNMF-E's (:mod:`.cnmfe`) with the search left out:

1. the ring background (:mod:`.ring`) of the movie alone, and first traces by least squares
   of the masks on ``Y - B`` (the ring passes around a soma, so ``B`` barely holds its
   transients);
2. ``init_iter`` rounds (one more with ``refit``) of: ring background for the current
   neurons, traces, merge, footprints, traces, all on ``Y - B``.

As in seeded CNMF (:func:`~.cnmf_field.seed_regions`), each footprint stays within ``gSig``
px of its mask: the mask says which cell it is, so the fit refines its outline but does not
move it onto a neighbour. A seed with no activity at all is dropped; others are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from .cnmf_field import growth_radius, seed_regions
from .cnmfe_steps import _empty_bg, _Fit, background_step, merge_step, temporal_step
from .data import Workspace, as_data
from .initialization import masks_to_A, seed_of_components
from .model import normalize_components
from .shaping import shaping_params
from .spatial import update_spatial

__all__ = ["fit_seeded"]


def first_traces(Yb: Any, A: sp.csc_matrix) -> np.ndarray:
    """(K, T) non-negative traces of unit-norm footprints ``A`` in background-free data
    ``Yb`` (pixels, T): least squares, each trace less its 20th percentile (its baseline)."""
    data = as_data(Yb)
    AtA = (A.T @ A).toarray()
    C = np.linalg.lstsq(AtA + 1e-6 * np.eye(len(AtA)), data.project(A), rcond=None)[0]
    C -= np.percentile(C, 20, axis=1, keepdims=True)
    return np.maximum(C, 0).astype(np.float32)


def spatial_step(Yb: Any, dims: tuple[int, int], m: _Fit, P: Mapping[str, Any],
                 sn: np.ndarray, seeds: sp.csc_matrix, regions: sp.csc_matrix) -> _Fit:
    """HALS footprint update on ``Y - B``, each footprint within the region of the seed it
    lies on (``seeds`` (pixels, n) masks, ``regions`` their dilation); empty ones dropped."""
    if m.K == 0:
        return m
    b, f = _empty_bg(*Yb.shape)
    allowed = regions[:, seed_of_components(m.A, seeds)]
    m.A, _ = update_spatial(Yb, m.A, m.C, b, f, dims, radius=growth_radius(P),
                            update_background=False, allowed=allowed,
                            shaping=shaping_params(P), sn=sn)
    return normalize_components(m)


def fit_seeded(Y: Any, dims: tuple[int, int], P: Mapping[str, Any], masks: sp.csc_matrix,
               sn: np.ndarray, workspace: Workspace | None = None, refit: bool = False
               ) -> _Fit:
    """CNMF-E of the neurons given by ``masks`` (no search for others).

    Parameters
    ----------
    Y
        (pixels, T) data (array or :class:`~.data.DataMatrix`), Fortran pixel order.
    dims
        (y, x) frame size.
    P
        Checked CNMF-E params (:func:`~.cnmfe.cnmfe_params`).
    masks
        (pixels, n) non-negative seed masks (:func:`~.initialization.masks_matrix`); empty
        ones are ignored.
    sn
        (pixels,) noise of ``Y``.
    workspace
        Where ``Y - B`` goes (default: memory).
    refit
        One more round.

    Returns
    -------
    _Fit
        The components and the ring model of the last round (the caller recomputes the ring
        model for the final neurons).
    """
    A = masks_to_A(masks, dims)
    seeds = masks_to_A(masks, dims)
    seeds.data[:] = 1
    regions = seed_regions(A, dims, growth_radius(P))
    m = _Fit(A, np.zeros((A.shape[1], as_data(Y, dims).n_frames), np.float32))
    m, Yb = background_step(Y, dims, m, P, workspace)  # the movie's own ring background
    m.C = first_traces(Yb, m.A)
    m = normalize_components(m)
    del Yb
    for _ in range(max(int(P["init_iter"]), 1) + int(refit)):
        m, Yb = background_step(Y, dims, m, P, workspace)
        m = temporal_step(Yb, m, P)
        m, _ = merge_step(Yb, m, P)
        m = spatial_step(Yb, dims, m, P, sn, seeds, regions)
        m = temporal_step(Yb, m, P)
        del Yb
    return m
