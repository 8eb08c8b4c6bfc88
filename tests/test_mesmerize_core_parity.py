# ruff: noqa: F405  (names come from "from mesmerize_helpers import *", the switch under test)
"""mesmerize-core's own test suite (``tests/test_core.py``) and user-guide notebook flow, ported.

The behaviours (API semantics, return types, shapes, axis orders, paths, errors, the cache) are
mesmerize-core 0.6's; the numbers are not CaImAn's: the movie is simulated here
(``simulate_2p``, 64 x 80 so that a swapped axis changes shapes) and checked against its
ground truth or against the item's own files. The calls are written as a mesmerize-core
notebook writes them (keyword arguments, ``df.iloc[-1]``, reloads, ``.pickle`` batch name).

Ran in one module-scoped batch (one snakemake run per ``run()`` as in the notebook, ~5 s
each): mcorr (pw-rigid) -> cnmf on its output; a second mcorr and a cnmf on the raw movie
(params nested by CaImAn group) for removal; a seeded cnmf from mesmerize-core's
``params["Ain_path"]``. Tests further down use what earlier ones built.
"""

from __future__ import annotations

import copy
import time
import uuid as uuid_lib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import mesmerize_helpers as mh
from mesmerize_helpers import *  # noqa: F403 (the one-line switch from mesmerize_core)
from mesmerize_helpers.accessors import cnmf as cnmf_module
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

SHAPE = (64, 80)
N_FRAMES = 200
# mesmerize-core's tests/params.py and user guide, scaled to a 64 x 80 movie; tuples kept
MCORR = {"main": {"max_shifts": (6, 6), "strides": (32, 32), "overlaps": (16, 16),
                  "max_deviation_rigid": 3, "border_nan": "copy", "pw_rigid": True,
                  "gSig_filt": None}}
CNMF = {"main": {"fr": 30, "p": 1, "nb": 1, "merge_thr": 0.85, "rf": None, "stride": 6,
                 "K": 10, "gSig": [4, 4], "ssub": 1, "tsub": 1, "method_init": "greedy_roi",
                 "min_SNR": 2.0, "rval_thr": 0.7, "use_cnn": False, "decay_time": 0.4},
        "refit": True}
# the same fit, written with CaImAn's groups
CNMF_NESTED = {"main": {"data": {"fr": 30, "decay_time": 0.4},
                        "init": {"K": 8, "gSig": (4, 4), "nb": 1, "ssub": 1, "tsub": 1,
                                 "method_init": "greedy_roi"},
                        "patch": {"rf": None},
                        "temporal": {"p": 1},
                        "quality": {"min_SNR": 2.0, "rval_thr": 0.7, "use_cnn": False}},
               "refit": True}
DATAFRAME_COLUMNS = ["algo", "item_name", "input_movie_path", "params", "outputs",
                     "added_time", "ran_time", "algo_duration", "comments", "uuid"]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """The shared batch: a raw-data dir with the simulated movie, and a batch named like
    mesmerize-core's tests (a ``$`` in the name, ``.pickle`` suffix)."""
    root = tmp_path_factory.mktemp("parity")
    raw = root / "videos"
    raw.mkdir()
    sim = simulate_2p(n_frames=N_FRAMES, shape=SHAPE, n_neurons=8, motion=2.0, seed=3)
    movie = save_tiff(raw / "mcorr.tif", sim.movie)
    return {"root": root, "raw": raw, "sim": sim, "movie": movie,
            "batch_path": root / "tmp" / f"{uuid_lib.uuid4()}$test.pickle"}


@pytest.fixture
def guide(state):
    mh.set_parent_raw_data_path(state["raw"])  # conftest resets it before every test
    return state


def test_create_batch(guide):
    df = create_batch(guide["batch_path"])
    for column in DATAFRAME_COLUMNS:
        assert column in df.columns
    with pytest.raises(FileExistsError):
        create_batch(guide["batch_path"])
    assert isinstance(df.attrs["batch_path"], Path)


