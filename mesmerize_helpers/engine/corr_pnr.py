"""CNMF-E initialization: greedy seeding on correlation x peak-to-noise ratio.

Follows the idea of CaImAn's ``init_neurons_corr_pnr`` (Zhou et al. 2018):

1. Each frame is filtered with a zero-mean Gaussian disk of width ``gSig``
   (:func:`~mesmerize_helpers.engine.pnr_images.pnr_filter_kernel`, ``center_psf=True``): a
   band-pass that keeps neuron-sized blobs and removes the smooth one-photon background.
2. From the filtered movie (temporal mean removed): the peak-to-noise ratio (PNR) of each
   pixel, and the correlation image of the movie thresholded at ``thresh_init`` times the
   noise (so that only large positive deflections, i.e. transients, correlate).
3. Seeds are local maxima of ``corr * pnr`` among pixels with ``corr >= min_corr`` and
   ``pnr >= min_pnr``, tried best first. For each seed, in a ``(2 gSiz + 1)``-px box: the
   trace is the mean filtered trace of the pixels that correlate strongly with the seed;
   the footprint is the regression of the raw data on that trace, a local background trace
   and a constant (non-negative, compact around the seed, connected). The trace is
   baseline-corrected and denoised by deconvolution.
4. The neuron is subtracted from the raw and the filtered movie, the PNR and correlation
   images are recomputed around it, and the search goes on until no seed is left.

The two movies are read and written a block of frames at a time (:mod:`.corr_pnr_passes`):
in memory one block, the whole movie; in files of the fit's workspace (a long movie's patch)
blocks sized by the budget, so the seeding's memory does not grow with the frames.

Pixel vectors are in Fortran order on (y, x): index ``y + x * height``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from .corr_pnr_passes import BG_CORR, CORE_CORR, SeedMovies
from .data import Budget, MemoryWorkspace, Workspace, frames_per_block, put_frames
from .deconv import deconvolve_trace
from .footprints import from_columns
from .noise import estimate_ar, noise_fft
from .pnr_images import pnr_filter_kernel

__all__ = ["CorrPnrInit", "filter_movie", "correlation_pnr_images", "init_neurons_corr_pnr"]


@dataclass
class CorrPnrInit:
    """Result of :func:`init_neurons_corr_pnr` (K neurons, T frames).

    Attributes
    ----------
    A
        (pixels, K) ``scipy.sparse.csc_matrix`` float32 footprints, Fortran pixel order
        (counts per unit of ``C``).
    C
        (K, T) float32 denoised traces (baseline removed).
    C_raw
        (K, T) float32 raw traces (baseline removed).
    centers
        (K, 2) int seed pixels (y, x).
    cn, pnr
        (y, x) correlation and peak-to-noise images of the filtered movie (before any
        neuron was removed).
    """

    A: sp.csc_matrix
    C: np.ndarray
    C_raw: np.ndarray
    centers: np.ndarray
    cn: np.ndarray
    pnr: np.ndarray


def filter_movie(movie: np.ndarray, gSig: tuple[float, float] | None,
                 center_psf: bool = True) -> np.ndarray:
    """Filter every frame of a (T, y, x) movie with the CNMF-E seeding kernel.

    Borders are replicated (as CaImAn). Returns a new float32 (T, y, x) array (the input is
    returned as a float32 copy when ``gSig`` is None).
    """
    out = np.array(movie, dtype=np.float32, copy=True, order="C")
    if not gSig:
        return out
    kernel = pnr_filter_kernel(gSig, center_psf)
    for t in range(out.shape[0]):
        cv2.filter2D(out[t], cv2.CV_32F, kernel, dst=out[t], borderType=cv2.BORDER_REPLICATE)
    return out


def _filter_image(img: np.ndarray, gSig: tuple[float, float] | None,
                  center_psf: bool) -> np.ndarray:
    if not gSig:
        return img.astype(np.float32)
    kernel = pnr_filter_kernel(gSig, center_psf)
    return cv2.filter2D(img.astype(np.float32), cv2.CV_32F, kernel,
                        borderType=cv2.BORDER_REPLICATE)


def correlation_pnr_images(
    filtered: np.ndarray, noise_range: tuple[float, float] = (0.25, 0.5),
    thresh_init: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation, PNR and noise images of a filtered movie whose temporal mean is 0.

    Returns
    -------
    cn, pnr, noise
        (y, x) float32 images; ``noise`` in the units of ``filtered``.
    """
    movies = SeedMovies(filtered, filtered, len(filtered))
    noise = movies.noise(noise_range, None)
    pnr = np.maximum(movies.peak(), 0) / noise
    return movies.corr(noise, thresh_init), pnr.astype(np.float32), noise


