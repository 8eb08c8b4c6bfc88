"""Somata found in a summary image: where the cells are, whether or not they fire.

Activity-based initialization finds cells that fire during the recording. With a cytosolic
calcium indicator (GCaMP), the soma of every expressing neuron is also visible in the mean
image, as a dark nucleus ringed by bright cytoplasm. :func:`find_somata` finds those
nuclei: the image is normalized for local contrast (so dim and bright regions of the field
count alike), the mean of a ring of cytoplasm (0.8 to 1.5 ``gSig`` from the centre) less
the mean of the nucleus inside it (within 0.6 ``gSig``) is taken at every pixel, and its
local maxima are kept where they stand out from the field's typical response by ``min_z``
robust standard deviations. The nucleus is compared with the soma's own cytoplasm, not with
the neuropil further out, so faint nuclei count as much as deep ones and neighbouring
somata (2 to 3 ``gSig`` away in dense cortex) do not blur each other's response. Any dark
round blob of a nucleus' size scores, a blood vessel in cross-section too.

Some somata have no dark nucleus: the indicator has entered it (over-expressing cells), and
they show as bright filled disks. By default (``polarity="auto"``) those count too, scored
as the median within ``gSig`` of the centre less the mean of the ring 1.5-2.5 ``gSig`` out,
but only where that score reaches the level that one of the field's soma-sized disks would
reach by chance, were they independent (:func:`field_level`): a bright disk is also what a
cluster of boutons, a dendrite crossing or the bright neuropil between two nuclei looks
like, so the generic bright cue is held to the whole field, the more specific dark one to
``min_z`` per place.

:func:`disk_masks` turns the centres into masks, in CaImAn's ``(y, x, n)`` convention: ROIs
to draw on, or seeds for CNMF (``Ain``), which keeps those that show activity.

Pure array code: images in, pixel coordinates and masks out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from .params import as_pair

__all__ = ["soma_score", "find_somata", "disk_masks", "field_level"]

#: Local contrast is measured over this many gSig (a few somata across).
CONTRAST_SCALE = 2.5
#: Pixels whose local SD is below this fraction of the median are dead (a black border, a
#: clipped region): nothing is detected there.
DEAD_CONTRAST = 0.1
#: A soma with a cytosolic indicator, in units of ``gSig`` (its half-size): a dark nucleus
#: about half the soma across, inside a ring of bright cytoplasm.
NUCLEUS_RADIUS = 0.6
CYTOPLASM_RADII = (0.8, 1.5)
#: A filled (bright) soma against the neuropil around it, in units of ``gSig``.
FILLED_RADIUS = 1.0
SURROUND_RADII = (1.5, 2.5)


def _gsig(gSig: float | tuple[float, float]) -> np.ndarray:
    """gSig as a positive (y, x) float pair; a clear error otherwise."""
    sig = np.asarray(as_pair(gSig, "gSig"), np.float64)
    if not np.all(sig > 0):
        raise ValueError(f"Parameter 'gSig' (half-size of a soma, px) must be positive; "
                         f"got {gSig!r}.")
    return sig


def _live_pixels(img: np.ndarray, size: int = 5) -> np.ndarray:
    """Pixels with texture: the local SD (``size`` px window) is at least ``DEAD_CONTRAST``
    times its median. A black border or a clipped region is flat and fails."""
    m = ndimage.uniform_filter(img, size, mode="nearest")
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(img**2, size, mode="nearest") - m**2, 0))
    return sd > DEAD_CONTRAST * max(float(np.median(sd)), 1e-12)


def _masked_blur(img: np.ndarray, mask: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Gaussian blur of ``img`` over the pixels of ``mask`` only (normalized convolution)."""
    w = ndimage.gaussian_filter(mask.astype(np.float64), sigma, mode="nearest")
    v = ndimage.gaussian_filter(np.where(mask, img, 0.0), sigma, mode="nearest")
    return np.where(w > 1e-6, v / np.maximum(w, 1e-6), 0.0)


