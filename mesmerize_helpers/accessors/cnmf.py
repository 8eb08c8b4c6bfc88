"""``s.cnmf``: footprints, contours, traces, reconstructions and re-evaluation of a cnmf or
cnmfe item, with mesmerize-core's names, arguments, return types and shapes.

Every getter takes ``component_indices`` (None or ``"all"``, ``"good"``, ``"bad"``, or an
index array) and the keyword ``return_copy``; results are cached (``cnmf_cache``) and, unless
``return_copy=False``, returned as copies.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cache import cnmf_cache
from ..contours import caiman_contours, contour_centers
from ..errors import DfofNotComputedError, UnknownEvalParameterError
from ..io.estimates import CNMF
from ..io.lazy import LazyArrayRCB, LazyArrayRCM, LazyArrayResiduals, LazyRingBackground
from ..io.movies import open_memmap
from ..legacy import writable_batch
from ..manifest import update_manifest
from .common import batch_path_of, checked_manifest, output_file, result_stamp
from .results import held_still

_ALGOS = ("cnmf", "cnmfe")

ComponentIndices = str | np.ndarray | list[int] | range | None


def _component_indices(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``component_indices`` (first argument) into an index array before the cache
    sees it, so ``"good"`` and the same indices given as an array share an entry."""

    @functools.wraps(func)
    def wrapper(self: CNMFExtensions, component_indices: ComponentIndices = None,
                *args: Any, **kwargs: Any) -> Any:
        return func(self, self._indices(component_indices), *args, **kwargs)

    return wrapper


