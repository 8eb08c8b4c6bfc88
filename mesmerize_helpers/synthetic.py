"""Synthetic calcium-imaging movies with known ground truth.

Used by the tests, the benchmarks and the README demo. Four simulators:

- :func:`simulate_2p`: two-photon-like movie. Compact, roughly Gaussian somata with some shape
  variability; AR(1) calcium driven by Poisson spikes; a smooth static baseline plus a low-rank
  neuropil background with slow fluctuations; Poisson (shot) noise plus Gaussian read noise;
  optional rigid motion with known per-frame shifts.
- :func:`simulate_1p`: one-photon / microendoscope-like movie. Larger, blurrier footprints
  under a background 5-10 times brighter than the cells that drifts in space and time.
- :func:`simulate_dim_2p`: a dim, noise-limited two-photon movie at realistic photon counts
  with random rigid shifts applied exactly (Fourier shift of a periodic scene), to measure
  motion-correction accuracy where noise, not the method, limits it.
- :func:`simulate_2p_dense`: a dim, crowded two-photon field as real cortical recordings are:
  a couple of photons per pixel and frame, somata touching each other, each a bright ring of
  cytoplasm around a dimmer nucleus, at rest as bright as the active neuropil around them.

Units: the movie is in photon counts (before read noise). ``footprints`` have a peak of 1, and
``calcium`` is in counts at a footprint's peak pixel, so ``movie ~= sum_k footprints[k] *
calcium[k] + background + noise``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["SyntheticMovie", "simulate_2p", "simulate_1p", "simulate_dim_2p", "simulate_2p_dense",
           "save_tiff"]


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


def _place_centers(
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


def _ellipse(
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


def _footprint(
    rng: np.random.Generator,
    center: np.ndarray,
    shape: tuple[int, int],
    sigma: float,
    variability: float,
    cutoff: float = 0.05,
) -> np.ndarray:
    """One soma: a rotated anisotropic Gaussian with a faint random texture, peak 1."""
    r = _ellipse(rng, center, shape, sigma, variability)[0]
    fp = np.exp(-0.5 * r**2)
    # multiplicative smooth texture so that footprints are not perfect Gaussians
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), sigma / 2)
    texture /= texture.std() + 1e-12
    fp *= np.clip(1 + 0.5 * variability * texture, 0.2, None)
    fp[fp < cutoff * fp.max()] = 0
    return (fp / fp.max()).astype(np.float32)


def _spike_trains(
    rng: np.random.Generator, n: int, n_frames: int, fr: float, rate: float, amplitude: float
) -> np.ndarray:
    """Poisson spike counts with log-normal amplitudes, (n, frames) in counts."""
    rates = rate * rng.lognormal(0.0, 0.5, size=n)  # Hz, varies across neurons
    counts = rng.poisson(np.outer(rates / fr, np.ones(n_frames)))
    amps = amplitude * rng.lognormal(0.0, 0.25, size=(n, n_frames))
    return (counts * amps).astype(np.float32)


def _ar1(spikes: np.ndarray, g: float) -> np.ndarray:
    """Calcium ``c[t] = g * c[t-1] + s[t]`` along the last axis."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -g], spikes, axis=-1).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A positive random field with spatial correlation length ``scale`` px, mean 1."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), scale, mode="wrap")
    f = (f - f.min()) / (np.ptp(f) + 1e-12)
    return (0.5 + f / f.mean() * 0.5).astype(np.float32)


def _slow_trace(rng: np.random.Generator, n_frames: int, fr: float, period: float) -> np.ndarray:
    """A smooth random positive trace with fluctuations on ``period`` seconds, mean 1."""
    # a movie shorter than the period still fluctuates (over its own length)
    sigma = min(period * fr / 4, max(n_frames / 8, 1.0))
    t = ndimage.gaussian_filter1d(rng.standard_normal(n_frames), sigma, mode="reflect")
    t = (t - t.mean()) / (t.std() + 1e-12)
    return (1 + 0.3 * t).clip(0.2, None).astype(np.float32)


