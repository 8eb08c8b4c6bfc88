"""CaImAn results in: a file in CaImAn's layout, written here with h5py as CaImAn's
``CNMF.save`` writes one (including its quirks: strings as attributes, ``None`` as the text
"NoneType", per-component values as ``|S32`` text), becomes a finished cnmf item whose
accessors, evaluation, dF/F and NWB export work, and that a run leaves alone."""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import mesmerize_helpers as mh
from mesmerize_helpers.batch import batch_states
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

FR, DECAY = 15.0, 0.5


def write_caiman_file(path, sim, accepted=None) -> None:
    """The simulation's own footprints and traces saved in CaImAn 1.12's layout."""
    n, d1, d2 = sim.footprints.shape
    A = sp.csc_matrix(sim.footprints.transpose(0, 2, 1).reshape(n, -1).T.astype(np.float32))
    C = sim.calcium.astype(np.float32)
    movie = sim.movie.astype(np.float32)
    b = movie.mean(axis=0).T.reshape(-1, 1)
    with h5py.File(path, "w") as fh:
        fh.attrs["mmap_file"] = "/somewhere/Yr_d1_48_d2_40_d3_1_order_C_frames_160.mmap"
        fh["dims"] = np.array([d1, d2])
        fh["dview"] = "NoneType"
        fh["skip_refinement"] = False
        est = fh.create_group("estimates")
        for key, value in (("data", A.data), ("indices", A.indices), ("indptr", A.indptr),
                           ("shape", np.array(A.shape))):
            est[f"A/{key}"] = value
        est["C"], est["S"] = C, sim.spikes.astype(np.float32)
        est["YrA"] = (movie.reshape(len(movie), -1, order="F") @ A.toarray()
                      / (A.multiply(A).sum(axis=0).A1)).T - C  # raw projection minus C
        est["b"], est["f"] = b, np.ones((1, len(movie)), np.float32)
        est["sn"] = np.ones(A.shape[0], np.float32)
        est["g"] = np.full((n, 1), 0.9)
        est["bl"] = np.array([str(v) for v in np.zeros(n)], dtype="S32")  # CaImAn's text
        for name in ("c1", "neurons_sn", "F_dff", "W", "b0", "Cn", "ecc"):
            est[name] = "NoneType"
        est["dims"] = np.array([d1, d2])
        if accepted is None:
            est["idx_components"] = "NoneType"
        else:
            est["idx_components"] = np.asarray(accepted)
        params = fh.create_group("params")
        params["data/fr"], params["data/decay_time"] = FR, DECAY
        params["data/dims"] = np.array([d1, d2])
        params["data/fnames"] = np.array([b"/somewhere/sim.tif"])
        params["data"].attrs["caiman_version"] = "1.12.1"
        params["init/K"], params["init/gSig"], params["init/nb"] = n, np.array([4, 4]), 1
        params["init"].attrs["method_init"] = "greedy_roi"
        params["preprocess/p"] = params["temporal/p"] = 1
        params["quality/min_SNR"], params["quality/rval_thr"] = 2.0, 0.8
        params["quality/use_cnn"] = False


@pytest.fixture
def imported(tmp_path):
    sim = simulate_2p(n_frames=160, shape=(48, 40), n_neurons=6, fr=FR, decay_time=DECAY,
                      seed=7)
    (tmp_path / "raw").mkdir()
    movie = save_tiff(tmp_path / "raw" / "sim.tif", sim.movie)
    hdf5 = tmp_path / "lab" / "caiman_results.hdf5"
    hdf5.parent.mkdir()
    write_caiman_file(hdf5, sim)
    df = mh.create_batch(tmp_path / "batch" / "batch.tsv")
    uuid = df.caiman.import_cnmf(hdf5, movie, "sim")
    return df, uuid, sim, hdf5


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_imported_file_is_a_done_cnmf_item(imported):
    df, uuid, sim, hdf5 = imported
    assert df.caiman.uloc(uuid)["algo"] == "cnmf"  # this DataFrame has the row already
    assert batch_states(df.paths.get_batch_path())[uuid].state == "done"
    df = df.caiman.reload_from_disk()
    row = df.caiman.uloc(uuid)
    assert row["outputs"]["success"]
    assert row["params"]["main"] == {"fr": FR, "decay_time": DECAY, "K": 6, "gSig": [4, 4],
                                     "p": 1, "min_SNR": 2.0, "use_cnn": False}  # not defaults
    assert row.cnmf.get_output_path() == hdf5  # read in place
    np.testing.assert_array_equal(row.cnmf.get_temporal(), sim.calcium.astype(np.float32))
    np.testing.assert_allclose(row.cnmf.get_spatial()[..., 2], sim.footprints[2], rtol=1e-6)
    assert row.cnmf.get_output().params.data["fr"] == FR
    assert len(row.cnmf.get_contours()[0]) == 6
    assert row.caiman.get_corr_image().shape == (48, 40)
    np.testing.assert_array_equal(row.cnmf.get_output().estimates.bl, np.zeros(6))
    # the residuals need the input movie: Y - AC - bf over the movie the item now knows
    expected = sim.movie[5] - row.cnmf.get_rcm()[5] - row.cnmf.get_rcb()[5]
    np.testing.assert_allclose(row.cnmf.get_residuals()[5], expected, rtol=1e-4, atol=1e-2)


