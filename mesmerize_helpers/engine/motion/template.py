"""Templates: the first one from frames sampled over the movie, and the final one from
the registered movie split in parts."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from .config import MotionConfig
from .registration import Registrar
from .weighting import (
    ShiftWeights,
    estimate_weights,
    noise_model,
    patch_shrinkage,
    template_gain,
)

# Template estimation: the first template is the median over bins of this many sampled
# frames of their means.
_TEMPLATE_BLOCK = 10
# Frames sampled: a tenth of the movie, at least 150 and at most 200 (and about 64 Mpixel).
_TEMPLATE_FRACTION = 10
_TEMPLATE_MIN_FRAMES = 150
_TEMPLATE_MAX_FRAMES = 200
_TEMPLATE_PIXELS = 2**26
# Frames (of the sample) registered in the first, rough round.
_FIRST_ROUND_FRAMES = 50
# Fewest other sampled frames for the cross-validated refinement (each frame registered to a
# template without it).
_CROSS_MIN_FRAMES = 4
# Fewest sampled frames for estimating how much patch shifts deviate beyond their noise.
_SHRINK_MIN_FRAMES = 20
# Frames (of the sample) whose patches are matched on two half-masks to measure that noise.
_SHRINK_FRAMES = 50


def read_frames(movie: Any, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) as float32 (a view when already float32: it is never written)."""
    return np.asarray(movie[start:stop], dtype=np.float32)


def frame_chunks(n_frames: int, chunk: int) -> Iterator[tuple[int, int]]:
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
    blocks = np.array_split(frames, n_bins)
    means = np.stack([b.mean(axis=0) for b in blocks])
    if np.isnan(means).any():  # only then the slower NaN-aware mean
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            means = np.stack([np.nanmean(b, axis=0) for b in blocks])
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


def read_sample(movie: Any, n_frames: int, dims: tuple[int, int], chunk: int) -> np.ndarray:
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
        spans = list(frame_chunks(n_frames, chunk))
    else:
        picks = np.unique(np.round(np.linspace(0, n_frames - 1, n_sample)).astype(int))
        spans = [(i, i + 1) for i in picks]
    sample = np.empty((sum(b - a for a, b in spans), *dims), np.float32)
    position = 0
    for a, b in spans:  # into one array: no list of pieces plus their concatenation
        sample[position:position + b - a] = read_frames(movie, a, b)
        position += b - a
    return sample


