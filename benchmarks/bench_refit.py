"""What ``params["refit"]`` changes for a cnmf item: components, accuracy, the job's time.

mesmerize-core refits a cnmf item (CaImAn's ``cnm.refit``: a second whole-field round
seeded with the first fit) only when ``params["refit"] is True``; this project follows it.
This benchmark runs the same item twice through ``s.caiman.run()`` (the job a user waits
for), without and with ``refit``, and reports the job's ``algo_duration``, the number of
components and of accepted ones, and their accuracy:

- ``synthetic``: ``simulate_2p(n_frames=1000, shape=(128, 128), n_neurons=30, seed=0)``
  with bench_cnmf.py's patch setting, scored on mask IoU against the true footprints
  (precision / recall / F1) and by the median trace correlation of the matched ones;
- ``synthetic-field``: the same movie fitted on the whole field (``rf=None, K=40``);
- ``neurofinder``: the labelled quarter of the real Neurofinder movie in ``../shared/data``
  with bench_cnmf.py's setting, scored Neurofinder-style (centroids within 5 px); skipped
  when the data is absent.

Usage::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_refit.py [--case NAME ...]
        [--scratch DIR] [--json out.jsonl] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cnmf import (  # noqa: E402
    NEUROFINDER_PARAMS,
    NF_MASKS,
    NF_MOVIE,
    SYNTHETIC_PARAMS,
    score_centroids,
    score_iou,
)

import mesmerize_helpers as mh  # noqa: E402
from mesmerize_helpers.scoring import row_correlation  # noqa: E402
from mesmerize_helpers.synthetic import save_tiff, simulate_2p  # noqa: E402

CASES = ("synthetic", "synthetic-field", "neurofinder")


def case_input(case: str, folder: Path) -> tuple[Path, dict, object]:
    """The case's movie file (written into ``folder`` for the synthetic ones), its params
    and its ground truth (the simulation, or the labelled masks)."""
    if case == "neurofinder":
        return NF_MOVIE, NEUROFINDER_PARAMS, np.load(NF_MASKS)["masks"]
    sim = simulate_2p(n_frames=1000, shape=(128, 128), n_neurons=30, seed=0)
    params = dict(SYNTHETIC_PARAMS)
    if case == "synthetic-field":
        params.update(rf=None, stride=None, K=40)
    return save_tiff(folder / "sim.tif", sim.movie), params, sim


def score(case: str, row, truth) -> dict:
    """Components, accepted ones, and their accuracy against ``truth``."""
    est = row.cnmf.get_output().estimates
    good = np.asarray(est.idx_components)
    fp = row.cnmf.get_spatial(good).transpose(2, 0, 1)  # (K, y, x)
    out = {"n_components": int(est.A.shape[1]), "n_accepted": int(len(good))}
    if case == "neurofinder":
        p, r, f1 = score_centroids(truth, fp)
        out.update(precision=p, recall=r, f1=f1)
    else:
        p, r, f1, (ti, ei) = score_iou(truth.footprints, fp)
        corr = row_correlation(truth.calcium[ti], np.asarray(est.C)[good[ei]])
        out.update(precision=p, recall=r, f1=f1, trace_corr_median=float(np.median(corr)))
    return out


def run_case(case: str, scratch: Path, repeat: int = 1) -> list[dict]:
    """Both items, ``repeat`` times in alternating order (the machine's load drifts); the
    job's time is the median of the repeats, the scores those of the first."""
    folder = Path(tempfile.mkdtemp(prefix=f"refit-{case}-", dir=scratch))
    try:
        movie, params, truth = case_input(case, folder)
        df = mh.create_batch(folder / "batch" / "batch.tsv")
        for r in range(repeat):
            for refit in (False, True) if r % 2 == 0 else (True, False):
                df.caiman.add_item("cnmf", f"refit={refit}", movie,
                                   {"main": params, "refit": refit})
                df.iloc[-1].caiman.run()
        df = df.caiman.reload_from_disk()
        results = {}
        for _, row in df.iterrows():
            if not row["outputs"]["success"]:
                raise RuntimeError(row["outputs"]["traceback"])
            refit = row["params"]["refit"]
            if refit not in results:
                results[refit] = {"case": case, "refit": refit, "times": [],
                                  **score(case, row, truth)}
            results[refit]["times"].append(float(row["algo_duration"]))
        for r in results.values():
            r["algo_duration_s"] = float(np.median(r["times"]))
        return [results[False], results[True]]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="*", choices=CASES, default=list(CASES))
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for case in args.case:
        if case == "neurofinder" and not NF_MOVIE.exists():
            print(f"skipping neurofinder: {NF_MOVIE} is absent")
            continue
        rows += run_case(case, args.scratch, args.repeat)
    print("| case | refit | job algo_duration (s, median) | K / accepted | precision | recall | F1 "
          "| median trace corr |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        corr = r.get("trace_corr_median")
        print(f"| {r['case']} | {r['refit']} | {r['algo_duration_s']:.1f} | "
              f"{r['n_components']} / {r['n_accepted']} | {r['precision']:.2f} | "
              f"{r['recall']:.2f} | {r['f1']:.2f} | "
              f"{'-' if corr is None else f'{corr:.3f}'} |")
    if args.json:
        with open(args.json, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