def test_mcorr(guide):
    batch_path = guide["batch_path"]
    batch_dir_canon = batch_path.parent.resolve()
    df = load_batch(batch_path)
    assert df.empty and list(df.columns)[:10] == DATAFRAME_COLUMNS
    input_movie_path = guide["movie"]
    df.caiman.add_item(algo="mcorr", item_name="test-mcorr", input_movie_path=input_movie_path,
                       params=MCORR)
    row = df.iloc[-1]
    assert row["algo"] == "mcorr" and row["item_name"] == "test-mcorr"
    assert row["params"] == MCORR  # tuples and all
    assert row["outputs"] is None
    UUID = uuid_lib.UUID(row["uuid"])  # a valid uuid
    assert df.caiman.uloc(UUID)["uuid"] == row["uuid"]  # uloc takes uuid.UUID too
    # the batch path reaches the rows
    assert (df.attrs["batch_path"].resolve() == df.paths.get_batch_path()
            == row.paths.get_batch_path() == row.attrs["batch_path"].resolve())
    # paths relative to the raw data dir
    vid_dir_canon = guide["raw"].resolve()
    rel = input_movie_path.relative_to(guide["raw"])
    assert (df.paths.resolve(rel) == row.paths.resolve(rel) == input_movie_path.resolve())
    split = (vid_dir_canon, input_movie_path.resolve().relative_to(vid_dir_canon))
    assert df.paths.split(input_movie_path) == row.paths.split(input_movie_path) == split
    assert Path(row["input_movie_path"]) == split[1]
    assert (get_full_raw_data_path(row["input_movie_path"]) == vid_dir_canon / "mcorr.tif"
            == df.paths.resolve(row["input_movie_path"]))

    process = row.caiman.run()
    assert hasattr(process, "wait")
    df = load_batch(batch_path)
    row = df.iloc[-1]
    assert row["outputs"]["success"] is True and row["outputs"]["traceback"] is None
    assert row.caiman.get_input_movie_path() == input_movie_path.resolve()

    # every output path resolves from the batch dir, as mesmerize-core stores them
    for key in ("mcorr-output-path", "shifts", "mean-projection-path", "std-projection-path",
                "max-projection-path", "corr-img-path"):
        path = df.paths.resolve(row["outputs"][key])
        assert path == batch_dir_canon / row["outputs"][key] and path.is_file(), key
        assert path.parent.name == row["uuid"]
    assert row.mcorr.get_output_path() == df.paths.resolve(row["outputs"]["mcorr-output-path"])
    movie = row.mcorr.get_output()
    assert movie.shape == (N_FRAMES, *SHAPE) and movie.dtype == np.float32
    np.testing.assert_array_equal(row.caiman.get_projection("mean"),
                                  np.load(df.paths.resolve(row["outputs"]["mean-projection-path"])))
    for proj in ("mean", "std", "max"):
        assert row.caiman.get_projection(proj).shape == SHAPE
    assert row.caiman.get_corr_image().shape == SHAPE
    np.testing.assert_allclose(row.caiman.get_projection("mean"), np.mean(movie, axis=0),
                               rtol=1e-4)


def test_mcorr_shifts_layout(guide):
    """get_shifts as mesmerize-core returns CaImAn's: [axis 0, axis 1]; pw_rigid: each
    (frames, patches). The simulated motion tells the axes apart."""
    row = load_batch(guide["batch_path"]).iloc[0]
    pw = row.mcorr.get_shifts(pw_rigid=True)
    rigid = row.mcorr.get_shifts(pw_rigid=False)
    n_patches = 4  # 64 x 80 with strides 32 and overlaps 16: a 2 x 2 grid
    assert isinstance(pw, list) and len(pw) == 2
    assert pw[0].shape == pw[1].shape == (N_FRAMES, n_patches)
    assert len(rigid) == 2 and rigid[0].shape == rigid[1].shape == (N_FRAMES,)
    truth = -guide["sim"].shifts  # the correction undoes the simulated motion, (y, x)
    for axis in (0, 1):
        assert np.corrcoef(rigid[axis], truth[:, axis])[0, 1] > 0.8
        assert np.corrcoef(pw[axis].mean(axis=1), truth[:, axis])[0, 1] > 0.8
    assert row.mcorr.get_shifts()[0].shape == (N_FRAMES, n_patches)  # as run: pw-rigid


