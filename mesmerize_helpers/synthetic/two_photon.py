"""Two-photon movies: :func:`simulate_2p` (compact somata, optional motion) and
:func:`simulate_2p_dense` (a dim, crowded field as real cortical recordings are)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .common import (
    SyntheticMovie,
    ar1,
    assemble,
    ellipse,
    finish,
    footprint,
    motion_shifts,
    place_centers,
    render,
    slow_trace,
    smooth_field,
    spike_trains,
    tiff_writer,
)


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
    tiff: str | Path | None = None,
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
    tiff
        Write the movie (uint16) to this TIFF a chunk of frames at a time instead of
        holding it in memory (long movies); ``movie`` is then the file, mapped read-only.

    Returns
    -------
    SyntheticMovie
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    min_dist = 2.0 * gSig if min_distance is None else float(min_distance)
    margin = 1.5 * gSig + (motion or 0)
    centers = place_centers(rng, n_neurons, shape, margin, min_dist)
    footprints = np.stack(
        [footprint(rng, c, shape, gSig, shape_variability) for c in centers]
    ) if n_neurons else np.zeros((0, *shape), np.float32)

    spikes = spike_trains(rng, n_neurons, n_frames, fr, firing_rate, amplitude)
    calcium = ar1(spikes, g)
    rest = (resting * amplitude * rng.uniform(0.5, 1.5, size=n_neurons)).astype(np.float32)

    # static baseline: vignetting-like smooth map + resting fluorescence of the somata
    baseline = background * smooth_field(rng, shape, max(shape) / 4)
    baseline = baseline + np.tensordot(rest, footprints, axes=1)
    # neuropil: one smooth spatial map with slow temporal fluctuations around 0
    bg_spatial = (neuropil * background * smooth_field(rng, shape, 3 * gSig))[None]
    bg_temporal = (slow_trace(rng, n_frames, fr, period=5.0) - 1.0)[None]

    shifts = motion_shifts(rng, n_frames, motion) if motion else None
    out = None if tiff is None else tiff_writer(tiff, (n_frames, *shape))
    movie = render(rng, footprints, calcium, bg_spatial, bg_temporal, baseline, noise, shifts,
                   out=out)
    return assemble(finish(movie, dtype) if out is None else out.close(), footprints, calcium,
                    spikes, bg_spatial, bg_temporal, baseline, rest, shifts, gSig=gSig, fr=fr,
                    decay_time=decay_time, g=g)


def _soma(
    rng: np.random.Generator, center: np.ndarray, shape: tuple[int, int], radius: float,
    variability: float, filled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One soma with a dimmer nucleus (none if ``filled``: the indicator has entered the
    nucleus): its footprint (peak 1) and its body (0..1, the fraction of the pixel it fills,
    for the neuropil it displaces)."""
    r, dy, dx = ellipse(rng, center, shape, radius, variability)
    edge = 0.6  # px: width of the soft rim (optical blur)
    body = 1 / (1 + np.exp((r - 1) * radius / edge))
    # the indicator is cytosolic: the nucleus (about half the soma across, a little off
    # centre) is dimmer but, at 0.3-0.6 of the cytoplasm, still part of the footprint
    nuc_c = rng.normal(0, 0.1 * radius, size=2)
    nucleus = 1 / (1 + np.exp((np.hypot(dy - nuc_c[0], dx - nuc_c[1]) - 0.5 * radius) / edge))
    dim = rng.uniform(0.4, 0.7)  # drawn for a filled soma too: the same stream either way
    fp = body * (1 - (0.0 if filled else dim) * nucleus)
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
    filled: float = 0.0,
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
    read noise (``read_noise`` photons). A fraction ``filled`` of the somata have the
    indicator in the nucleus too (as over-expressing cells do): no dark nucleus, and at rest
    1.5-2.5 times as bright as the neuropil, so they show in the mean image as bright disks.

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
    filled
        Fraction of somata without a dark nucleus, brighter at rest (drawn from a stream of
        their own: with 0 the movie is the same as without the option).
    dtype
        ``"float32"`` or ``"uint16"``.

    Returns
    -------
    SyntheticMovie
        ``footprints`` peak 1 (nucleus included), ``calcium`` in photons at the footprint's
        peak; the silent neurons are among the footprints (their calcium is 0);
        ``background["filled"]`` (n,) bool marks the filled somata.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    radius = float(gSig)
    centers = place_centers(rng, n_neurons, shape, radius + 1, 1.9 * radius)
    if not 0.0 <= filled <= 1.0:
        raise ValueError(f"filled (fraction of somata without a dark nucleus) must lie in "
                         f"[0, 1]; got {filled!r}.")
    # which somata are filled, and how bright: a stream of their own (seed, 1)
    extra = np.random.default_rng(None if seed is None else (seed, 1))
    is_filled = extra.random(n_neurons) < filled
    glow = np.where(is_filled, extra.uniform(1.5, 2.5, n_neurons), 1.0)
    if n_neurons:
        fps, bodies = (np.stack(x) for x in zip(
            *[_soma(rng, c, shape, radius, 0.15, f) for c, f in zip(centers, is_filled)]))
    else:
        fps = bodies = np.zeros((0, *shape), np.float32)
    # neuropil: vignetting x fine texture (dendrites, axons), displaced where somata are
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    npil = brightness * smooth_field(rng, shape, max(shape) / 4)
    npil *= np.clip(1 + 0.2 * texture / (texture.std() + 1e-12), 0.3, None)
    free = 1 - np.clip(bodies.sum(axis=0), 0, 1)
    rest = npil[tuple(np.round(centers).astype(int).T)] * rng.uniform(0.8, 1.2, n_neurons) * glow
    baseline = npil * free + np.tensordot(rest, fps, axes=1)

    fires = np.where(rng.random(n_neurons) < silent, 0.0, 1.0)
    # each spike raises the cell by ``amplitude`` of its resting level (photons at its peak)
    size = (fires * amplitude * rest)[:, None].astype(np.float32)
    spikes = spike_trains(rng, n_neurons, n_frames, fr, firing_rate, 1.0) * size
    calcium = ar1(spikes, g)
    bg_spatial = np.stack([neuropil_activity * npil * free * smooth_field(rng, shape, 3 * gSig)
                           for _ in range(3)])
    common = slow_trace(rng, n_frames, fr, period=10.0) - 1.0
    bg_temporal = np.stack([0.5 * common + slow_trace(rng, n_frames, fr, period=3.0) - 1.0
                            for _ in range(3)])
    movie = render(rng, fps, calcium, bg_spatial, bg_temporal, baseline, read_noise, None)
    return assemble(finish(movie, dtype), fps, calcium, spikes, bg_spatial, bg_temporal, baseline,
                    rest.astype(np.float32), None, gSig=gSig, fr=fr, decay_time=decay_time, g=g,
                    filled=is_filled)
