"""A mesmerize-core batch (pickle + its item folders of CaImAn files) opens as it is, and
converts once to a TSV batch that reads and runs like any other.

The batch is built here the way mesmerize-core 0.6 writes one (``algorithms/mcorr.py``,
``cnmf.py``, ``cnmfe.py``): a pickled DataFrame whose ``outputs`` name files relative to the
batch dir, in ``<batch dir>/<uuid>/``: CaImAn's F-order registered ``.mmap`` with the frame
size in its name, ``<uuid>_shifts.npy`` (pw-rigid: (2, frames, patches)), projections,
``<uuid>_cn.npy``, the C-order CNMF ``.mmap`` and ``<uuid>.hdf5`` in the layout of CaImAn's
``CNMF.save`` (strings as group attributes, None as "NoneType", sparse matrices as
data/indices/indptr/shape). The estimates are a simulation's ground truth, so every value
read back is known.
"""

from __future__ import annotations

import uuid as uuid_lib
from pathlib import Path, PurePosixPath

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mesmerize_helpers as mh
from mesmerize_helpers.cli import main
from mesmerize_helpers.contours import caiman_contours
from mesmerize_helpers.errors import (
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    ReadOnlyBatchError,
)
from mesmerize_helpers.legacy_import import import_batch
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

DIMS = (40, 56)
T = 60
MCORR = {"main": {"max_shifts": (6, 6), "strides": (24, 24), "overlaps": (12, 12),
                  "max_deviation_rigid": 3, "border_nan": "copy", "pw_rigid": True}}
CNMF = {"main": {"K": 5, "gSig": (3, 3), "p": 1, "nb": 1, "rf": None, "min_SNR": 2.5,
                 "rval_thr": 0.8, "use_cnn": False, "fr": 30, "decay_time": 0.4},
        "refit": True}


def fortran_pixels(movie: np.ndarray) -> np.ndarray:
    """(frames, y, x) -> CaImAn's (pixels, frames), pixel y + x * d1."""
    return movie.reshape(movie.shape[0], -1, order="F").T


def write_mmap(path: Path, movie: np.ndarray, order: str) -> None:
    yr = fortran_pixels(movie.astype(np.float32))
    out = np.memmap(path, mode="w+", dtype=np.float32, shape=yr.shape, order=order)
    out[:] = yr
    out.flush()


def write_caiman_hdf5(path: Path, est: dict, params: dict) -> None:
    """A file in the layout of CaImAn's ``CNMF.save`` (its save_dict_to_hdf5 conventions)."""

    def put(group: h5py.Group, key: str, value) -> None:
        if value is None:
            group[key] = "NoneType"
        elif isinstance(value, str):
            group.attrs[key] = value
        elif sp.issparse(value):
            m = value.tocsc()
            for name in ("data", "indices", "indptr"):
                group[f"{key}/{name}"] = getattr(m, name)
            group[f"{key}/shape"] = m.shape
        elif isinstance(value, dict):
            sub = group.create_group(key)
            for k, v in value.items():
                put(sub, k, v)
        else:
            group[key] = np.asarray(value)

    with h5py.File(path, "w") as f:
        put(f, "dims", DIMS)
        put(f, "dview", None)
        put(f, "mmap_file", "somewhere.mmap")
        put(f, "estimates", est)
        put(f, "params", params)


