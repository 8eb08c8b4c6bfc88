"""Somata found in a summary image: where the cells are, whether or not they fire.

Activity-based initialization finds cells that fire during the recording. With a cytosolic
calcium indicator (GCaMP), the soma of every expressing neuron is also visible in the mean
image, as a dark nucleus ringed by bright cytoplasm. :func:`find_somata` finds those
nuclei: the image is normalized for local contrast (so dim and bright regions of the field
count alike), filtered with a centre-surround kernel at the scale of a nucleus, and its local
minima (dark centres) are kept where the response stands out from the field's typical
response by ``min_z`` robust standard deviations. :func:`disk_masks` turns the centres into
masks, in CaImAn's ``(y, x, n)`` convention: ROIs to draw on, or seeds for CNMF (``Ain``),
which keeps those that show activity.

Pure array code: images in, pixel coordinates and masks out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from .params import as_pair

__all__ = ["soma_score", "find_somata", "disk_masks"]

#: Local contrast is measured over this many gSig (a few somata across).
CONTRAST_SCALE = 2.5
#: Pixels whose local SD is below this fraction of the median are dead (a black border, a
#: clipped region): nothing is detected there.
DEAD_CONTRAST = 0.1


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


def soma_score(
    image: np.ndarray,
    gSig: float | tuple[float, float],
    polarity: Literal["dark", "bright", "both"] = "dark",
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
        ``"bright"``: bright filled somata; ``"both"``: the larger of the two.

    Returns
    -------
    np.ndarray
        (y, x) float64 z-scores: (response - median) / (1.4826 MAD) over the live pixels;
        dead pixels (flat: a black border, a clipped region) and those within 2 gSig of
        them get -inf.
    """
    if polarity not in ("dark", "bright", "both"):
        raise ValueError(f"polarity must be 'dark', 'bright' or 'both', not {polarity!r}.")
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
    # a nucleus is about half a soma across: centre at gSig / 2 against a surround at gSig
    dog = (ndimage.gaussian_filter(norm, sig / 2, mode="nearest")
           - ndimage.gaussian_filter(norm, sig, mode="nearest"))
    resp = {"dark": -dog, "bright": dog, "both": np.abs(dog)}[polarity]
    # the filters reach about 2 gSig into a dead region's edge: its step is no soma
    near_dead = ndimage.binary_dilation(~live, iterations=int(np.ceil(2 * sig.max())))
    vals = resp[~near_dead]
    if vals.size == 0:
        return np.full(img.shape, -np.inf)
    med = float(np.median(vals))
    mad = 1.4826 * float(np.median(np.abs(vals - med)))
    z = (resp - med) / max(mad, 1e-12)
    z[near_dead] = -np.inf
    return z


def find_somata(
    image: np.ndarray,
    gSig: float | tuple[float, float],
    min_z: float = 2.5,
    polarity: Literal["dark", "bright", "both"] = "dark",
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
