"""Shared fixtures: a fresh batch and small movies written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import mesmerize_helpers as mh
from mesmerize_helpers import batch as batch_lib

os.environ.setdefault("MESMERIZE_N_PROCESSES", "1")
os.environ.setdefault("MESMERIZE_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _no_raw_data_dir():
    """Each test starts without a raw data dir (it is process-wide state)."""
    batch_lib._PARENT_RAW_DATA_PATH = None
    yield
    batch_lib._PARENT_RAW_DATA_PATH = None


def write_movie(path: Path, n_frames: int = 60, shape=(32, 32), seed: int = 0) -> Path:
    """A small uint16 TIFF movie of smooth blobs with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    scene = np.zeros(shape)
    for _ in range(6):
        cy, cx = rng.uniform(4, shape[0] - 4), rng.uniform(4, shape[1] - 4)
        scene += 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8)
    movie = scene[None] + 100 + rng.normal(0, 5, (n_frames, *shape))
    tifffile.imwrite(path, movie.astype(np.uint16))
    return path


@pytest.fixture
def movie(tmp_path: Path) -> Path:
    (tmp_path / "raw").mkdir()
    return write_movie(tmp_path / "raw" / "movie.tif")


@pytest.fixture
def batch(tmp_path: Path):
    return mh.create_batch(tmp_path / "batch" / "batch.tsv")


MCORR = {"main": {"max_shifts": [4, 4], "pw_rigid": False, "border_nan": "copy"}}
CNMF = {"main": {"K": 5, "gSig": [3, 3], "p": 1, "nb": 1, "rf": None}, "refit": True}


def assert_ring_model_fit(row) -> None:
    """A cnmfe item on ``simulate_1p(shape=(64, 64), n_neurons=8)`` fitted with ``ssub_B=2``:
    the ring model is saved and loaded, and about the 8 neurons are accepted."""
    estimates = row.cnmf.get_output()
    assert "W" in estimates.extra and estimates.b.shape[1] == 0  # ring model, saved and loaded
    assert estimates.extra["b0"].shape == (64 * 64,)
    assert estimates.extra["W"].shape == (32 * 32, 32 * 32)  # on the ssub_B=2 grid
    assert estimates.extra["ssub_B"] == 2
    n_good = len(row.cnmf.get_good_components())
    assert 6 <= n_good <= 10, n_good  # 8 simulated neurons
