"""What the simulators share: the result container, footprints, spike trains and calcium,
smooth fields, motion, rendering with shot and read noise, and saving as TIFF."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass
class SyntheticMovie:
    """A simulated movie and its ground truth.

    Attributes
    ----------
    movie
        (frames, y, x) float32 (or uint16 if requested), photon counts plus read noise.
    footprints
        (n, y, x) float32, spatial footprint of each neuron, peak 1.
    calcium
        (n, frames) float32, calcium trace of each neuron in counts at its peak pixel
        (AR(1) response to ``spikes``, without the neuron's resting fluorescence).
    spikes
        (n, frames) float32, spike amplitudes (0 where no spike) in the same units as
        ``calcium``: ``calcium[:, t] = g * calcium[:, t - 1] + spikes[:, t]``.
    background
        Dict with ``"spatial"`` (nb, y, x), ``"temporal"`` (nb, frames) and ``"baseline"``
        (y, x): the noiseless background is ``baseline + sum_j spatial[j] * temporal[j]``.
        ``"resting"`` (n,) is each neuron's resting fluorescence at its peak pixel (counts),
        which is part of the baseline.
    shifts
        (frames, 2) float32, the rigid (y, x) displacement in pixels applied to each frame
        (frame t shows the scene moved by ``shifts[t]``; registering it needs ``-shifts[t]``).
        All zeros without motion.
    params
        Hints for the analysis: ``gSig`` (pair, px), ``fr`` (Hz), ``decay_time`` (s) and
        ``g`` (the AR(1) coefficient per frame).
    """

    movie: np.ndarray
    footprints: np.ndarray
    calcium: np.ndarray
    spikes: np.ndarray
    background: dict[str, np.ndarray] = field(default_factory=dict)
    shifts: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        """Number of simulated neurons."""
        return int(self.footprints.shape[0])

    def masks(self, threshold: float = 0.25) -> np.ndarray:
        """Boolean (n, y, x) masks: footprint pixels above ``threshold`` times the peak."""
        peak = self.footprints.reshape(self.n_neurons, -1).max(axis=1)
        return self.footprints > threshold * peak[:, None, None]


def place_centers(
    rng: np.random.Generator, n: int, shape: tuple[int, int], margin: float, min_dist: float
) -> np.ndarray:
    """Draw ``n`` centres (y, x) uniformly inside ``margin``, at least ``min_dist`` apart.

    The distance constraint is relaxed step by step if the field is too crowded, so the call
    always returns ``n`` centres.
    """
    centers: list[np.ndarray] = []
    dist = min_dist
    tries = 0
    while len(centers) < n:
        c = rng.uniform([margin, margin], [shape[0] - 1 - margin, shape[1] - 1 - margin])
        if all(np.hypot(*(c - o)) >= dist for o in centers):
            centers.append(c)
        tries += 1
        if tries > 200 * n:  # crowded: accept closer neighbours
            dist *= 0.9
            tries = 0
    return np.array(centers)


def ellipse(
    rng: np.random.Generator, center: np.ndarray, shape: tuple[int, int], size: float,
    variability: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A randomly stretched and rotated ellipse around ``center``: its radial coordinate
    (1 at half-axes ``size`` times 1 +- ``variability``) and the offsets (dy, dx) of every
    pixel of the frame from the centre."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    sy, sx = size * rng.uniform(1 - variability, 1 + variability, size=2)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - center[0], xx - center[1]
    u = np.cos(theta) * dy + np.sin(theta) * dx
    v = -np.sin(theta) * dy + np.cos(theta) * dx
    return np.hypot(u / sy, v / sx), dy, dx


def footprint(
    rng: np.random.Generator,
    center: np.ndarray,
    shape: tuple[int, int],
    sigma: float,
    variability: float,
    cutoff: float = 0.05,
) -> np.ndarray:
    """One soma: a rotated anisotropic Gaussian with a faint random texture, peak 1."""
    r = ellipse(rng, center, shape, sigma, variability)[0]
    fp = np.exp(-0.5 * r**2)
    # multiplicative smooth texture so that footprints are not perfect Gaussians
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), sigma / 2)
    texture /= texture.std() + 1e-12
    fp *= np.clip(1 + 0.5 * variability * texture, 0.2, None)
    fp[fp < cutoff * fp.max()] = 0
    return (fp / fp.max()).astype(np.float32)


def spike_trains(
    rng: np.random.Generator, n: int, n_frames: int, fr: float, rate: float, amplitude: float
) -> np.ndarray:
    """Poisson spike counts with log-normal amplitudes, (n, frames) in counts."""
    rates = rate * rng.lognormal(0.0, 0.5, size=n)  # Hz, varies across neurons
    counts = rng.poisson(np.outer(rates / fr, np.ones(n_frames)))
    amps = amplitude * rng.lognormal(0.0, 0.25, size=(n, n_frames))
    return (counts * amps).astype(np.float32)


def ar1(spikes: np.ndarray, g: float) -> np.ndarray:
    """Calcium ``c[t] = g * c[t-1] + s[t]`` along the last axis."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -g], spikes, axis=-1).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A positive random field with spatial correlation length ``scale`` px, mean 1."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), scale, mode="wrap")
    f = (f - f.min()) / (np.ptp(f) + 1e-12)
    return (0.5 + f / f.mean() * 0.5).astype(np.float32)