def _motion_shifts(rng: np.random.Generator, n_frames: int, max_shift: float) -> np.ndarray:
    """Smooth random-walk (y, x) shifts within +-max_shift px, plus a few sudden jumps."""
    steps = rng.standard_normal((n_frames, 2)) * max_shift / 6
    walk = ndimage.gaussian_filter1d(np.cumsum(steps, axis=0), 2, axis=0)
    walk -= walk.mean(axis=0)
    scale = np.abs(walk).max(axis=0)
    walk *= max_shift / np.maximum(scale, max_shift)  # clip range without flattening
    return np.clip(walk, -max_shift, max_shift).astype(np.float32)


def _shift_frame(frame: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move ``frame`` by ``shift`` (y, x) px with bilinear subpixel interpolation."""
    import cv2

    m = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    return cv2.warpAffine(
        frame, m, (frame.shape[1], frame.shape[0]),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
    )


def _render(
    rng: np.random.Generator,
    footprints: np.ndarray,
    traces: np.ndarray,
    bg_spatial: np.ndarray,
    bg_temporal: np.ndarray,
    baseline: np.ndarray,
    noise: float,
    shifts: np.ndarray | None,
    chunk: int = 200,
) -> np.ndarray:
    """Noiseless scene -> (optional motion) -> Poisson shot noise + Gaussian read noise."""
    n, ny, nx = footprints.shape
    n_frames = traces.shape[1]
    A = footprints.reshape(n, ny * nx).T  # (pixels, n); n may be 0
    B = bg_spatial.reshape(bg_spatial.shape[0], -1).T
    out = np.empty((n_frames, ny, nx), np.float32)
    for t0 in range(0, n_frames, chunk):
        t1 = min(t0 + chunk, n_frames)
        clean = A @ traces[:, t0:t1] + B @ bg_temporal[:, t0:t1] + baseline.reshape(-1, 1)
        clean = clean.T.reshape(t1 - t0, ny, nx).astype(np.float32)
        if shifts is not None:
            clean = np.stack([_shift_frame(f, s) for f, s in zip(clean, shifts[t0:t1])])
        frames = rng.poisson(np.clip(clean, 0, None)).astype(np.float32)
        frames += rng.normal(0.0, noise, size=frames.shape).astype(np.float32)
        out[t0:t1] = frames
    return out


def _finish(movie: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype) == np.uint16:
        return np.clip(np.round(movie), 0, 65535).astype(np.uint16)
    return movie.astype(dtype, copy=False)


def simulate_2p(
    n_frames: int = 1000,
    shape: tuple[int, int] = (128, 128),
    n_neurons: int = 30,
    gSig: float = 4.0,
    fr: float = 30.0,
    decay_time: float = 0.4,
    noise: float = 2.0,
    background: float = 20.0,
    motion: float | None = None,
    seed: int = 0,
    *,
    firing_rate: float = 0.5,
    amplitude: float = 20.0,
    resting: float = 0.3,
    neuropil: float = 0.3,
    shape_variability: float = 0.2,
    min_distance: float | None = None,
    dtype: str = "float32",
) -> SyntheticMovie:
    """Simulate a two-photon calcium-imaging movie with known neurons.

    Parameters
    ----------
    n_frames
        Number of frames T.
    shape
        Frame size (y, x) in pixels.
    n_neurons
        Number of neurons.
    gSig
        Typical Gaussian width (standard deviation, px) of a soma, as CaImAn's ``gSig``.
    fr
        Frame rate (Hz).
    decay_time
        Calcium decay time constant (s); the AR(1) coefficient is ``exp(-1 / (decay_time*fr))``.
    noise
        Standard deviation of the Gaussian read noise (counts); Poisson shot noise comes on top.
    background
        Mean background brightness (counts per pixel per frame).
    motion
        None for no motion, else the maximum rigid displacement (px) of a smooth random walk.
    seed
        Seed of the random generator: the same arguments give the same movie.
    firing_rate
        Mean firing rate (Hz); rates vary log-normally across neurons.
    amplitude
        Mean calcium increment per spike at a footprint's peak pixel (counts).
    resting
        Resting fluorescence of each neuron at its peak, as a fraction of ``amplitude`` (makes
        somata visible in the mean image, as in real data).
    neuropil
        Amplitude of the neuropil background fluctuations relative to ``background``.
    shape_variability
        Relative spread of the soma widths (and strength of their texture).
    min_distance
        Minimum distance between soma centres (px); default ``2 * gSig`` (cells may touch).
    dtype
        ``"float32"`` or ``"uint16"`` (rounded and clipped, as a raw recording).

    Returns
    -------
    SyntheticMovie
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    min_dist = 2.0 * gSig if min_distance is None else float(min_distance)
    margin = 1.5 * gSig + (motion or 0)
    centers = _place_centers(rng, n_neurons, shape, margin, min_dist)
    footprints = np.stack(
        [_footprint(rng, c, shape, gSig, shape_variability) for c in centers]
    ) if n_neurons else np.zeros((0, *shape), np.float32)

    spikes = _spike_trains(rng, n_neurons, n_frames, fr, firing_rate, amplitude)
    calcium = _ar1(spikes, g)
    rest = (resting * amplitude * rng.uniform(0.5, 1.5, size=n_neurons)).astype(np.float32)

    # static baseline: vignetting-like smooth map + resting fluorescence of the somata
    baseline = background * _smooth_field(rng, shape, max(shape) / 4)
    baseline = baseline + np.tensordot(rest, footprints, axes=1)
    # neuropil: one smooth spatial map with slow temporal fluctuations around 0
    bg_spatial = (neuropil * background * _smooth_field(rng, shape, 3 * gSig))[None]
    bg_temporal = (_slow_trace(rng, n_frames, fr, period=5.0) - 1.0)[None]

    shifts = _motion_shifts(rng, n_frames, motion) if motion else None
    movie = _render(rng, footprints, calcium, bg_spatial, bg_temporal, baseline, noise, shifts)
    return SyntheticMovie(
        movie=_finish(movie, dtype),
        footprints=footprints,
        calcium=calcium,
        spikes=spikes,
        background={
            "spatial": bg_spatial.astype(np.float32),
            "temporal": bg_temporal.astype(np.float32),
            "baseline": baseline.astype(np.float32),
            "resting": rest,
        },
        shifts=shifts if shifts is not None else np.zeros((n_frames, 2), np.float32),
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g},
    )


