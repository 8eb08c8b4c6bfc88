"""A cnmfe item end to end: workflow run, ring background through the accessors, HDF5 round
trip of the ring model, dF/F and re-evaluation persisted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_ring_model_fit

import mesmerize_helpers as mh
from mesmerize_helpers.runner import snakemake_command
from mesmerize_helpers.scoring import row_correlation
from mesmerize_helpers.synthetic import save_tiff, simulate_1p

PARAMS = {"main": {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5,
                   "nb": 0, "ssub_B": 2}, "refit": True}


@pytest.fixture(scope="module")
def cnmfe_batch(tmp_path_factory):
    """One snakemake run of three cnmfe items on a simulated 1p movie: unseeded (row 0), and
    seeded with the true cells' masks as mesmerize-core's test_seeded_cnmfe writes it
    (``params["Ain_path"]``: an absolute path to CaImAn's Ain pickled as a sparse matrix;
    row 1) and as this project's ``params["Ain"]`` ((y, x, n) masks, a path relative to the
    raw-data dir; row 2)."""
    folder = tmp_path_factory.mktemp("cnmfe")
    sim = simulate_1p(n_frames=300, shape=(64, 64), n_neurons=8, seed=2)
    raw = folder / "raw"
    raw.mkdir()
    movie = save_tiff(raw / "one_photon.tif", sim.movie)
    masks = sim.masks(0.3).transpose(1, 2, 0)  # (y, x, n)
    ain = sp.csc_matrix(masks.reshape(-1, masks.shape[2], order="F"))
    np.save(folder / "Ain_cnmfe.npy", ain, allow_pickle=True)
    np.save(raw / "seeds.npy", masks)
    mh.set_parent_raw_data_path(raw)
    df = mh.create_batch(folder / "batch" / "batch.tsv")
    df.caiman.add_item("cnmfe", "1p", movie, PARAMS)
    with_path = {**PARAMS, "Ain_path": folder / "Ain_cnmfe.npy", "refit": False}
    df.caiman.add_item("cnmfe", "Ain_path", movie, with_path)
    df.caiman.add_item("cnmfe", "Ain", movie, {**PARAMS, "Ain": "seeds.npy"})
    path = df.paths.get_batch_path()
    result = subprocess.run(snakemake_command(path, [], cores=1), cwd=path.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return df.caiman.reload_from_disk(), sim, raw


@pytest.fixture
def cnmfe_row(cnmfe_batch):
    df, sim, raw = cnmfe_batch
    mh.set_parent_raw_data_path(raw)  # conftest resets it before every test
    return df.iloc[0], sim


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


def test_seeded_cnmfe_items(cnmfe_batch):
    """Both seeded items keep every seeded cell, each on its own mask, with the ring
    background, and traces that follow the true calcium."""
    df, sim, raw = cnmfe_batch
    mh.set_parent_raw_data_path(raw)
    for _, row in df.iloc[1:].iterrows():
        assert row["outputs"]["success"] is True, row["outputs"]["traceback"]
        output = row.cnmf.get_output()
        est = output.estimates
        assert sorted(est.seed_index) == list(range(sim.n_neurons)), row["item_name"]
        assert "W" in output.extra
        corr = row_correlation(sim.calcium[est.seed_index], est.C)
        assert np.median(corr) > 0.85 and corr.min() > 0.6, (row["item_name"], corr)
    row = df.iloc[1]
    assert isinstance(row["params"]["Ain_path"], Path)  # kept as a Path
    # the seed file is part of the run's identity (a new mask file re-runs the item)
    seeds = row.caiman.get_manifest()["identity"]["files"]["seeds"]
    assert Path(seeds["path"]) == row["params"]["Ain_path"]
