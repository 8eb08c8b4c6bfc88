"""One-photon / microendoscope movies: :func:`simulate_1p`."""

from __future__ import annotations

import numpy as np

from .common import (
    SyntheticMovie,
    ar1,
    finish,
    footprint,
    motion_shifts,
    place_centers,
    render,
    slow_trace,
    smooth_field,
    spike_trains,
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
    return SyntheticMovie(
        movie=finish(movie, dtype),
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