def simulate_1p(
    n_frames: int = 1000,
    shape: tuple[int, int] = (128, 128),
    n_neurons: int = 30,
    gSig: float = 3.0,
    fr: float = 10.0,
    decay_time: float = 0.6,
    noise: float = 2.0,
    background: float = 200.0,
    motion: float | None = None,
    seed: int = 0,
    *,
    firing_rate: float = 0.3,
    amplitude: float = 30.0,
    blur: float = 2.0,
    drift: float = 0.2,
    dtype: str = "float32",
) -> SyntheticMovie:
    """Simulate a one-photon (microendoscope) movie: blurry cells under a bright background.

    Parameters are as :func:`simulate_2p`; in addition the background (mean ``background``
    counts, several times brighter than the cells' transients) is the sum of three smooth
    spatial maps whose weights drift slowly, and ``drift`` is their relative fluctuation.
    ``blur`` widens the somata (px) to mimic out-of-focus light.

    Returns
    -------
    SyntheticMovie
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    width = float(np.hypot(gSig, blur))
    margin = 1.5 * width + (motion or 0)
    centers = _place_centers(rng, n_neurons, shape, margin, 2.0 * width)
    footprints = np.stack(
        [_footprint(rng, c, shape, width, 0.15, cutoff=0.02) for c in centers]
    ) if n_neurons else np.zeros((0, *shape), np.float32)

    spikes = _spike_trains(rng, n_neurons, n_frames, fr, firing_rate, amplitude)
    calcium = _ar1(spikes, g)
    baseline = background * _smooth_field(rng, shape, max(shape) / 3)
    # three spatial modes at different scales, each drifting in time: the background both
    # moves in space and changes in brightness, as blood vessels and out-of-focus tissue do
    bg_spatial = np.stack(
        [drift * background * _smooth_field(rng, shape, s) for s in (4 * width, 8.0, 20.0)]
    )
    bg_temporal = np.stack(
        [_slow_trace(rng, n_frames, fr, period=p) - 1.0 for p in (20.0, 8.0, 40.0)]
    )
    shifts = _motion_shifts(rng, n_frames, motion) if motion else None
    movie = _render(rng, footprints, calcium, bg_spatial, bg_temporal, baseline, noise, shifts)
    return SyntheticMovie(
        movie=_finish(movie, dtype),
        footprints=footprints,
        calcium=calcium,
        spikes=spikes,
        background={
            "spatial": bg_spatial.astype(np.float32),
            "temporal": bg_temporal.astype(np.float32),
            "baseline": baseline.astype(np.float32),
            "resting": np.zeros(n_neurons, np.float32),
        },
        shifts=shifts if shifts is not None else np.zeros((n_frames, 2), np.float32),
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g},
    )


def _uniform_shifts(rng: np.random.Generator, n_frames: int, max_shift: float,
                    subpixel: float) -> np.ndarray:
    """(frames, 2) shifts uniform in +-max_shift; a fraction ``1 - subpixel`` of the frames
    (chosen at random) get whole-pixel shifts."""
    shifts = rng.uniform(-max_shift, max_shift, (n_frames, 2))
    whole = rng.random(n_frames) >= subpixel
    shifts[whole] = np.clip(np.round(shifts[whole]), -np.floor(max_shift), np.floor(max_shift))
    return shifts.astype(np.float32)


def _periodic_texture(rng: np.random.Generator, shape: tuple[int, int], scale: float
                      ) -> np.ndarray:
    """Band-limited periodic random texture, values spread uniformly over [0, 1].

    White noise low-passed with a Gaussian of width ``scale`` px in the Fourier domain
    (periodic on ``shape``), then mapped through its own normal CDF.
    """
    from scipy.special import ndtr

    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    gain = np.exp(-2 * (np.pi * scale) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * gain, s=shape)
    return ndtr((field - field.mean()) / field.std())


def _periodic_somata(rng: np.random.Generator, shape: tuple[int, int], n: int, gSig: float
                     ) -> Any:
    """(pixels, n) sparse Gaussian somata of peak 1 (widths gSig x 0.8-1.2), centred
    uniformly on a periodic canvas (they wrap around its edges, so it stays periodic)."""
    import scipy.sparse as sparse

    centres = rng.uniform(0, 1, (n, 2)) * np.array(shape)
    sig = gSig * rng.uniform(0.8, 1.2, (n, 2))
    half = int(np.ceil(4 * 1.2 * gSig))
    offsets = np.arange(-half, half + 1)
    base = np.floor(centres).astype(int)
    rows = base[:, :1] + offsets[None, :]  # (n, w) canvas rows around each centre
    cols = base[:, 1:] + offsets[None, :]
    gy = np.exp(-0.5 * ((rows - centres[:, :1]) / sig[:, :1]) ** 2)
    gx = np.exp(-0.5 * ((cols - centres[:, 1:]) / sig[:, 1:]) ** 2)
    values = gy[:, :, None] * gx[:, None, :]
    pixel = (rows % shape[0])[:, :, None] * shape[1] + (cols % shape[1])[:, None, :]
    neuron = np.broadcast_to(np.arange(n)[:, None, None], values.shape)
    keep = values >= 1e-3
    return sparse.csr_matrix((values[keep], (pixel[keep], neuron[keep])),
                             shape=(shape[0] * shape[1], n), dtype=np.float32)


def simulate_dim_2p(
    n_frames: int = 300,
    shape: tuple[int, int] = (128, 128),
    *,
    photons: float = 1.0,
    max_shift: float = 5.0,
    subpixel: float = 0.5,
    neuropil: tuple[float, float] = (2.0, 10.0),
    peak: tuple[float, float] = (30.0, 60.0),
    resting: float = 0.15,
    dff: float | None = None,
    vignette: float = 0.5,
    read_noise: float = 1.0,
    cell_area: float = 900.0,
    gSig: float = 4.0,
    fr: float = 30.0,
    decay_time: float = 0.4,
    firing_rate: float = 0.3,
    texture_scale: float = 4.0,
    seed: int = 0,
    dtype: str = "float32",
    keep_footprints: bool = True,
) -> SyntheticMovie:
    """A dim two-photon movie with known rigid shifts, at realistic photon counts.

    The tissue is a neuropil texture plus Gaussian somata whose fluorescence rises from rest
    to their peak during calcium transients. Each frame shows the tissue displaced by its
    shift, under a vignette fixed to the microscope (it does not move with the tissue), with
    Poisson shot noise and Gaussian read noise. The displacement is exact: the tissue is
    periodic and band-limited on a canvas larger than the field of view and is shifted by a
    Fourier phase ramp, so the ground truth has no interpolation error.

    Parameters
    ----------
    n_frames
        Number of frames.
    shape
        Field of view (y, x) in pixels.
    photons
        Scale of every photon count below (1: the nominal dim movie; 4: four times brighter,
        half the relative shot noise).
    max_shift
        Shifts are uniform in +-max_shift px along each axis.
    subpixel
        Fraction of frames with sub-pixel shifts; the others are shifted by whole pixels.
    neuropil
        (low, high) photons per pixel and frame of the neuropil texture (uniformly spread).
    peak
        Range of the neurons' brightest fluorescence (photons at their centre pixel, at the
        top of their largest transient); drawn uniformly per neuron.
    resting
        Resting fluorescence as a fraction of the neuron's peak.
    vignette
        Relative loss of light at the corners of the field (quadratic in the radius).
    read_noise
        Standard deviation of the Gaussian read noise (photon units; not scaled).
    cell_area
        Field area per neuron (px^2): the number of neurons is ``y * x / cell_area``.
    gSig
        Gaussian width (px) of the somata.
    fr, decay_time, firing_rate
        Frame rate (Hz), calcium decay (s), mean firing rate (Hz).
    texture_scale
        Correlation length (px) of the neuropil texture.
    seed
        Random seed.
    dtype
        ``"float32"`` or ``"uint16"``.
    keep_footprints
        Return the dense (n, y, x) footprints (about 1 MB per neuron at 512 x 512); when
        False, ``footprints``, ``calcium`` and ``spikes`` are empty (0, ...) arrays.

    Returns
    -------
    SyntheticMovie
        ``shifts`` (frames, 2) is the displacement of each frame (``frame(p) =
        tissue(p - shift)``, registered by applying ``-shift``); ``footprints`` and
        ``calcium`` (photons at the centre pixel, above rest) are those of the neurons
        whose centre lies in the field of view, at zero shift;
        ``background["baseline"]`` is the unshifted neuropil under the vignette.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    pad = int(np.ceil(max_shift)) + 4 * int(np.ceil(gSig))
    canvas = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    crop = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))

    texture = neuropil[0] + (neuropil[1] - neuropil[0]) * _periodic_texture(
        rng, canvas, texture_scale)
    n = max(1, int(round(canvas[0] * canvas[1] / cell_area)))
    somata = _periodic_somata(rng, canvas, n, gSig)  # (canvas pixels, n) sparse
    spikes = _spike_trains(rng, n, n_frames, fr, firing_rate, 1.0)
    calcium = _ar1(spikes, g)
    top = rng.uniform(*peak, size=n).astype(np.float32)
    rest = resting * top
    # transients scaled so that each neuron's largest one reaches its peak (or rest * (1 + dff))
    height = top - rest if dff is None else dff * rest
    calcium *= (height / np.maximum(calcium.max(axis=1), 1e-6))[:, None]

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - (shape[0] - 1) / 2) ** 2 + (xx - (shape[1] - 1) / 2) ** 2
    light = (1.0 - vignette * r2 / r2.max()).astype(np.float32)
    shifts = _uniform_shifts(rng, n_frames, max_shift, subpixel)

    fy = np.fft.fftfreq(canvas[0])[None, :, None]
    fx = np.fft.rfftfreq(canvas[1])[None, None, :]
    movie = np.empty((n_frames, *shape), np.float32)
    for t0 in range(0, n_frames, 64):
        t1 = min(n_frames, t0 + 64)
        cells = somata @ (rest[:, None] + calcium[:, t0:t1])  # (canvas pixels, frames)
        tissue = cells.T.reshape(t1 - t0, *canvas) + texture
        s = shifts[t0:t1].astype(np.float64)
        ramp = np.exp(-2j * np.pi * (fy * s[:, 0, None, None] + fx * s[:, 1, None, None]))
        moved = np.fft.irfft2(np.fft.rfft2(tissue) * ramp, s=canvas)[:, crop[0], crop[1]]
        clean = np.clip(photons * moved * light, 0, None)
        movie[t0:t1] = rng.poisson(clean) + rng.normal(0.0, read_noise, clean.shape)

    centre_pixels = somata.argmax(axis=0).A.ravel()
    cy, cx = np.divmod(centre_pixels, canvas[1])
    inside = np.flatnonzero((cy >= pad) & (cy < pad + shape[0])
                            & (cx >= pad) & (cx < pad + shape[1]))
    if not keep_footprints:
        inside = inside[:0]
    footprints = np.stack([somata[:, k].toarray().reshape(canvas)[crop] for k in inside]
                          ) if len(inside) else np.zeros((0, *shape), np.float32)
    return SyntheticMovie(
        movie=_finish(movie, dtype),
        footprints=footprints.astype(np.float32),
        calcium=(photons * calcium[inside]).astype(np.float32),
        spikes=spikes[inside],
        background={"baseline": (photons * texture[crop] * light).astype(np.float32),
                    "resting": (photons * rest[inside]).astype(np.float32),
                    "light": light},
        shifts=shifts,
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g,
                "photons": photons},
    )