@pytest.fixture
def old_batch(tmp_path):
    """mesmerize-core batch: 0 mcorr (pw-rigid), 1 cnmf on its output, 2 cnmfe on the raw
    movie (outputs as Path objects, as mesmerize-core's cnmfe writes them), 3 a failed
    mcorr, 4 an mcorr never run."""
    raw = tmp_path / "raw"
    raw.mkdir()
    sim = simulate_2p(n_frames=T, shape=DIMS, n_neurons=5, seed=4)
    save_tiff(raw / "movie.tif", sim.movie)
    batch_dir = tmp_path / "old"
    batch_dir.mkdir()
    u = [str(uuid_lib.uuid4()) for _ in range(5)]
    registered = sim.movie.astype(np.float32) + 1.5  # any registered movie will do

    # 0: mcorr
    d0 = batch_dir / u[0]
    d0.mkdir()
    mmap0 = d0 / f"{u[0]}-mcorr_els__d1_{DIMS[0]}_d2_{DIMS[1]}_d3_1_order_F_frames_{T}.mmap"
    write_mmap(mmap0, registered, "F")
    rng = np.random.default_rng(0)
    x_els, y_els = rng.normal(size=(T, 6)), rng.normal(size=(T, 6))
    np.save(d0 / f"{u[0]}_shifts.npy", [x_els, y_els])
    for proj, func in (("mean", np.mean), ("std", np.std), ("max", np.max)):
        np.save(d0 / f"{u[0]}_{proj}_projection.npy", func(registered, axis=0))
    np.save(d0 / f"{u[0]}_cn.npy", np.full(DIMS, 0.5, np.float32))
    rel = lambda p: str(PurePosixPath(p.relative_to(batch_dir)))  # noqa: E731
    out0 = {"mcorr-output-path": rel(mmap0), "shifts": rel(d0 / f"{u[0]}_shifts.npy"),
            "corr-img-path": rel(d0 / f"{u[0]}_cn.npy"), "success": True, "traceback": None,
            **{f"{p}-projection-path": rel(d0 / f"{u[0]}_{p}_projection.npy")
               for p in ("mean", "std", "max")}}

    # 1: cnmf on 0's output; estimates = the simulation's truth (unit-norm footprints)
    d1 = batch_dir / u[1]
    d1.mkdir()
    foot = sim.footprints.reshape(sim.n_neurons, -1)
    norms = np.linalg.norm(foot, axis=1)
    A = sp.csc_matrix(fortran_pixels(sim.footprints / norms[:, None, None]))
    C = (sim.calcium * norms[:, None]).astype(np.float64)
    b = fortran_pixels(registered.mean(axis=0)[None])
    f = np.ones((1, T))
    est = {"A": A, "C": C, "b": b, "f": f, "S": np.zeros_like(C), "YrA": 0.1 * np.ones_like(C),
           "R": None, "dims": DIMS, "idx_components": np.array([0, 2, 3]),
           "idx_components_bad": np.array([1, 4]), "SNR_comp": np.arange(5.0),
           "r_values": np.linspace(0, 1, 5), "cnn_preds": np.array([]), "F_dff": None,
           "g": np.full((5, 1), 0.9), "bl": np.zeros(5), "c1": np.zeros(5),
           "neurons_sn": np.ones(5), "sn": np.ones(DIMS[0] * DIMS[1]), "W": None, "b0": None,
           "Cn": np.full(DIMS, 0.25)}
    params = {"data": {"fr": 30, "decay_time": 0.4, "dims": DIMS, "var_name_hdf5": "mov"},
              "quality": {"min_SNR": 2.5, "rval_thr": 0.8, "use_cnn": np.bool_(False)},
              "patch": {"low_rank_background": np.bool_(True), "rf": None},
              "init": {"K": 5, "gSig": (3, 3), "method_init": "greedy_roi"}}
    write_caiman_hdf5(d1 / f"{u[1]}.hdf5", est, params)
    cmmap = d1 / f"{u[1]}_cnmf-memmap_d1_{DIMS[0]}_d2_{DIMS[1]}_d3_1_order_C_frames_{T}.mmap"
    write_mmap(cmmap, registered, "C")
    for proj in ("mean", "std", "max"):
        np.save(d1 / f"{u[1]}_{proj}_projection.npy", registered.mean(axis=0))
    np.save(d1 / f"{u[1]}_cn.npy", np.zeros(DIMS, np.float32))
    out1 = {"cnmf-hdf5-path": rel(d1 / f"{u[1]}.hdf5"), "cnmf-memmap-path": rel(cmmap),
            "corr-img-path": rel(d1 / f"{u[1]}_cn.npy"), "success": True, "traceback": None,
            **{f"{p}-projection-path": rel(d1 / f"{u[1]}_{p}_projection.npy")
               for p in ("mean", "std", "max")}}

    # 2: cnmfe on the raw movie, outputs as Path objects
    d2 = batch_dir / u[2]
    d2.mkdir()
    write_caiman_hdf5(d2 / f"{u[2]}.hdf5", est, params)
    np.save(d2 / f"{u[2]}_mean_projection.npy", registered.mean(axis=0))
    out2 = {"cnmf-hdf5-path": Path(u[2]) / f"{u[2]}.hdf5",
            "mean-projection-path": Path(u[2]) / f"{u[2]}_mean_projection.npy",
            "cnmf-memmap-path": rel(cmmap), "success": True, "traceback": None}

    rows = [
        ("mcorr", "movie", "movie.tif", MCORR, out0, "good one", 12.5),
        ("cnmf", "movie", rel(mmap0), CNMF, out1, None, 3.25),
        ("cnmfe", "movie", "movie.tif", {"main": {"gSig": (3, 3)}}, out2, None, 2.0),
        ("mcorr", "broken", "movie.tif", MCORR,
         {"success": False, "traceback": "Traceback: CaImAn crashed"}, None, 0.5),
        ("mcorr", "pending", "movie.tif", {"main": {"max_shifts": (4, 4), "pw_rigid": False}},
         None, None, None),
    ]
    df = pd.DataFrame([{
        "algo": algo, "item_name": name, "input_movie_path": inp, "params": params,
        "outputs": outputs, "added_time": "2024-05-01T10:00:00", "comments": comments,
        "ran_time": None if outputs is None else "2024-05-01T11:00:00",
        "algo_duration": None if duration is None else f"{duration} sec", "uuid": uuid,
    } for (algo, name, inp, params, outputs, comments, duration), uuid in zip(rows, u)])
    pickle_path = batch_dir / "batch.pickle"
    df.to_pickle(pickle_path)
    return {"pickle": pickle_path, "uuids": u, "raw": raw, "sim": sim, "registered": registered,
            "A": A, "C": C, "b": b, "f": f, "x_els": x_els, "y_els": y_els, "mmap0": mmap0}


