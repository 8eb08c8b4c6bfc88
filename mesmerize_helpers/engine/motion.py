"""NoRMCorre-style motion correction: rigid and piecewise-rigid registration of a movie.

Implements the method of Pnevmatikakis & Giovannucci (2017), "NoRMCorre: An online algorithm
for piecewise rigid motion correction of calcium imaging data", with CaImAn's parameter names
and defaults, as pure array code:

1. A template is built from single frames sampled evenly over the movie (median over bins of
   sampled frames of their means), refined by registering the sample to it a few times.
2. Each chunk of frames is registered to the template. Rigid: the peak of the FFT
   cross-correlation with the template, searched within ``max_shifts`` and refined to sub-pixel
   accuracy with an upsampled DFT around the peak (Guizar-Sicairos et al. 2008), all batched
   over the frames of a chunk (batched ``scipy.fft``). Unlike CaImAn, the correlation is
   normalised for the frame border and the template wraps around smoothly (see
   :class:`_MaskedTemplates`), which removes the bias towards zero shift of plain circular
   correlation and the ringing of strong brightness gradients. Piecewise rigid: the same on overlapping
   patches (size ``strides + overlaps``) of frames pre-shifted by their integer rigid shift,
   each patch searched within the rigid shift +/- ``max_deviation_rigid``; the patch shifts
   are interpolated (natural cubic spline through the patch centres) to a smooth dense
   per-pixel field that is applied with ``cv2.remap`` (cubic), so there are no seams.
   With ``gSig_filt``, shifts are estimated on high-passed frames and applied to the raw ones.
3. The registered frames are written chunk by chunk into ``out``; the final template is the
   median over ``splits_rig`` (``splits_els``) parts of the movie of their mean registered
   frame.

Shift convention: a shift ``s = (sy, sx)`` (pixels) is what is *applied* to a frame to register
it, ``registered(y, x) = frame(y - sy, x - sx)``. This is the sign of CaImAn's ``shifts_rig``
and ``x_shifts_els``/``y_shifts_els``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import scipy.fft
from scipy.interpolate import CubicSpline

from .params import as_pair, resolve_params

__all__ = [
    "MOTION_DEFAULTS",
    "MotionResult",
    "motion_correct",
    "highpass_kernel",
    "highpass_filter",
    "patch_grid",
    "dense_shift_field",
]

#: The CaImAn motion parameters the built-in engine understands, with CaImAn's defaults.
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
_UNSUPPORTED = ("indices", "num_splits_to_process_rig", "num_splits_to_process_els")

# Upsampling factor of the DFT used to refine correlation peaks, followed by a parabolic fit
# on that 1/4 px grid: the fit's own error is below 0.002 px for peaks wider than 0.6 px,
# and the small grid costs 6x less than CaImAn's 1/10 px grid.
_UPSAMPLE_FFT = 4
# Number of pixels (frames x y x x) processed at once when chunk_size is not given.
_CHUNK_PIXELS = 2**22
# Template estimation: the first template is the median over bins of this many sampled
# frames of their means.
_TEMPLATE_BLOCK = 10
# Frames sampled: a tenth of the movie, at least 100 and at most 200 (and about 32 Mpixel).
_TEMPLATE_FRACTION = 10
_TEMPLATE_MIN_FRAMES = 100
_TEMPLATE_MAX_FRAMES = 200
_TEMPLATE_PIXELS = 2**25
# Frames at the start of the movie whose minimum sets add_to_movie (CaImAn reads 400).
_MIN_MOV_FRAMES = 400


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
class _Config:
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


def _parse_params(params: Mapping[str, Any] | None) -> _Config:
    p = resolve_params(params, MOTION_DEFAULTS, step="mcorr", unsupported=_UNSUPPORTED)
    if p["use_cuda"]:
        warnings.warn("use_cuda=True: the built-in engine has no CUDA support; using the CPU.",
                      UserWarning, stacklevel=3)
    if p["is3D"]:
        raise NotImplementedError("The built-in engine registers 2D movies only (is3D=True).")
    border_nan = p["border_nan"]
    if border_nan not in (True, False, "copy", "min"):
        raise ValueError(f"border_nan must be True, False, 'copy' or 'min'; got {border_nan!r}.")
    g = p["gSig_filt"]
    return _Config(
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


# --------------------------------------------------------------------------------------------
# Filtering, patches and shift fields
# --------------------------------------------------------------------------------------------


def highpass_kernel(gSig: tuple[float, float] | float) -> np.ndarray:
    """Zero-sum "centred Gaussian" kernel used to high-pass frames (CaImAn's ``gSig_filt``).

    A Gaussian of width ``gSig`` is kept on the disk where it exceeds its largest value on the
    kernel's edge, and its mean over that disk is subtracted, so that the kernel sums to zero:
    it removes smooth background and keeps structures of about the size of a cell.

    Parameters
    ----------
    gSig
        Gaussian standard deviation (y, x) in pixels.

    Returns
    -------
    np.ndarray
        (ky, kx) float32 kernel, odd sizes ``(3 * gSig) // 2 * 2 + 1``.
    """
    gy, gx = as_pair(gSig, "gSig_filt")
    sizes = [int(3 * g) // 2 * 2 + 1 for g in (gy, gx)]
    axes = [np.arange(n) - (n - 1) / 2 for n in sizes]
    ker = np.outer(np.exp(-axes[0] ** 2 / (2 * gy**2)), np.exp(-axes[1] ** 2 / (2 * gx**2)))
    ker /= ker.sum()
    edge = max(ker[0].max(), ker[:, 0].max())
    support = ker >= edge
    ker[support] -= ker[support].mean()
    ker[~support] = 0.0
    return ker.astype(np.float32)


def highpass_filter(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter each frame of a (frames, y, x) float32 stack with ``kernel`` (reflected borders)."""
    out = np.empty_like(frames, dtype=np.float32)
    for i, frame in enumerate(frames):
        cv2.filter2D(frame, cv2.CV_32F, kernel, dst=out[i], borderType=cv2.BORDER_REFLECT)
    return out


def _patch_starts(dim: int, stride: int, overlap: int) -> tuple[np.ndarray, int]:
    """Start pixels of the patches along one axis, and the patch size.

    The number of patches is CaImAn's (``len(range(0, dim - size, stride)) + 1``); they are
    spread evenly so that the first starts at 0 and the last ends at the image edge (CaImAn
    puts the last one at the edge and the others every ``stride``, which can leave two patches
    almost on top of each other).
    """
    size = stride + overlap
    if size >= dim:
        return np.zeros(1, dtype=int), dim
    n = len(range(0, dim - size, stride)) + 1
    return np.round(np.linspace(0, dim - size, n)).astype(int), size


def patch_grid(dims: tuple[int, int], strides: tuple[int, int], overlaps: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Patch layout of piecewise-rigid registration.

    Parameters
    ----------
    dims
        (y, x) frame size in pixels.
    strides, overlaps
        CaImAn's ``strides`` and ``overlaps`` (y, x); patches are ``strides + overlaps`` wide.

    Returns
    -------
    starts_y, starts_x
        (n_patches_y,), (n_patches_x,) int first pixel of each patch row / column.
    size
        (patch_y, patch_x) patch size in pixels.
    """
    sy, py = _patch_starts(dims[0], strides[0], overlaps[0])
    sx, px = _patch_starts(dims[1], strides[1], overlaps[1])
    return sy, sx, (py, px)


def _interp_matrix(centers: np.ndarray, n_pixels: int) -> np.ndarray:
    """(n_pixels, n_centers) weights of a natural cubic spline through values at ``centers``.

    Beyond the first/last centre the value is held constant (as CaImAn does) rather than
    extrapolated, which would amplify errors of the border patches.
    """
    n = len(centers)
    if n == 1:
        return np.ones((n_pixels, 1), dtype=np.float32)
    coords = np.clip(np.arange(n_pixels, dtype=float), centers[0], centers[-1])
    if n == 2:  # a natural spline through two points is the straight line
        t = (coords - centers[0]) / (centers[1] - centers[0])
        return np.stack([1 - t, t], axis=1).astype(np.float32)
    spline = CubicSpline(centers, np.eye(n), bc_type="natural")
    return spline(coords).astype(np.float32)


def dense_shift_field(patch_shifts: np.ndarray, centers_y: np.ndarray, centers_x: np.ndarray,
                      dims: tuple[int, int]) -> np.ndarray:
    """Interpolate patch shifts to a smooth per-pixel shift field.

    Parameters
    ----------
    patch_shifts
        (frames, n_patches_y, n_patches_x, 2) shifts (y, x) in pixels at the patch centres.
    centers_y, centers_x
        (n_patches_y,), (n_patches_x,) patch centre coordinates in pixels.
    dims
        (y, x) frame size.

    Returns
    -------
    np.ndarray
        (frames, 2, y, x) float32 dense shift field; bicubic (natural spline) between centres,
        constant beyond the outermost centres.
    """
    wy = _interp_matrix(np.asarray(centers_y, float), dims[0])
    wx = _interp_matrix(np.asarray(centers_x, float), dims[1])
    s = np.moveaxis(np.asarray(patch_shifts, np.float32), -1, 1)  # (frames, 2, ny, nx)
    return wy @ s @ wx.T


# --------------------------------------------------------------------------------------------
# Cross-correlation peaks
# --------------------------------------------------------------------------------------------


def _gather_windows(maps: np.ndarray, lo: np.ndarray, size: tuple[int, int],
                    which: np.ndarray | None = None) -> np.ndarray:
    """Cut, from circular correlation maps, the window of displacements ``lo + [0, size)``.

    Parameters
    ----------
    maps
        (Q, h, w) maps indexed by displacement modulo (h, w).
    lo
        (N, 2) int first displacement of each item's window (negative allowed, wrapped).
    size
        (size_y, size_x) window size.
    which
        (N,) index of the map of each item; ``arange(N)`` if None.

    Returns
    -------
    np.ndarray
        (N, size_y, size_x).
    """
    _, h, w = maps.shape
    rows = (lo[:, 0, None] + np.arange(size[0])) % h  # (N, my)
    cols = (lo[:, 1, None] + np.arange(size[1])) % w  # (N, mx)
    idx = np.arange(len(lo)) if which is None else which
    return maps[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def _correlation_window(spec: np.ndarray, shape: tuple[int, int], start: np.ndarray,
                        size: tuple[int, int], workers: int) -> np.ndarray:
    """Inverse FFT of cross-power spectra, evaluated only in a window of displacements.

    Only ``size[0]`` of the ``h`` rows are needed: after the inverse transform along y, the
    inverse real transform along x is done for those rows only, which halves the cost of a
    full ``irfft2``.

    Parameters
    ----------
    spec
        (N, h, w // 2 + 1) half spectra.
    shape
        (h, w) image size.
    start
        (N, 2) first displacement of each item's window (wrapped modulo the size).
    size
        (size_y, size_x) window size.

    Returns
    -------
    np.ndarray
        (N, size_y, size_x) correlation values (``irfft2`` normalisation).
    """
    h, w = shape
    n = len(spec)
    by_row = scipy.fft.ifft(spec, axis=-2, workers=workers)
    rows = (start[:, 0, None] + np.arange(size[0])) % h
    part = by_row[np.arange(n)[:, None], rows]  # (N, size_y, wc)
    full_rows = scipy.fft.irfft(part, n=w, axis=-1, workers=workers)
    cols = (start[:, 1, None] + np.arange(size[1])) % w
    return full_rows[np.arange(n)[:, None, None], np.arange(size[0])[None, :, None],
                     cols[:, None, :]]


def _phase_kernel(freqs: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """exp(2 pi i f (c + o)) as (N, K, F), factorised as exp(2 pi i f c) * exp(2 pi i f o).

    The per-item factor has N*F entries and the fixed one K*F, so only those are computed with
    complex exponentials; their product is a cheap broadcast multiply.
    """
    two_pi = np.float32(2 * np.pi)
    per_item = np.exp(1j * (two_pi * freqs[None, :] * centres[:, None].astype(np.float32)))
    fixed = np.exp(1j * (two_pi * freqs[None, :] * offsets[:, None].astype(np.float32)))
    return per_item[:, None, :] * fixed[None, :, :]


def _upsampled_correlation(spec: np.ndarray, width: int, centres: np.ndarray,
                           offsets: np.ndarray) -> np.ndarray:
    """Cross-correlation at displacements ``centres + offsets`` by a matrix DFT.

    ``spec`` (N, h, width // 2 + 1) is the half (rfft) cross-power spectrum; the correlation
    is real, so the full inverse DFT is the real part of the half-spectrum sum with the
    non-self-conjugate columns counted twice. Costs h * wc * K per item, against a full
    upsampled inverse FFT of (h * uf) * (w * uf).

    Returns (N, K, K) with K = len(offsets).
    """
    n, h, wc = spec.shape
    fy = np.fft.fftfreq(h).astype(np.float32)
    fx = np.fft.rfftfreq(width).astype(np.float32)
    weight_x = np.full(wc, 2.0, dtype=np.float32)
    weight_x[0] = 1.0
    if width % 2 == 0:
        weight_x[-1] = 1.0
    ker_y = _phase_kernel(fy, centres[:, 0], offsets)  # (N, K, h)
    ker_x = _phase_kernel(fx, centres[:, 1], offsets) * weight_x  # (N, K, wc)
    return np.matmul(ker_y, np.matmul(spec, ker_x.transpose(0, 2, 1))).real


def _parabola_offset(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three equally spaced samples, in sample units."""
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def _fine_offsets(upsample: int = _UPSAMPLE_FFT) -> np.ndarray:
    """Offsets (pixels) of the sub-pixel grid evaluated around an integer peak.

    The true peak is within 1/2 px of the integer one; one more grid step on each side lets
    the parabola be fitted around any grid maximum inside that range.
    """
    half = math.ceil(0.5 * upsample) + 1
    return np.arange(-half, half + 1) / upsample


def _locate_peak(grid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sub-pixel maximum of (N, K, K) values sampled at ``offsets`` x ``offsets``.

    Takes the grid maximum and fits a parabola through it and its neighbours along each axis.
    Returns (N, 2) offsets in pixels.
    """
    k = len(offsets)
    step = offsets[1] - offsets[0]
    flat = grid.reshape(len(grid), -1).argmax(axis=1)
    iy, ix = np.divmod(flat, k)
    iy_c = np.clip(iy, 1, k - 2)
    ix_c = np.clip(ix, 1, k - 2)
    n = np.arange(len(grid))
    dy = _parabola_offset(grid[n, iy_c - 1, ix], grid[n, iy_c, ix], grid[n, iy_c + 1, ix])
    dx = _parabola_offset(grid[n, iy, ix_c - 1], grid[n, iy, ix_c], grid[n, iy, ix_c + 1])
    dy = np.where(iy == iy_c, dy, 0.0)  # no fit at the window edge
    dx = np.where(ix == ix_c, dx, 0.0)
    return np.stack([offsets[iy] + dy * step, offsets[ix] + dx * step], axis=1)


def _periodic_extension(images: np.ndarray, pad: int) -> np.ndarray:
    """Extend (Q, h, w) images by at least ``pad`` pixels so that they wrap around smoothly.

    The sub-pixel correlation is a Fourier (periodic) interpolation of the template. At the
    template's wrap-around, a jump between opposite edges (e.g. a brightness gradient) rings
    into the interpolated values, up to tenths of a pixel of bias for strong gradients. The
    extra rows / columns blend from the last row / column back to the first one, so the
    periodic template is continuous. The FFT size is rounded up to a fast length.
    """
    if pad <= 0:
        return images
    q, h, w = images.shape
    big_h = scipy.fft.next_fast_len(h + pad, real=True)
    big_w = scipy.fft.next_fast_len(w + pad, real=True)
    out = np.zeros((q, big_h, big_w))
    out[:, :h, :w] = images
    a = (np.arange(1, big_h - h + 1) / (big_h - h + 1))[:, None]
    a = a * a * (3 - 2 * a)  # smoothstep: flat at both ends
    out[:, h:, :w] = (1 - a) * images[:, -1:, :] + a * images[:, :1, :]
    b = (np.arange(1, big_w - w + 1) / (big_w - w + 1))[None, :]
    b = b * b * (3 - 2 * b)
    out[:, :, w:] = (1 - b) * out[:, :, w - 1:w] + b * out[:, :, :1]
    return out


class _MaskedTemplates:
    """Templates prepared for masked, normalised matching of images.

    Plain circular cross-correlation of a frame with a template is biased towards zero shift
    when the frame is not periodic: the overlap of frame and template shrinks with the
    displacement, and new content enters at the edges (about 0.2-0.3 px at 8 px shifts).
    Here the image is restricted to a mask whose border is at least the largest displacement
    searched, so that every masked pixel has a template pixel at every candidate displacement
    (no wrap-around), and the template energy under the shifted mask is accounted for:

    ``ncc(d) = sum_p m(p) (f(p) - mu) t(p - d) / sqrt(E(d))``, with
    ``E(d) = sum_p m(p) t(p - d)^2 - (sum_p m(p) t(p - d))^2 / sum(m)``,

    the normalised cross-correlation of the masked image (mean ``mu`` within the mask) with
    the template. The terms ``S1(d) = sum_p m(p) t(p - d)`` and ``S2`` (same with t^2) are
    correlations of the mask with the template, fixed per template: they are computed once,
    on the integer grid and on the sub-pixel grid, and cost nothing per frame. The sub-pixel
    values come from the DFT, i.e. from the periodic template, which is therefore extended to
    wrap around smoothly (:func:`_periodic_extension`); images are zero-padded to that size.

    Parameters
    ----------
    templates
        (Q, h, w) templates (one per patch, or one for the whole frame).
    masks
        (Q, h, w) binary masks applied to the images matched against each template.
    radius
        (y, x) largest |displacement| (pixels) that will be searched.
    workers
        Threads for scipy.fft.
    pad
        Minimum number of rows / columns of the smooth periodic extension.
    """

    def __init__(self, templates: np.ndarray, masks: np.ndarray, radius: tuple[float, float],
                 workers: int, pad: int = 8) -> None:
        t = templates.astype(np.float64)
        t = t - t.mean(axis=(1, 2), keepdims=True)
        self.image_shape = t.shape[1:]
        t = _periodic_extension(t, pad)
        self.shape = t.shape[1:]
        masks = np.pad(masks, ((0, 0), (0, self.shape[0] - self.image_shape[0]),
                               (0, self.shape[1] - self.image_shape[1])))
        self.masks = masks.astype(np.float32)
        self.wsum = self.masks.sum(axis=(1, 2)).astype(np.float64)
        tc = np.conj(scipy.fft.rfft2(t, workers=workers))
        mask_spec = scipy.fft.rfft2(self.masks.astype(np.float64), workers=workers)
        s1_spec = mask_spec * tc
        s2_spec = mask_spec * np.conj(scipy.fft.rfft2(t * t, workers=workers))
        self.s1 = scipy.fft.irfft2(s1_spec, s=self.shape, workers=workers)
        s2 = scipy.fft.irfft2(s2_spec, s=self.shape, workers=workers)
        self.energy = np.maximum(s2 - self.s1**2 / self.wsum[:, None, None], 1e-12)
        self.tc = tc.astype(np.complex64)
        # S1 and S2 on the sub-pixel grid covering every window the refinement can visit.
        self.offsets = _fine_offsets()
        self.fine_origin = np.array([math.ceil(r) + 1 for r in radius])
        n_steps = 2 * self.fine_origin * _UPSAMPLE_FFT + 1
        grid_y = np.arange(n_steps[0]) / _UPSAMPLE_FFT - self.fine_origin[0]
        grid_x = np.arange(n_steps[1]) / _UPSAMPLE_FFT - self.fine_origin[1]
        self.s1_fine = self._fine_grid(s1_spec, grid_y, grid_x)
        self.s2_fine = self._fine_grid(s2_spec, grid_y, grid_x)

    def _fine_grid(self, spec: np.ndarray, grid_y: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
        """(Q, Gy, Gx) correlation values at displacements grid_y x grid_x."""
        h, w = self.shape
        ky = np.exp(2j * np.pi * grid_y[:, None] * np.fft.fftfreq(h)[None, :])  # (Gy, h)
        weight_x = np.full(w // 2 + 1, 2.0)
        weight_x[0] = 1.0
        if w % 2 == 0:
            weight_x[-1] = 1.0
        kx = weight_x[:, None] * np.exp(2j * np.pi * np.fft.rfftfreq(w)[:, None] * grid_x)
        return (ky @ spec @ kx).real / (h * w)

    def apply_masks(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masked images and their means within the masks.

        Parameters
        ----------
        images
            (n, Q, h, w) images, image ``q`` to be matched to template ``q``.

        Returns
        -------
        masked, means
            (n, Q, H, W) images times masks, zero-padded to the extended template size;
            (n, Q) means within the masks. The mean is subtracted from the correlations
            later through S1 (cheaper than here).
        """
        h, w = self.image_shape
        masks = self.masks[:, :h, :w]
        sums = np.einsum("nqyx,qyx->nq", images, masks)
        # Written straight into the zero-padded FFT buffer (one pass instead of two).
        padded = np.zeros((*images.shape[:2], *self.shape), dtype=np.float32)
        np.multiply(images, masks, out=padded[..., :h, :w])
        return padded, sums / self.wsum

    def spectra(self, masked: np.ndarray, workers: int) -> np.ndarray:
        """rfft2 of masked images from :meth:`apply_masks`."""
        return scipy.fft.rfft2(masked, workers=workers)

    def displacements(self, spectra: np.ndarray, means: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray, workers: int) -> np.ndarray:
        """Displacement of image content relative to the templates, within [lo, hi].

        Parameters
        ----------
        spectra
            (n, Q, h, w // 2 + 1) rfft2 of masked images, and ``means`` (n, Q), from
            :meth:`apply_masks`.
        lo, hi
            (n, Q, 2) float bounds of the search (pixels, inclusive), within ``radius``.

        Returns
        -------
        np.ndarray
            (n, Q, 2) displacement d (pixels) with ``image(p) ~ template(p - d)``.
        """
        n, q = spectra.shape[:2]
        h, w = self.shape
        spec = (spectra * self.tc).reshape(n * q, h, -1)
        lo, hi = lo.reshape(n * q, 2), hi.reshape(n * q, 2)
        means = means.reshape(n * q)[:, None, None]
        which = np.tile(np.arange(q), n)
        start = np.ceil(lo - 1e-9).astype(int)
        stop = np.floor(hi + 1e-9).astype(int)
        size = tuple(int(v) for v in np.maximum((stop - start).max(axis=0) + 1, 1))
        s1 = _gather_windows(self.s1, start, size, which)
        win = _correlation_window(spec, self.shape, start, size, workers) - means * s1
        energy = _gather_windows(self.energy, start, size, which)
        ncc = win / np.sqrt(energy)
        # Items whose window is narrower than the common one: mask the excess displacements.
        too_far_y = np.arange(size[0])[None, :] > (stop - start)[:, 0, None]
        too_far_x = np.arange(size[1])[None, :] > (stop - start)[:, 1, None]
        ncc[too_far_y[:, :, None] | too_far_x[:, None, :]] = -np.inf
        flat = ncc.reshape(len(ncc), -1).argmax(axis=1)
        iy, ix = np.divmod(flat, size[1])
        peaks = start + np.stack([iy, ix], axis=1)
        # Sub-pixel: the same normalised correlation on a fine grid around the integer peak,
        # the correlation by an upsampled DFT, S1 and S2 from the per-template fine grids.
        grid = _upsampled_correlation(spec, w, peaks.astype(float), self.offsets)
        grid = grid.astype(np.float64) / (h * w)  # float64: cc and mean * S1 nearly cancel
        k = len(self.offsets)
        rows = (peaks[:, 0, None] + self.fine_origin[0]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        cols = (peaks[:, 1, None] + self.fine_origin[1]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        fine_idx = (which[:, None, None], rows[:, :, None], cols[:, None, :])
        fine_s1 = self.s1_fine[fine_idx]
        fine_energy = self.s2_fine[fine_idx] - fine_s1**2 / self.wsum[which][:, None, None]
        grid -= means * fine_s1
        grid /= np.sqrt(np.maximum(fine_energy, 1e-12))
        # The sub-pixel step may leave the search range by < 1 px: keep to the bounds.
        disp = np.clip(peaks + _locate_peak(grid, self.offsets), lo, hi)
        return disp.reshape(n, q, 2)


def _border_mask(shape: tuple[int, int], borders: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) binary mask, zero in borders (top, bottom, left, right) pixels wide.

    Each border is clamped to a third of the size so that a usable centre always remains.
    """
    h, w = shape
    top, bottom = (min(int(b), h // 3) for b in borders[:2])
    left, right = (min(int(b), w // 3) for b in borders[2:])
    mask = np.zeros(shape, dtype=np.float32)
    mask[top:h - bottom, left:w - right] = 1.0
    return mask


# --------------------------------------------------------------------------------------------
# Applying shifts
# --------------------------------------------------------------------------------------------


def _border_strips(frame: np.ndarray, shift: np.ndarray, border_nan: bool | str,
                   fill: float) -> None:
    """Mark, in place, the strips of a rigidly shifted frame that hold no data (as CaImAn)."""
    if border_nan is False:
        return
    top, left = (math.ceil(max(0.0, s)) for s in shift)
    bottom, right = (math.floor(min(0.0, s)) for s in shift)
    if border_nan == "copy":
        if top > 0:
            frame[:top] = frame[top]
        if bottom < 0:
            frame[bottom:] = frame[bottom - 1]
        if left > 0:
            frame[:, :left] = frame[:, left, None]
        if right < 0:
            frame[:, right:] = frame[:, right - 1, None]
        return
    frame[:top] = fill
    frame[:, :left] = fill
    if bottom < 0:
        frame[bottom:] = fill
    if right < 0:
        frame[:, right:] = fill


def _border_fill(frame: np.ndarray, border_nan: bool | str) -> float:
    return float(np.nanmin(frame)) if border_nan == "min" else np.nan


def _cubic_weights(frac: float) -> np.ndarray:
    """Cubic-convolution weights (OpenCV's a = -0.75) of taps -1, 0, 1, 2 for position frac."""
    a = -0.75
    x = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - frac)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, far).astype(np.float32)


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into [0, n) as OpenCV's BORDER_REFLECT (edge pixel repeated)."""
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - 1 - idx)


def _translate(frame: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """out(p) = frame(p - shift), cubic interpolation, reflected borders.

    Same interpolation as ``cv2.warpAffine(..., INTER_CUBIC)`` but done as a separable
    4-tap filter for the fractional part (``cv2.sepFilter2D``) and a copy for the integer
    part, which is about 5x faster for a translation.
    """
    h, w = frame.shape
    src = -np.asarray(shift, dtype=np.float64)  # out(p) = frame(p + src)
    whole = np.floor(src).astype(int)
    frac = src - whole
    filtered = cv2.sepFilter2D(frame, cv2.CV_32F, _cubic_weights(frac[1]),
                               _cubic_weights(frac[0]), anchor=(1, 1),
                               borderType=cv2.BORDER_REFLECT)
    rows = _reflect_index(np.arange(h) + whole[0], h)
    cols = _reflect_index(np.arange(w) + whole[1], w)
    # The bulk is a plain slice copy; only the strips beyond the edges need the index maps.
    y0, y1 = max(0, -whole[0]), min(h, h - whole[0])
    x0, x1 = max(0, -whole[1]), min(w, w - whole[1])
    if y0 < y1 and x0 < x1:
        out[y0:y1, x0:x1] = filtered[y0 + whole[0]:y1 + whole[0], x0 + whole[1]:x1 + whole[1]]
    for ys, xs in (((slice(0, y0)), slice(None)), ((slice(y1, h)), slice(None)),
                   (slice(y0, y1), slice(0, x0)), (slice(y0, y1), slice(x1, w))):
        strip_rows, strip_cols = rows[ys], cols[xs]
        if len(strip_rows) and len(strip_cols):
            out[ys, xs] = filtered[np.ix_(strip_rows, strip_cols)]


def _shift_rigid_cv(frames: np.ndarray, shifts: np.ndarray, border_nan: bool | str) -> np.ndarray:
    """Translate each frame by ``shifts`` (y, x) with cubic interpolation (OpenCV filters)."""
    out = np.empty_like(frames)
    for i in range(len(frames)):
        _translate(frames[i], shifts[i], out[i])
        # Cubic interpolation overshoots at sharp edges; keep values within the frame's range.
        low, high = cv2.minMaxLoc(frames[i])[:2]
        np.clip(out[i], low, high, out=out[i])
        _border_strips(out[i], shifts[i], border_nan, _border_fill(frames[i], border_nan))
    return out


def _shift_rigid_fft(spectra: np.ndarray, shape: tuple[int, int], shifts: np.ndarray,
                     border_nan: bool | str, workers: int) -> np.ndarray:
    """Translate frames by ``shifts`` with a Fourier phase ramp (exact for band-limited data)."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)
    two_pi = np.float32(2 * np.pi)
    ramp_y = np.exp(-1j * two_pi * fy[None, :] * shifts[:, 0, None].astype(np.float32))
    ramp_x = np.exp(-1j * two_pi * fx[None, :] * shifts[:, 1, None].astype(np.float32))
    out = scipy.fft.irfft2(spectra * ramp_y[:, :, None] * ramp_x[:, None, :], s=shape,
                           workers=workers).astype(np.float32, copy=False)
    for i in range(len(out)):
        _border_strips(out[i], shifts[i], border_nan, _border_fill(out[i], border_nan))
    return out


def _shift_dense(frames: np.ndarray, field: np.ndarray, border_nan: bool | str) -> np.ndarray:
    """Warp each frame by its dense shift field (frames, 2, y, x) with cv2.remap (cubic).

    Pixels whose source lies outside the frame are NaN (``border_nan=True``), the frame minimum
    (``"min"``), zero (``False``, as CaImAn's remap) or replicate the edge (``"copy"``).
    """
    n, h, w = frames.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(frames)
    for i in range(n):
        map_y = grid_y - field[i, 0]
        map_x = grid_x - field[i, 1]
        cv2.remap(frames[i], map_x, map_y, cv2.INTER_CUBIC, dst=out[i],
                  borderMode=cv2.BORDER_REPLICATE)
        np.clip(out[i], frames[i].min(), frames[i].max(), out=out[i])
        if border_nan != "copy":
            outside = (map_y < 0) | (map_y > h - 1) | (map_x < 0) | (map_x > w - 1)
            fill = 0.0 if border_nan is False else _border_fill(frames[i], border_nan)
            out[i][outside] = fill
    return out


# --------------------------------------------------------------------------------------------
# Registration of frame chunks to a template
# --------------------------------------------------------------------------------------------


class _Registrar:
    """Registers chunks of frames to one template (rigid or piecewise rigid).

    Parameters
    ----------
    template
        (y, x) float32 template, unfiltered.
    cfg
        Parsed parameters.
    kernel
        High-pass kernel applied to frames and template for estimating shifts, or None.
    piecewise
        Estimate patch shifts and warp with a dense field.
    border_nan
        Border handling of the registered frames.
    workers
        Threads for scipy.fft.
    """

    def __init__(self, template: np.ndarray, cfg: _Config, kernel: np.ndarray | None,
                 piecewise: bool, border_nan: bool | str, workers: int) -> None:
        self.cfg = cfg
        self.kernel = kernel
        self.workers = workers
        self.border_nan = border_nan
        self.shape = template.shape
        est = self._prefilter(template[None].astype(np.float32))
        # Rigid search within +/-max_shifts: the frame mask excludes that border (+ margin).
        ms_y, ms_x = cfg.max_shifts
        mask = _border_mask(self.shape, (ms_y + 2, ms_y + 2, ms_x + 2, ms_x + 2))
        self.frame_tmpl = _MaskedTemplates(est, mask[None], cfg.max_shifts, workers)
        self.piecewise = piecewise
        if piecewise:
            self.starts_y, self.starts_x, self.patch = patch_grid(
                self.shape, cfg.strides, cfg.overlaps)
            self.centers_y = self.starts_y + (self.patch[0] - 1) / 2
            self.centers_x = self.starts_x + (self.patch[1] - 1) / 2
            radius = (math.ceil(cfg.max_deviation_rigid) + 1,) * 2
            self.patch_tmpl = _MaskedTemplates(self._patches(est)[0], self._patch_masks(),
                                               radius, workers)

    @property
    def patch_centers(self) -> np.ndarray:
        cy, cx = np.meshgrid(self.centers_y, self.centers_x, indexing="ij")
        return np.stack([cy, cx], axis=-1).astype(np.float32)

    def _patch_masks(self) -> np.ndarray:
        """(n_patches, patch_y, patch_x) masks for the patch search.

        Patches are matched on frames pre-shifted by the integer rigid shift, so the residual
        search range is +/-(max_deviation_rigid + 1/2) px: that border is masked inside the
        image. Patch sides on the image edge also mask the strip that the pre-shift filled
        by replication (up to max_shifts).
        """
        (h, w), (ph, pw) = self.shape, self.patch
        inner = math.ceil(self.cfg.max_deviation_rigid) + 2
        edge_y, edge_x = (inner + m for m in self.cfg.max_shifts)
        masks = []
        for y in self.starts_y:
            for x in self.starts_x:
                borders = (edge_y if y == 0 else inner, edge_y if y + ph >= h else inner,
                           edge_x if x == 0 else inner, edge_x if x + pw >= w else inner)
                masks.append(_border_mask((ph, pw), borders))
        return np.stack(masks)

    def _prefilter(self, frames: np.ndarray) -> np.ndarray:
        return frames if self.kernel is None else highpass_filter(frames, self.kernel)

    def _patches(self, frames: np.ndarray) -> np.ndarray:
        """(n, y, x) -> (n, n_patches, patch_y, patch_x) copies of the patches."""
        ph, pw = self.patch
        return np.stack([frames[:, y:y + ph, x:x + pw]
                         for y in self.starts_y for x in self.starts_x], axis=1)

    def rigid(self, est: np.ndarray) -> np.ndarray:
        """(n, 2) displacements of (filtered) frames relative to the template."""
        n = len(est)
        masked, means = self.frame_tmpl.apply_masks(est[:, None])
        spectra = self.frame_tmpl.spectra(masked, self.workers)
        bound = np.broadcast_to(np.asarray(self.cfg.max_shifts, float), (n, 1, 2))
        return self.frame_tmpl.displacements(spectra, means, -bound, bound, self.workers)[:, 0]

    def patchwise(self, est: np.ndarray, rigid: np.ndarray) -> np.ndarray:
        """(n, ny, nx, 2) patch displacements, each within rigid +/- max_deviation_rigid."""
        n = len(est)
        ny, nx = len(self.starts_y), len(self.starts_x)
        # Patches of each frame pre-shifted by its integer rigid displacement: cut at the
        # patch position + offset from the frame padded by edge replication.
        offset = np.round(rigid).astype(int)
        margin = np.abs(offset).max(initial=0)
        padded = np.pad(est, ((0, 0), (margin, margin), (margin, margin)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.patch, axis=(1, 2))
        gy, gx = np.meshgrid(self.starts_y, self.starts_x, indexing="ij")
        top = gy.ravel()[None, :] + offset[:, 0, None] + margin  # (n, n_patches)
        left = gx.ravel()[None, :] + offset[:, 1, None] + margin
        patches, means = self.patch_tmpl.apply_masks(windows[np.arange(n)[:, None], top, left])
        spec = self.patch_tmpl.spectra(patches, self.workers)
        dev = self.cfg.max_deviation_rigid
        centre = np.broadcast_to((rigid - offset)[:, None, :], (n, ny * nx, 2))
        disp = self.patch_tmpl.displacements(spec, means, centre - dev, centre + dev,
                                             self.workers)
        return disp.reshape(n, ny, nx, 2) + offset[:, None, None, :]

    def register(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Register a chunk of frames.

        Parameters
        ----------
        frames
            (n, y, x) float32 raw frames.

        Returns
        -------
        shifts_rig
            (n, 2) applied rigid shifts (pixels).
        shifts_pw
            (n, ny, nx, 2) applied patch shifts, or None.
        registered
            (n, y, x) float32 registered frames.
        """
        est = self._prefilter(frames)
        shifts_rig = -self.rigid(est)
        if self.piecewise:
            shifts_pw = -self.patchwise(est, -shifts_rig)
            field = dense_shift_field(shifts_pw, self.centers_y, self.centers_x, self.shape)
            return shifts_rig, shifts_pw, _shift_dense(frames, field, self.border_nan)
        if self.cfg.shifts_opencv:
            registered = _shift_rigid_cv(frames, shifts_rig, self.border_nan)
        else:
            spectra = scipy.fft.rfft2(frames, workers=self.workers)
            registered = _shift_rigid_fft(spectra, self.shape, shifts_rig, self.border_nan,
                                          self.workers)
        return shifts_rig, None, registered


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def _read(movie: Any, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) as float32 (a view when already float32: it is never written)."""
    return np.asarray(movie[start:stop], dtype=np.float32)


def _chunks(n_frames: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_frames, chunk):
        yield start, min(n_frames, start + chunk)


def _nanmedian0(stack: np.ndarray) -> np.ndarray:
    """NaN-aware median over axis 0 of a (k, y, x) stack, k small (NaN if all NaN).

    ``np.nanmedian`` goes through masked arrays for a short axis, ~10x slower than sorting.
    """
    k = len(stack)
    flat = np.sort(stack.reshape(k, -1).T, axis=1)  # NaNs sort last
    n_finite = np.isfinite(flat).sum(axis=1)
    lo = np.clip((n_finite - 1) // 2, 0, k - 1)
    hi = np.clip(n_finite // 2, 0, k - 1)
    rows = np.arange(len(flat))
    med = 0.5 * (flat[rows, lo] + flat[rows, hi])
    med[n_finite == 0] = np.nan
    return med.reshape(stack.shape[1:])


def _bin_median(frames: np.ndarray, window: int = _TEMPLATE_BLOCK) -> np.ndarray:
    """Median over consecutive blocks of ``window`` frames of the block means (NaN-aware)."""
    n = len(frames)
    n_bins = max(1, n // window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        means = np.stack([np.nanmean(b, axis=0) for b in np.array_split(frames, n_bins)])
    return _nanmedian0(means).astype(np.float32)


def _fill_nan(image: np.ndarray) -> np.ndarray:
    """Replace NaN pixels of a template with its minimum (pixels that never held data)."""
    nan = np.isnan(image)
    if nan.all():
        return np.zeros_like(image)
    if nan.any():
        image = image.copy()
        image[nan] = np.nanmin(image)
    return image


def _read_sample(movie: Any, n_frames: int, dims: tuple[int, int], chunk: int) -> np.ndarray:
    """Single frames spread evenly over the movie, for the first template (a short movie is
    read whole, ``chunk`` frames at a time).

    Single frames rather than blocks of consecutive ones: neighbouring frames share their
    position and their cells' activity, so they add little to the template but noise, and
    on noise-limited movies the template's noise sets the shifts' accuracy (see
    ``benchmarks/README.md``).
    """
    budget = max(2 * _TEMPLATE_BLOCK, _TEMPLATE_PIXELS // (dims[0] * dims[1]))
    wanted = max(_TEMPLATE_MIN_FRAMES, n_frames // _TEMPLATE_FRACTION)
    n_sample = min(n_frames, _TEMPLATE_MAX_FRAMES, budget, wanted)
    if n_sample >= n_frames:
        return np.concatenate([_read(movie, a, b) for a, b in _chunks(n_frames, chunk)])
    picks = np.unique(np.round(np.linspace(0, n_frames - 1, n_sample)).astype(int))
    return np.concatenate([_read(movie, i, i + 1) for i in picks])


def _initial_template(sample: np.ndarray, cfg: _Config, kernel: np.ndarray | None,
                      workers: int) -> np.ndarray:
    """Template from the sampled frames: register them to their own bin median, iterate.

    Two rigid rounds, then (piecewise mode) one piecewise-rigid round so that the template is
    sharp where the deformation varies over time. Border pixels replicate the edge rather
    than becoming NaN, so that the template has no holes.
    """
    template = _bin_median(sample)
    rounds = [False] * 2 + ([True] if cfg.pw_rigid else [])
    for piecewise in rounds:
        reg = _Registrar(template, cfg, kernel, piecewise, "copy", workers)
        template = _fill_nan(_bin_median(reg.register(sample)[2]))
    return template


class _SplitTemplate:
    """Accumulates registered frames per part of the movie; the template is the median of the
    parts' NaN-aware mean frames (CaImAn's ``total_template``)."""

    def __init__(self, n_frames: int, dims: tuple[int, int], splits: int) -> None:
        splits = max(1, min(splits, n_frames))
        self.edges = np.linspace(0, n_frames, splits + 1).astype(int)
        self.sums = np.zeros((splits, *dims))
        self.counts = np.zeros((splits, *dims), dtype=np.int32)

    def add(self, frames: np.ndarray, start: int) -> None:
        stop = start + len(frames)
        for k in range(len(self.sums)):
            a, b = max(start, self.edges[k]), min(stop, self.edges[k + 1])
            if a < b:
                part = frames[a - start:b - start]
                total = part.sum(axis=0, dtype=np.float64)
                count = np.full(total.shape, len(part), dtype=np.int32)
                # NaN (no data) only occurs near the borders: redo just those pixels.
                holes = np.isnan(total)
                if holes.any():
                    sub = part[:, holes]
                    finite = np.isfinite(sub)
                    total[holes] = np.where(finite, sub, 0).sum(axis=0)
                    count[holes] = finite.sum(axis=0)
                self.sums[k] += total
                self.counts[k] += count

    def template(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self.counts > 0, self.sums / self.counts, np.nan)
        return _fill_nan(_nanmedian0(means).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _min_mov(movie: Any, n_frames: int, chunk: int) -> float:
    """Minimum of the first frames (CaImAn's ``min_mov``)."""
    stop = min(n_frames, _MIN_MOV_FRAMES)
    return float(min(np.min(_read(movie, a, b)) for a, b in _chunks(stop, chunk)))


def _default_chunk(dims: tuple[int, int]) -> int:
    return max(1, _CHUNK_PIXELS // (dims[0] * dims[1]))


def _run_pass(movie: Any, reg: _Registrar, n_frames: int, chunk: int, splits: int,
              out: np.ndarray | None, add: float, bar: Any) -> tuple[np.ndarray, ...]:
    """Register the whole movie once; write it into ``out`` if given."""
    dims = reg.shape
    shifts_rig = np.zeros((n_frames, 2), dtype=np.float32)
    shifts_pw = None
    if reg.piecewise:
        shifts_pw = np.zeros((n_frames, len(reg.starts_y), len(reg.starts_x), 2), np.float32)
    acc = _SplitTemplate(n_frames, dims, splits)
    for a, b in _chunks(n_frames, chunk):
        rig, pw, registered = reg.register(_read(movie, a, b))
        shifts_rig[a:b] = rig
        if pw is not None:
            shifts_pw[a:b] = pw
        acc.add(registered, a)
        if out is not None:
            if add:
                registered += np.float32(add)
            out[a:b] = registered
        bar.update(b - a)
    return shifts_rig, shifts_pw, acc.template()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="motion correction")


def _openblas_libs() -> list[tuple[Any, Any]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    found = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("openblas", ""), ("scipy_openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "64_")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                found.append((get, put))
                break
    return found


@contextlib.contextmanager
def _thread_limits(workers: int) -> Iterator[None]:
    """Run with OpenCV limited to one thread when workers == 1, and (best effort) OpenBLAS
    limited to one thread always.

    The small batched matrix products of the sub-pixel search are many times slower with
    OpenBLAS's threads competing for the cores with FFTs and other jobs (measured: 2-3x
    slower overall at 512x512); Snakemake runs one job per core, so one thread is the right
    default. Previous settings are restored.
    """
    cv_threads = cv2.getNumThreads()
    blas = _openblas_libs()
    blas_threads = [get() for get, _ in blas]
    cv2.setNumThreads(1 if workers == 1 else -1)
    for _, put in blas:
        put(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        for (_, put), n in zip(blas, blas_threads):
            put(n)


def motion_correct(movie: Any, params: Mapping[str, Any] | None = None,
                   out: np.ndarray | None = None, *, chunk_size: int | None = None,
                   progress: bool = True, workers: int = 1) -> MotionResult:
    """Rigid or piecewise-rigid (NoRMCorre) motion correction of a movie, streamed in chunks.

    Parameters
    ----------
    movie
        (frames, y, x) array-like of any numeric dtype supporting ``movie[a:b]`` (ndarray,
        memmap, lazy reader). It is read chunk by chunk, never whole.
    params
        CaImAn params ``"main"`` dict; motion keys are used (see :data:`MOTION_DEFAULTS`),
        keys of other CaImAn groups are ignored, unknown keys raise
        :class:`~mesmerize_helpers.engine.params.UnknownParameterError`. Lists are accepted
        where CaImAn has tuples.
    out
        Writable (frames, y, x) float32 array (e.g. an ``open_memmap``) that receives the
        registered movie (plus ``add_to_movie``). Allocated in memory if None.
    chunk_size
        Frames processed at once; by default about 4 Mpixel per chunk.
    progress
        Show a tqdm progress bar over frames (of all passes).
    workers
        Threads for scipy.fft and OpenCV; 1 (default) keeps the step single-threaded, -1
        uses all cores.

    Returns
    -------
    MotionResult
        Template, rigid and patch shifts (pixels, applied to the frames), patch centres.

    Notes
    -----
    Memory use is a few chunks plus the shift arrays and ``splits_rig`` template accumulators;
    it does not grow with the number of frames. The movie is read once to find ``min_mov``
    (first 400 frames), once for the template sample, then once per pass:
    ``niter_rig - 1`` rigid refinement passes, ``niter_els - 1`` piecewise ones (pw_rigid),
    and the final pass that writes ``out``.
    """
    cfg = _parse_params(params)
    n_frames, h, w = (int(v) for v in movie.shape)
    dims = (h, w)
    chunk = max(1, int(chunk_size)) if chunk_size else _default_chunk(dims)
    if out is None:
        out = np.empty((n_frames, h, w), dtype=np.float32)
    elif tuple(out.shape) != (n_frames, h, w):
        raise ValueError(f"out has shape {out.shape}, expected {(n_frames, h, w)}.")

    with _thread_limits(workers):
        kernel = None if cfg.gSig_filt is None else highpass_kernel(cfg.gSig_filt)
        piecewise = cfg.pw_rigid and cfg.max_deviation_rigid > 0
        if cfg.nonneg_movie:
            min_mov = cfg.min_mov if cfg.min_mov is not None else _min_mov(movie, n_frames, chunk)
            add = 0.0 - min_mov  # not -0.0
        else:
            add = 0.0
        template = _initial_template(_read_sample(movie, n_frames, dims, chunk), cfg, kernel,
                                     workers)

        # Refinement passes over the whole movie, then the final pass writing the output.
        passes = [False] * (cfg.niter_rig - 1) + [True] * ((cfg.niter_els - 1) * piecewise)
        bar = _progress_bar(n_frames * (len(passes) + 1), progress)
        try:
            for pw in passes:
                reg = _Registrar(template, cfg, kernel, pw, "copy", workers)
                splits = cfg.splits_els if pw else cfg.splits_rig
                template = _run_pass(movie, reg, n_frames, chunk, splits, None, 0.0, bar)[2]
            reg = _Registrar(template, cfg, kernel, piecewise, cfg.border_nan, workers)
            splits = cfg.splits_els if piecewise else cfg.splits_rig
            shifts_rig, shifts_pw, final = _run_pass(movie, reg, n_frames, chunk, splits, out,
                                                     add, bar)
        finally:
            bar.close()

    applied = shifts_pw if shifts_pw is not None else shifts_rig
    border = int(np.ceil(np.abs(applied).max())) if n_frames else 0
    return MotionResult(
        template=(final + np.float32(add)).astype(np.float32),
        shifts_rig=shifts_rig,
        shifts_pw=shifts_pw,
        patch_centers=reg.patch_centers if piecewise else None,
        add_to_movie=float(add),
        border_to_0=border,
    )
