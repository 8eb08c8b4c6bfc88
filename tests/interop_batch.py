"""A small batch for the interoperability tests, run in-process (no Snakemake): a
piecewise-rigid mcorr item and a cnmf item on it (two-photon, dF/F computed), and a cnmfe item (one-photon).

Fields are not square (48 x 64, 40 x 56), so that a swapped (y, x) anywhere shows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from viewer_batch import run_in_process

import mesmerize_helpers as mh
from mesmerize_helpers.synthetic import save_tiff, simulate_1p, simulate_2p

MCORR = {"main": {"max_shifts": [4, 4], "pw_rigid": True, "strides": [24, 24],
                  "overlaps": [12, 12], "max_deviation_rigid": 2, "border_nan": "copy"}}
CNMF = {"main": {"fr": 20, "decay_time": 0.5, "p": 1, "nb": 1, "K": 8, "gSig": [3, 3],
                 "rf": None, "min_SNR": 2.0, "rval_thr": 0.8},
        "refit": True}
CNMFE = {"main": {"gSig": [3, 3], "gSiz": [13, 13], "decay_time": 0.6,  # fr: the default
                  "min_corr": 0.8, "min_pnr": 5, "p": 1, "rf": None}}


def make_batch(folder: Path) -> pd.DataFrame:
    """Create, fill and run the batch in ``folder``; returns it reloaded (rows: mcorr,
    cnmf, cnmfe)."""
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    sim = simulate_2p(n_frames=150, shape=(48, 64), n_neurons=8, gSig=3.0, motion=1.5,
                      seed=5)
    sim1p = simulate_1p(n_frames=150, shape=(40, 56), n_neurons=5, seed=6)
    movie = save_tiff(folder / "raw" / "twop.tif", sim.movie)
    movie1p = save_tiff(folder / "raw" / "onep.tif", sim1p.movie)
    df = mh.create_batch(folder / "batch.tsv")
    df.caiman.add_item("mcorr", "twop", movie, MCORR)
    df.caiman.add_item("cnmf", "twop", df.iloc[0], CNMF)
    df.caiman.add_item("cnmfe", "onep", movie1p, CNMFE)
    for i in range(3):
        manifest = run_in_process(df.iloc[i])
        assert manifest["success"], manifest["traceback"]
    df = df.caiman.reload_from_disk()
    df.iloc[1].cnmf.run_detrend_dfof()
    return df.caiman.reload_from_disk()


@pytest.fixture(scope="session")
def interop_batch(tmp_path_factory) -> pd.DataFrame:
    """The batch of :func:`make_batch`, made once for every test module that imports this."""
    return make_batch(tmp_path_factory.mktemp("interop"))