def _compact(ai: np.ndarray) -> np.ndarray:
    """Keep the blob around the peak of a (ny, nx) footprint estimate.

    Where the footprint rises again away from its peak and is below a third of the peak, the
    pixel belongs to something else (a neighbour, background): it is zeroed. Then small
    pieces are removed by a morphological opening and only the connected region holding the
    peak is kept.
    """
    img = ai.copy()
    if img.max() <= 0:
        return img
    y0, x0 = np.unravel_index(int(np.argmax(img)), img.shape)
    vmax = img[y0, x0]
    if min(img.shape) > 1:
        gy, gx = np.gradient(img)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        rising_outwards = gx * (x0 - xx) + gy * (y0 - yy) < 0
        img[rising_outwards & (img < vmax / 3)] = 0
    opened = cv2.morphologyEx(img.astype(np.float32), cv2.MORPH_OPEN,
                              np.ones((3, 3), np.uint8))
    labels, _ = ndimage.label(opened > 0.01 * vmax)
    lab = labels[y0, x0]
    if lab == 0:
        labels, _ = ndimage.label(img > 0)
        lab = labels[y0, x0]
    img[labels != lab] = 0
    return img


def _trace_baseline(ci: np.ndarray, noise_range: tuple[float, float]) -> float:
    """Baseline of a trace: median of the frames that rise by less than the noise.

    Frames during a transient's rise or decay move by more than the noise; the rest sit at
    the baseline.
    """
    sn = float(noise_fft(ci, noise_range, "mean"))
    dy = np.concatenate([[-1.0], np.diff(ci)])
    flat = (dy >= 0) & (dy < sn)
    return float(np.median(ci[flat])) if flat.any() else float(np.median(ci))


