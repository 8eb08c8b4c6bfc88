"""The demo workflow: simulate a small two-photon movie with known motion and neurons, add
an mcorr item and a cnmf item on its output, run both with Snakemake, and compare the results
with the simulation's ground truth."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

MCORR_PARAMS = {
    "main": {"max_shifts": [8, 8], "strides": [48, 48], "overlaps": [24, 24],
             "max_deviation_rigid": 3, "pw_rigid": False, "border_nan": "copy"}
}
CNMF_PARAMS = {
    "main": {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 2, "K": 30, "gSig": [4, 4],
             "rf": None, "merge_thr": 0.85, "min_SNR": 2.5, "rval_thr": 0.8},
    "refit": True,
}


def cnmf_available() -> bool:
    """Whether the built-in CNMF engine is installed in this version."""
    return importlib.util.find_spec("mesmerize_helpers.engine.cnmf") is not None


def run_demo(folder: Path, n_frames: int = 300, cores: int | None = None) -> int:
    """Simulate, add items, run them, and print how close the results are to the truth.

    Returns
    -------
    int
        0 when every item succeeded.
    """
    from .batch import create_batch
    from .plots import plot_cnmf, plot_mcorr
    from .scoring import centroids, match_by_centroid
    from .synthetic import save_tiff, simulate_2p

    folder = Path(folder).resolve()
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    sim = simulate_2p(n_frames=n_frames, shape=(96, 96), n_neurons=20, motion=4.0, seed=0)
    movie_path = save_tiff(folder / "raw" / "synthetic_2p.tif", sim.movie)
    print(f"Simulated {sim.movie.shape} movie with {sim.n_neurons} neurons -> {movie_path}")

    df = create_batch(folder / "batch.tsv", remove_existing=True)
    df.caiman.add_item("mcorr", "synthetic_2p", movie_path, MCORR_PARAMS)
    if cnmf_available():
        df.caiman.add_item("cnmf", "synthetic_2p", df.iloc[0], CNMF_PARAMS)
    else:
        print("The built-in CNMF engine is not in this version yet: running mcorr only.")
    last = df.iloc[-1]
    last.caiman.run(cores=cores)

    df = df.caiman.reload_from_disk()
    mcorr = df.iloc[0]
    y_shifts, x_shifts = mcorr.mcorr.get_shifts()  # axis 0 (rows) first, as mesmerize-core
    found = np.stack([y_shifts, x_shifts], axis=1)
    truth = -sim.shifts  # the correction undoes the simulated displacement
    error = found - truth
    error -= error.mean(axis=0)  # the template's own offset is arbitrary
    print(f"mcorr: shift RMSE vs truth {np.sqrt((error ** 2).sum(axis=1).mean()):.3f} px "
          f"(outputs in {mcorr.caiman.get_output_dir()})")
    print(f"  figure: {plot_mcorr(mcorr, folder / 'mcorr.png')}")
    if cnmf_available():
        cnmf = df.iloc[1]
        _, found_centres = cnmf.cnmf.get_contours("good")  # (row, column) centres
        match = match_by_centroid(centroids(sim.footprints), np.array(found_centres), 4.0)
        print(f"cnmf: {cnmf.cnmf.get_n_components()} components "
              f"({len(found_centres)} accepted) for {sim.n_neurons} true neurons: "
              f"recall {match.recall:.2f}, precision {match.precision:.2f} (centroids within 4 px) "
              f"(outputs in {cnmf.caiman.get_output_dir()})")
        print(f"  figure: {plot_cnmf(cnmf, folder / 'cnmf.png')}")
        cnmf.cnmf.run_detrend_dfof()
        if not export_demo_nwb(cnmf, folder / "synthetic_2p.nwb"):
            return 1
    print(f"Batch: {folder / 'batch.tsv'}  (mesmerize-helpers status {folder / 'batch.tsv'})")
    return 0


#: What a lab states about its recording (DANDI requires a subject with species and age,
#: and for a mouse an Allen CCF location); here placeholders, said to be so.
DEMO_METADATA = {
    "session_description": "mesmerize-helpers demo: CNMF of a simulated two-photon movie",
    "experimenter": ["Demo, Mesmerize"],
    "institution": "none (simulated data)",
    "nwbfile": {"keywords": ["calcium imaging", "CNMF", "simulation"],
                "experiment_description": "a simulated movie with known neurons and motion"},
    "subject": {"subject_id": "simulated", "species": "Mus musculus", "sex": "U",
                "age": "P90D", "description": "placeholder: the movie is simulated"},
    "imaging_plane": {"location": "VISp", "indicator": "simulated GCaMP",
                      "description": "placeholder: the movie is simulated"},
}


def export_demo_nwb(cnmf: Any, path: Path) -> bool:
    """Export the demo's cnmf item as NWB and check it with nwbinspector when installed.

    Returns
    -------
    bool
        False when nwbinspector reports a critical or best-practice-violation message.
    """
    if importlib.util.find_spec("pynwb") is None:
        print('NWB export skipped: install the nwb extra (pip install -e ".[nwb]").')
        return True
    path = cnmf.cnmf.export_nwb(path, overwrite=True, **DEMO_METADATA)
    print(f"NWB: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if importlib.util.find_spec("nwbinspector") is None:
        print(f"  check it for DANDI: pip install nwbinspector && nwbinspector {path}")
        return True
    from nwbinspector import Importance, inspect_nwbfile

    serious = [m for m in inspect_nwbfile(nwbfile_path=str(path))
               if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    for message in serious:
        print(f"  nwbinspector {message.importance.name}: {message.message}")
    if not serious:
        print("  nwbinspector: no critical or best-practice-violation message")
    return not serious
