"""A cnmfe item end to end: workflow run, ring background through the accessors, HDF5 round
trip of the ring model, dF/F and re-evaluation persisted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_ring_model_fit

import mesmerize_helpers as mh
from mesmerize_helpers.synthetic import save_tiff, simulate_1p

PARAMS = {"main": {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5,
                   "nb": 0, "ssub_B": 2}, "refit": True}


@pytest.fixture(scope="module")
def cnmfe_row(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnmfe")
    sim = simulate_1p(n_frames=300, shape=(64, 64), n_neurons=8, seed=2)
    movie = save_tiff(folder / "one_photon.tif", sim.movie)
    df = mh.create_batch(folder / "batch.tsv")
    df.caiman.add_item("cnmfe", "1p", movie, PARAMS)
    df.iloc[0].caiman.run()
    return df.caiman.reload_from_disk().iloc[0], sim


def test_cnmfe_item_finds_cells_with_ring_background(cnmfe_row):
    row, sim = cnmfe_row
    assert_ring_model_fit(row)
    pnr = row.caiman.get_pnr_image()
    assert pnr.shape == (64, 64) and pnr.max() > 5
    assert row.caiman.get_corr_image().shape == (64, 64)  # filtered by default for cnmfe


def test_cnmfe_reconstruction_adds_up(cnmfe_row):
    row, sim = cnmfe_row
    movie = np.asarray(row.cnmf.get_cnmf_memmap())
    rcm, rcb, residuals = row.cnmf.get_rcm(), row.cnmf.get_rcb(), row.cnmf.get_residuals()
    frames = slice(100, 110)
    np.testing.assert_allclose(residuals[frames], movie[frames] - rcm[frames] - rcb[frames],
                               atol=1e-2)
    # the ring background carries the bright, drifting 1p background: most of the light
    background_share = np.asarray(rcb[frames]).mean() / movie[frames].mean()
    assert 0.8 < background_share < 1.05, background_share
    # and what is left is about noise-sized, far below the background (~200 counts)
    assert np.abs(np.asarray(residuals[frames])).mean() < 30


def test_cnmfe_dff_and_reevaluation_persist(cnmfe_row):
    row, _ = cnmfe_row
    row.cnmf.run_detrend_dfof()
    dff = row.cnmf.get_detrend_dfof()
    assert np.isfinite(dff).all() and np.abs(dff).max() < 50  # divided by b0, not ~0
    strict = {"min_SNR": 100.0, "rval_thr": 1.0, "SNR_lowest": 99.0}
    row.cnmf.run_eval(strict)
    reloaded = mh.load_batch(row.paths.get_batch_path()).iloc[0]
    assert len(reloaded.cnmf.get_good_components()) == 0
    assert reloaded.caiman.get_manifest()["eval"] == strict
    assert "W" in reloaded.cnmf.get_output().extra  # the rewrite kept the ring model