@pd.api.extensions.register_series_accessor("cnmf")
class CNMFExtensions:
    """Results of a CNMF / CNMF-E row (mesmerize-core's ``CNMFExtensions``)."""

    def __init__(self, s: pd.Series):
        self._series = s

    # --- files ------------------------------------------------------------------------

    def _cache_stamp(self) -> tuple:
        return result_stamp(self._series, _ALGOS)

    def _held_still(self) -> Any:
        return held_still(self._series)

    def get_output_path(self) -> Path:
        """The HDF5 file holding the estimates (CaImAn's ``CNMF.save`` layout)."""
        return output_file(self._series, "cnmf-hdf5-path", _ALGOS)

    def get_cnmf_memmap(self, mode: str = "r") -> np.memmap:
        """The movie CNMF was fitted on, a (frames, y, x) float32 memmap (for computing;
        use ``caiman.get_input_movie()`` to view the movie). It is CaImAn's view of its
        ``Yr`` file, each pixel's trace contiguous: read pixels' traces from it, frames
        from ``get_input_movie()``."""
        return open_memmap(output_file(self._series, "cnmf-memmap-path", _ALGOS), mode)

    def _data(self) -> Any:
        """The fitted movie as the engine reads it: the pixel-major file as a data matrix
        (read a block at a time, never whole), or the (frames, y, x) movie of a legacy item."""
        path = output_file(self._series, "cnmf-memmap-path", _ALGOS)
        if path.suffix == ".mmap":
            from ..step_support import open_yr

            try:
                return open_yr(path)
            except ValueError:  # an order_F CaImAn file
                pass
        return open_memmap(path)

    @cnmf_cache.use_cache
    def get_output(self, *, return_copy: bool = True) -> CNMF:
        """The fit as a CaImAn-like ``CNMF`` object: ``.estimates`` (``A``, ``C``, ``b``,
        ``f``, ``YrA``, ``S``, ``idx_components``, ... with CaImAn's names and layouts),
        ``.params`` (CaImAn's groups: ``params.quality["min_SNR"]``) and ``.dims``.
        ``.to_caiman()`` gives CaImAn's own object when CaImAn is installed."""
        from ..io.estimates import load_cnmf

        return load_cnmf(self.get_output_path())

    def _fit(self) -> CNMF:
        return self.get_output(return_copy=False)  # read-only use inside the accessor

    # --- components ---------------------------------------------------------------------

    def _indices(self, component_indices: ComponentIndices) -> np.ndarray:
        if component_indices is None:
            component_indices = "all"
        if isinstance(component_indices, str):
            if component_indices == "all":
                return np.arange(self.get_n_components())
            if component_indices == "good":
                return np.asarray(self.get_good_components(return_copy=False), dtype=int)
            if component_indices == "bad":
                return np.asarray(self.get_bad_components(return_copy=False), dtype=int)
            raise ValueError(f"Accepted str values for component_indices are 'all', 'good' and "
                             f"'bad'; got {component_indices!r}.")
        if not isinstance(component_indices, (np.ndarray, list, tuple, range)):
            raise TypeError("component_indices must be an index array, None, 'all', 'good' or "
                            f"'bad'; got {type(component_indices).__name__}.")
        indices = np.asarray(component_indices, dtype=int).ravel()
        n = self.get_n_components()
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"component indices out of range for {n} components.")
        return indices

    @cnmf_cache.use_cache
    def get_n_components(self, *, return_copy: bool = True) -> int:
        """Number of components (accepted and rejected)."""
        return int(self._fit().estimates.A.shape[1])

    @cnmf_cache.use_cache
    def get_good_components(self, *, return_copy: bool = True) -> np.ndarray:
        """Indices of the accepted components (``idx_components``; all if not evaluated)."""
        good = self._fit().estimates.idx_components
        return np.arange(self.get_n_components()) if good is None else np.asarray(good)

    @cnmf_cache.use_cache
    def get_bad_components(self, *, return_copy: bool = True) -> np.ndarray:
        """Indices of the rejected components (``idx_components_bad``)."""
        bad = self._fit().estimates.idx_components_bad
        return np.zeros(0, int) if bad is None else np.asarray(bad)

    @_component_indices
    @cnmf_cache.use_cache
    def get_masks(self, component_indices: ComponentIndices = None, threshold: float = 0.01,
                  *, return_copy: bool = True) -> np.ndarray:
        """Binary masks, (y, x, n_components) bool: the pixels where a footprint (unit-norm
        column of ``A``) is at least ``threshold``, as mesmerize-core."""
        A = self._fit().estimates.A[:, component_indices].tocsc()
        d1, d2 = self._fit().dims
        # unset pixels are 0: in every mask when threshold <= 0, as in a dense comparison
        masks = np.full((d1, d2, A.shape[1]), threshold <= 0, dtype=bool)
        for k in range(A.shape[1]):
            pixels = A.indices[A.indptr[k]:A.indptr[k + 1]]
            inside = A.data[A.indptr[k]:A.indptr[k + 1]] >= threshold
            masks[pixels % d1, pixels // d1, k] = inside  # Fortran pixel order: y + x * d1
        return masks

    @_component_indices
    @cnmf_cache.use_cache
    def get_spatial(self, component_indices: ComponentIndices = None,
                    *, return_copy: bool = True) -> np.ndarray:
        """Footprints as images, (y, x, n_components) float32."""
        return self._fit().estimates.footprints(component_indices).transpose(1, 2, 0)

    @_component_indices
    @cnmf_cache.use_cache
    def get_contours(self, component_indices: ComponentIndices = None, swap_dim: bool = True,
                     thr: float = 0.9, *, return_copy: bool = True
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Outline and centre of each footprint, as mesmerize-core (CaImAn's
        ``get_contours``, see :mod:`mesmerize_helpers.contours`).

        Parameters
        ----------
        swap_dim
            True (default): (row, column) = (axis 0, axis 1) coordinates; False: (column,
            row), i.e. ``plt.plot(c[:, 0], c[:, 1])`` over ``plt.imshow(image)``.
        thr
            Fraction of each footprint's energy the outline encloses.

        Returns
        -------
        contours : list of ndarray
            (n_points, 2) per component: closed pieces separated by NaN rows.
        centers : list of ndarray
            (2,) per component: the NaN-mean of the contour's vertices (same column order).
        """
        fit = self._fit()
        contours = caiman_contours(fit.estimates.A[:, component_indices], fit.dims, thr,
                                   swap_dim=swap_dim)
        return contours, contour_centers(contours)

    # --- traces ----------------------------------------------------------------------

    @_component_indices
    @cnmf_cache.use_cache
    def get_temporal(self, component_indices: ComponentIndices = None,
                     add_background: bool = False, add_residuals: bool = False,
                     *, return_copy: bool = True) -> np.ndarray:
        """Calcium traces ``C``, (n_components, frames).

        Parameters
        ----------
        add_background
            Add the background under each footprint, ``A_k^T b f``.
        add_residuals
            Add the residual traces ``YrA`` (``C + YrA`` is the unmixed raw fluorescence).
        """
        est = self._fit().estimates
        traces = np.array(est.C[component_indices])
        if add_background and np.size(est.b):
            traces = traces + np.asarray((est.A[:, component_indices].T @ est.b) @ est.f)
        if add_residuals:
            traces = traces + est.YrA[component_indices]
        return traces

    @_component_indices
    @cnmf_cache.use_cache
    def get_rcm(self, component_indices: ComponentIndices = None,
                temporal_components: np.ndarray | None = None,
                *, return_copy: bool = False) -> LazyArrayRCM:
        """Reconstructed neurons ``A C`` as a lazy (frames, y, x) array.

        Parameters
        ----------
        temporal_components
            (n_components_total, frames) traces to use instead of ``C`` (e.g. dF/F).
        """
        fit = self._fit()
        C = fit.estimates.C if temporal_components is None else np.asarray(temporal_components)
        if C.shape[0] != fit.estimates.A.shape[1]:
            raise ValueError(f"{C.shape[0]} temporal components for "
                             f"{fit.estimates.A.shape[1]} spatial components.")
        return LazyArrayRCM(fit.estimates.A[:, component_indices], C[component_indices],
                            fit.dims)

    @cnmf_cache.use_cache
    def get_rcb(self, *, return_copy: bool = False) -> LazyArrayRCB | LazyRingBackground:
        """Reconstructed background as a lazy (frames, y, x) array: ``b f``, or for our
        CNMF-E's ring model ``b0 + W (Y - A C - b0)``."""
        fit = self._fit()
        est = fit.estimates
        if "W" not in est.extra:
            return LazyArrayRCB(est.b, est.f, fit.dims)
        from ..engine.cnmfe import background_frames

        movie = self._data()
        n_frames = movie.n_frames if hasattr(movie, "n_frames") else movie.shape[0]
        return LazyRingBackground(n_frames, fit.dims,
                                  lambda idx: background_frames(est, movie, idx))

    @cnmf_cache.use_cache
    def get_residuals(self, *, return_copy: bool = False) -> LazyArrayResiduals:
        """``Y - (A C) - background`` as a lazy (frames, y, x) array, Y the input movie."""
        return LazyArrayResiduals(self._series.caiman.get_input_movie(), self.get_rcm(),
                                  self.get_rcb())

    # --- evaluation and dF/F, saved with the item ----------------------------------------

    def _persist(self, fit: CNMF, manifest_changes: dict[str, Any]) -> None:
        """Save changed estimates into the item's folder (atomically) and note it in the
        manifest. Files of another folder (an imported mesmerize-core item's) are left as
        they are: the item then reads its own new copy."""
        from ..io.estimates import save_estimates

        writable_batch(batch_path_of(self._series))
        _, folder = checked_manifest(self._series, _ALGOS)
        current = self.get_output_path()
        target = current if current.parent == folder.resolve() else folder / "cnmf.hdf5"
        tmp = target.with_name(target.name + ".tmp")
        if getattr(fit.estimates, "Cn", None) is None:  # an imported file's: CaImAn's readers
            try:                                         # find the correlation image there
                fit.estimates.Cn = self._series.caiman.get_corr_image()
            except FileNotFoundError:
                pass
        save_estimates(tmp, fit.estimates, fit.estimates.extra.get("params", {}))
        os.replace(tmp, target)
        update_manifest(folder, {**manifest_changes,
                                 "outputs": {"cnmf-hdf5-path": target.name}})
        cnmf_cache.drop_item(self._series["uuid"])

    def run_eval(self, params: dict[str, Any]) -> None:
        """Re-run component evaluation with new quality params and save the result.

        Parameters
        ----------
        params
            CaImAn quality parameters (``min_SNR``, ``SNR_lowest``, ``rval_thr``,
            ``rval_lowest``, ``use_cnn``, ...), flat (or under ``"main"``); they add to the
            item's params and earlier evaluations. An unknown key is a KeyError
            (:class:`~mesmerize_helpers.errors.UnknownEvalParameterError`), as mesmerize-core.
        """
        from ..engine.params import flatten_main
        from ..jobs import source_extraction

        new = dict(params.get("main", params))
        fit = self.get_output()  # a copy: changed and saved below
        valid = list(fit.params.quality)
        unknown = [k for k in new if k not in valid]
        if unknown:
            raise UnknownEvalParameterError(
                f"{', '.join(map(repr, unknown))} is not a quality (evaluation) parameter; "
                f"valid keys are {valid}.")
        evaluate = source_extraction(self._series["algo"])[1]
        item = self._series["params"]
        merged = {**flatten_main(item["main"]), **item.get("eval", {}),
                  **fit.estimates.extra.get("params", {}), **new}
        fit.estimates = evaluate(fit.estimates, self._data(), merged)
        fit.estimates.extra.setdefault("params", {}).update(new)
        self._persist(fit, {"eval": new, "evaluated_time": _now()})

    def run_detrend_dfof(self, quantileMin: float = 8, frames_window: int = 500,
                         flag_auto: bool = True, use_fast: bool = False,
                         use_residuals: bool = True, detrend_only: bool = False) -> None:
        """Compute the detrended dF/F of every component and save it (``F_dff``).

        Parameters as CaImAn's ``detrend_df_f``; ``use_residuals=False`` uses ``C`` alone
        instead of ``C + YrA`` as each component's fluorescence.
        """
        from ..engine.dff import detrend_df_f

        fit = self.get_output()
        est = fit.estimates
        source = est if use_residuals else dataclasses.replace(est, YrA=np.zeros_like(est.C))
        options = {"quantileMin": quantileMin, "frames_window": frames_window,
                   "flag_auto": flag_auto, "use_fast": use_fast, "detrend_only": detrend_only}
        est.F_dff = detrend_df_f(source, **options)
        self._persist(fit, {"detrend_dfof": {**options, "use_residuals": use_residuals},
                            "detrend_dfof_time": _now()})

    @_component_indices
    @cnmf_cache.use_cache
    def get_detrend_dfof(self, component_indices: ComponentIndices = None,
                         *, return_copy: bool = True) -> np.ndarray:
        """The saved dF/F, (n_components, frames). Before ``run_detrend_dfof`` an
        AttributeError (:class:`~mesmerize_helpers.errors.DfofNotComputedError`), as
        mesmerize-core."""
        F_dff = self._fit().estimates.F_dff
        if F_dff is None:
            raise DfofNotComputedError(f"Item {self._series['uuid']} has no dF/F yet: call "
                                       ".cnmf.run_detrend_dfof() first.")
        return np.asarray(F_dff)[component_indices]

    # --- sharing -------------------------------------------------------------------------

    def export_nwb(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Write this item as an NWB file: footprints, traces (raw, denoised, deconvolved,
        dF/F), summary images, the parent's motion-correction shifts; keyword arguments
        (``session_description``, ``subject``, ``imaging_plane``, ``masks``, ``movie``, ...)
        as :func:`mesmerize_helpers.nwb.export_nwb`. Needs the ``nwb`` extra (pynwb)."""
        from ..nwb import export_nwb

        return export_nwb(self._series, path, **kwargs)


#: The name mesmerize-core 0.4 and earlier used (and this package until now).
CNMFExtension = CNMFExtensions


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")
