"""``s.cnmf``: footprints, contours, traces, reconstructions and re-evaluation of a cnmf or
cnmfe item (mesmerize-core's names and return shapes)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cache import cnmf_cache
from ..io.lazy import LazyFrameFunction, LazyProduct, LazyResidual
from ..manifest import MANIFEST, update_manifest
from .common import checked_manifest, output_file

_ALGOS = ("cnmf", "cnmfe")

ComponentIndices = str | np.ndarray | list[int] | range


class CNMFExtension:
    """Results of a CNMF / CNMF-E row. Costly getters are cached (``mesmerize_helpers.cache``)."""

    def __init__(self, s: pd.Series):
        self._series = s

    # --- files and the cache ----------------------------------------------------------------

    def get_output_path(self) -> Path:
        """The HDF5 file holding the estimates."""
        return output_file(self._series, "cnmf-hdf5-path", _ALGOS)

    def _cached(self, name: str, compute: Any, *args: Any) -> Any:
        _, folder = checked_manifest(self._series, _ALGOS)
        stamp = (folder / MANIFEST).stat().st_mtime_ns  # rewritten by runs and re-evaluations
        key = (self._series["uuid"], stamp, name, *map(_hashable, args))
        return cnmf_cache.get(key, compute)

    def get_output(self) -> Any:
        """The estimates (A, b, C, f, S, YrA, R, sn, g, bl, c1, neurons_sn, dims,
        idx_components, idx_components_bad, F_dff, ...) as an ``Estimates`` object."""
        from ..io.estimates import load_estimates

        return self._cached("output", lambda: load_estimates(self.get_output_path()))

    def get_cnmf_memmap(self, mode: str = "r") -> np.memmap:
        """The movie CNMF was fitted on, a (frames, y, x) float32 memmap."""
        return np.load(output_file(self._series, "cnmf-memmap-path", _ALGOS), mmap_mode=mode)

    # --- components ---------------------------------------------------------------------

    def _indices(self, component_indices: ComponentIndices) -> np.ndarray:
        estimates = self.get_output()
        n = estimates.A.shape[1]
        if isinstance(component_indices, str):
            if component_indices == "all":
                return np.arange(n)
            if component_indices in ("good", "bad"):
                name = "idx_components" if component_indices == "good" else "idx_components_bad"
                indices = getattr(estimates, name)
                if indices is None:  # not evaluated: every component counts as good
                    return np.arange(n) if component_indices == "good" else np.arange(0)
                return np.asarray(indices, dtype=int)
            raise ValueError(
                f"component_indices must be 'all', 'good', 'bad' or indices; got {component_indices!r}."
            )
        indices = np.asarray(component_indices, dtype=int).ravel()
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"component indices out of range for {n} components.")
        return indices % n if n else indices

    def get_n_components(self) -> int:
        """Number of components found (accepted and rejected)."""
        return int(self.get_output().A.shape[1])

    def get_good_components(self) -> np.ndarray:
        """Indices of the components accepted by evaluation."""
        return self._indices("good")

    def get_bad_components(self) -> np.ndarray:
        """Indices of the components rejected by evaluation."""
        return self._indices("bad")

    def get_spatial(self, component_indices: ComponentIndices = "all") -> np.ndarray:
        """Footprints as images, (y, x, n_components) float32."""
        estimates = self.get_output()
        indices = self._indices(component_indices)
        return estimates.footprints(indices).transpose(1, 2, 0)

    def get_masks(self, component_indices: ComponentIndices = "all", threshold: float = 0.01) -> np.ndarray:
        """Binary masks, (y, x, n_components): pixels above ``threshold`` x the footprint's max."""
        spatial = self.get_spatial(component_indices)
        peak = spatial.max(axis=(0, 1), keepdims=True)
        return spatial > threshold * np.where(peak > 0, peak, np.inf)

    def get_contours(
        self, component_indices: ComponentIndices = "all", swap_dim: bool = True, thr: float = 0.9
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Contour and centre of mass of each footprint.

        Parameters
        ----------
        component_indices
            "all", "good", "bad" or indices.
        swap_dim
            Return (x, y) columns (for plotting over an image) instead of (y, x).
        thr
            The contour encloses this fraction of the footprint's energy (sum of squares).

        Returns
        -------
        contours : list of ndarray
            One (n_points, 2) array per component, in pixels.
        centers_of_mass : list of ndarray
            One (2,) array per component.
        """
        return self._cached("contours", lambda: self._contours(component_indices, swap_dim, thr),
                            component_indices, swap_dim, thr)

    def _contours(self, component_indices: ComponentIndices, swap_dim: bool, thr: float):
        from ..engine.contours import footprint_contours

        estimates = self.get_output()
        contours, centers = footprint_contours(
            estimates.A[:, self._indices(component_indices)], estimates.dims, thr)
        if swap_dim:
            contours = [c[:, ::-1] for c in contours]
            centers = [c[::-1] for c in centers]
        return contours, centers

    # --- traces ---------------------------------------------------------------------

    def get_temporal(
        self,
        component_indices: ComponentIndices = "all",
        add_background: bool = False,
        add_residuals: bool = False,
    ) -> np.ndarray:
        """Calcium traces C, (n_components, frames).

        Parameters
        ----------
        add_background
            Add the background's contribution inside each footprint, ``A_k^T b f``.
        add_residuals
            Add the residual traces YrA (C + YrA is the unmixed raw fluorescence).
        """
        estimates = self.get_output()
        indices = self._indices(component_indices)
        traces = np.array(estimates.C[indices], dtype=np.float32)
        if add_residuals:
            traces += estimates.YrA[indices]
        if add_background and estimates.b.size:
            A = estimates.A[:, indices]
            traces += np.asarray((A.T @ estimates.b) @ estimates.f)
        return traces

    def get_rcm(self) -> LazyProduct:
        """Reconstructed neurons ``A C`` as a lazy (frames, y, x) array."""
        estimates = self.get_output()
        return LazyProduct(estimates.A, estimates.C, estimates.dims)

    def get_rcb(self) -> LazyProduct | LazyFrameFunction:
        """Reconstructed background as a lazy (frames, y, x) array: ``b f``, or for CNMF-E's
        ring model ``b0 + W (Y - A C - b0)``."""
        estimates = self.get_output()
        if "W" not in estimates.extra:
            return LazyProduct(estimates.b, estimates.f, estimates.dims)
        from ..engine.cnmfe import background_frames

        movie = self.get_cnmf_memmap()
        return LazyFrameFunction(
            movie.shape[0], estimates.dims, lambda idx: background_frames(estimates, movie, idx)
        )

    def get_residuals(self) -> LazyResidual:
        """``Y - rcm - rcb`` as a lazy (frames, y, x) array."""
        return LazyResidual(self.get_cnmf_memmap(), self.get_rcm(), self.get_rcb())

    # --- evaluation and dF/F, persisted -----------------------------------------------------

    def _persist(self, estimates: Any, manifest_changes: dict[str, Any]) -> None:
        """Rewrite the HDF5 atomically and record the change in the manifest."""
        from ..io.estimates import save_estimates

        path = self.get_output_path()
        tmp = path.with_name(path.name + ".tmp")
        params = {**estimates.extra.get("params", {})}
        save_estimates(tmp, estimates, params)
        os.replace(tmp, path)
        _, folder = checked_manifest(self._series, _ALGOS)
        update_manifest(folder, manifest_changes)
        cnmf_cache.invalidate(self._series["uuid"])

    def run_eval(self, params: dict[str, Any]) -> None:
        """Re-run component evaluation with new quality params and save the result.

        Parameters
        ----------
        params
            Quality parameters (``min_SNR``, ``SNR_lowest``, ``rval_thr``, ``rval_lowest``,
            ...), flat or under ``"main"``; they override the item's own params.
        """
        from ..jobs import source_extraction

        evaluate = source_extraction(self._series["algo"])[1]
        new = dict(params.get("main", params))
        item = self._series["params"]
        merged = {**item["main"], **item.get("eval", {}), **new}
        estimates = evaluate(self.get_output(), self.get_cnmf_memmap(), merged)
        estimates.extra.setdefault("params", {}).update(new)
        self._persist(estimates, {"eval": new, "evaluated_time": _now()})

    def run_detrend_dfof(
        self,
        quantileMin: float = 8,
        frames_window: int = 500,
        flag_auto: bool = True,
        use_fast: bool = False,
        detrend_only: bool = False,
    ) -> None:
        """Compute the detrended dF/F of every component and save it (``F_dff``)."""
        from ..engine.dff import detrend_df_f

        estimates = self.get_output()
        options = {"quantileMin": quantileMin, "frames_window": frames_window,
                   "flag_auto": flag_auto, "use_fast": use_fast, "detrend_only": detrend_only}
        estimates.F_dff = detrend_df_f(estimates, **options)
        self._persist(estimates, {"detrend_dfof": options, "detrend_dfof_time": _now()})

    def get_detrend_dfof(self, component_indices: ComponentIndices = "all") -> np.ndarray:
        """The saved dF/F, (n_components, frames); run ``run_detrend_dfof`` first."""
        estimates = self.get_output()
        if estimates.F_dff is None:
            raise ValueError(
                f"Item {self._series['uuid']} has no dF/F yet: call .cnmf.run_detrend_dfof() first."
            )
        return np.asarray(estimates.F_dff)[self._indices(component_indices)]


def _hashable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, list, range)):
        return tuple(np.asarray(value).ravel().tolist())
    return value


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


pd.api.extensions.register_series_accessor("cnmf")(CNMFExtension)