def _annulus(sig: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Boolean kernel of the elliptic annulus ``r0 <= rho < r1`` about its centre, ``rho``
    being the distance in units of ``sig`` (y, x); the centre pixel if that is empty."""
    n = np.ceil(r1 * sig).astype(int)
    yy, xx = np.mgrid[-n[0]:n[0] + 1, -n[1]:n[1] + 1]
    rho = np.hypot(yy / sig[0], xx / sig[1])
    kernel = (rho >= r0) & (rho < r1)
    if not kernel.any():  # a sub-pixel radius: the centre pixel
        kernel[n[0], n[1]] = True
    return kernel


def _annulus_mean(img: np.ndarray, sig: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Mean of ``img`` over the elliptic annulus ``r0 <= rho < r1`` around each pixel."""
    kernel = _annulus(sig, r0, r1).astype(np.float64)
    return ndimage.correlate(img, kernel / kernel.sum(), mode="nearest")


def _robust_z(resp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(resp - median) / (1.4826 MAD) over the ``valid`` pixels; -inf elsewhere."""
    vals = resp[valid]
    if vals.size == 0:
        return np.full(resp.shape, -np.inf)
    med = float(np.median(vals))
    mad = 1.4826 * float(np.median(np.abs(vals - med)))
    return np.where(valid, (resp - med) / max(mad, 1e-12), -np.inf)


Polarity = Literal["auto", "dark", "bright", "both"]


def field_level(n_positions: float) -> float:
    """The z-score that one of ``n_positions`` independent standard normal draws exceeds, on
    average, once: ``isf(1 / n)`` (0 for ``n <= 2``).

    With ``n`` the number of soma-sized disks in a field (about 2.7 for a 128 x 128 field at
    ``gSig=4``, 3.1 for 256 x 256, 3.5 for 512 x 512) it is a Bonferroni-like level for the
    field: neighbouring positions of a filtered image are not independent, so textured noise
    still gives a few bright maxima above it (at ``gSig=4``, 3-4 per 128 x 128 field, 0-6
    per 256 x 256 field).
    """
    from scipy.stats import norm

    return float(norm.isf(1.0 / n_positions)) if n_positions > 2 else 0.0


def soma_score(
    image: np.ndarray,
    gSig: float | tuple[float, float],
    polarity: Polarity = "auto",
) -> np.ndarray:
    """Map of how much each pixel looks like the centre of a soma, as a robust z-score.

    Parameters
    ----------
    image
        (y, x) summary image, e.g. the mean projection of a motion-corrected movie.
    gSig
        Half-size of a soma (px), (y, x), as CNMF's ``gSig``.
    polarity
        ``"dark"``: dark centres (nuclei of somata with a cytosolic indicator);
        ``"bright"``: bright filled somata; ``"both"``: the larger of the two;
        ``"auto"``: dark centres, and bright filled somata where they stand out at the
        level of the whole field (see Returns).

    Returns
    -------
    np.ndarray
        (y, x) float64 z-scores: (response - median) / (1.4826 MAD) over the live pixels;
        dead pixels (flat: a black border, a clipped region) and those within 2 gSig of
        them get -inf. ``"dark"``: mean of the ring 0.8-1.5 gSig from the pixel less the
        mean within 0.6 gSig; ``"bright"``: median within 1 gSig less the mean of the ring
        1.5-2.5 gSig; ``"both"``: the larger of the two z-scores; ``"auto"``: the dark
        z-score, or the bright one where that is larger and reaches :func:`field_level` of
        the number of soma-sized disks (radius ``gSig``) in the live field: a bright disk
        is what a filled soma looks like, but also a bouton, a dendrite crossing or the
        neuropil between two somata, so it counts only at a level chance would reach about
        once in the whole field.
    """
    if polarity not in ("auto", "dark", "bright", "both"):
        raise ValueError(f"polarity must be 'auto', 'dark', 'bright' or 'both', not "
                         f"{polarity!r}.")
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-d (y, x), not of shape {img.shape}.")
    sig = _gsig(gSig)
    wide = CONTRAST_SCALE * sig
    live = _live_pixels(img)
    # blurs over live pixels only: a dead region must not lower the local mean (and so
    # inflate the local contrast) of the tissue next to it
    high = np.where(live, img - _masked_blur(img, live, wide), 0.0)
    rms = np.sqrt(_masked_blur(high**2, live, wide))
    norm = np.where(live, high / np.where(rms > 0, rms, 1.0), 0.0)
    # the step at a dead region's edge is no soma: no centres within 2 gSig of it
    valid = ~ndimage.binary_dilation(~live, iterations=int(np.ceil(2 * sig.max())))
    z = {}
    if polarity != "bright":
        ring = _annulus_mean(norm, sig, *CYTOPLASM_RADII)
        z["dark"] = _robust_z(ring - _annulus_mean(norm, sig, 0.0, NUCLEUS_RADIUS), valid)
    if polarity != "dark":
        # the median: a filled soma is bright over most of its disk; a speck of a few
        # pixels (a bouton, a dendrite seen end-on) lifts a mean, not the median
        soma = ndimage.median_filter(norm, footprint=_annulus(sig, 0.0, FILLED_RADIUS),
                                     mode="nearest")
        z["bright"] = _robust_z(soma - _annulus_mean(norm, sig, *SURROUND_RADII), valid)
    if polarity == "auto":
        level = field_level(valid.sum() / (np.pi * sig[0] * sig[1]))
        return np.maximum(z["dark"], np.where(z["bright"] >= level, z["bright"], -np.inf))
    return np.maximum(z["dark"], z["bright"]) if polarity == "both" else z[polarity]


def find_somata(
    image: np.ndarray,
    gSig: float | tuple[float, float],
    min_z: float = 2.5,
    polarity: Polarity = "auto",
) -> np.ndarray:
    """Centres of somata in a summary image.

    Parameters
    ----------
    image
        (y, x) summary image (mean projection).
    gSig
        Half-size of a soma (px), (y, x).
    min_z
        Keep centres whose :func:`soma_score` is at least this (robust z-score).
    polarity
        See :func:`soma_score`.

    Returns
    -------
    np.ndarray
        (n, 2) integer (y, x) centres, strongest first; two centres are at least
        ``max(gSig)`` px apart and at least ``max(gSig)`` px from the image border.
    """
    from skimage.feature import peak_local_max

    z = soma_score(image, gSig, polarity)
    sep = max(int(round(_gsig(gSig).max())), 1)
    live = np.isfinite(z)
    if not live.any():
        return np.zeros((0, 2), np.int64)
    floor = float(z[live].min()) - 1.0  # dead pixels: below everything, never a peak
    peaks = peak_local_max(np.where(live, z, floor), min_distance=sep, exclude_border=sep,
                           threshold_abs=min_z)
    order = np.argsort(-z[peaks[:, 0], peaks[:, 1]], kind="stable")
    return np.asarray(peaks[order], np.int64).reshape(-1, 2)


def disk_masks(
    centers: np.ndarray, shape: tuple[int, int], gSig: float | tuple[float, float],
    radius_factor: float = 1.25,
) -> np.ndarray:
    """Elliptic disk masks around soma centres, for ``Ain``.

    Parameters
    ----------
    centers
        (n, 2) (y, x) centres (px).
    shape
        (y, x) frame size.
    gSig
        Half-size of a soma (px), (y, x).
    radius_factor
        Disk radius in units of ``gSig``: 1.25 covers the nucleus and the ring of cytoplasm.

    Returns
    -------
    np.ndarray
        (y, x, n) boolean masks (CaImAn's ``Ain`` convention).
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    ry, rx = radius_factor * _gsig(gSig)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros((shape[0], shape[1], len(centers)), bool)
    for i, (cy, cx) in enumerate(centers):
        out[:, :, i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return out