def _extract_ac(
    movies: SeedMovies, box: tuple[slice, slice], ctr: int, trace_ok: Any,
    noise_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Footprint and raw trace of the neuron at pixel ``ctr`` (C order) of a box
    ``(ys, xs)`` of the seeding's movies, or None when ``trace_ok(seed's filtered trace)``
    is False or no trace comes out.

    The trace is the mean normalised filtered trace of the pixels that correlate with the
    seed's above ``CORE_CORR``; the footprint is what it explains in the raw data beyond a
    local background trace (median of the pixels correlating below ``BG_CORR``) and a
    constant, kept compact around its peak.

    Returns
    -------
    (ai, ci) or None
        (ny, nx) footprint in raw units per unit of ``ci``, (T,) baseline-free trace.
    """
    trace, mean, norm, corr = movies.box_stats(box[0], box[1], ctr)
    if not trace_ok(trace):
        return None
    core = corr > CORE_CORR
    ci, coef = movies.regress(box[0], box[1], core, corr < BG_CORR, mean, norm)
    if not np.any(ci) or not np.all(np.isfinite(ci)):
        return None
    shape = (len(range(*box[0].indices(movies.h))), len(range(*box[1].indices(movies.w))))
    ai = _compact(np.maximum(coef[0], 0).reshape(shape))
    ci = ci - _trace_baseline(ci, noise_range)
    return ai.astype(np.float32), ci.astype(np.float32)


def _sharp_rise(trace: np.ndarray) -> bool:
    """A seed must have at least one sharp rise: slow drifts are not neurons."""
    dy = np.diff(trace)
    return bool(dy.size) and bool(dy.max() >= 3 * dy.std())


def _denoise(ci: np.ndarray, p: int, g_prior: np.ndarray,
             noise_range: tuple[float, float]) -> np.ndarray:
    """Deconvolved, non-negative version of a raw trace (AR order ``p`` <= 1)."""
    if p == 0:
        return np.maximum(ci, 0)
    sn = float(noise_fft(ci, noise_range, "mean"))
    g = estimate_ar(ci, 1, sn, prior=g_prior[:1])
    return np.asarray(deconvolve_trace(ci, g, sn).c, np.float32)


def init_neurons_corr_pnr(
    movie: Any,
    *,
    gSig: tuple[float, float] | None,
    gSiz: int,
    center_psf: bool = True,
    min_corr: float = 0.8,
    min_pnr: float = 10.0,
    max_number: int | None = None,
    thresh_init: float = 2.0,
    min_pixel: int = 3,
    bd: int = 0,
    p: int = 1,
    g_prior: np.ndarray | None = None,
    noise_range: tuple[float, float] = (0.25, 0.5),
    overwrite: bool = False,
    workspace: Workspace | None = None,
    budget: Budget | None = None,
) -> CorrPnrInit:
    """Greedy initialization of neurons in a one-photon movie (see module docstring).

    Parameters
    ----------
    movie
        (T, y, x) data (counts): an array, or a frame store of ``workspace``
        (:meth:`~.data.Workspace.frames`); not modified unless ``overwrite``.
    gSig
        Filter width (y, x) in px (about a neuron's radius), None for no filter.
    gSiz
        Neuron diameter in px: half-size of the box in which each neuron is fitted.
    center_psf
        Zero-mean (band-pass) filter kernel; needed with a strong background.
    min_corr, min_pnr
        Minimum correlation-image and PNR values of a seed pixel.
    max_number
        Maximum number of neurons (None: until no seed is left).
    thresh_init
        Filtered values below this many noise levels are ignored by the correlation image.
    min_pixel
        Minimum number of non-zero pixels of a footprint.
    bd
        Width (px) of a border in which no seed is taken.
    p
        AR order (0 or 1; higher is treated as 1) of the deconvolution denoising the traces.
    g_prior
        (>=1,) AR coefficients to fall back on when a trace's own estimate fails.
    noise_range
        Frequency band (fractions of the frame rate) holding only noise.
    overwrite
        Work in ``movie`` itself (float32 only; found neurons are subtracted from it)
        instead of a copy: saves one movie's worth of memory when the caller has no further
        use for it.
    workspace
        Where the filtered copy (and a copy of ``movie`` without ``overwrite``) goes
        (default: memory). When it is a file, the two movies are read a block of frames at
        a time (:mod:`.corr_pnr_passes`), sized by ``budget``.
    budget
        Sizes the blocks of movies in files (default: unlimited).

    Returns
    -------
    CorrPnrInit
    """
    raw = _working_copy(movie, overwrite, workspace)
    T, h, w = raw.shape
    workspace = workspace or MemoryWorkspace()
    filt = workspace.frames((T, h, w))
    in_memory = isinstance(raw, np.ndarray) and isinstance(filt, np.ndarray)
    budget = budget or Budget()
    # raw and filtered blocks, and the float64 copy of a box's block
    block = T if in_memory else frames_per_block(budget, (h, w), copies=4, n_frames=T)
    movies = SeedMovies(raw, filt, block)
    gSiz = max(int(gSiz), 1)
    g_prior = np.array([0.9]) if g_prior is None or len(g_prior) == 0 else np.asarray(g_prior)
    movies.filter(pnr_filter_kernel(gSig, center_psf) if gSig else None)
    noise = movies.noise(noise_range, budget.block_bytes())
    pnr = (np.maximum(movies.peak(), 0) / noise).astype(np.float32)
    cn = movies.corr(noise, thresh_init)
    cn0, pnr0 = cn.copy(), pnr.copy()

    searched = (cn < min_corr) | (pnr < min_pnr)  # pixels never to be tried as seeds
    if bd > 0:
        searched[:bd] = searched[-bd:] = True
        searched[:, :bd] = searched[:, -bd:] = True
    if max_number is None or max_number <= 0:
        max_number = max(int((searched.size - searched.sum()) / 5), 1)
    min_v = min_corr * min_pnr
    # a tiny pixel-dependent offset breaks ties between equal plateau values
    tie = ((np.arange(w)[None] * 10 + np.arange(h)[:, None]) * 1e-5).astype(np.float32)
    dil = np.ones((max(int(round(gSiz / 4)), 1),) * 2, np.uint8)

    A_list: list[tuple[np.ndarray, np.ndarray]] = []  # pixel indices and values
    C_list: list[np.ndarray] = []
    R_list: list[np.ndarray] = []
    centers: list[tuple[int, int]] = []
    while len(A_list) < max_number:
        v = (cn * pnr).astype(np.float32)
        v[(cn < min_corr) | (pnr < min_pnr)] = 0
        v = cv2.medianBlur(v, 3) + tie
        v[searched] = 0
        vmax = cv2.dilate(v, dil)
        is_max = (v == vmax) & (v >= min_v) & ~searched
        rs, cs = np.nonzero(is_max)
        if rs.size == 0:
            break
        order = np.argsort(-v[rs, cs])
        for r, c in zip(rs[order], cs[order]):
            searched[r, c] = True
            if v[r, c] < min_v:
                continue
            r0, r1 = max(r - gSiz, 0), min(r + gSiz + 1, h)
            c0, c1 = max(c - gSiz, 0), min(c + gSiz + 1, w)
            box = (slice(r0, r1), slice(c0, c1))
            res = _extract_ac(movies, box, (r - r0) * (c1 - c0) + (c - c0), _sharp_rise,
                              noise_range)
            if res is None:
                v[r, c] = 0
                continue
            if np.count_nonzero(res[0]) < min_pixel:
                continue
            ai, ci_raw = res
            ci = _denoise(ci_raw, min(int(p), 1), g_prior, noise_range)
            if not np.any(ci > 0):
                continue
            img = np.zeros((h, w), np.float32)
            img[r0:r1, c0:c1] = ai
            xs, ys = np.nonzero(img.T)  # Fortran order
            A_list.append((ys + xs * h, img[ys, xs]))
            C_list.append(ci)
            R_list.append(ci_raw)
            centers.append((int(r), int(c)))
            # pixels of the neuron's core are not seeds any more
            searched[r0:r1, c0:c1] |= ai > ai.max() / 2
            # remove the neuron from the data; the filter is linear, so the filtered movie
            # loses the filtered footprint times the trace
            R0, R1 = max(r - 2 * gSiz, 0), min(r + 2 * gSiz + 1, h)
            Q0, Q1 = max(c - 2 * gSiz, 0), min(c + 2 * gSiz + 1, w)
            window = (slice(R0, R1), slice(Q0, Q1))
            ai_f = _filter_image(img[window], gSig, center_psf)
            peak = movies.subtract(ci, box, ai, window, ai_f)
            # update the search images around the neuron
            nz = noise[window]
            pnr[window] = np.maximum(peak, 0) / nz
            cn_box = movies.corr(nz, thresh_init, *window)
            cn[box] = cn_box[r0 - R0:r1 - R0, c0 - Q0:c1 - Q0]
            vb = cn[window] * pnr[window]
            vb[(cn[window] < min_corr) | (pnr[window] < min_pnr)] = 0
            v[window] = vb
            v[searched] = 0
            if len(A_list) >= max_number:
                break
    A = from_columns([a[0] for a in A_list], [a[1] for a in A_list], h * w)
    if not A_list:
        empty = np.zeros((0, T), np.float32)
        return CorrPnrInit(A, empty, empty.copy(), np.zeros((0, 2), int), cn0, pnr0)
    return CorrPnrInit(A, np.stack(C_list).astype(np.float32),
                       np.stack(R_list).astype(np.float32), np.array(centers), cn0, pnr0)


def _working_copy(movie: Any, overwrite: bool, workspace: Workspace | None) -> Any:
    """The movie the seeding subtracts its neurons from: ``movie`` itself (``overwrite``,
    float32 array or frame store) or a float32 copy (in ``workspace``'s frames)."""
    if overwrite and (not isinstance(movie, np.ndarray) or movie.dtype == np.float32):
        return movie
    if workspace is None:
        return np.array(movie, dtype=np.float32, copy=True, order="C")
    out = workspace.frames(tuple(int(s) for s in movie.shape))
    step = frames_per_block(workspace.budget, tuple(movie.shape[1:]), 1, len(movie))
    for t0 in range(0, len(movie), step):
        put_frames(out, t0, np.asarray(movie[t0:t0 + step], np.float32))
    return out
