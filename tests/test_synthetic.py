"""The simulator: shapes, units, determinism, known motion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import lfilter

from mesmerize_helpers.synthetic import (
    SyntheticMovie,
    save_tiff,
    simulate_1p,
    simulate_2p,
    simulate_2p_dense,
)


def test_simulate_2p_shapes_and_model():
    sim = simulate_2p(n_frames=200, shape=(48, 64), n_neurons=6, gSig=3, fr=20, decay_time=0.5,
                      seed=1)
    assert isinstance(sim, SyntheticMovie)
    assert sim.movie.shape == (200, 48, 64) and sim.movie.dtype == np.float32
    assert sim.footprints.shape == (6, 48, 64)
    np.testing.assert_allclose(sim.footprints.reshape(6, -1).max(1), 1.0)
    assert sim.calcium.shape == sim.spikes.shape == (6, 200)
    assert sim.shifts.shape == (200, 2) and not sim.shifts.any()
    g = np.exp(-1 / (0.5 * 20))
    assert np.isclose(sim.params["g"], g)
    assert sim.params["gSig"] == (3, 3) and sim.params["fr"] == 20
    # calcium is the AR(1) response to the spikes
    np.testing.assert_allclose(lfilter([1], [1, -g], sim.spikes, axis=1), sim.calcium,
                               rtol=1e-4, atol=1e-3)
    assert (sim.spikes > 0).any(axis=1).all()
    # the noiseless model explains the movie up to shot + read noise
    clean = (np.tensordot(sim.calcium.T, sim.footprints, axes=1)
             + sim.background["baseline"]
             + np.tensordot(sim.background["temporal"].T, sim.background["spatial"], axes=1))
    resid = sim.movie - clean
    assert abs(resid.mean()) < 0.1
    assert np.allclose(resid.var(), (clean.mean() + 2.0**2), rtol=0.1)  # Poisson + read noise
    assert sim.masks().shape == (6, 48, 64) and sim.masks().any(axis=(1, 2)).all()


def test_simulate_2p_is_deterministic_and_seeded():
    a = simulate_2p(n_frames=50, shape=(32, 32), n_neurons=3, seed=7)
    b = simulate_2p(n_frames=50, shape=(32, 32), n_neurons=3, seed=7)
    c = simulate_2p(n_frames=50, shape=(32, 32), n_neurons=3, seed=8)
    np.testing.assert_array_equal(a.movie, b.movie)
    assert not np.array_equal(a.movie, c.movie)


def test_simulate_2p_motion_and_uint16():
    still = simulate_2p(n_frames=100, shape=(64, 64), n_neurons=5, seed=3, noise=0.5)
    moving = simulate_2p(n_frames=100, shape=(64, 64), n_neurons=5, seed=3, noise=0.5, motion=4,
                         dtype="uint16")
    assert moving.movie.dtype == np.uint16
    assert np.abs(moving.shifts).max() <= 4 + 1e-6 and np.abs(moving.shifts).max() > 1
    # frame t shows the scene moved by shifts[t]: the brightest soma's peak moves with it
    t = int(np.argmax(np.abs(moving.shifts).sum(1)))
    k = int(np.argmax(moving.calcium[:, t]))
    y0, x0 = np.unravel_index(np.argmax(moving.footprints[k]), (64, 64))
    dy, dx = moving.shifts[t]
    frame = moving.movie[t].astype(float) - moving.background["baseline"]
    win = frame[int(y0 + dy) - 6:int(y0 + dy) + 7, int(x0 + dx) - 6:int(x0 + dx) + 7]
    assert win.mean() > frame.mean()
    assert still.shifts.shape == (100, 2)


def test_simulate_1p_background_dominates(tmp_path):
    sim = simulate_1p(n_frames=100, shape=(64, 64), n_neurons=8, seed=0)
    cells = np.tensordot(sim.calcium.T, sim.footprints, axes=1)
    bg = sim.background["baseline"].mean()
    assert bg > 5 * np.percentile(cells.max(axis=0), 99) / 3  # background 5-10x the cells
    # the background changes over time
    assert sim.background["temporal"].std(axis=1).min() > 0.01
    path = save_tiff(tmp_path / "m.tif", sim.movie)
    import tifffile

    assert tifffile.imread(path).shape == (100, 64, 64)


def test_simulate_dim_2p_photon_counts_and_exact_shifts():
    from scipy import ndimage

    from mesmerize_helpers.synthetic import simulate_dim_2p

    sim = simulate_dim_2p(n_frames=120, shape=(64, 80), seed=3)
    assert sim.movie.shape == (120, 64, 80) and sim.movie.dtype == np.float32
    assert sim.shifts.shape == (120, 2) and np.abs(sim.shifts).max() <= 5
    whole = np.all(sim.shifts == np.round(sim.shifts), axis=1)
    assert 0.3 < whole.mean() < 0.7  # about half the frames move by whole pixels
    # a few photons per pixel: neuropil 2-10 under a vignette, neurons up to 30-60
    assert 3 < np.median(sim.movie) < 9
    assert 25 < np.percentile(sim.movie, 99.99) < 90
    assert sim.calcium.shape == (sim.n_neurons, 120) and sim.footprints.shape[1:] == (64, 80)
    # the scene moves exactly by the shifts: without noise, frame b is frame a moved by
    # shifts[b] - shifts[a] (the vignette does not move; divide it out)
    bright = simulate_dim_2p(n_frames=120, shape=(64, 80), seed=3, photons=1e6,
                             read_noise=0.0, dff=0.0)
    light = bright.background["light"]
    a, b = 0, 1 + int(np.argmax(np.abs(bright.shifts[1:] - bright.shifts[0]).sum(axis=1)))
    moved = ndimage.shift(bright.movie[a] / light, bright.shifts[b] - bright.shifts[a], order=3)
    inner = (slice(12, -12), slice(12, -12))
    target = bright.movie[b] / light
    assert np.abs(moved - target)[inner].max() < 0.02 * target[inner].mean()
    np.testing.assert_array_equal(sim.shifts, simulate_dim_2p(n_frames=120, shape=(64, 80),
                                                             seed=3).shifts)
def test_simulate_2p_dense_is_dim_crowded_and_follows_its_model():
    sim = simulate_2p_dense(n_frames=300, shape=(96, 96), n_neurons=25, seed=3)
    n = sim.n_neurons
    assert sim.movie.shape == (300, 96, 96) and sim.footprints.shape == (n, 96, 96)
    np.testing.assert_allclose(sim.footprints.reshape(n, -1).max(1), 1.0)
    # dim: a couple of photons per pixel and frame
    assert 1.0 < sim.movie.mean() < 3.0
    # the noiseless model explains the movie up to shot + read noise
    clean = (np.tensordot(sim.calcium.T, sim.footprints, axes=1) + sim.background["baseline"]
             + np.tensordot(sim.background["temporal"].T, sim.background["spatial"], axes=1))
    resid = sim.movie - clean
    assert abs(resid.mean()) < 0.05
    np.testing.assert_allclose(resid.var(), clean.mean() + 0.2**2, rtol=0.05)
    # at rest, a soma's cytoplasm is about as bright as the neuropil around it
    masks = sim.masks(0.2)
    ring = ndimage.binary_dilation(masks.any(0), iterations=3) & ~masks.any(0)
    base = sim.background["baseline"]
    ratio = np.median([base[m].max() for m in masks]) / np.median(base[ring])
    assert 0.8 < ratio < 1.5
    # a nucleus: the centre of a soma is dimmer than its brightest ring
    centre = [sim.footprints[k][tuple(np.round(ndimage.center_of_mass(masks[k])).astype(int))]
              for k in range(n)]
    assert np.median(centre) < 0.8
    # somata touch: masks of neighbours share or abut pixels
    grown = np.stack([ndimage.binary_dilation(m) for m in masks])
    assert (grown.sum(0) > 1).any()
    # some never fire, the others do, with AR(1) calcium from the spikes
    firing = sim.spikes.any(1)
    assert 0 < (~firing).sum() < n / 2
    np.testing.assert_allclose(lfilter([1], [1, -sim.params["g"]], sim.spikes, axis=1),
                               sim.calcium, rtol=1e-4, atol=1e-3)


def test_simulate_2p_dense_filled_somata():
    kw = {"n_frames": 60, "shape": (64, 64), "n_neurons": 12, "seed": 5}
    plain = simulate_2p_dense(**kw)
    # filled=0 draws nothing more: the same movie as before the option
    np.testing.assert_array_equal(simulate_2p_dense(**kw, filled=0.0).movie, plain.movie)
    assert not plain.background["filled"].any()
    sim = simulate_2p_dense(**kw, filled=0.5)
    filled = sim.background["filled"]
    assert 0 < filled.sum() < sim.n_neurons
    # the same places; a filled soma has no dark nucleus: its centre is near its peak
    np.testing.assert_allclose(centroids_of(sim.footprints), centroids_of(plain.footprints),
                               atol=0.5)
    masks = sim.masks(0.2)
    centre = np.array([sim.footprints[k][tuple(np.round(ndimage.center_of_mass(masks[k]))
                                               .astype(int))] for k in range(sim.n_neurons)])
    assert centre[filled].min() > centre[~filled].max()
    # and it is brighter at rest than the same soma unfilled (1.5-2.5 times)
    ratio = sim.background["resting"] / plain.background["resting"]
    np.testing.assert_allclose(ratio[~filled], 1.0, rtol=1e-6)
    assert np.all((ratio[filled] >= 1.5) & (ratio[filled] <= 2.5))
    with pytest.raises(ValueError, match="filled"):
        simulate_2p_dense(**kw, filled=1.5)


def centroids_of(footprints: np.ndarray) -> np.ndarray:
    return np.array([ndimage.center_of_mass(f) for f in footprints])