def test_cnmf(guide):
    batch_path = guide["batch_path"]
    batch_dir_canon = batch_path.parent.resolve()
    df = load_batch(batch_path)
    input_movie_path = df.iloc[-1].mcorr.get_output_path()
    df.caiman.add_item(algo="cnmf", item_name="test-cnmf", input_movie_path=input_movie_path,
                       params=CNMF)
    row = df.iloc[-1]
    assert row["params"] == CNMF and row["outputs"] is None
    assert batch_dir_canon.joinpath(row["input_movie_path"]) == input_movie_path
    row.caiman.run()
    df = load_batch(batch_path)
    row = df.iloc[-1]
    assert row["outputs"]["success"] is True and row["outputs"]["traceback"] is None
    assert (input_movie_path == row.caiman.get_input_movie_path()
            == df.paths.resolve(row["input_movie_path"]))
    for key in ("cnmf-hdf5-path", "cnmf-memmap-path", "mean-projection-path", "corr-img-path"):
        assert df.paths.resolve(row["outputs"][key]) == batch_dir_canon / row["outputs"][key]
    assert row.cnmf.get_output_path() == df.paths.resolve(row["outputs"]["cnmf-hdf5-path"])
    # the input movie of a cnmf item on an mcorr output is that output
    np.testing.assert_array_equal(row.caiman.get_input_movie(), df.iloc[0].mcorr.get_output())
    np.testing.assert_array_equal(row.cnmf.get_cnmf_memmap(), df.iloc[0].mcorr.get_output())


def test_cnmf_output_is_caiman_shaped(guide):
    row = load_batch(guide["batch_path"]).iloc[1]
    cnm = row.cnmf.get_output()
    est = cnm.estimates
    K = est.A.shape[1]
    assert sp.issparse(est.A) and est.A.shape == (SHAPE[0] * SHAPE[1], K) and K > 0
    assert est.C.shape == est.YrA.shape == est.S.shape == (K, N_FRAMES)
    assert est.b.shape[0] == SHAPE[0] * SHAPE[1] and est.f.shape[1] == N_FRAMES
    assert tuple(est.dims) == tuple(cnm.dims) == SHAPE
    for name in ("R", "idx_components", "idx_components_bad", "SNR_comp", "r_values",
                 "cnn_preds", "F_dff", "g", "bl", "c1", "neurons_sn", "sn"):
        assert hasattr(est, name), name
    # CaImAn's parameter groups, with the item's values and CaImAn's defaults elsewhere
    assert cnm.params.quality["min_SNR"] == 2.0
    assert cnm.params.get_group("quality")["rval_thr"] == 0.7
    assert cnm.params.get("init", "K") == 10
    assert tuple(cnm.params.data["dims"]) == SHAPE
    assert cnm.params.patch["low_rank_background"] is True  # CaImAn's default
    assert cnm.A is est.A  # today's Estimates fields stay reachable on the object
    # Fortran pixel order: footprint k as an image peaks where the simulation put a neuron
    k = int(np.argmax(est.C.max(axis=1)))
    image = est.A[:, k].toarray().reshape(SHAPE, order="F")
    peak = np.unravel_index(image.argmax(), SHAPE)
    truth = guide["sim"].footprints
    assert truth[:, peak[0], peak[1]].max() > 0.2 * truth.max()


