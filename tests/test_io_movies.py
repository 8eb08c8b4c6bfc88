"""Movie readers: every built-in format gives the same (frames, y, x) array, lazily."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from mesmerize_helpers.io.movies import LazyFrames, MovieReadError, open_movie


@pytest.fixture
def frames():
    rng = np.random.default_rng(1)
    return (rng.random((12, 10, 14)) * 4000).astype(np.uint16)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("plain.tif", {}),
        ("big.tif", {"bigtiff": True}),
        ("imagej.tif", {"imagej": True, "metadata": {"axes": "TYX"}}),
        ("zlib.tif", {"compression": "zlib"}),
    ],
)
def test_tiff_variants(tmp_path, frames, name, kwargs):
    path = tmp_path / name
    tifffile.imwrite(path, frames, **kwargs)
    movie = open_movie(path)
    assert movie.shape == frames.shape
    np.testing.assert_array_equal(np.asarray(movie[3:7]), frames[3:7])
    np.testing.assert_array_equal(np.asarray(movie[5]), frames[5])
    np.testing.assert_array_equal(np.asarray(movie[-1]), frames[-1])
    np.testing.assert_array_equal(np.asarray(movie[0:12:4]), frames[0:12:4])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_tiff_dtypes(tmp_path, frames, dtype):
    data = (frames % 120).astype(dtype)
    tifffile.imwrite(tmp_path / "m.tif", data)
    movie = open_movie(tmp_path / "m.tif")
    assert movie.dtype == dtype
    np.testing.assert_array_equal(np.asarray(movie[:]), data)


def test_imagej_hyperstack_with_channels_is_refused(tmp_path, frames):
    data = np.stack([frames, frames], axis=1)  # T, C, Y, X
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(MovieReadError, match="channels or z planes"):
        open_movie(tmp_path / "hyper.tif")


def test_npy_hdf5_and_caiman_mmap(tmp_path, frames):
    np.save(tmp_path / "m.npy", frames)
    movie = open_movie(tmp_path / "m.npy")
    assert isinstance(movie, np.memmap)
    np.testing.assert_array_equal(movie, frames)

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["data"] = frames
    single = open_movie(tmp_path / "m.h5")  # the only dataset, whatever its name (mesmerize-core)
    np.testing.assert_array_equal(single[:], frames)
    with h5py.File(tmp_path / "m.h5", "a") as f:
        f["other"] = frames[:2]
    with pytest.raises(MovieReadError, match="no dataset 'mov'.*data"):
        open_movie(tmp_path / "m.h5")
    lazy = open_movie(tmp_path / "m.h5", var_name_hdf5="data")
    assert isinstance(lazy, LazyFrames)
    np.testing.assert_array_equal(lazy[2:5], frames[2:5])
    np.testing.assert_array_equal(lazy[10:99], frames[10:])  # readers clip slices as numpy

    t, d1, d2 = frames.shape
    for order in "CF":
        # CaImAn's layout: (pixels, frames) float32, pixels flattened in Fortran order
        yr = frames.astype(np.float32).reshape(t, -1, order="F").T
        name = tmp_path / f"Yr_d1_{d1}_d2_{d2}_d3_1_order_{order}_frames_{t}.mmap"
        np.asfortranarray(yr).T.tofile(name) if order == "F" else np.ascontiguousarray(yr).tofile(name)
        mm = open_movie(name)
        assert mm.shape == frames.shape
        np.testing.assert_array_equal(mm[4:9], frames[4:9].astype(np.float32))


def test_custom_reader_and_errors(tmp_path, frames):
    path = tmp_path / "movie.raw"
    frames.tofile(path)
    with pytest.raises(MovieReadError, match=r"No reader for .*movie.raw.*\.tif"):
        open_movie(path)
    movie = open_movie(path, reader=lambda p: np.fromfile(p, np.uint16).reshape(frames.shape))
    np.testing.assert_array_equal(movie, frames)
    with pytest.raises(MovieReadError, match="expected \\(frames, y, x\\)"):
        open_movie(path, reader=lambda p: np.zeros(5))
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        open_movie(tmp_path / "nope.tif")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(MovieReadError, match="bad.tif with the read_tiff reader"):
        open_movie(tmp_path / "bad.tif")
