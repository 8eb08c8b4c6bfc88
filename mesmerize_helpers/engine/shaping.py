"""Shaping footprints like cells: CaImAn's ``threshold_components`` plus a noise test.

A footprint estimated pixel by pixel (the spatial update regresses each pixel's time series
on the component's trace) carries each pixel's noise. Where the trace is weak next to the
pixel noise, as in dim, dense two-photon data, rectified noise fills the whole region the
footprint may occupy and the footprint becomes a cloud of specks: a contour no one trusts,
and a trace that mixes in every pixel's noise. After each spatial update every footprint is
therefore shaped, in this order (CaImAn's parameter names and meanings where they exist):

1. **median filter** of ``medw`` pixels (CaImAn's default 3 x 3): a soma, smooth at that
   scale, keeps its body, isolated specks go; its values are the footprint's from then on;
2. **threshold**, CaImAn's ``thr_method``: ``'max'`` keeps pixels above ``maxthr`` times
   the peak; ``'nrg'`` keeps the largest pixels holding ``nrgthr`` of the energy (sum of
   squares; CaImAn's default 0.9999 keeps nearly all);
3. **noise test** (ours): the footprint's least-squares values, each divided by its noise
   level (the pixel's noise in the movie, ``sn``, over the norm of the trace), blurred by
   ``SMOOTH`` px and rescaled to unit noise, must exceed ``NOISE_Z``. CaImAn's spatial
   regression has a sparsity penalty proportional to each pixel's noise for this purpose,
   but at its setting it shrinks values by a few hundredths of the noise only; here the
   noise, not the brightest pixel, decides what is too weak to belong to the cell, and the
   blur pools a pixel with its neighbours, as a soma spans many pixels;
4. **closing** with CaImAn's structuring element ``se`` (fills one-pixel gaps), then (ours,
   with ``extract_cc``) **opening** with a disk of radius ``gSig / 2``: a soma is at least
   ``gSig`` wide everywhere, and what is narrower (a dendrite, a bridge of neuropil to a
   neighbour, a ragged noisy rim) is not part of it;
5. with CaImAn's ``extract_cc``: the **connected piece** (connectivity ``ss``) holding most
   energy, holes filled (a soma has none; its dimmer nucleus may fail the noise test).

A footprint with nothing left is empty, and the component is dropped.

Pure array code, one footprint (sparse column) at a time, drawn in the box around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from .footprints import box_image

__all__ = ["SHAPE_DEFAULTS", "NOISE_Z", "SMOOTH", "Shaping", "shaping_params", "shape_footprint"]

#: CaImAn's spatial post-processing keys, with CaImAn's defaults (``None`` for ``medw``,
#: ``se`` and ``ss`` means 3 x 3: a 3 x 3 median, closing and 8-connectivity).
SHAPE_DEFAULTS: dict[str, Any] = {
    "medw": None, "thr_method": "nrg", "maxthr": 0.1, "nrgthr": 0.9999, "extract_cc": True,
    "se": None, "ss": None,
}

#: Blur (px, Gaussian sigma) of the noise test's map of per-pixel significance.
SMOOTH = 1.0

#: Smallest blurred significance (in units of its own noise) of a footprint pixel. A
#: footprint's allowed region (a disk of radius ``3 gSig``, ~450 px at ``gSig=4``) holds
#: about 36 independent patches of the blurred map (one per ``4 pi SMOOTH^2`` px); a footprint
#: of pure noise exceeds 4 somewhere with probability ~36 x 3e-5 ~ 0.1 % (3 would give ~5 %).
NOISE_Z = 4.0


@dataclass(frozen=True)
class Shaping:
    """Validated shaping settings (see the module docstring); ``open_radius`` 0: no
    opening."""

    medw: tuple[int, int] = (3, 3)
    thr_method: str = "nrg"
    maxthr: float = 0.1
    nrgthr: float = 0.9999
    extract_cc: bool = True
    se: np.ndarray = field(default_factory=lambda: np.ones((3, 3), bool))
    ss: np.ndarray = field(default_factory=lambda: np.ones((3, 3), bool))
    open_radius: int = 0
    noise_z: float = NOISE_Z


def _structure(value: Any, name: str) -> np.ndarray:
    """A 2-d structuring element of 0/1 (or bool) values; None -> 3 x 3 ones."""
    if value is None:
        return np.ones((3, 3), bool)
    arr = np.asarray(value)
    if (arr.ndim != 2 or arr.size == 0 or not np.isin(arr, (0, 1)).all() or not arr.any()
            or any(s % 2 == 0 for s in arr.shape)):
        raise ValueError(f"Parameter {name!r} must be None or a 2-d array of 0/1 values with "
                         f"odd sides (a structuring element, e.g. np.ones((3, 3))); got "
                         f"{value!r}.")
    return arr.astype(bool)


def _fraction(P: Mapping[str, Any], name: str, lo_open: bool, hi_open: bool) -> float:
    """``P[name]`` as a float in [0, 1] (open at the ends asked), or a clear error."""
    value = P[name]
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else np.nan
    if not (ok and (v > 0 if lo_open else v >= 0) and (v < 1 if hi_open else v <= 1)):
        lo, hi = "(0" if lo_open else "[0", "1)" if hi_open else "1]"
        raise ValueError(f"Parameter {name!r} must be a number in {lo}, {hi}; got {value!r}.")
    return v


def shaping_params(P: Mapping[str, Any]) -> Shaping:
    """Check CaImAn's footprint-thresholding keys of resolved params (``medw``,
    ``thr_method``, ``maxthr``, ``nrgthr``, ``extract_cc``, ``se``, ``ss``; ``gSig`` sets the
    opening) and return the settings.

    Raises
    ------
    ValueError
        Naming the parameter and the values it accepts.
    """
    medw = (3, 3) if P["medw"] is None else P["medw"]
    medw = (medw, medw) if isinstance(medw, (int, np.integer)) else medw
    try:
        medw = tuple(medw)
    except TypeError:
        medw = ()
    if len(medw) != 2 or not all(isinstance(m, (int, np.integer)) and not isinstance(m, bool)
                                 and m >= 1 for m in medw):
        raise ValueError(f"Parameter 'medw' must be None or a pair of positive integers (the "
                         f"median filter's window, px); got {P['medw']!r}.")
    if P["thr_method"] not in ("max", "nrg"):
        raise ValueError(f"Parameter 'thr_method' must be 'max' or 'nrg'; got "
                         f"{P['thr_method']!r}.")
    if not isinstance(P["extract_cc"], (bool, np.bool_)):
        raise ValueError(f"Parameter 'extract_cc' must be True or False; got "
                         f"{P['extract_cc']!r}.")
    return Shaping(
        medw=(int(medw[0]), int(medw[1])), thr_method=P["thr_method"],
        maxthr=_fraction(P, "maxthr", False, True), nrgthr=_fraction(P, "nrgthr", True, False),
        extract_cc=bool(P["extract_cc"]), se=_structure(P["se"], "se"),
        ss=_structure(P["ss"], "ss"),
        open_radius=max(int(round(float(np.mean(P["gSig"])) / 2)), 1),
    )


def _threshold(img: np.ndarray, s: Shaping) -> np.ndarray:
    """Pixels kept by ``thr_method`` (CaImAn's 'max' or 'nrg' rule) on a non-negative image
    with a positive peak."""
    if s.thr_method == "max":
        return img > s.maxthr * img.max()
    values = np.sort(img[img > 0])[::-1].astype(np.float64)
    energy = np.cumsum(values**2)
    below = np.flatnonzero(energy < s.nrgthr * energy[-1])
    return img >= values[below[-1] if below.size else 0]


@lru_cache(maxsize=8)
def _noise_gain(sigma: float) -> float:
    """Standard deviation of unit white noise after ``gaussian_filter(., sigma)``."""
    delta = np.zeros((2 * int(4 * sigma + 0.5) + 1,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    return float(np.linalg.norm(ndimage.gaussian_filter(delta, sigma, mode="constant")))


@lru_cache(maxsize=8)
def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy**2 + xx**2 <= radius * radius + 0.5


def _morph(op: Any, mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Binary opening or closing of a box, its sides extended by their edge values first (a
    box ends at the frame's border only there; elsewhere it holds a margin of zeros)."""
    r = max(structure.shape) // 2
    return op(np.pad(mask, r, mode="edge"), structure=structure)[r:-r or None, r:-r or None]


def shape_footprint(
    idx: np.ndarray,
    val: np.ndarray,
    dims: tuple[int, int],
    shaping: Shaping,
    sn: np.ndarray | None = None,
    trace_norm: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Shape one footprint (see the module docstring).

    Parameters
    ----------
    idx, val
        Pixel indices (Fortran order on ``dims``) and values of the footprint's estimate;
        negative values are allowed (the least-squares values before the non-negativity
        clamp, whose noise is symmetric about the truth: the noise test needs that).
    dims
        (y, x) frame size.
    shaping
        Settings (:func:`shaping_params`).
    sn
        (y * x,) noise standard deviation of every pixel of the movie (Fortran order), in
        the movie's units; None: no noise test.
    trace_norm
        L2 norm of the component's trace (movie units per footprint unit): the noise of the
        estimate at a pixel is ``sn / trace_norm``.

    Returns
    -------
    idx, val
        Sorted pixel indices and positive values of the shaped footprint (empty if nothing
        is left).
    """
    idx = np.asarray(idx, np.int64)
    val = np.asarray(val)
    empty = np.zeros(0, np.int64), np.zeros(0, val.dtype)
    if not idx.size or val.max() <= 0:
        return empty
    pad = max(max(shaping.medw) // 2, int(np.ceil(4 * SMOOTH))) + 1
    img, r0, c0 = box_image(idx, val, dims, pad)
    # "nearest": the box's sides are zeros except where the box meets the frame's border
    med = ndimage.median_filter(np.maximum(img, 0), size=shaping.medw, mode="nearest")
    if med.max() <= 0:
        return empty
    keep = _threshold(med, shaping) & (med > 0)
    if sn is not None:
        noise = sn.reshape(dims[1], dims[0]).T[r0:r0 + img.shape[0], c0:c0 + img.shape[1]]
        z = img * (float(trace_norm) / np.maximum(noise, 1e-30))
        z = ndimage.gaussian_filter(z.astype(np.float64), SMOOTH, mode="nearest")
        keep &= z > shaping.noise_z * _noise_gain(SMOOTH)
    keep |= _morph(ndimage.binary_closing, keep, shaping.se)
    if shaping.extract_cc and shaping.open_radius > 0:
        keep = _morph(ndimage.binary_opening, keep, _disk(shaping.open_radius))
    if shaping.extract_cc and keep.any():
        labels, n = ndimage.label(keep, structure=shaping.ss)
        if n > 1:
            energy = ndimage.sum_labels(med.astype(np.float64) ** 2, labels, np.arange(1, n + 1))
            keep = labels == 1 + int(np.argmax(energy))
        keep = ndimage.binary_fill_holes(keep)
    out = np.where(keep, med, 0)
    xx, yy = np.nonzero(out.T)  # x-major: Fortran pixel order, already sorted
    return (yy + r0) + (xx + c0) * dims[0], out[yy, xx]
