"""Scoring found components against known ones (simulated neurons, hand-labelled ROIs).

One-to-one Hungarian matching, either on footprint overlap (IoU of masks) or on centroid
distance (the Neurofinder scheme), with precision, recall and F1; and the shape of each
footprint's mask (connected pieces, solidity, area), which needs no labels: a soma is one
compact blob, a footprint fitted to noise a cloud of specks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment


class Match(NamedTuple):
    """Outcome of a matching: scores and the matched index pairs."""

    precision: float
    recall: float
    f1: float
    true_idx: np.ndarray  # indices into the known components
    found_idx: np.ndarray  # indices into the found components


def footprint_masks(images: np.ndarray, thr: float = 0.2) -> np.ndarray:
    """Masks of footprints: pixels above ``thr`` x each image's peak.

    Parameters
    ----------
    images
        (n, y, x) footprints (or boolean masks).

    Returns
    -------
    ndarray
        (n, y * x) bool.
    """
    images = np.asarray(images, dtype=np.float64)
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    return flat > thr * np.maximum(flat.max(axis=1, keepdims=True), 1e-12)


def _match(score: np.ndarray, ok: np.ndarray, n_true: int, n_found: int) -> Match:
    """Hungarian matching maximising ``score`` among pairs where ``ok``."""
    if n_true == 0 or n_found == 0:
        empty = np.zeros(0, dtype=int)
        return Match(0.0, 0.0, 0.0, empty, empty)
    rows, cols = linear_sum_assignment(np.where(ok, -score, 1e9))
    keep = ok[rows, cols]
    rows, cols = rows[keep], cols[keep]
    precision, recall = len(rows) / n_found, len(rows) / n_true
    f1 = 2 * len(rows) / (n_true + n_found)
    return Match(precision, recall, f1, rows, cols)


def match_by_iou(true_images: np.ndarray, found_images: np.ndarray, iou_thr: float = 0.5,
                 mask_thr: float = 0.2) -> Match:
    """Match footprints (n, y, x) whose masks (above ``mask_thr`` of the peak) overlap with
    intersection-over-union >= ``iou_thr``."""
    mt = footprint_masks(true_images, mask_thr).astype(np.float64)
    mf = footprint_masks(found_images, mask_thr).astype(np.float64)
    inter = mt @ mf.T
    iou = inter / np.maximum(mt.sum(1)[:, None] + mf.sum(1)[None] - inter, 1)
    return _match(iou, iou >= iou_thr, len(mt), len(mf))


def centroids(images: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroids (n, 2), (y, x) in pixels, of footprints or masks (n, y, x)."""
    images = np.asarray(images, dtype=np.float64)
    yy, xx = np.indices(images.shape[1:])
    total = np.maximum(images.sum(axis=(1, 2)), 1e-12)
    return np.stack([(images * yy).sum(axis=(1, 2)) / total,
                     (images * xx).sum(axis=(1, 2)) / total], axis=1)


def match_by_centroid(true_centres: np.ndarray, found_centres: np.ndarray,
                      max_dist: float = 5.0) -> Match:
    """Match centroids (n, 2) closer than ``max_dist`` pixels (Neurofinder's scheme).

    Only pairs within ``max_dist`` can match, so the assignment keeps as many near pairs as
    possible; a plain minimum-total-distance assignment would trade near pairs away for far
    ones (with about as many components as labels it can count half the near pairs).
    """
    true_centres = np.asarray(true_centres, dtype=np.float64).reshape(-1, 2)
    found_centres = np.asarray(found_centres, dtype=np.float64).reshape(-1, 2)
    dist = np.linalg.norm(true_centres[:, None] - found_centres[None], axis=2)
    return _match(-dist, dist <= max_dist, len(true_centres), len(found_centres))


class Shape(NamedTuple):
    """Shape of footprint masks (one value per footprint)."""

    pieces: np.ndarray  # (n,) int: 8-connected pieces of the mask (0 for an empty mask)
    solidity: np.ndarray  # (n,) mask area / area of the convex hull of all its pieces
    area: np.ndarray  # (n,) int: mask pixels


def footprint_shapes(images: np.ndarray, thr: float = 0.2) -> Shape:
    """Connected pieces, solidity and area of each footprint's mask (pixels above ``thr`` x
    its peak, as :func:`footprint_masks`).

    Solidity is taken over the whole mask (all pieces together, skimage's ``regionprops``
    of the mask as one region): one compact blob scores ~0.9-1, a cloud of specks spread
    over a disk ~0.2-0.3. An empty mask has 0 pieces, solidity NaN and area 0.

    Parameters
    ----------
    images
        (n, y, x) footprints (or boolean masks).
    """
    from scipy import ndimage
    from skimage.measure import regionprops

    images = np.asarray(images)
    masks = footprint_masks(images, thr).reshape(images.shape)
    n = len(masks)
    pieces = np.zeros(n, int)
    solidity = np.full(n, np.nan)
    area = masks.sum(axis=(1, 2)).astype(int)
    eight = np.ones((3, 3), bool)
    for i, m in enumerate(masks):
        if not area[i]:
            continue
        pieces[i] = ndimage.label(m, structure=eight)[1]
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        crop = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8)
        solidity[i] = regionprops(crop)[0].solidity
    return Shape(pieces, solidity, area)


def row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, (n,)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-20)