def test_cnmf_getters(guide):
    row = load_batch(guide["batch_path"]).iloc[1]
    est = row.cnmf.get_output().estimates
    K = row.cnmf.get_n_components()
    good = row.cnmf.get_good_components()
    np.testing.assert_array_equal(good, est.idx_components)
    np.testing.assert_array_equal(row.cnmf.get_bad_components(), est.idx_components_bad)
    assert len(good) + len(row.cnmf.get_bad_components()) == K

    masks = row.cnmf.get_masks("good")
    assert masks.shape == (*SHAPE, len(good)) and masks.dtype == bool
    dense = est.A.toarray()
    for i, k in enumerate(good):
        np.testing.assert_array_equal(masks[:, :, i], dense[:, k].reshape(SHAPE, order="F") >= 0.01)

    contours, coms = row.cnmf.get_contours("good")
    assert len(contours) == len(coms) == len(good)
    for contour, com in zip(contours, coms):
        assert contour.ndim == 2 and contour.shape[1] == 2 and np.isnan(contour[0]).all()
        np.testing.assert_allclose(com, np.nanmean(contour, axis=0))
        assert 0 <= com[0] < SHAPE[0] and 0 <= com[1] < SHAPE[1]  # (row, column)
    _, coms_xy = row.cnmf.get_contours("good", swap_dim=False)
    for com, com_xy in zip(coms, coms_xy):
        np.testing.assert_allclose(com_xy, com[::-1], atol=0.3)

    temporal = row.cnmf.get_temporal("good")
    np.testing.assert_allclose(temporal, est.C[good])
    np.testing.assert_allclose(row.cnmf.get_temporal("good", add_residuals=True),
                               est.C[good] + est.YrA[good])
    with_bg = row.cnmf.get_temporal(np.array([0]), add_background=True)
    np.testing.assert_allclose(with_bg, est.C[[0]] + (est.A[:, [0]].T @ est.b) @ est.f,
                               rtol=1e-5)

    # optional component indices, in any order
    ixs = np.array([1, 3, 0, 2])[:K]
    np.testing.assert_array_equal(row.cnmf.get_masks(ixs), row.cnmf.get_masks()[:, :, ixs])
    np.testing.assert_array_equal(row.cnmf.get_temporal(ixs), row.cnmf.get_temporal()[ixs])
    all_contours = row.cnmf.get_contours()[0]
    for i, k in enumerate(ixs):
        np.testing.assert_array_equal(row.cnmf.get_contours(ixs)[0][i], all_contours[k])
    with pytest.raises(ValueError):
        row.cnmf.get_temporal("some")