def _soma(
    rng: np.random.Generator, center: np.ndarray, shape: tuple[int, int], radius: float,
    variability: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One soma with a dimmer nucleus: its footprint (peak 1) and its body (0..1, the
    fraction of the pixel it fills, for the neuropil it displaces)."""
    r, dy, dx = _ellipse(rng, center, shape, radius, variability)
    edge = 0.6  # px: width of the soft rim (optical blur)
    body = 1 / (1 + np.exp((r - 1) * radius / edge))
    # the indicator is cytosolic: the nucleus (about half the soma across, a little off
    # centre) is dimmer but, at 0.3-0.6 of the cytoplasm, still part of the footprint
    nuc_c = rng.normal(0, 0.1 * radius, size=2)
    nucleus = 1 / (1 + np.exp((np.hypot(dy - nuc_c[0], dx - nuc_c[1]) - 0.5 * radius) / edge))
    fp = body * (1 - rng.uniform(0.4, 0.7) * nucleus)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    fp *= np.clip(1 + 0.15 * texture / (texture.std() + 1e-12), 0.5, None)
    fp[fp < 0.02 * fp.max()] = 0
    return (fp / fp.max()).astype(np.float32), body.astype(np.float32)


def simulate_2p_dense(
    n_frames: int = 400,
    shape: tuple[int, int] = (128, 128),
    n_neurons: int = 40,
    gSig: float = 4.0,
    fr: float = 10.0,
    decay_time: float = 1.0,
    seed: int = 0,
    *,
    brightness: float = 2.0,
    firing_rate: float = 0.3,
    amplitude: float = 0.5,
    silent: float = 0.25,
    neuropil_activity: float = 0.15,
    read_noise: float = 0.2,
    dtype: str = "float32",
) -> SyntheticMovie:
    """Simulate a dim, crowded two-photon field (GCaMP in cortex, as the Neurofinder data).

    Somata ``gSig`` px in radius (about 70 px above 0.2 of the peak at ``gSig=4``), touching each other, are
    rings of cytoplasm around a nucleus 0.3-0.6 as bright. The neuropil between them is, at
    rest, as bright as the somata's cytoplasm (``brightness`` photons per pixel and frame,
    varying across the field and with a fine texture), so somata show in the mean image
    mainly by their dark nuclei; it fluctuates by ``neuropil_activity`` of its level in three
    overlapping smooth patches of slow, correlated activity. A fraction ``silent`` of the
    neurons never fires; the others fire Poisson spikes (``firing_rate`` Hz on average, rates
    log-normal across neurons), each raising the cell by ``amplitude`` of its resting level
    (dF/F) and decaying in ``decay_time`` s. Frames are Poisson photon counts plus Gaussian
    read noise (``read_noise`` photons).

    Parameters
    ----------
    n_frames, shape, n_neurons, gSig, fr, decay_time, seed
        As :func:`simulate_2p`.
    brightness
        Resting level of neuropil and cytoplasm, photons per pixel and frame.
    firing_rate
        Mean firing rate (Hz) of the neurons that fire.
    amplitude
        dF/F of one spike at the footprint's peak.
    silent
        Fraction of neurons that never fire (they only show at rest).
    neuropil_activity
        Relative amplitude of the neuropil's fluctuations.
    read_noise
        Standard deviation of the Gaussian read noise (photons).
    dtype
        ``"float32"`` or ``"uint16"``.

    Returns
    -------
    SyntheticMovie
        ``footprints`` peak 1 (nucleus included), ``calcium`` in photons at the footprint's
        peak; the silent neurons are among the footprints (their calcium is 0).
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    radius = float(gSig)
    centers = _place_centers(rng, n_neurons, shape, radius + 1, 1.9 * radius)
    if n_neurons:
        fps, bodies = (np.stack(x) for x in zip(
            *[_soma(rng, c, shape, radius, 0.15) for c in centers]))
    else:
        fps = bodies = np.zeros((0, *shape), np.float32)
    # neuropil: vignetting x fine texture (dendrites, axons), displaced where somata are
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    npil = brightness * _smooth_field(rng, shape, max(shape) / 4)
    npil *= np.clip(1 + 0.2 * texture / (texture.std() + 1e-12), 0.3, None)
    free = 1 - np.clip(bodies.sum(axis=0), 0, 1)
    rest = npil[tuple(np.round(centers).astype(int).T)] * rng.uniform(0.8, 1.2, n_neurons)
    baseline = npil * free + np.tensordot(rest, fps, axes=1)

    fires = np.where(rng.random(n_neurons) < silent, 0.0, 1.0)
    # each spike raises the cell by ``amplitude`` of its resting level (photons at its peak)
    size = (fires * amplitude * rest)[:, None].astype(np.float32)
    spikes = _spike_trains(rng, n_neurons, n_frames, fr, firing_rate, 1.0) * size
    calcium = _ar1(spikes, g)
    bg_spatial = np.stack([neuropil_activity * npil * free * _smooth_field(rng, shape, 3 * gSig)
                           for _ in range(3)])
    common = _slow_trace(rng, n_frames, fr, period=10.0) - 1.0
    bg_temporal = np.stack([0.5 * common + _slow_trace(rng, n_frames, fr, period=3.0) - 1.0
                            for _ in range(3)])
    movie = _render(rng, fps, calcium, bg_spatial, bg_temporal, baseline, read_noise, None)
    return SyntheticMovie(
        movie=_finish(movie, dtype), footprints=fps, calcium=calcium, spikes=spikes,
        background={"spatial": bg_spatial.astype(np.float32),
                    "temporal": bg_temporal.astype(np.float32),
                    "baseline": baseline.astype(np.float32), "resting": rest.astype(np.float32)},
        shifts=np.zeros((n_frames, 2), np.float32),
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g},
    )


def save_tiff(path: str | Path, movie: np.ndarray) -> Path:
    """Write a (frames, y, x) movie as a multi-page TIFF (tifffile) and return its path."""
    import tifffile

    path = Path(path)
    tifffile.imwrite(path, np.asarray(movie))
    return path
