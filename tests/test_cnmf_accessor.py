"""The cnmf accessor on an item whose estimates are known exactly (ground-truth factors)."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CNMF

from mesmerize_helpers.cache import Cache, cnmf_cache, parse_size
from mesmerize_helpers.commit import commit, staging_folder
from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.errors import WrongAlgorithmExtensionError
from mesmerize_helpers.io.estimates import save_estimates
from mesmerize_helpers.manifest import write_manifest
from mesmerize_helpers.synthetic import save_tiff, simulate_2p


@pytest.fixture
def truth_item(batch, tmp_path):
    """A cnmf item whose 'fit' is the simulation's own footprints and traces."""
    sim = simulate_2p(n_frames=120, shape=(48, 48), n_neurons=6, seed=3)
    movie_path = save_tiff(tmp_path / "sim.tif", sim.movie)
    uuid = batch.caiman.add_item("cnmf", "sim", movie_path, CNMF)
    row = batch.caiman.uloc(uuid)
    folder = row.caiman.get_output_dir()
    folder.mkdir(parents=True)
    movie = sim.movie.astype(np.float32)
    np.save(folder / "cnmf_memmap.npy", movie)
    n, dims = sim.n_neurons, sim.movie.shape[1:]
    A = sp.csc_matrix(sim.footprints.transpose(0, 2, 1).reshape(n, -1).T)  # Fortran pixel order
    mean = movie.mean(axis=0)
    b = mean.T.reshape(-1, 1)
    f = np.ones((1, movie.shape[0]), np.float32)
    C = sim.calcium.astype(np.float32)
    estimates = Estimates(
        A=A, b=b, C=C, f=f, S=sim.spikes.astype(np.float32), YrA=np.zeros_like(C),
        sn=np.ones(A.shape[0]), g=np.full((n, 1), 0.9), bl=np.zeros(n), c1=np.zeros(n),
        neurons_sn=np.ones(n), dims=dims,
        idx_components=np.array([0, 2, 4]), idx_components_bad=np.array([1, 3, 5]),
    )
    save_estimates(folder / "cnmf.hdf5", estimates, CNMF["main"])
    write_manifest(folder, {"success": True, "outputs": {
        "cnmf-hdf5-path": "cnmf.hdf5", "cnmf-memmap-path": "cnmf_memmap.npy"}})
    return batch.caiman.reload_from_disk().iloc[0], sim, movie, mean


def test_components_and_footprints(truth_item):
    row, sim, _, _ = truth_item
    assert row.cnmf.get_n_components() == 6
    np.testing.assert_array_equal(row.cnmf.get_good_components(), [0, 2, 4])
    np.testing.assert_array_equal(row.cnmf.get_bad_components(), [1, 3, 5])
    spatial = row.cnmf.get_spatial("good")
    assert spatial.shape == (48, 48, 3)
    np.testing.assert_allclose(spatial[:, :, 1], sim.footprints[2], rtol=1e-6)
    masks = row.cnmf.get_masks(np.array([1, 4]), threshold=0.5)  # A's values, as mesmerize-core
    assert masks.shape == (48, 48, 2) and masks.dtype == bool
    np.testing.assert_array_equal(masks[:, :, 0], sim.footprints[1] >= 0.5)
    np.testing.assert_array_equal(masks[:, :, 1], sim.footprints[4] >= 0.5)
    with pytest.raises(ValueError, match="component_indices"):
        row.cnmf.get_spatial("some")


def test_contours_enclose_the_true_centres(truth_item):
    """swap_dim=True (default): (row, column) vertices; False: (column, row). Centres are the
    NaN-mean of the outline (mesmerize-core), within a pixel of the true centre of mass."""
    row, sim, _, _ = truth_item
    contours, coms = row.cnmf.get_contours("all")  # swap_dim=True
    contours_xy, coms_xy = row.cnmf.get_contours("all", swap_dim=False)
    assert len(contours) == len(coms) == 6
    from skimage.measure import points_in_poly

    for k, (contour, com) in enumerate(zip(contours, coms)):
        footprint = sim.footprints[k]
        yy, xx = np.indices(footprint.shape)
        true_com = np.array([(yy * footprint).sum(), (xx * footprint).sum()]) / footprint.sum()
        assert np.isnan(contour[0]).all() and np.isnan(contour[-1]).all()  # CaImAn's pieces
        assert np.linalg.norm(com - true_com) < 1.0
        np.testing.assert_allclose(coms_xy[k], com[::-1], atol=0.2)
        outline = contour[~np.isnan(contour).any(axis=1)]
        assert points_in_poly(true_com[None], outline)[0]
        peak = np.unravel_index(footprint.argmax(), footprint.shape)
        assert points_in_poly(np.array([peak]), outline)[0]