def _mean_frame(frames: np.ndarray, index: np.ndarray | None = None, chunk: int = 16
                ) -> np.ndarray:
    """NaN-aware mean of registered frames ``frames[index]`` (all when None), NaN where no
    frame has data; summed ``chunk`` frames at a time (no copy of the selection)."""
    index = np.arange(len(frames)) if index is None else index
    total = np.zeros(frames.shape[1:])
    count = None  # counts per pixel, only once a NaN is met
    for a, b in frame_chunks(len(index), chunk):
        part = frames[index[a:b]]  # a copy (fancy index): zeroed in place
        holes = np.isnan(part)
        if holes.any():
            if count is None:
                count = np.full(frames.shape[1:], float(a))
            np.copyto(part, 0.0, where=holes)
        total += part.sum(axis=0)  # float32 over a chunk, float64 over the chunks
        if count is not None:
            count += b - a - holes.sum(axis=0, dtype=np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / (count if count is not None else len(index))
    return mean.astype(np.float32)


def _fill_from(registered: np.ndarray, template: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Registered frames with their NaN (no data, at the border) replaced, in place, by the
    template: no residual there for the noise model and the pixel weights."""
    for a, b in frame_chunks(len(registered), chunk):
        part = registered[a:b]
        np.copyto(part, np.broadcast_to(template, part.shape), where=np.isnan(part))
    return registered


def _cross_registered(sample: np.ndarray, first: np.ndarray, template: np.ndarray,
                      cfg: MotionConfig, kernel: np.ndarray | None, workers: int, chunk: int,
                      weights: ShiftWeights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Register every sampled frame to a template that does not contain it.

    ``template`` was made from the frames ``first`` (indices into the sample): the others
    are registered to it, and the ``first`` frames to the mean of the others. A frame
    registered to a template holding itself is pulled towards where it was put before (its
    noise matches its own copy), and on dim movies that keeps the errors of the earlier,
    rougher rounds in the template. Returns the registered sample, the mean of the
    ``first`` frames and that of the others.
    """
    registered = np.empty_like(sample, dtype=np.float32)
    other = np.setdiff1d(np.arange(len(sample)), first)
    reg = Registrar(template, cfg, kernel, False, True, workers, weights)
    _register(reg, sample, chunk, other, registered)
    rest = _fill_nan(_mean_frame(registered, other, chunk))
    reg = Registrar(rest, cfg, kernel, False, True, workers, weights)
    _register(reg, sample, chunk, first, registered)
    return registered, _fill_nan(_mean_frame(registered, first, chunk)), rest


def initial_template(sample: np.ndarray, cfg: MotionConfig, kernel: np.ndarray | None,
                     workers: int, chunk: int) -> tuple[np.ndarray, ShiftWeights]:
    """Template from the sampled frames, and how the shift estimate weighs the data.

    1. A rough round: a subset of the sample (``_FIRST_ROUND_FRAMES``) registered to the bin
       median of the unregistered sample; their bin median is the first template, and how
       they differ from it sets the pixel weighting (:func:`.weighting.estimate_weights`)
       of the next round.
    2. Cross-validated refinement (:func:`_cross_registered`): the rest of the sample
       registered to that template, then the subset to the mean of the rest, so that no
       frame is registered to a template holding its own noise. The template is the mean
       of the registered sample; the two disjoint halves measure its noise, which sets a
       Wiener filter of the template for the shift estimate
       (:func:`.weighting.template_gain`), and the pixel weighting is measured again.
    3. Piecewise mode: one piecewise-rigid round so that the template is sharp where the
       deformation varies over time, and the patch shrinkage
       (:func:`.weighting.patch_shrinkage`).

    Frames are registered ``chunk`` at a time. Border pixels without data are NaN, and each
    template pixel is the mean of the frames that hold data there (replicating the edge
    instead made the template's border a blend of the edge and the tissue, which the
    per-frame masks of :class:`.correlation.MaskedTemplates` then matched: 0.020 against
    0.013 px on the bright test movie of ``tests/test_engine_motion.py``).
    """
    border = max(cfg.max_shifts) + 2
    first = np.arange(0, len(sample), max(1, len(sample) // _FIRST_ROUND_FRAMES))
    reg = Registrar(_bin_median(sample), cfg, kernel, False, True, workers)
    registered = _register(reg, sample, chunk, first)[2]
    template = _fill_nan(_bin_median(registered))
    registered = _fill_from(registered, template, chunk)
    stabilizer = noise_model(registered, template, border)
    weights = replace(estimate_weights(registered, template, border, kernel, stabilizer, chunk),
                      stabilizer=stabilizer)
    del registered  # not held while the whole sample is registered
    if len(sample) - len(first) >= _CROSS_MIN_FRAMES:
        registered, half, rest = _cross_registered(sample, first, template, cfg, kernel,
                                                   workers, chunk, weights)
        template = _fill_nan(_mean_frame(registered, None, chunk))
        gain = template_gain(template, half, rest, len(first), len(sample) - len(first))
    else:  # too few frames to leave any out
        reg = Registrar(template, cfg, kernel, False, True, workers, weights)
        registered = _register(reg, sample, chunk)[2]
        template, gain = _fill_nan(_mean_frame(registered, None, chunk)), None
    registered = _fill_from(registered, template, chunk)
    weights = replace(estimate_weights(registered, template, border, kernel, stabilizer, chunk),
                      template_filter=gain, stabilizer=stabilizer)
    if cfg.pw_rigid:
        reg = Registrar(template, cfg, kernel, True, True, workers, weights)
        shifts_rig, shifts_pw, registered = _register(reg, sample, chunk)
        template = _fill_nan(_mean_frame(registered, None, chunk))
        if len(sample) >= _SHRINK_MIN_FRAMES:
            some = slice(None, None, max(1, len(sample) // _SHRINK_FRAMES))
            noise = reg.patch_noise(sample[some], shifts_rig[some], chunk)
            shrink = patch_shrinkage(shifts_pw - shifts_rig[:, None, None, :], noise)
            weights = replace(weights, patch_shrink=shrink)
    return template, weights


def _register(reg: Registrar, frames: np.ndarray, chunk: int, index: np.ndarray | None = None,
              out: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """:meth:`Registrar.register` of ``frames[index]`` (all when None) in chunks (bounded
    working memory), into ``out[index]`` when given (else a new array of the selection)."""
    n = len(frames) if index is None else len(index)
    registered = np.empty((n, *frames.shape[1:]), np.float32) if out is None else out
    shifts_rig, shifts_pw = [], []
    for a, b in frame_chunks(n, chunk):
        where = slice(a, b) if index is None else index[a:b]
        rig, pw, moved = reg.register(frames[where])
        registered[where if out is not None else slice(a, b)] = moved
        shifts_rig.append(rig)
        shifts_pw.append(pw)
    pw = None if shifts_pw[0] is None else np.concatenate(shifts_pw)
    return np.concatenate(shifts_rig), pw, registered


class SplitTemplate:
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


