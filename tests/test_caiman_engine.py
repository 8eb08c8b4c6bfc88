"""``engine: caiman``: an mcorr -> cnmf batch run by real CaImAn through the workflow.

Skipped without CaImAn (CI has none: it is not on PyPI; ``conda install -c conda-forge
caiman``). Ground truth comes from :func:`mesmerize_helpers.synthetic.simulate_2p`.

Shift tolerance: registration is relative to CaImAn's template, a median of the movie's own
frames, so its shifts equal the true correction ``-sim.shifts`` only up to a constant (the
template's offset from the unshifted scene); we remove the median difference. What remains
on this small (64 x 64), sparse and noisy movie is about 0.35 / 0.65 px rms in y / x for
CaImAn (about 0.45 / 0.9 px for the built-in engine on the same movie): subpixel jitter of a
template match on a handful of cells, worst at the simulation's sudden jumps. We require an
rms error below 1 px on each axis and a correlation above 0.8 with the true correction; a
wrong sign or swapped axes gives a correlation near -1 or 0 and fails.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import assert_ring_model_fit
from scipy.ndimage import center_of_mass

caiman = pytest.importorskip(
    "caiman.source_extraction.cnmf",
    reason="CaImAn is not installed (it is not on PyPI, so CI runs without it; "
           "conda install -c conda-forge caiman)",
)

import mesmerize_helpers as mh  # noqa: E402
from mesmerize_helpers.pixel_major import YR_GLOB  # noqa: E402
from mesmerize_helpers.runner import snakemake_command  # noqa: E402
from mesmerize_helpers.synthetic import save_tiff, simulate_1p, simulate_2p  # noqa: E402

MCORR = {"main": {"max_shifts": [6, 6], "pw_rigid": False, "border_nan": "copy"}}
MCORR_PW = {"main": {**MCORR["main"], "pw_rigid": True, "strides": [24, 24],
                     "overlaps": [12, 12], "max_deviation_rigid": 3}}
CNMF = {"main": {"K": 15, "gSig": [4, 4], "p": 1, "nb": 1, "rf": None, "fr": 30.0,
                 "decay_time": 0.4, "use_cnn": False},
        "refit": True, "eval": {"min_SNR": 2.5, "rval_thr": 0.8}}
# the built-in engine's CNMF-E test settings (tests/test_engine_cnmfe.py explains min_pnr)
CNMFE = {"main": {"gSig": [3, 3], "gSiz": [13, 13], "fr": 10, "decay_time": 0.6,
                  "min_corr": 0.8, "min_pnr": 5, "p": 1, "rf": None}}


@pytest.fixture(scope="module")
def caiman_batch(tmp_path_factory):
    """Run by snakemake with engine=caiman: mcorr -> cnmf on a simulated 2p movie with
    motion (rows 0, 1); pw-rigid mcorr (2); cnmf seeded with the true masks (3); CNMF-E on a
    simulated 1p movie (4); cnmf seeded with the somata of the mean image (5); CNMF-E
    seeded with the 1p movie's true masks by mesmerize-core's ``Ain_path`` (6)."""
    folder = tmp_path_factory.mktemp("caiman_engine")
    sim = simulate_2p(n_frames=300, shape=(64, 64), n_neurons=10, motion=3, seed=1)
    movie = save_tiff(folder / "sim.tif", sim.movie)
    sim1p = simulate_1p(n_frames=300, shape=(64, 64), n_neurons=8, seed=2)
    movie1p = save_tiff(folder / "sim1p.tif", sim1p.movie)
    seeds = folder / "seeds.npy"
    np.save(seeds, (sim.footprints > 0.3).transpose(1, 2, 0))  # (y, x, n) masks
    masks1p = sim1p.masks(0.3).transpose(1, 2, 0)
    ain1p = folder / "Ain_cnmfe.npy"  # CaImAn's Ain, as mesmerize-core's test_seeded_cnmfe
    np.save(ain1p, sp.csc_matrix(masks1p.reshape(-1, masks1p.shape[2], order="F")))
    batch_path = folder / "batch" / "batch.tsv"
    df = mh.create_batch(batch_path)
    df.caiman.add_item("mcorr", "sim", movie, MCORR)
    df.caiman.add_item("cnmf", "sim", df.iloc[0], CNMF)
    df.caiman.add_item("mcorr", "pw", movie, MCORR_PW)
    df.caiman.add_item("cnmf", "seeded", df.iloc[0], {**CNMF, "Ain": str(seeds)})
    df.caiman.add_item("cnmfe", "1p", movie1p, CNMFE)
    df.caiman.add_item("cnmf", "somata", df.iloc[0],
                       {**CNMF, "Ain": "somata", "somata": {"polarity": "bright"}})
    df.caiman.add_item("cnmfe", "seeded 1p", movie1p, {**CNMFE, "Ain_path": ain1p})
    cmd = snakemake_command(batch_path, [], cores=1)
    at = cmd.index("--config") + 1
    cmd[at:at] = ["engine=caiman"]  # one --config with all values (a second would replace it)
    result = subprocess.run(cmd, cwd=batch_path.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return mh.load_batch(batch_path), sim, sim1p


def test_manifests_name_caiman(caiman_batch):
    df, _, _ = caiman_batch
    for _, row in df.iterrows():
        manifest = row.caiman.get_manifest()
        assert manifest["success"] and manifest["engine"] == "caiman"
        assert manifest["engine_version"].startswith("caiman ")
        folder = row.caiman.get_output_dir()
        # CaImAn's temporary files are gone; the item's pixel-major movie (YR_GLOB) stays
        leftovers = set(folder.glob("*.mmap")) - set(folder.glob(YR_GLOB))
        assert not leftovers and not (folder / "caiman_tmp").exists()


def test_mcorr_output_and_shifts(caiman_batch):
    df, sim, _ = caiman_batch
    row = df.iloc[0]
    registered = row.mcorr.get_output()
    assert isinstance(registered, np.memmap) and registered.shape == (300, 64, 64)
    assert registered.dtype == np.float32 and registered.flags.c_contiguous
    assert np.isfinite(registered).all()
    # registered in the scene's frame: its mean image matches the simulation's
    assert np.corrcoef(registered.mean(0).ravel(), sim.movie.mean(0).ravel())[0, 1] > 0.95
    y_shifts, x_shifts = row.mcorr.get_shifts()  # axis 0 first, as mesmerize-core
    assert x_shifts.shape == y_shifts.shape == (300,)
    found = np.stack([y_shifts, x_shifts], axis=1)
    true = -sim.shifts
    error = found - true
    error -= np.median(error, axis=0)  # up to the template's constant offset
    rms = np.sqrt((error ** 2).mean(axis=0))
    assert (rms < 1.0).all(), rms
    for axis in range(2):
        assert np.corrcoef(found[:, axis], true[:, axis])[0, 1] > 0.8
    assert row.caiman.get_projection("mean").shape == (64, 64)
    assert row.caiman.get_corr_image().shape == (64, 64)


def test_cnmf_finds_the_neurons(caiman_batch):
    df, sim, _ = caiman_batch
    row = df.iloc[1]
    n = row.cnmf.get_n_components()
    good = row.cnmf.get_good_components()
    assert 0 < len(good) <= n
    contours, coms = row.cnmf.get_contours("good")  # (row, column), as mesmerize-core
    assert len(contours) == len(coms) == len(good)
    temporal = row.cnmf.get_temporal("good")
    assert temporal.shape == (len(good), 300) and np.isfinite(temporal).all()
    spatial = row.cnmf.get_spatial("good")
    assert spatial.shape == (64, 64, len(good))
    # each true neuron with a good component within 2 px whose trace follows its calcium
    true_centres = np.array([center_of_mass(f) for f in sim.footprints])
    found_centres = np.asarray(coms)  # (y, x) with swap_dim=True
    matched = 0
    for i, centre in enumerate(true_centres):
        dist = np.linalg.norm(found_centres - centre, axis=1)
        j = int(np.argmin(dist))
        if dist[j] < 2.0 and np.corrcoef(temporal[j], sim.calcium[i])[0, 1] > 0.8:
            matched += 1
    assert matched >= 7, matched  # of 10 simulated neurons (CaImAn finds 9 here)
    assert len(good) <= 13  # few false positives


def _rms_error(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    error = found - true
    error -= np.median(error, axis=0)
    return np.sqrt((error ** 2).mean(axis=0))


def test_pw_rigid_shifts(caiman_batch):
    df, sim, _ = caiman_batch
    row = df.iloc[2]
    y_shifts, x_shifts = row.mcorr.get_shifts()
    n_patches = x_shifts.shape[1]
    assert x_shifts.shape == y_shifts.shape == (300, n_patches) and n_patches > 1
    rigid_y, rigid_x = row.mcorr.get_shifts(pw_rigid=False)
    assert rigid_x.shape == (300,)
    # the motion is rigid: the patches' mean shift follows the true correction (tolerance as
    # for rigid shifts); single 36 x 36 px patches hold 2-3 cells and scatter more (about
    # 1 px rms), within max_deviation_rigid of the rigid shift as CaImAn constrains them
    found = np.stack([y_shifts.mean(axis=1), x_shifts.mean(axis=1)], axis=1)
    rms = _rms_error(found, -sim.shifts)
    assert (rms < 1.0).all(), rms
    for axis in range(2):
        assert np.corrcoef(found[:, axis], -sim.shifts[:, axis])[0, 1] > 0.8
    rigid = np.stack([rigid_y, rigid_x], axis=1)[:, :, None]
    deviation = np.abs(np.stack([y_shifts, x_shifts], axis=1) - rigid)
    assert deviation.max() <= 3 + 0.1
    folder = row.caiman.get_output_dir()
    centres = np.load(folder / "patch_centers.npy")
    assert centres.shape[-1] == 2 and centres.shape[0] * centres.shape[1] == n_patches
    assert row.mcorr.get_output().shape == (300, 64, 64)


def test_seeded_cnmf_keeps_the_seeds(caiman_batch):
    df, sim, _ = caiman_batch
    row = df.iloc[3]
    n = row.cnmf.get_n_components()
    assert 8 <= n <= sim.n_neurons  # seeds may merge (CaImAn appends merged ones), none added
    spatial = row.cnmf.get_spatial()
    seeds = sim.footprints > 0.3
    # each component lies mostly inside one seed's mask, and they cover different seeds
    overlap = np.einsum("yxk,jyx->kj", spatial, seeds) / spatial.sum(axis=(0, 1))[:, None]
    assert (overlap.max(axis=1) > 0.5).all(), overlap.max(axis=1)
    assert len(set(overlap.argmax(axis=1))) == n


def test_somata_seeds_reach_caiman(caiman_batch):
    df, sim, _ = caiman_batch
    row = df.iloc[5]
    seeds = np.load(row.paths.resolve(row["outputs"]["seed-masks-path"]))
    # simulate_2p's somata are filled: the bright polarity finds most of them
    true = sim.footprints > 0.3
    on = np.einsum("yxk,jyx->kj", seeds, true)
    assert (on.max(axis=1) > 0).all()  # every seed lies on a cell, each on its own
    assert len(set(on.argmax(axis=1))) == seeds.shape[2] >= 5
    # CaImAn fits one component per seed on it (seeds may merge)
    spatial = row.cnmf.get_spatial()
    assert 5 <= spatial.shape[2] <= seeds.shape[2]
    overlap = np.einsum("yxk,yxj->kj", spatial, seeds) / spatial.sum(axis=(0, 1))[:, None]
    assert (overlap.max(axis=1) > 0.5).all(), overlap.max(axis=1)


def test_cnmfe_ring_model(caiman_batch):
    df, _, sim1p = caiman_batch
    row = df.iloc[4]
    assert_ring_model_fit(row)
    # the accessor's ring background (b0 + W (Y - A C - b0)) is the simulated background
    truth = sim1p.background
    frames = [0, 150, 299]
    true_bg = truth["baseline"][None] + np.einsum(
        "jyx,jt->tyx", truth["spatial"], truth["temporal"][:, frames])
    rcb = np.stack([np.asarray(row.cnmf.get_rcb()[t]) for t in frames])
    for est, true in zip(rcb, true_bg):
        assert np.corrcoef(est.ravel(), true.ravel())[0, 1] > 0.9


def test_seeded_cnmfe_reaches_caiman(caiman_batch):
    """CaImAn gets the seeds (as mesmerize-core passes them: ``Ain``, ``rf=None``,
    ``only_init=False``) and fits one component on each. Only the footprints are checked:
    CaImAn's seeded fit does not use the ring model (it fits a low-rank ``b f``), so its
    traces under a 1p background are CaImAn's to answer for (here 0.3-0.96 correlated with
    the truth, against above 0.9 for the built-in engine's seeded CNMF-E)."""
    df, _, sim1p = caiman_batch
    row = df.iloc[6]
    assert row.caiman.get_manifest()["success"]
    spatial = row.cnmf.get_spatial()
    assert spatial.shape[2] == sim1p.n_neurons
    fp = sim1p.footprints.reshape(sim1p.n_neurons, -1)
    corr = np.corrcoef(spatial.reshape(-1, spatial.shape[2]).T, fp)[:spatial.shape[2],
                                                                    spatial.shape[2]:]
    assert sorted(corr.argmax(axis=1)) == list(range(sim1p.n_neurons))
    assert corr.max(axis=1).min() > 0.85, corr.max(axis=1)


def test_our_memmap_is_caimans(tmp_path, monkeypatch):
    # the adapter writes CaImAn's input itself, a chunk at a time: same bytes as
    # caiman.save_memmap, and caiman.load_memmap reads the same movie from it
    import caiman as cm

    from mesmerize_helpers.caiman_engine import save_caiman_memmap

    monkeypatch.setenv("CAIMAN_TEMP", str(tmp_path))
    movie = np.random.default_rng(0).random((450, 24, 17)).astype(np.float32)
    theirs = cm.save_memmap([movie], base_name="caiman_C", order="C")
    (tmp_path / "ours").mkdir()
    ours = save_caiman_memmap(movie, tmp_path / "ours")
    assert ours.name == os.path.basename(theirs)
    assert ours.read_bytes() == open(theirs, "rb").read()
    Yr, dims, T = cm.load_memmap(str(ours))
    assert dims == (24, 17) and T == 450
    np.testing.assert_allclose(np.reshape(Yr.T, (T, *dims), order="F"), movie + 1e-4,
                               rtol=0, atol=1e-6)