def test_evaluation_dff_and_nwb_on_imported_results(imported, tmp_path):
    pytest.importorskip("pynwb")
    from nwbinspector import Importance, inspect_nwbfile

    df, uuid, sim, hdf5 = imported
    before = digest(hdf5)
    row = df.caiman.reload_from_disk().caiman.uloc(uuid)
    row.cnmf.run_eval({"min_SNR": 3.0, "rval_thr": 0.5})
    row.cnmf.run_detrend_dfof()
    assert digest(hdf5) == before  # the lab's file is never changed
    df = df.caiman.reload_from_disk()
    row = df.caiman.uloc(uuid)
    assert row.cnmf.get_output_path() == row.caiman.get_output_dir() / "cnmf.hdf5"
    with h5py.File(row.cnmf.get_output_path(), "r") as fh:  # now complete for CaImAn's readers
        np.testing.assert_array_equal(fh["estimates/Cn"][()], row.caiman.get_corr_image())
        assert fh["params/data/fr"][()] == FR and fh["params/init/K"][()] == 6
    assert batch_states(df.paths.get_batch_path())[uuid].state == "done"
    good = row.cnmf.get_good_components()
    assert 0 < len(good) <= 6 and row.cnmf.get_output().params.quality["min_SNR"] == 3.0
    assert row.cnmf.get_detrend_dfof().shape == (6, 160)
    path = row.cnmf.export_nwb(tmp_path / "imported.nwb", subject={
        "subject_id": "m1", "species": "Mus musculus", "sex": "U", "age": "P60D"},
        imaging_plane={"location": "VISp"})
    serious = [m for m in inspect_nwbfile(nwbfile_path=str(path))
               if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    assert serious == []


def test_a_changed_file_or_a_wrong_movie(imported, tmp_path):
    df, uuid, sim, hdf5 = imported
    with h5py.File(hdf5, "r+") as fh:  # someone re-saves the lab's results
        fh["estimates/C"][0, 0] += 1
    later = hdf5.stat().st_mtime + 60  # file times closer than 2 s count as equal
    os.utime(hdf5, (later, later))
    state = batch_states(df.paths.get_batch_path())[uuid]
    assert state.state == "outdated" and "caiman_results.hdf5" in state.reason
    other = save_tiff(tmp_path / "raw" / "other.tif", sim.movie[:, :, :32])
    with pytest.raises(ValueError, match="48 x 40 pixels and its traces 160 frames"):
        df.caiman.import_cnmf(hdf5, other, "wrong")
    assert len(df.caiman.reload_from_disk()) == 1  # nothing added
    not_caiman = tmp_path / "x.hdf5"
    with h5py.File(not_caiman, "w") as fh:
        fh["mov"] = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match="not an estimates file in CaImAn's layout"):
        df.caiman.import_cnmf(not_caiman, other, "x")


def test_import_on_an_mcorr_item(tmp_path):
    """Results made after motion correction: the mcorr item becomes the parent, and the
    imported item is done as long as the parent's run is the one it was imported on."""
    from viewer_batch import run_in_process

    sim = simulate_2p(n_frames=120, shape=(40, 48), n_neurons=5, seed=8)
    (tmp_path / "raw").mkdir()
    movie = save_tiff(tmp_path / "raw" / "sim.tif", sim.movie)
    df = mh.create_batch(tmp_path / "batch" / "batch.tsv")
    df.caiman.add_item("mcorr", "sim", movie, {"main": {"max_shifts": [3, 3],
                                                        "border_nan": "copy"}})
    assert run_in_process(df.iloc[0])["success"]
    hdf5 = tmp_path / "results.hdf5"
    write_caiman_file(hdf5, sim, accepted=[0, 1, 3])
    uuid = df.caiman.import_cnmf(hdf5, df.iloc[0], "sim")
    df = df.caiman.reload_from_disk()
    row = df.caiman.uloc(uuid)
    assert row["parent"] == df.iloc[0]["uuid"]
    np.testing.assert_array_equal(row.cnmf.get_good_components(), [0, 1, 3])
    states = batch_states(df.paths.get_batch_path())
    assert states[uuid].state == "done"
    assert run_in_process(df.iloc[0])["success"]  # the parent re-run: the import is stale
    assert batch_states(df.paths.get_batch_path())[uuid].state == "stale"