def test_reconstructions_are_lazy_arrays(guide):
    df = load_batch(guide["batch_path"])
    row = df.iloc[1]
    est = row.cnmf.get_output().estimates
    rcm = row.cnmf.get_rcm("all")
    assert isinstance(rcm, LazyArrayRCM)
    assert rcm.shape == (N_FRAMES, *SHAPE) and rcm.n_frames == N_FRAMES and rcm.ndim == 3
    assert rcm.n_components == est.A.shape[1]
    assert rcm.nbytes == N_FRAMES * SHAPE[0] * SHAPE[1] * rcm.dtype.itemsize
    assert rcm.nbytes_gb == rcm.nbytes / 1e9
    with pytest.warns(UserWarning):
        full = rcm.as_numpy()
    expected = (est.A @ est.C).T.reshape(N_FRAMES, SHAPE[1], SHAPE[0]).transpose(0, 2, 1)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-6)
    for i in np.random.default_rng(0).integers(10, N_FRAMES - 11, size=5):
        np.testing.assert_allclose(rcm[i], expected[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rcm[i - 5:i + 5], expected[i - 5:i + 5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rcm[np.int64(7)], expected[7], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rcm[range(3, 9, 2)], expected[3:9:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rcm[4, 10:20, 5], expected[4, 10:20, 5], rtol=1e-5, atol=1e-6)
    for bad in (N_FRAMES, slice(0, N_FRAMES + 1)):
        with pytest.raises(IndexError):
            rcm[bad]
    # properties, as fastplotlib's ImageWidget uses them
    np.testing.assert_allclose(rcm.mean_image, expected.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert rcm.max_image.shape == rcm.min_image.shape == rcm.std_image.shape == SHAPE
    assert rcm.min <= full.min() + 1e-6 and rcm.max >= full.max() - 1e-6
    good, bad = row.cnmf.get_rcm("good"), row.cnmf.get_rcm("bad")
    np.testing.assert_allclose(good[5] + bad[5], rcm[5], rtol=1e-4, atol=1e-5)
    dff_like = est.C / (est.C.max(axis=1, keepdims=True) + 1)
    np.testing.assert_allclose(row.cnmf.get_rcm(temporal_components=dff_like)[3],
                               (est.A @ dff_like[:, 3]).reshape(SHAPE, order="F"), rtol=1e-5)
    with pytest.raises(ValueError, match="temporal components"):
        row.cnmf.get_rcm(temporal_components=dff_like[:2])

    rcb = row.cnmf.get_rcb()
    assert isinstance(rcb, LazyArrayRCB)
    background = (est.b @ est.f).T.reshape(N_FRAMES, SHAPE[1], SHAPE[0]).transpose(0, 2, 1)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(rcb.as_numpy(), background, rtol=1e-5, atol=1e-4)
    residuals = row.cnmf.get_residuals()
    assert isinstance(residuals, LazyArrayResiduals) and residuals.shape == rcm.shape
    movie = np.asarray(row.caiman.get_input_movie(), dtype=np.float64)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(residuals.as_numpy(), movie - expected - background,
                                   rtol=1e-4, atol=1e-2)


def test_get_input_movie_reader_gets_a_str_and_kwargs(guide):
    row = load_batch(guide["batch_path"]).iloc[0]
    seen = {}

    def reader(path, **kwargs):
        seen.update(path=path, **kwargs)
        return np.zeros((2, *SHAPE))

    assert row.caiman.get_input_movie(reader, flag=3).shape == (2, *SHAPE)
    assert seen == {"path": str(guide["movie"].resolve()), "flag": 3}
    lazy = row.caiman.get_input_movie(LazyTiff)
    assert lazy.shape == (N_FRAMES, *SHAPE) and lazy.n_frames == N_FRAMES
    np.testing.assert_array_equal(lazy[3:5], guide["sim"].movie[3:5].astype(lazy.dtype))


def test_run_eval_and_detrend_dfof(guide):
    df = load_batch(guide["batch_path"])
    row = df.iloc[1]
    with pytest.raises(KeyError, match="not_a_quality_param"):
        row.cnmf.run_eval({"not_a_quality_param": 1})
    with pytest.raises(AttributeError, match="run_detrend_dfof"):
        row.cnmf.get_detrend_dfof()
    K = row.cnmf.get_n_components()
    row.cnmf.run_eval({"min_SNR": 1e6, "rval_thr": 1.01})  # nothing passes
    assert len(row.cnmf.get_good_components()) == 0 and len(row.cnmf.get_bad_components()) == K
    assert row.cnmf.get_output().params.quality["min_SNR"] == 1e6  # saved with the item
    row.cnmf.run_eval({"min_SNR": 2.0, "rval_thr": 0.7})  # back
    assert len(row.cnmf.get_good_components()) > 0

    row.cnmf.run_detrend_dfof(use_residuals=False)
    dff = row.cnmf.get_detrend_dfof()
    assert dff.shape == (K, N_FRAMES) and np.isfinite(dff).all()
    np.testing.assert_array_equal(row.cnmf.get_detrend_dfof(np.array([2, 0])), dff[[2, 0]])
    row.cnmf.run_detrend_dfof()  # use_residuals=True: another baseline signal
    assert not np.allclose(row.cnmf.get_detrend_dfof(), dff)


def test_params_diffs_and_remove_item(guide):
    """The notebook's parameter variants, the loop that runs what has not run, then
    mesmerize-core's test_remove_item."""
    df = load_batch(guide["batch_path"])
    new_params = copy.deepcopy(MCORR)
    new_params["main"]["max_shifts"] = (4, 4)
    df.caiman.add_item(algo="mcorr", item_name=df.iloc[0]["item_name"],
                       input_movie_path=guide["movie"], params=new_params)
    df.caiman.add_item(algo="cnmf", item_name="test3", input_movie_path=guide["movie"],
                       params=CNMF_NESTED)
    diffs = df.caiman.get_params_diffs(algo="mcorr", item_name=df.iloc[0]["item_name"])
    assert list(diffs.columns) == ["max_shifts"] and list(diffs.index) == [0, 2]
    assert diffs.loc[0, "max_shifts"] == (6, 6) and diffs.loc[2, "max_shifts"] == (4, 4)
    cnmf_diffs = df.caiman.get_params_diffs("cnmf", "test-cnmf")
    assert cnmf_diffs.shape == (1, 0)  # one item: nothing differs
    with pytest.raises(NameError):
        df.caiman.get_params_diffs("cnmf", "no such name")

    for _, r in df.iterrows():
        if r["outputs"] is not None:  # item has already been run
            continue
        r.caiman.run()
    df = df.caiman.reload_from_disk()
    assert all(o["success"] for o in df["outputs"])
    assert df.iloc[3].cnmf.get_output().params.init["K"] == 8  # nested groups reached the fit

    path2 = df.iloc[2].mcorr.get_output_path()
    input2 = df.iloc[2].caiman.get_input_movie_path()
    data1 = df.iloc[1].cnmf.get_temporal()
    data3 = df.iloc[3].cnmf.get_temporal()
    with pytest.raises(DependencyError):
        df.caiman.remove_item(0)  # the cnmf item at 1 uses its output
    df.caiman.remove_item(index=2, remove_data=True)
    assert not path2.exists() and input2.exists()
    assert not df.isin(["test-mcorr"]).iloc[2:].any().any()
    assert list(df["item_name"]) == ["test-mcorr", "test-cnmf", "test3"]
    assert df.iloc[0].mcorr.get_output_path().exists()
    np.testing.assert_array_equal(data1, df.iloc[1].cnmf.get_temporal())
    np.testing.assert_array_equal(data3, df.iloc[2].cnmf.get_temporal())
    assert load_batch(guide["batch_path"])["uuid"].tolist() == df["uuid"].tolist()


def test_cache(guide):
    """mesmerize-core's test_cache: sizes, LRU eviction in place, copies, argument matching."""
    cache_module = cnmf_module.cnmf_cache
    assert cache_module is cnmf_cache
    df = load_batch(guide["batch_path"])
    row, other = df.iloc[1], df.iloc[2]
    cnmf_cache.clear_cache()
    cnmf_cache.set_maxsize("1M")
    row.cnmf.get_output()
    cache = cnmf_cache.get_cache()
    assert list(cache.columns)[:7] == ["uuid", "function", "kwargs", "return_val", "time_stamp",
                                       "added_time", "bytes"]
    first = cache[cache["function"] == "get_output"]
    time_stamp1, id1 = first["time_stamp"].item(), id(first["return_val"].item())
    row.cnmf.get_temporal("good")
    row.cnmf.get_contours("good")
    row.cnmf.get_masks("good")
    for n in range(2, 6):
        row.cnmf.get_temporal(np.arange(n))
    assert cache is cnmf_cache.get_cache()  # evictions happen in place
    output = cache[cache["function"] == "get_output"]
    assert len(output) == 1  # used by every other getter: not evicted, not duplicated
    assert output["time_stamp"].item() > time_stamp1 and id(output["return_val"].item()) == id1
    assert cache["bytes"].sum() <= 1024 ** 2

    cnmf_cache.set_maxsize(3)  # entries
    for n in range(2, 7):
        row.cnmf.get_temporal(np.arange(n))
    assert len(cache) == 3
    cnmf_cache.clear_cache()
    assert len(cnmf_cache.get_cache().index) == 0
    cnmf_cache.set_maxsize(0)  # disabled
    row.cnmf.get_output()
    row.cnmf.get_output()
    assert len(cnmf_cache.get_cache().index) == 0

    cnmf_cache.set_maxsize("2M")
    row.cnmf.get_output()
    other.cnmf.get_output()
    assert len(cache) == 2 and cache.iloc[-1]["uuid"] == other["uuid"] != cache.iloc[-2]["uuid"]
    time.sleep(0.01)
    row.cnmf.get_output()
    assert cache.sort_values("time_stamp").iloc[-1]["uuid"] == row["uuid"]

    # copies by default; return_copy is not part of the key
    entry = cache[(cache["uuid"] == row["uuid"]) & (cache["function"] == "get_output")]
    added = entry["added_time"].item()
    assert row.cnmf.get_output() is not entry["return_val"].item()
    same1 = row.cnmf.get_output(return_copy=False)
    assert same1 is row.cnmf.get_output(return_copy=False) is entry["return_val"].item()
    assert cache.loc[entry.index[0], "added_time"] == added
    # positional, keyword and default arguments match
    a = row.cnmf.get_temporal("good", return_copy=False)
    b = row.cnmf.get_temporal("good", False, return_copy=False)
    c = row.cnmf.get_temporal("good", add_background=False, return_copy=False)
    d = row.cnmf.get_temporal("good", add_background=True, return_copy=False)
    assert a is b is c and d is not a
    # a caller changing a returned array does not change the cache
    traces = row.cnmf.get_temporal("good")
    traces[:] = -1
    assert (row.cnmf.get_temporal("good") != -1).any()
    cnmf_cache.set_maxsize(None)  # back to mesmerize-core's default, 1 GiB


def test_seeded_cnmf_from_ain_path(guide):
    """mesmerize-core's test_seeded_cnmf: params["Ain_path"] (a Path, kept as one) seeds CNMF
    with CaImAn's Ain: (pixels, n) in Fortran order, here pickled sparse as np.save writes it."""
    df = load_batch(guide["batch_path"])
    sim = guide["sim"]
    masks = (sim.footprints > 0.3).transpose(1, 2, 0)  # (y, x, n)
    ain = sp.csc_matrix(masks.reshape(-1, masks.shape[2], order="F"))
    seed_path = guide["root"] / "seeds" / "Ain_cnmf.npy"
    seed_path.parent.mkdir()
    np.save(seed_path, ain, allow_pickle=True)
    seeded = {**CNMF, "Ain_path": seed_path, "refit": False}
    df.caiman.add_item(algo="cnmf", item_name="test-seeded-cnmf",
                       input_movie_path=df.iloc[0].mcorr.get_output_path(), params=seeded)
    assert df.iloc[-1]["params"] == seeded and isinstance(df.iloc[-1]["params"]["Ain_path"], Path)
    df.iloc[-1].caiman.run()
    df = load_batch(guide["batch_path"])
    row = df.iloc[-1]
    assert row["outputs"]["success"] is True
    assert row["params"] == seeded  # reloaded: the Path and the tuples come back
    est = row.cnmf.get_output().estimates
    # every component lies on one of the seed masks it was started from
    assert est.seed_index is not None and (np.asarray(est.seed_index) >= 0).all()
    assert est.A.shape[1] <= masks.shape[2]


def test_errors_are_mesmerize_cores_types(guide):
    df = load_batch(guide["batch_path"])
    with pytest.raises(KeyError):
        df.caiman.uloc(str(uuid_lib.uuid4()))
    with pytest.raises(ValueError):
        df.caiman.remove_item(str(uuid_lib.uuid4()))
    with pytest.raises(AttributeError):
        df.caiman.update_item(0, {"no_such_column": 1})
    with pytest.raises(WrongAlgorithmExtensionError):
        df.iloc[0].cnmf.get_output()
    # save_to_disk writes in-memory edits, and refuses when the file holds other items
    df.loc[0, "comments"] = "best mcorr"
    df.caiman.save_to_disk()
    assert load_batch(guide["batch_path"]).iloc[0]["comments"] == "best mcorr"
    stale = load_batch(guide["batch_path"])
    df.caiman.remove_item(len(df) - 1)
    with pytest.raises(IndexError):
        stale.caiman.save_to_disk()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("algo", ["cnmf", "cnmfe"])
@pytest.mark.parametrize("extra, refit", [({}, False), ({"refit": True}, True),
                                          ({"refit": False}, False), ({"refit": 1}, False)])
def test_refit_only_when_params_refit_is_true(algo, extra, refit, tmp_path, monkeypatch):
    """mesmerize-core's algorithms/cnmf.py refits when ``params["refit"] is True``, only
    then (a missing key or a truthy non-bool does not); the job passes that to the fit."""
    from mesmerize_helpers import jobs

    seen = {}

    def fit(data, main, **options):  # stands in for the engine: records how it was called
        seen.update(options)
        raise _Stop

    monkeypatch.setattr(jobs, "source_extraction", lambda algo: (fit, None))
    movie = np.random.default_rng(0).random((20, 16, 16), dtype=np.float32)
    with pytest.raises(_Stop):
        jobs.STEPS[algo](movie, {"main": {}, **extra}, tmp_path, progress=False)
    assert seen["refit"] is refit
