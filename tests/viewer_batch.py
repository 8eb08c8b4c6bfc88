"""A small batch with every kind of item the viewer shows, run in-process (no Snakemake):
an mcorr item, two cnmf grid items on it (one with dF/F), a failed item and one not run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import mesmerize_helpers as mh
from mesmerize_helpers.jobs import run_item
from mesmerize_helpers.synthetic import save_tiff, simulate_2p

MCORR = {"main": {"max_shifts": [6, 6], "pw_rigid": True, "strides": [32, 32],
                  "overlaps": [16, 16], "max_deviation_rigid": 3, "border_nan": "copy"}}
CNMF = {"main": {"fr": 20, "decay_time": 0.4, "p": 1, "nb": 1, "K": 12, "gSig": [3, 3],
                 "rf": None, "merge_thr": 0.85, "min_SNR": 2.0, "rval_thr": 0.98},
        "refit": True}
#: The second grid item rejects more components.
GRID = {"main.min_SNR": [2.0, 12.0]}


def run_in_process(s: pd.Series) -> dict:
    """Run one item into its folder the way its Snakemake job would."""
    parent = s["parent"]
    parent_dir = None
    if parent is not None:
        parent_dir = s.caiman.get_output_dir().parent
    return run_item(s.caiman.get_output_dir(), uuid=s["uuid"], algo=s["algo"],
                    params=s["params"], input_movie=s.caiman.get_input_movie_path(),
                    parent_dir=parent_dir, engine="builtin", progress=False,
                    stored_input=s["input_movie_path"], item_name=s["item_name"])


def make_batch(folder: Path) -> pd.DataFrame:
    """Create, fill and run the batch in ``folder``; returns it reloaded."""
    sim = simulate_2p(n_frames=200, shape=(64, 64), n_neurons=10, motion=2.0, seed=4)
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    movie = save_tiff(folder / "raw" / "sim.tif", sim.movie)
    df = mh.create_batch(folder / "batch.tsv")
    df.caiman.add_item("mcorr", "sim", movie, MCORR)
    df.caiman.add_grid("cnmf", "sim", df.iloc[0], CNMF, GRID)
    # an item that fails in its job: its movie is damaged after it was added
    broken = save_tiff(folder / "raw" / "broken.tif", sim.movie)
    df.caiman.add_item("cnmf", "broken", broken, CNMF)
    with open(broken, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    df.caiman.add_item("mcorr", "later", movie, MCORR)
    for i in range(4):
        run_in_process(df.iloc[i])
    df = df.caiman.reload_from_disk()
    df.iloc[1].cnmf.run_detrend_dfof()
    return df.caiman.reload_from_disk()
