"""Lazy arrays and readers with mesmerize-core's interface, and the small parity helpers
(nested CaImAn params, params types through JSON, seed masks, CNMFParams)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import tifffile

from mesmerize_helpers import LazyArrayRCM, LazyArrayResiduals, LazyTiff, LazyVideo
from mesmerize_helpers.engine.params import flatten_main
from mesmerize_helpers.io.estimates import CNMFParams
from mesmerize_helpers.io.seeds import load_seed_masks
from mesmerize_helpers.param_types import decode_types, encode_types

DIMS = (12, 20)


@pytest.fixture
def factors():
    rng = np.random.default_rng(0)
    A = sp.random(DIMS[0] * DIMS[1], 4, density=0.2, random_state=1, format="csc")
    C = rng.random((4, 30))
    movie = (A @ C).T.reshape(30, DIMS[1], DIMS[0]).transpose(0, 2, 1)  # Fortran pixels
    return A, C, movie


def test_rcm_interface(factors):
    A, C, movie = factors
    rcm = LazyArrayRCM(A, C, DIMS)
    assert (rcm.shape, rcm.n_frames, rcm.ndim, rcm.n_components) == ((30, *DIMS), 30, 3, 4)
    assert rcm.dtype == np.float64 and rcm.nbytes == movie.nbytes and rcm.spatial is A
    np.testing.assert_allclose(rcm[3], movie[3])
    np.testing.assert_allclose(rcm[-1], movie[-1])
    np.testing.assert_allclose(rcm[2:9:3], movie[2:9:3])
    np.testing.assert_allclose(rcm[range(4, 8)], movie[4:8])
    np.testing.assert_allclose(rcm[np.array([5, 1])], movie[[5, 1]])
    np.testing.assert_allclose(rcm[(slice(0, 4), 3, slice(None))], movie[:4, 3])
    np.testing.assert_allclose(np.asarray(rcm), movie)
    for key in (30, -31, slice(31, None), slice(0, 31)):
        with pytest.raises(IndexError):
            rcm[key]
    with pytest.raises(IndexError):
        rcm[0, 0, 0, 0]
    np.testing.assert_allclose(rcm.mean_image, movie.mean(axis=0))
    np.testing.assert_allclose(rcm.max_image, (A @ C.max(axis=1)).reshape(DIMS, order="F"))
    assert rcm.min <= movie.min() and rcm.max >= movie.max()  # bounds from the factors
    with pytest.raises(ValueError):
        LazyArrayRCM(A, C[:3], DIMS)


def test_residuals(factors):
    A, C, movie = factors
    raw = movie + 5.0
    residuals = LazyArrayResiduals(raw, LazyArrayRCM(A, C, DIMS), LazyArrayRCM(A[:, :0], C[:0], DIMS))
    np.testing.assert_allclose(residuals[4], np.full(DIMS, 5.0))
    np.testing.assert_allclose(residuals[[2, 9]], np.full((2, *DIMS), 5.0))
    with pytest.warns(UserWarning):
        assert residuals.min == raw[0].min()


def test_lazy_tiff_reads_compressed_pages(tmp_path):
    frames = np.random.default_rng(0).integers(0, 4000, (9, *DIMS)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", frames, compression="zlib")
    lazy = LazyTiff(tmp_path / "c.tif")
    assert lazy.shape == frames.shape and lazy.dtype == np.uint16 and lazy.n_frames == 9
    np.testing.assert_array_equal(lazy[4], frames[4])
    np.testing.assert_array_equal(lazy[1:7:2], frames[1:7:2])
    with pytest.raises(IndexError):
        lazy[1:10]
    with pytest.warns(UserWarning):
        assert lazy.max == frames[0].max()


def test_lazy_video(tmp_path):
    import cv2

    path = str(tmp_path / "v.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (DIMS[1], DIMS[0]))
    levels = np.linspace(30, 220, 15)
    for level in levels:  # grey frames with a red square: RGB order and frame order tell
        frame = np.full((*DIMS, 3), level, np.uint8)
        frame[2:6, 3:8] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()
    video = LazyVideo(path)
    assert video.shape == (15, *DIMS) and video.n_frames == 15
    frame = video[7]
    assert frame.shape == (*DIMS, 3)
    assert frame[4, 5, 0] > 200 and frame[4, 5, 2] < 60  # RGB: red first
    np.testing.assert_allclose(video[[3, 12]][:, 10, 15, 1], levels[[3, 12]], atol=6)
    grey = LazyVideo(path, as_grayscale=True)
    assert grey[5].shape == DIMS
    np.testing.assert_allclose(grey[5][10, 15], levels[5], atol=6)
    with pytest.raises(OSError):
        LazyVideo(tmp_path / "missing.avi")


def test_flatten_main_nested_groups():
    main = {"init": {"K": 5, "nb": 2}, "temporal": {"p": 1}, "data": {"fr": 15}, "gSig": [3, 3]}
    assert flatten_main(main) == {"K": 5, "nb": 2, "p": 1, "fr": 15, "gSig": [3, 3]}
    assert flatten_main({"K": 4}) == {"K": 4}
    with pytest.warns(UserWarning, match="p: preprocess=2, temporal=1"):
        assert flatten_main({"preprocess": {"p": 2}, "temporal": {"p": 1}})["p"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flatten_main({"init": {"nb": 1}, "spatial": {"nb": 1}})  # same value: no warning


def test_params_types_survive_json():
    params = {"main": {"gSig": (4, 4), "strides": [(1, 2), (3, 4)], "K": 3},
              "Ain_path": Path("/data/seeds.npy"), "refit": False}
    stored = json.loads(json.dumps(encode_types(params)))
    assert stored["main"]["gSig"] == [4, 4] and stored["Ain_path"] == "/data/seeds.npy"
    assert decode_types(stored) == params
    assert decode_types({**stored, "__types__": {"main.gone": "tuple"}})["main"]["K"] == 3


def test_seed_masks_in_both_layouts(tmp_path):
    masks = np.zeros((*DIMS, 2), bool)
    masks[2:5, 10:15, 0] = masks[7:10, 1:3, 1] = True
    caiman_ain = masks.reshape(-1, 2, order="F")
    np.save(tmp_path / "ours.npy", masks)
    np.save(tmp_path / "dense.npy", caiman_ain)
    np.save(tmp_path / "sparse.npy", sp.csc_matrix(caiman_ain), allow_pickle=True)
    for name in ("ours", "dense", "sparse"):
        np.testing.assert_array_equal(load_seed_masks(tmp_path / f"{name}.npy", DIMS), masks)
    with pytest.raises(ValueError, match=r"\(pixels, n\)"):
        load_seed_masks(tmp_path / "ours.npy", (10, 10))


def test_cnmf_params_groups():
    params = CNMFParams({"min_SNR": 3.0, "p": 1, "init": {"K": 7}})
    assert params.quality["min_SNR"] == 3.0 and params.online["min_SNR"] == 3.0
    assert params.preprocess["p"] == params.temporal["p"] == 1
    assert params.get_group("init")["K"] == 7 and params.get("init", "gSig") == [5, 5]
    assert set(params.to_dict()) >= {"data", "init", "quality", "motion", "patch"}
    with pytest.raises(KeyError):
        params.get_group("nope")
    with pytest.raises(KeyError):
        params.get("quality", "nope")
