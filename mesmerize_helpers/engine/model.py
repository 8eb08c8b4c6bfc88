"""The model and data layer of source extraction, below every step that uses it.

- the data: a (T, y, x) movie as the (pixels, T) matrix ``Y`` that every step reads, pixels
  flattened in Fortran order on (y, x) (index ``y + x * height``) as in CaImAn
  (:func:`movie_to_Y`, :func:`Y_to_movie`);
- the working state of a fit: :class:`Components` (sparse footprints ``A``, traces ``C`` and
  the per-trace results of the temporal step) and :class:`CNMFModel` (plus CNMF's low-rank
  background and the regions seeded components may occupy);
- the results: :class:`Estimates`, mirroring CaImAn's ``Estimates``
  (:func:`to_estimates` packages a working state).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .footprints import as_footprints, column_norms, scale_columns

__all__ = [
    "Estimates", "Components", "CNMFModel", "PER_TRACE", "movie_to_Y", "Y_to_movie",
    "fill_missing", "data_matrix",
    "normalize_components", "to_estimates",
]


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
        rows = {name: getattr(self, name)[idx] for name in ("C", *PER_TRACE)
                if getattr(self, name) is not None}
        return replace(self, A=self.A[:, idx], **rows)


#: Per-component results of the temporal step (one row or value per component).
PER_TRACE = ("S", "YrA", "bl", "c1", "g", "neurons_sn")


@dataclass
class CNMFModel(Components):
    """CNMF's working state: components plus the low-rank background."""

    b: np.ndarray | None = None  # (pixels, nb)
    f: np.ndarray | None = None  # (nb, T)
    # (pixels, K) sparse bool: where each footprint may lie (None: no limit); seeded fits
    region: sp.csc_matrix | None = None

    def keep(self, idx: np.ndarray) -> CNMFModel:
        m = super().keep(idx)
        if self.region is not None:
            m.region = self.region[:, idx]
        return m


def movie_to_Y(movie: Any, chunk: int = 500) -> tuple[np.ndarray, tuple[int, int]]:
    """Copy a (T, y, x) movie into a float32 (pixels, T) matrix in Fortran pixel order.

    The movie is read in chunks of frames (it may be a memmap or a lazy array) and never
    modified. Missing values (NaN, e.g. the borders that motion correction with
    ``border_nan=True`` leaves where a frame was shifted) are filled with the pixel's mean
    over its other frames (0 for a pixel missing in every frame), with one warning: a NaN
    would otherwise spread through every product with the data.

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
    fill_missing(Y)
    return Y, (h, w)


def data_matrix(movie: Any, budget: Any = None) -> Any:
    """The (pixels, T) data matrix of a movie, as every step reads it: a
    :class:`~.data.DataMatrix` as it is (with ``budget``, a :class:`~.data.Budget`, when
    given), else a (T, y, x) movie copied into memory (:func:`movie_to_Y`)."""
    from .data import DataMatrix

    if isinstance(movie, DataMatrix):
        return movie if budget is None else movie.with_budget(budget)
    Y, dims = movie_to_Y(movie)
    return DataMatrix(Y, dims, budget)


def fit_input(
    movie: Any, P: Any, Ain: Any, budget: Any, whole_field_bytes: Any, advice: str
) -> tuple[Any, Any, bool, np.ndarray]:
    """What CNMF and CNMF-E start from: the data matrix (:func:`data_matrix`), the seed masks
    as a (pixels, n) matrix (or None), whether the fit runs in patches, and the (pixels,)
    noise of every pixel.

    Without patches and seeds, the whole-field initialization must fit the budget:
    ``whole_field_bytes(n_pixels, n_frames, P)`` is its working memory; if it does not fit,
    :class:`~.data.MemoryBudgetError` (with ``advice``) before any work.
    """
    from .data import require
    from .initialization import masks_matrix
    from .noise import pixel_noise

    Y = data_matrix(movie, budget)
    masks = None if Ain is None else masks_matrix(Ain, Y.dims)  # read the user's masks once
    use_patches = masks is None and P["rf"] is not None
    if not use_patches and masks is None:
        require(Y.budget, whole_field_bytes(Y.n_pixels, Y.n_frames, P),
                f"The whole-field initialization (rf=None) of {Y.n_frames} frames of "
                f"{Y.dims[0]} x {Y.dims[1]}", advice)
    return Y, masks, use_patches, pixel_noise(Y, P["noise_range"], P["noise_method"])


def fill_missing(Y: np.ndarray, chunk: int = 4096) -> int:
    """Replace NaN in a (pixels, T) matrix, in place, by each pixel's mean over its other
    frames (0 where a pixel has none); return how many pixels had NaN (one warning if any)."""
    import warnings

    bad = []
    for i in range(0, Y.shape[0], chunk):
        rows = np.flatnonzero(np.isnan(Y[i:i + chunk]).any(axis=1)) + i
        for r in rows:
            nan = np.isnan(Y[r])
            Y[r, nan] = Y[r, ~nan].mean() if not nan.all() else 0.0
        bad.extend(rows)
    if bad:
        warnings.warn(f"{len(bad)} pixel(s) of the movie have missing values (NaN), e.g. the "
                      "borders left by motion correction with border_nan=True; each NaN is "
                      "replaced by its pixel's mean over the other frames (border_nan='copy' "
                      "in the mcorr params avoids them).", UserWarning, stacklevel=3)
    return len(bad)


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
