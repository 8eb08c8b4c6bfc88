"""Summary images of items: made in the registration pass, once per movie, PNR on demand."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import CNMF, write_movie
from test_engine_images import reference_local_correlations

import mesmerize_helpers as mh
from mesmerize_helpers import outputs as outputs_lib
from mesmerize_helpers.accessors.common import item_folder
from mesmerize_helpers.engine import images as images_lib
from mesmerize_helpers.engine import pnr_images as pnr_lib
from mesmerize_helpers.engine.motion import motion_correct
from mesmerize_helpers.io.movies import open_movie
from mesmerize_helpers.jobs import run_item
from mesmerize_helpers.manifest import read_manifest
from mesmerize_helpers.outputs import MovieWriter, summary_images_for

# border_nan=True (CaImAn's default): the registered movie has NaN strips
MCORR_NAN = {"main": {"max_shifts": [4, 4], "border_nan": True}}
PLAIN_KEYS = ("mean-projection-path", "max-projection-path", "std-projection-path",
              "corr-img-path")
PNR_KEYS = ("pnr-image-path", "corr-pnr-img-path")


def moving_movie(path, n_frames=60, shape=(32, 32)):
    """conftest's blob movie, each frame rolled by a random whole-pixel shift (NaN borders
    after registration)."""
    write_movie(path, n_frames, shape)
    movie = np.asarray(open_movie(path)).copy()
    rng = np.random.default_rng(5)
    for t in range(n_frames):
        movie[t] = np.roll(movie[t], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    np.save(path.with_suffix(".npy"), movie)
    return path.with_suffix(".npy")


def run_mcorr(tmp_path, params):
    movie = moving_movie(tmp_path / "movie.tif")
    manifest = run_item(tmp_path / "mcorr", uuid="m", algo="mcorr", params=params,
                        input_movie=movie, progress=False)
    assert manifest["success"], manifest["traceback"]
    return tmp_path / "mcorr", manifest, movie


@pytest.fixture
def mcorr_item(tmp_path):
    return run_mcorr(tmp_path, MCORR_NAN)


class Counter:
    """Counts calls of a module function (monkeypatched) and passes them through."""

    def __init__(self, monkeypatch, module, name):
        self.calls = 0
        real = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def count_passes(monkeypatch) -> dict[str, Counter]:
    passes = {name: Counter(monkeypatch, images_lib, name)
              for name in ("summary_images", "projections", "local_correlations")}
    passes["correlation_pnr"] = Counter(monkeypatch, pnr_lib, "correlation_pnr")
    return passes


def test_mcorr_images_equal_whole_movie_images(mcorr_item):
    folder, manifest, _ = mcorr_item
    out = manifest["outputs"]
    registered = np.load(folder / out["mcorr-output-path"]).astype(np.float64)
    assert np.isnan(registered).any()  # the NaN borders are exercised
    with np.errstate(invalid="ignore"):
        expected = {"mean": np.nanmean(registered, 0), "max": np.nanmax(registered, 0),
                    "std": np.nanstd(registered, 0)}
    for kind, value in expected.items():
        image = np.load(folder / out[f"{kind}-projection-path"])
        assert image.dtype == np.float32 and image.shape == (32, 32)
        np.testing.assert_allclose(image, value, rtol=1e-5, atol=1e-4, equal_nan=True)
    # the correlation image: pixels with data in every frame, away from those without
    complete = ~np.isnan(registered).any(axis=0)
    inner = complete.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= np.roll(complete, (dy, dx), (0, 1))
    assert inner.sum() > 300
    reference = reference_local_correlations(np.where(complete, registered, 0.0))
    corr = np.load(folder / out["corr-img-path"])
    np.testing.assert_allclose(corr[inner], reference[inner], atol=2e-5)
    assert np.all(corr[~complete] == 0.0)


def test_mcorr_item_makes_no_pnr_images_and_writes_the_movie_it_registered(mcorr_item):
    folder, manifest, movie = mcorr_item
    assert not any(k in manifest["outputs"] for k in PNR_KEYS)
    assert not (folder / "pnr_img.npy").exists()
    registered = np.load(folder / "mcorr.npy", mmap_mode="r")
    expected = motion_correct(np.load(movie), MCORR_NAN["main"], progress=False)
    assert registered.shape == (60, 32, 32) and registered.flags.c_contiguous
    np.testing.assert_array_equal(np.load(folder / "shifts_rig.npy"), expected.shifts_rig)
    in_memory = np.empty((60, 32, 32), np.float32)
    motion_correct(np.load(movie), MCORR_NAN["main"], in_memory, progress=False)
    np.testing.assert_array_equal(registered, in_memory)


def test_cnmf_item_on_mcorr_output_links_the_parents_images(tmp_path, monkeypatch):
    # border_nan "copy": CNMF takes no NaN
    parent, parent_manifest, _ = run_mcorr(tmp_path, {"main": {**MCORR_NAN["main"],
                                                               "border_nan": "copy"}})
    passes = count_passes(monkeypatch)
    manifest = run_item(parent / "cnmf", uuid="c", algo="cnmf", params=CNMF,
                        input_movie="unused", parent_dir=parent, progress=False)
    assert manifest["success"], manifest["traceback"]
    assert {name: c.calls for name, c in passes.items()} == dict.fromkeys(passes, 0)
    for key in PLAIN_KEYS:
        mine = parent / "cnmf" / manifest["outputs"][key]
        theirs = parent / parent_manifest["outputs"][key]
        assert os.path.samefile(mine, theirs)  # a hard link, not a copy
        assert manifest["files"][key]["shape"] == [32, 32]
    assert not any(k in manifest["outputs"] for k in PNR_KEYS)  # 2p: no CNMF-E images


def test_cnmfe_images_are_made_once_per_filter_width(mcorr_item, tmp_path, monkeypatch):
    parent, _, _ = mcorr_item
    registered = np.load(parent / "mcorr.npy", mmap_mode="r")
    passes = count_passes(monkeypatch)
    first = tmp_path / "cnmfe1"
    first.mkdir()
    out = summary_images_for(registered, first, pnr_gsig=(3, 3), progress=False)
    assert passes["correlation_pnr"].calls == 1 and passes["summary_images"].calls == 0
    assert all(os.path.samefile(first / out[k], parent / out[k]) for k in PLAIN_KEYS)
    assert out[outputs_lib.PNR_GSIG_KEY] == [3.0, 3.0]
    pnr = np.load(first / out["pnr-image-path"])
    corr_pnr, expected_pnr = pnr_lib.correlation_pnr(registered, (3, 3))
    np.testing.assert_array_equal(pnr, expected_pnr)
    np.testing.assert_array_equal(np.load(first / out["corr-pnr-img-path"]), corr_pnr)

    # once the parent has the pair at that width (asked for it), children link it
    from mesmerize_helpers.manifest import update_manifest

    made = outputs_lib.pnr_images(registered, parent, (3, 3), progress=False)
    update_manifest(parent, {"outputs": made})
    calls = passes["correlation_pnr"].calls
    second = tmp_path / "cnmfe2"
    second.mkdir()
    out = summary_images_for(registered, second, pnr_gsig=[3, 3], progress=False)
    assert passes["correlation_pnr"].calls == calls
    assert os.path.samefile(second / out["pnr-image-path"], parent / made["pnr-image-path"])
    third = tmp_path / "cnmfe3"
    third.mkdir()
    summary_images_for(registered, third, pnr_gsig=(5, 5), progress=False)
    assert passes["correlation_pnr"].calls == calls + 1  # another width: computed


def test_images_of_a_raw_movie_are_made_in_one_pass(tmp_path, monkeypatch):
    movie = open_movie(write_movie(tmp_path / "raw.tif"))
    passes = count_passes(monkeypatch)
    out = summary_images_for(movie, tmp_path, progress=False)
    assert passes["summary_images"].calls == 1 and passes["correlation_pnr"].calls == 0
    assert sorted(out) == sorted(PLAIN_KEYS)


def test_pnr_image_is_made_on_first_request(tmp_path, monkeypatch):
    batch = mh.create_batch(tmp_path / "batch" / "batch.tsv")
    movie = moving_movie(tmp_path / "movie.tif")
    batch.caiman.add_item("mcorr", "m", movie, MCORR_NAN)
    row = batch.iloc[0]
    folder = item_folder(row)
    manifest = run_item(folder, uuid=row["uuid"], algo="mcorr", params=MCORR_NAN,
                        input_movie=movie, progress=False)
    assert manifest["success"], manifest["traceback"]
    correlation_pnr = pnr_lib.correlation_pnr
    passes = count_passes(monkeypatch)
    pnr = row.caiman.get_pnr_image()
    assert passes["correlation_pnr"].calls == 1
    recorded = read_manifest(folder)
    assert recorded["outputs"]["pnr-image-path"] == "pnr_img.npy"
    assert recorded["outputs"][outputs_lib.PNR_GSIG_KEY] == [3.0, 3.0]  # no gSig: default
    assert recorded["files"]["pnr-image-path"]["shape"] == [32, 32]
    np.testing.assert_array_equal(pnr, np.load(folder / "pnr_img.npy"))
    registered = np.load(folder / "mcorr.npy", mmap_mode="r")
    expected_corr, expected_pnr = correlation_pnr(registered, (3, 3))
    np.testing.assert_array_equal(pnr, expected_pnr)
    # later requests read the saved files
    np.testing.assert_array_equal(row.caiman.get_corr_image(filtered=True), expected_corr)
    np.testing.assert_array_equal(row.caiman.get_pnr_image(), pnr)
    assert passes["correlation_pnr"].calls == 1
    assert not np.array_equal(row.caiman.get_corr_image(), expected_corr)


def test_movie_writer_takes_whole_frames_in_slices(tmp_path):
    data = np.random.default_rng(0).random((10, 4, 5)).astype(np.float32)
    with MovieWriter(tmp_path / "m.npy", data.shape) as out:
        out[4:10] = data[4:10]
        out[0:4] = data[0:4].astype(np.float64)
        with pytest.raises(ValueError, match="whole frames"):
            out[0:2] = data[0:3]
    loaded = np.load(tmp_path / "m.npy", mmap_mode="r")
    assert loaded.dtype == np.float32 and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, data)


def test_frame_reader_reads_what_the_memmap_holds(tmp_path):
    """mcorr jobs read memmapped movies with pread (flat memory): same frames, any slice."""
    from mesmerize_helpers.outputs import FrameReader, sequential_frames

    npy = moving_movie(tmp_path / "movie.tif")  # also writes the uint16 TIFF
    for path in (npy, tmp_path / "movie.tif"):
        mapped = open_movie(path)
        reader = sequential_frames(mapped)
        assert isinstance(reader, FrameReader) and reader.shape == mapped.shape
        for key in (slice(0, 7), slice(55, 60), slice(59, 80), slice(3, 4)):
            np.testing.assert_array_equal(reader[key], np.asarray(mapped[key]))
        assert reader[key].dtype == mapped.dtype
    in_memory = np.load(npy)
    assert sequential_frames(in_memory) is in_memory
