"""Motion parameters: CaImAn's names and defaults, checked and converted once."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..params import as_pair, resolve_params

MOTION_DEFAULTS: dict[str, Any] = {
    "max_shifts": (6, 6),
    "strides": (96, 96),
    "overlaps": (32, 32),
    "max_deviation_rigid": 3,
    "pw_rigid": False,
    "border_nan": True,
    "gSig_filt": None,
    "niter_rig": 1,
    "niter_els": 1,
    "splits_rig": 14,
    "splits_els": 14,
    "num_frames_split": 80,  # accepted for compatibility; chunking is set by chunk_size
    "upsample_factor_grid": 4,  # accepted; the dense field is interpolated directly
    "shifts_opencv": True,
    "shifts_interpolate": False,  # accepted; patch shifts are always interpolated smoothly
    "nonneg_movie": True,
    "min_mov": None,
    "use_cuda": False,
    "is3D": False,
}

# CaImAn motion keys whose feature the built-in engine does not have (setting one warns).
UNSUPPORTED = ("indices", "num_splits_to_process_rig", "num_splits_to_process_els")


@dataclass
class MotionResult:
    """Outcome of :func:`motion_correct`.

    Attributes
    ----------
    template
        (y, x) float32, the final template: median over parts of the movie of the mean
        registered frame, in the units of the output movie (``add_to_movie`` included).
    shifts_rig
        (frames, 2) float32, rigid (y, x) shift in pixels applied to each frame. In
        piecewise-rigid mode, the whole-frame shift that bounded the patch search.
    shifts_pw
        (frames, n_patches_y, n_patches_x, 2) float32 (y, x) shift in pixels applied to each
        patch, or None for rigid correction.
    patch_centers
        (n_patches_y, n_patches_x, 2) float32 patch centre coordinates (y, x) in pixels, or None.
    add_to_movie
        Constant added to every registered frame (``-min_mov`` if ``nonneg_movie``, else 0).
    border_to_0
        ``ceil(max |shift|)`` in pixels: width of the border that may hold no data (CaImAn's
        ``border_to_0``, usable as CNMF's ``border_pix``).
    """

    template: np.ndarray
    shifts_rig: np.ndarray
    shifts_pw: np.ndarray | None
    patch_centers: np.ndarray | None
    add_to_movie: float = 0.0
    border_to_0: int = 0


@dataclass(frozen=True)
class MotionConfig:
    """Motion parameters, checked and converted to the types the code uses."""

    max_shifts: tuple[int, int]
    strides: tuple[int, int]
    overlaps: tuple[int, int]
    max_deviation_rigid: float
    pw_rigid: bool
    border_nan: bool | str
    gSig_filt: tuple[float, float] | None
    niter_rig: int
    niter_els: int
    splits_rig: int
    splits_els: int
    shifts_opencv: bool
    nonneg_movie: bool
    min_mov: float | None


def parse_params(params: Mapping[str, Any] | None) -> MotionConfig:
    p = resolve_params(params, MOTION_DEFAULTS, step="mcorr", unsupported=UNSUPPORTED)
    if p["use_cuda"]:
        warnings.warn("use_cuda=True: the built-in engine has no CUDA support; using the CPU.",
                      UserWarning, stacklevel=3)
    if p["is3D"]:
        raise NotImplementedError("The built-in engine registers 2D movies only (is3D=True).")
    border_nan = p["border_nan"]
    if border_nan not in (True, False, "copy", "min"):
        raise ValueError(f"border_nan must be True, False, 'copy' or 'min'; got {border_nan!r}.")
    g = p["gSig_filt"]
    return MotionConfig(
        max_shifts=tuple(int(v) for v in as_pair(p["max_shifts"], "max_shifts")),
        strides=tuple(int(v) for v in as_pair(p["strides"], "strides")),
        overlaps=tuple(int(v) for v in as_pair(p["overlaps"], "overlaps")),
        max_deviation_rigid=float(p["max_deviation_rigid"]),
        pw_rigid=bool(p["pw_rigid"]),
        border_nan=border_nan,
        gSig_filt=None if g is None else tuple(float(v) for v in as_pair(g, "gSig_filt")),
        niter_rig=max(1, int(p["niter_rig"])),
        niter_els=max(1, int(p["niter_els"])),
        splits_rig=max(1, int(p["splits_rig"])),
        splits_els=max(1, int(p["splits_els"])),
        shifts_opencv=bool(p["shifts_opencv"]),
        nonneg_movie=bool(p["nonneg_movie"]),
        min_mov=None if p["min_mov"] is None else float(p["min_mov"]),
    )