def check_reads(df: pd.DataFrame, old: dict, pending_ran: bool = False) -> None:
    """The results of the old items read as mesmerize-core reads them."""
    mcorr, cnmf = df.iloc[0], df.iloc[1]
    np.testing.assert_array_equal(mcorr.mcorr.get_output(), old["registered"])
    assert mcorr.mcorr.get_output_path() == old["mmap0"].resolve()
    shifts = mcorr.mcorr.get_shifts(pw_rigid=True)
    np.testing.assert_array_equal(shifts[0], old["x_els"])
    np.testing.assert_array_equal(shifts[1], old["y_els"])
    np.testing.assert_allclose(mcorr.caiman.get_projection("mean"),
                               old["registered"].mean(axis=0))
    assert (mcorr.caiman.get_corr_image() == 0.5).all()

    fit = cnmf.cnmf.get_output()
    assert (fit.estimates.A != old["A"]).nnz == 0
    np.testing.assert_array_equal(fit.estimates.C, old["C"])
    assert fit.params.quality["min_SNR"] == 2.5 and tuple(fit.params.data["dims"]) == DIMS
    assert fit.params.quality["SNR_lowest"] == 0.5  # CaImAn's default for what was not saved
    assert fit.estimates.Cn.shape == DIMS  # CaImAn attributes we have no field for
    np.testing.assert_array_equal(cnmf.cnmf.get_good_components(), [0, 2, 3])
    np.testing.assert_array_equal(cnmf.cnmf.get_temporal("good"), old["C"][[0, 2, 3]])
    contours = cnmf.cnmf.get_contours()[0]
    for got, expected in zip(contours, caiman_contours(old["A"], DIMS)):
        np.testing.assert_array_equal(got, expected)
    rcm, rcb = cnmf.cnmf.get_rcm(), cnmf.cnmf.get_rcb()
    expected_rcm = (old["A"] @ old["C"][:, 7]).reshape(DIMS, order="F")
    np.testing.assert_allclose(rcm[7], expected_rcm, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(rcb[7], old["registered"].mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(cnmf.cnmf.get_cnmf_memmap(), old["registered"])
    assert cnmf.caiman.get_input_movie_path() == old["mmap0"].resolve()
    np.testing.assert_allclose(cnmf.cnmf.get_residuals()[7],
                               old["registered"][7] - expected_rcm - rcb[7], atol=1e-4)
    assert df.iloc[2].cnmf.get_n_components() == 5  # cnmfe: outputs held Path objects
    assert df.iloc[2].caiman.get_projection("mean").shape == DIMS
    with pytest.raises(BatchItemUnsuccessfulError, match="CaImAn crashed"):
        df.iloc[3].mcorr.get_output()
    if not pending_ran:
        with pytest.raises(BatchItemNotRunError):
            df.iloc[4].mcorr.get_output()


def test_pickle_batch_opens_as_it_is(old_batch):
    mh.set_parent_raw_data_path(old_batch["raw"])
    df = mh.load_batch(old_batch["pickle"])
    u = old_batch["uuids"]
    assert list(df["uuid"]) == u and isinstance(df.attrs["batch_path"], Path)
    assert list(df["parent"]) == [None, u[0], None, None, None]  # from the input paths
    assert df.iloc[0]["outputs"]["mcorr-output-path"].startswith(u[0] + "/")
    check_reads(df, old_batch)
    assert df.caiman.get_children(0) == [u[1]]
    assert df.iloc[0].caiman.get_input_movie_path() == (old_batch["raw"] / "movie.tif").resolve()
    # read-only: nothing rewrites mesmerize-core's files
    for change in (lambda: df.caiman.add_item("mcorr", "x", old_batch["raw"] / "movie.tif", MCORR),
                   lambda: df.caiman.remove_item(4),
                   lambda: df.iloc[4].caiman.run(),
                   lambda: df.iloc[1].cnmf.run_eval({"min_SNR": 1.0})):
        with pytest.raises(ReadOnlyBatchError, match="mesmerize-helpers import"):
            change()


def test_import_keeps_items_lineage_and_results_then_runs(old_batch, tmp_path):
    mh.set_parent_raw_data_path(old_batch["raw"])
    new_path = tmp_path / "old" / "batch.tsv"  # beside the old batch, as a lab would
    df = import_batch(old_batch["pickle"], new_path)
    old = pd.read_pickle(old_batch["pickle"])
    u = old_batch["uuids"]
    assert list(df["uuid"]) == u
    assert list(df["item_name"]) == list(old["item_name"])
    assert list(df["comments"]) == ["good one", None, None, None, None]
    for mine, theirs in zip(df["params"], old["params"]):
        assert mine == theirs  # tuples kept
    assert list(df["parent"]) == [None, u[0], None, None, None]
    assert df.iloc[1].caiman.get_output_dir() == new_path.parent / u[0] / u[1]
    # results readable in place, without a re-run; failures and not-run items as they were
    assert [o is not None and o["success"] for o in df["outputs"]] == [True, True, True, False,
                                                                       False]
    assert df.iloc[4]["outputs"] is None and df.iloc[0]["algo_duration"] == 12.5
    check_reads(df, old_batch)
    assert df.paths.resolve(df.iloc[0]["outputs"]["mcorr-output-path"]) == \
        old_batch["mmap0"].resolve()
    with pytest.raises(FileExistsError):
        import_batch(old_batch["pickle"], new_path)

    # the converted batch runs as any other: the pending item, and a new cnmf item on the
    # imported mcorr item's registered movie (CaImAn's F-order .mmap), in one snakemake call
    df.caiman.add_item("cnmf", "new", df.iloc[0], CNMF)
    assert main(["run", str(new_path), u[4], df.iloc[-1]["uuid"], "--cores", "1"]) == 0
    df = df.caiman.reload_from_disk()
    assert df.iloc[4]["outputs"]["success"] and df.iloc[-1]["outputs"]["success"]
    assert df.iloc[-1].cnmf.get_n_components() > 0
    np.testing.assert_array_equal(df.iloc[-1].caiman.get_input_movie(), old_batch["registered"])
    check_reads(df, old_batch, pending_ran=True)  # the imported results are untouched


def test_cli_import(old_batch, tmp_path, capsys):
    new_path = tmp_path / "converted" / "batch.tsv"
    assert main(["import", str(old_batch["pickle"]), str(new_path), "--no-results"]) == 0
    assert "Imported 5 item(s)" in capsys.readouterr().out
    df = mh.load_batch(new_path)
    assert df["outputs"].isna().all()  # --no-results: every item starts as not run
    # the raw movie is stored relative to the raw data dir, as mesmerize-core stored it
    assert df.iloc[0]["input_movie_path"] == "movie.tif"
    assert main(["import", str(old_batch["pickle"]), str(new_path)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    # results stay readable from a batch in another folder (the old files are not moved)
    elsewhere = tmp_path / "elsewhere" / "batch.tsv"
    assert main(["import", str(old_batch["pickle"]), str(elsewhere)]) == 0
    df = mh.load_batch(elsewhere)
    np.testing.assert_array_equal(df.iloc[1].cnmf.get_temporal(), old_batch["C"])
    np.testing.assert_array_equal(df.iloc[0].mcorr.get_output(), old_batch["registered"])


def test_nwb_export_of_a_mesmerize_core_item(old_batch, tmp_path):
    """A cnmf item of a mesmerize-core batch, read in place, exports as any other."""
    pynwb = pytest.importorskip("pynwb")
    row = mh.load_batch(old_batch["pickle"]).iloc[1]
    path = row.cnmf.export_nwb(tmp_path / "old.nwb", subject={
        "subject_id": "m", "species": "Mus musculus", "sex": "U", "age": "P30D"})
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        assert nwb.imaging_planes["ImagingPlane"].imaging_rate == 30
        np.testing.assert_array_equal(ophys["Fluorescence"]["Denoised"].data[:],
                                      old_batch["C"].T.astype(np.float32))
        # a mesmerize-core pw-rigid parent keeps only its patch shifts
        assert "MotionCorrectionShifts" not in ophys.data_interfaces
        np.testing.assert_array_equal(ophys["PiecewiseMotionCorrectionShifts"].data[:],
                                      np.stack([old_batch["x_els"], old_batch["y_els"]], -1))
        np.testing.assert_array_equal(ophys["SegmentationImages"]["mean"].data[:],
                                      old_batch["registered"].mean(axis=0).T)
