"""CNMF patches as separate jobs (scatter) merged and refitted by the item's job (gather)."""

from __future__ import annotations

import subprocess

import numpy as np

import mesmerize_helpers as mh
from mesmerize_helpers.runner import snakemake_command
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

PARAMS = {
    "main": {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 1, "K": 4, "gSig": [3, 3],
             "rf": 16, "stride": 6, "merge_thr": 0.8, "min_SNR": 2.5, "rval_thr": 0.8},
    "refit": True,
}


def test_scattered_patches_equal_the_single_job_fit(tmp_path):
    sim = simulate_2p(n_frames=300, shape=(64, 64), n_neurons=12, seed=5)
    movie = save_tiff(tmp_path / "sim.tif", sim.movie)
    df = mh.create_batch(tmp_path / "batch.tsv")
    single = df.caiman.add_item("cnmf", "sim", movie, PARAMS)
    scattered = df.caiman.add_item("cnmf", "sim", movie, {**PARAMS, "scatter_patches": True})
    path = df.paths.get_batch_path()
    result = subprocess.run(snakemake_command(path, [], cores=2), cwd=path.parent,
                            capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]

    df = df.caiman.reload_from_disk()
    folder = df.caiman.uloc(scattered).caiman.get_output_dir()
    patch_files = sorted((folder / "patches").glob("*.npz"))
    assert len(patch_files) == 9  # a 3x3 grid of 32 px patches overlapping by 6 px on 64 px
    assert log.count("rule cnmf_patch:") == 9  # each patch was its own job

    a = df.caiman.uloc(single).cnmf.get_output()
    b = df.caiman.uloc(scattered).cnmf.get_output()
    assert a.A.shape == b.A.shape and a.A.shape[1] > 0
    np.testing.assert_allclose(a.A.toarray(), b.A.toarray(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.C, b.C, rtol=1e-3, atol=1e-3 * np.abs(a.C).max())
    np.testing.assert_array_equal(a.idx_components, b.idx_components)