def test_temporal_and_reconstructions(truth_item):
    row, sim, movie, mean = truth_item
    np.testing.assert_allclose(row.cnmf.get_temporal("all"), sim.calcium, rtol=1e-5)
    np.testing.assert_allclose(row.cnmf.get_temporal([2]), sim.calcium[[2]], rtol=1e-5)
    with_bg = row.cnmf.get_temporal([0], add_background=True)
    expected = sim.calcium[0] + (sim.footprints[0] * mean).sum()
    np.testing.assert_allclose(with_bg[0], expected, rtol=1e-4)
    rcm, rcb, residuals = row.cnmf.get_rcm(), row.cnmf.get_rcb(), row.cnmf.get_residuals()
    assert rcm.shape == rcb.shape == residuals.shape == movie.shape
    # rcm frame t = sum_k footprint_k * C[k, t], computed here without any pixel-order logic
    for t in (0, 57, 119):
        expected = np.tensordot(sim.calcium[:, t], sim.footprints, axes=1)
        np.testing.assert_allclose(rcm[t], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rcb[t], mean, rtol=1e-5)
    # Y - rcm - rcb == residuals, for int, slice and range indexing
    for key in (7, slice(10, 20), range(30, 40, 3)):
        full = movie[key] - np.asarray(rcm[key]) - np.asarray(rcb[key])
        np.testing.assert_allclose(residuals[key], full, atol=1e-3)
    assert residuals[5, 10:20, 3].shape == (10,)


def test_detrend_dfof_persists_and_cache_invalidates(truth_item):
    row, sim, _, _ = truth_item
    with pytest.raises(AttributeError, match="run_detrend_dfof"):
        row.cnmf.get_detrend_dfof()
    before = row.cnmf.get_output(return_copy=False)
    assert row.cnmf.get_output(return_copy=False) is before  # cached
    assert row.cnmf.get_output() is not before  # a copy by default
    row.cnmf.run_detrend_dfof(frames_window=60)
    reloaded = row.caiman.get_manifest()
    assert reloaded["detrend_dfof"]["frames_window"] == 60
    dff = row.cnmf.get_detrend_dfof("good")
    assert dff.shape == (3, 120) and np.isfinite(dff).all()
    assert row.cnmf.get_output(return_copy=False) is not before  # the item changed


def test_wrong_algorithm_on_mcorr_row(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, {"main": {}})
    with pytest.raises(WrongAlgorithmExtensionError, match="'mcorr' item"):
        batch.iloc[0].cnmf.get_contours()


def test_cache_respects_size_limit():
    cache = Cache("1K")
    assert parse_size("1.5G") == int(1.5 * 1024 ** 3) and parse_size("10") == 10
    calls = []

    class Item:
        def __init__(self, uuid):
            self._series = {"uuid": uuid}

        def _cache_stamp(self):
            return 0

        @cache.use_cache
        def array(self, n, *, return_copy=True):
            calls.append(n)
            return np.zeros(n)

    Item("a").array(100)  # 800 bytes
    Item("b").array(100)  # evicts a
    assert len(cache.get_cache()) == 1 and cache.get_cache()["bytes"].sum() == 800
    Item("b").array(100)
    assert calls == [100, 100]  # a hit
    Item("c").array(1000)  # too big to keep
    assert list(cache.get_cache()["uuid"]) == ["b"]
    cache.drop_item("b")
    assert len(cache.get_cache()) == 0
    with pytest.raises(ValueError):
        parse_size("lots")
    assert cnmf_cache.size == 1024 ** 3 or cnmf_cache.storage_type == "ITEMS"


def test_getters_never_see_a_commit_half_done(truth_item, monkeypatch):
    """A run commits while a notebook reads the item: its getters wait for the switch and
    then read the new run whole (never "not run" while the manifest is briefly absent, never
    the old manifest's components with the new estimates)."""
    row, _, _, _ = truth_item
    folder = row.caiman.get_output_dir()
    np.testing.assert_array_equal(row.cnmf.get_good_components(), [0, 2, 4])  # cached
    old = row.cnmf.get_output().estimates
    staging = staging_folder(folder, "next")  # the next run, staged as a job stages it
    new = dataclasses.replace(old, C=old.C * 2, idx_components=np.array([1, 3, 5]),
                              idx_components_bad=np.array([0, 2, 4]))
    save_estimates(staging / "cnmf.hdf5", new, CNMF["main"])
    manifest = {**row.caiman.get_manifest(), "run_id": "next"}
    switching, real_replace = threading.Event(), os.replace

    def slow_replace(src, dst):  # the committing thread pauses between its file switches
        if threading.current_thread().name == "commit":
            switching.set()
            time.sleep(0.3)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    job = threading.Thread(target=commit, args=(staging, folder, manifest), name="commit")
    job.start()
    assert switching.wait(5) and not (folder / "manifest.json").exists()  # mid-commit
    good = row.cnmf.get_good_components()
    traces = row.cnmf.get_temporal("good")
    job.join()
    np.testing.assert_array_equal(good, [1, 3, 5])
    np.testing.assert_allclose(traces, 2 * old.C[[1, 3, 5]], rtol=1e-6)
    assert row.caiman.get_manifest()["run_id"] == "next"
