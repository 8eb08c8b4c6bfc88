"""One-photon / microendoscope movies: :func:`simulate_1p`, and :func:`simulate_1p_vignette`
(the field of a GRIN lens in a dark frame, with line noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (
    SyntheticMovie,
    ar1,
    assemble,
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
    centers = place_centers(rng, n_neurons, shape, margin, 2.0 * width)
    footprints = np.stack(
        [footprint(rng, c, shape, width, 0.15, cutoff=0.02) for c in centers]
    ) if n_neurons else np.zeros((0, *shape), np.float32)

    spikes = spike_trains(rng, n_neurons, n_frames, fr, firing_rate, amplitude)
    calcium = ar1(spikes, g)
    baseline = background * smooth_field(rng, shape, max(shape) / 3)
    # three spatial modes at different scales, each drifting in time: the background both
    # moves in space and changes in brightness, as blood vessels and out-of-focus tissue do
    bg_spatial = np.stack(
        [drift * background * smooth_field(rng, shape, s) for s in (4 * width, 8.0, 20.0)]
    )
    bg_temporal = np.stack(
        [slow_trace(rng, n_frames, fr, period=p) - 1.0 for p in (20.0, 8.0, 40.0)]
    )
    shifts = motion_shifts(rng, n_frames, motion) if motion else None
    movie = render(rng, footprints, calcium, bg_spatial, bg_temporal, baseline, noise, shifts)
    return assemble(finish(movie, dtype), footprints, calcium, spikes, bg_spatial, bg_temporal,
                    baseline, np.zeros(n_neurons, np.float32), shifts, gSig=gSig, fr=fr,
                    decay_time=decay_time, g=g)


def simulate_1p_vignette(
    n_frames: int = 1000,
    shape: tuple[int, int] = (128, 128),
    n_neurons: int = 30,
    gSig: float = 3.0,
    fr: float = 10.0,
    decay_time: float = 0.6,
    noise: float = 2.0,
    background: float = 200.0,
    seed: int = 0,
    *,
    lens_radius: float = 0.42,
    dark: float = 0.04,
    line_noise: float = 1.5,
    bursts: float = 0.05,
    burst_size: float = 25.0,
    firing_rate: float = 0.3,
    amplitude: float = 30.0,
    blur: float = 2.0,
    drift: float = 0.2,
    dtype: str = "float32",
    tiff: str | Path | None = None,
) -> SyntheticMovie:
    """A microendoscope movie seen through a GRIN lens: a bright disk of tissue in a dark
    frame, with the sensor's horizontal line noise everywhere.

    As :func:`simulate_1p` inside the lens (a disk of radius ``lens_radius`` times the
    frame's smaller side, centred, with a soft edge of a few px): blurry cells under a bright
    drifting background. Outside it no light reaches the sensor: the frame is dark
    (``dark`` times the background level) and holds no cells, only noise: shot and read
    noise, and horizontal line noise, an offset common to a whole row of a frame
    (Gaussian, ``line_noise`` counts) with, in a fraction ``bursts`` of the frames, a band
    of rows offset by about ``burst_size`` counts (interference). Cells and everything
    about them are as in :func:`simulate_1p`; ``tiff``: write the movie (uint16) to this
    file a chunk of frames at a time, as :func:`~.two_photon.simulate_2p`.

    Returns
    -------
    SyntheticMovie
        ``background["lens"]`` is the (y, x) transmission of the lens (1 inside, 0
        outside); ``background["line_noise"]`` is not stored (it is drawn per frame).
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))
    width = float(np.hypot(gSig, blur))
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    radius = lens_radius * min(shape)
    dist = np.hypot(yy - cy, xx - cx)
    lens = (1 / (1 + np.exp((dist - radius) / 1.5))).astype(np.float32)
    centers = _centers_in_disk(rng, n_neurons, (cy, cx), radius - 2.0 * width, 2.0 * width)
    footprints = np.stack(
        [footprint(rng, c, shape, width, 0.15, cutoff=0.02) * lens for c in centers]
    ) if n_neurons else np.zeros((0, *shape), np.float32)
    spikes = spike_trains(rng, n_neurons, n_frames, fr, firing_rate, amplitude)
    calcium = ar1(spikes, g)
    baseline = background * smooth_field(rng, shape, max(shape) / 3) * (dark + (1 - dark) * lens)
    bg_spatial = np.stack(
        [drift * background * smooth_field(rng, shape, s) * lens for s in (4 * width, 8.0, 20.0)]
    )
    bg_temporal = np.stack(
        [slow_trace(rng, n_frames, fr, period=p) - 1.0 for p in (20.0, 8.0, 40.0)]
    )

    def line(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
        offsets = rng.normal(0.0, line_noise, size=(n, rows))
        for t in np.flatnonzero(rng.random(n) < bursts):
            r0 = int(rng.integers(0, rows))
            h = int(rng.integers(1, max(rows // 8, 2)))
            offsets[t, r0:r0 + h] += burst_size * rng.exponential(1.0)
        return offsets

    out = None if tiff is None else tiff_writer(tiff, (n_frames, *shape))
    movie = render(rng, footprints, calcium, bg_spatial, bg_temporal, baseline, noise, None,
                   out=out, row_noise=line)
    return assemble(finish(movie, dtype) if out is None else out.close(), footprints, calcium,
                    spikes, bg_spatial, bg_temporal, baseline, np.zeros(n_neurons, np.float32),
                    None, gSig=gSig, fr=fr, decay_time=decay_time, g=g, lens=lens)


def _centers_in_disk(rng: np.random.Generator, n: int, center: tuple[float, float],
                     radius: float, min_dist: float) -> np.ndarray:
    """``n`` points uniform in a disk, at least ``min_dist`` apart (relaxed when crowded)."""
    points: list[np.ndarray] = []
    dist, tries = min_dist, 0
    while len(points) < n:
        r = radius * np.sqrt(rng.random())
        a = rng.uniform(0, 2 * np.pi)
        p = np.array([center[0] + r * np.sin(a), center[1] + r * np.cos(a)])
        if all(np.hypot(*(p - o)) >= dist for o in points):
            points.append(p)
        tries += 1
        if tries > 200 * n:
            dist *= 0.9
            tries = 0
    return np.array(points).reshape(-1, 2)
