"""Seeded CNMF from the somata of the mean image (``params["Ain"] = "somata"``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

import mesmerize_helpers as mh
from mesmerize_helpers import workflow_support as ws
from mesmerize_helpers.jobs import run_item
from mesmerize_helpers.runner import snakemake_command
from mesmerize_helpers.scoring import centroids, match_by_centroid
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

MAIN = {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 1, "gSig": [3, 3], "rf": 16, "stride": 6,
        "K": 4, "merge_thr": 0.8, "min_SNR": 2.5, "rval_thr": 0.8}
# simulate_2p's somata are filled (no dark nucleus): bright polarity
SEEDED = {"main": MAIN, "refit": True, "Ain": "somata", "somata": {"polarity": "bright"},
          "scatter_patches": True}


def test_somata_seeds_through_the_workflow(tmp_path):
    sim = simulate_2p(n_frames=300, shape=(64, 64), n_neurons=12, seed=6)
    movie = save_tiff(tmp_path / "sim.tif", sim.movie)
    df = mh.create_batch(tmp_path / "batch.tsv")
    uuid = df.caiman.add_item("cnmf", "sim", movie, SEEDED)
    path = df.paths.get_batch_path()
    result = subprocess.run(snakemake_command(path, [], cores=1), cwd=path.parent,
                            capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    # a seeded fit has no patches: scatter_patches makes no patch jobs for it
    assert "rule cnmf_patch:" not in log

    row = df.caiman.reload_from_disk().caiman.uloc(uuid)
    seeds = np.load(row.paths.resolve(row["outputs"]["seed-masks-path"]))  # batch-relative
    assert seeds.ndim == 3 and seeds.shape[:2] == (64, 64) and seeds.dtype == bool
    true_centres = centroids(sim.footprints)
    found = match_by_centroid(true_centres, centroids(seeds.transpose(2, 0, 1)), 3.0)
    assert found.recall >= 0.8 and found.precision >= 0.9, found

    est = row.cnmf.get_output()
    assert np.all(est.seed_index >= 0) and est.seed_index.max() < seeds.shape[2]
    good = est.footprints(est.idx_components)
    m = match_by_centroid(true_centres, centroids(good), 3.0)
    assert m.recall >= 0.8 and m.precision >= 0.9, m


def test_somata_seeds_bad_option_names_it(tmp_path):
    sim = simulate_2p(n_frames=60, shape=(32, 32), n_neurons=3, seed=1)
    movie = save_tiff(tmp_path / "sim.tif", sim.movie)
    params = {**SEEDED, "somata": {"min_zz": 2.0}}
    manifest = run_item(tmp_path / "item", uuid="x", algo="cnmf", params=params,
                        input_movie=movie, progress=False)
    assert not manifest["success"]
    assert "min_zz" in manifest["traceback"] and "min_z" in manifest["traceback"]


def test_somata_seeds_reuse_the_parents_mean_image(tmp_path, monkeypatch):
    # an mcorr parent saved the mean of the movie the cnmf item reads: no second pass over it
    from mesmerize_helpers.engine import images
    from mesmerize_helpers.manifest import write_manifest

    sim = simulate_2p(n_frames=100, shape=(48, 48), n_neurons=6, seed=2)
    parent = tmp_path / "parent"
    parent.mkdir()
    np.save(parent / "mcorr.npy", sim.movie.astype(np.float32))
    np.save(parent / "mean_projection.npy", sim.movie.mean(axis=0).astype(np.float32))
    write_manifest(parent, {"success": True, "outputs": {
        "mcorr-output-path": "mcorr.npy", "mean-projection-path": "mean_projection.npy"}})
    seen = []
    for name in ("projections", "summary_images"):  # every pass that makes a mean image
        real = getattr(images, name)
        monkeypatch.setattr(images, name, lambda movie, *a, _real=real, **k: seen.append(
            movie.shape) or _real(movie, *a, **k))
    params = {**SEEDED, "scatter_patches": False, "refit": False}
    manifest = run_item(tmp_path / "item", uuid="x", algo="cnmf", params=params,
                        input_movie="unused", parent_dir=parent, progress=False)
    assert manifest["success"], manifest["traceback"]
    # neither the seeds nor the images the parent lacks (max, std, corr) take a pass of
    # their own: those come from the pass that writes the movie's pixel-major copy
    assert len(seen) == 0
    assert {"max-projection-path", "std-projection-path", "corr-img-path"} <= set(
        manifest["outputs"])
    seeds = np.load(tmp_path / "item" / manifest["outputs"]["seed-masks-path"])
    assert seeds.shape[:2] == (48, 48) and seeds.shape[2] >= 3


def test_somata_seeds_need_no_input_file():
    item = {"uuid": "x", "algo": "cnmf", "params": SEEDED, "parent": None}
    assert ws.item_ain(item, Path("batch.tsv"), None) == []
    assert not ws._scatters(item)