def slow_trace(rng: np.random.Generator, n_frames: int, fr: float, period: float) -> np.ndarray:
    """A smooth random positive trace with fluctuations on ``period`` seconds, mean 1."""
    # a movie shorter than the period still fluctuates (over its own length)
    sigma = min(period * fr / 4, max(n_frames / 8, 1.0))
    t = ndimage.gaussian_filter1d(rng.standard_normal(n_frames), sigma, mode="reflect")
    t = (t - t.mean()) / (t.std() + 1e-12)
    return (1 + 0.3 * t).clip(0.2, None).astype(np.float32)


def motion_shifts(rng: np.random.Generator, n_frames: int, max_shift: float) -> np.ndarray:
    """Smooth random-walk (y, x) shifts within +-max_shift px, plus a few sudden jumps."""
    steps = rng.standard_normal((n_frames, 2)) * max_shift / 6
    walk = ndimage.gaussian_filter1d(np.cumsum(steps, axis=0), 2, axis=0)
    walk -= walk.mean(axis=0)
    scale = np.abs(walk).max(axis=0)
    walk *= max_shift / np.maximum(scale, max_shift)  # clip range without flattening
    return np.clip(walk, -max_shift, max_shift).astype(np.float32)


def shift_frame(frame: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move ``frame`` by ``shift`` (y, x) px with bilinear subpixel interpolation."""
    import cv2

    m = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    return cv2.warpAffine(
        frame, m, (frame.shape[1], frame.shape[0]),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
    )


def render(
    rng: np.random.Generator,
    footprints: np.ndarray,
    traces: np.ndarray,
    bg_spatial: np.ndarray,
    bg_temporal: np.ndarray,
    baseline: np.ndarray,
    noise: float,
    shifts: np.ndarray | None,
    chunk: int = 200,
    out: Any = None,
    row_noise: Any = 0.0,
) -> Any:
    """Noiseless scene -> (optional motion) -> Poisson shot noise + Gaussian read noise
    (+ ``row_noise``: an offset per row and frame, a sensor's horizontal line noise: Gaussian
    of that standard deviation, or ``row_noise(rng, n_frames, n_rows)`` offsets).

    Frames go into ``out`` (default: a new float32 array), a chunk at a time, rounded and
    clipped when ``out`` is integer (see :func:`tiff_writer` for a movie on disk)."""
    n, ny, nx = footprints.shape
    n_frames = traces.shape[1]
    A = footprints.reshape(n, ny * nx).T  # (pixels, n); n may be 0
    B = bg_spatial.reshape(bg_spatial.shape[0], -1).T
    out = np.empty((n_frames, ny, nx), np.float32) if out is None else out
    for t0 in range(0, n_frames, chunk):
        t1 = min(t0 + chunk, n_frames)
        clean = A @ traces[:, t0:t1] + B @ bg_temporal[:, t0:t1] + baseline.reshape(-1, 1)
        clean = clean.T.reshape(t1 - t0, ny, nx).astype(np.float32)
        if shifts is not None:
            clean = np.stack([shift_frame(f, s) for f, s in zip(clean, shifts[t0:t1])])
        frames = rng.poisson(np.clip(clean, 0, None)).astype(np.float32)
        frames += rng.normal(0.0, noise, size=frames.shape).astype(np.float32)
        if callable(row_noise):  # (frames, rows) offsets drawn by the caller's model
            frames += row_noise(rng, t1 - t0, ny)[:, :, None].astype(np.float32)
        elif row_noise:
            frames += rng.normal(0.0, row_noise, size=(t1 - t0, ny, 1)).astype(np.float32)
        out[t0:t1] = finish(frames, out.dtype)
    return out


class tiff_writer:  # noqa: N801 (used like a function returning an array)
    """A (frames, y, x) uint16 TIFF on disk to :func:`render` a long movie into, a chunk at a
    time (tifffile's contiguous layout: the movie readers map it). Written pages leave the
    process's memory as they are written; :meth:`close` returns the movie, read-only."""

    def __init__(self, path: str | Path, shape: tuple[int, int, int]) -> None:
        import tifffile

        self.path = Path(path)
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(np.uint16)
        self._mm = tifffile.memmap(self.path, shape=self.shape, dtype=self.dtype,
                                   bigtiff=True)

    def __setitem__(self, key: slice, frames: np.ndarray) -> None:
        import mmap

        self._mm[key] = frames
        self._mm.flush()
        start, stop, _ = key.indices(self.shape[0])
        raw = getattr(self._mm, "_mmap", None)
        if raw is not None:  # the written pages need not stay in this process
            frame = int(np.prod(self.shape[1:])) * 2
            lo = (self._mm.offset + start * frame) // mmap.PAGESIZE * mmap.PAGESIZE
            base = self._mm.offset - self._mm.offset % mmap.ALLOCATIONGRANULARITY
            raw.madvise(mmap.MADV_DONTNEED, lo - base,
                        min(self._mm.offset + stop * frame - lo, len(raw) - (lo - base)))

    def close(self) -> np.memmap:
        import tifffile

        self._mm.flush()
        del self._mm
        return tifffile.memmap(self.path, mode="r")


def assemble(
    movie: Any, footprints: np.ndarray, calcium: np.ndarray, spikes: np.ndarray,
    bg_spatial: np.ndarray, bg_temporal: np.ndarray, baseline: np.ndarray,
    resting: np.ndarray, shifts: np.ndarray | None, *, gSig: float, fr: float,
    decay_time: float, g: float, **background: Any,
) -> SyntheticMovie:
    """A simulator's result: the (finished) movie with its ground truth. The background
    maps and traces are kept as float32; ``shifts`` None means no motion (zeros); extra keyword
    arguments are more background entries (e.g. a lens mask)."""
    return SyntheticMovie(
        movie=movie, footprints=footprints, calcium=calcium, spikes=spikes,
        background={"spatial": bg_spatial.astype(np.float32),
                    "temporal": bg_temporal.astype(np.float32),
                    "baseline": baseline.astype(np.float32),
                    "resting": resting, **background},
        shifts=shifts if shifts is not None else np.zeros((movie.shape[0], 2), np.float32),
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g},
    )


def finish(movie: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype) == np.uint16:
        return np.clip(np.round(movie), 0, 65535).astype(np.uint16)
    return movie.astype(dtype, copy=False)


def save_tiff(path: str | Path, movie: np.ndarray) -> Path:
    """Write a (frames, y, x) movie as a multi-page TIFF (tifffile) and return its path."""
    import tifffile

    path = Path(path)
    tifffile.imwrite(path, np.asarray(movie))
    return path
