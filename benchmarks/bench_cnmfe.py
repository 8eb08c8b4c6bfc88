"""Speed, memory and accuracy of the built-in CNMF-E on simulated one-photon movies.

Cases (``simulate_1p``: blurry neurons under a drifting background ~5x brighter than their
transients, shot noise):

- ``whole``: ``simulate_1p(n_frames=1000, shape=(128, 128), n_neurons=30, seed=0)``, whole
  field;
- ``patches``: the same movie with ``rf=32, stride=16`` (9 patches of 64 px);
- ``large`` (only with ``--large``): ``simulate_1p(1000, (256, 256), 120 neurons, seed=0)``
  with ``rf=48, stride=24``.

Scores: F1 of the accepted components against the true footprints (masks above 0.2 of the
peak, IoU >= 0.5, Hungarian matching), the median Pearson correlation of matched traces
``C`` with the true calcium, and the shape of the accepted footprints' masks (median number
of 8-connected pieces and solidity, ``scoring.footprint_shapes``).

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own. Times are wall clock; ``peak alloc`` is the peak of numpy/Python allocations during the
fit (``tracemalloc``), in units of the movie's float32 size as well as MB.

Usage::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_cnmfe.py [--case whole|patches|large]
        [--large] [--n-processes N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mesmerize_helpers.scoring import (  # noqa: E402
    footprint_shapes,
    match_by_iou,
    row_correlation,
)

BASE = {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5}
CASES: dict[str, dict] = {
    "whole": {"sim": {"n_frames": 1000, "shape": (128, 128), "n_neurons": 30}, "params": {}},
    "patches": {"sim": {"n_frames": 1000, "shape": (128, 128), "n_neurons": 30},
                "params": {"rf": 32, "stride": 16}},
    "large": {"sim": {"n_frames": 1000, "shape": (256, 256), "n_neurons": 120},
              "params": {"rf": 48, "stride": 24}},
}


def score(true_fp: np.ndarray, est_fp: np.ndarray, iou_thr: float = 0.5):
    """F1 and matched (true, estimated) index pairs on mask IoU, Hungarian matching."""
    m = match_by_iou(true_fp, est_fp, iou_thr)
    return m.f1, m.true_idx, m.found_idx


def run_case(name: str, n_processes: int) -> dict:
    """Run one case in this process and return its measurements."""
    from mesmerize_helpers.engine.cnmfe import evaluate_components, fit_cnmfe
    from mesmerize_helpers.synthetic import simulate_1p

    case = CASES[name]
    sim = simulate_1p(seed=0, **case["sim"])
    params = {**BASE, **case["params"]}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    est = fit_cnmfe(sim.movie, params, n_processes=n_processes, progress=False)
    t_fit = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t0 = time.perf_counter()
    est = evaluate_components(est, sim.movie, params)
    t_eval = time.perf_counter() - t0
    acc = est.idx_components
    fp = est.footprints(acc)
    f1, ti, ei = score(sim.footprints, fp)
    shapes = footprint_shapes(fp)
    corr = row_correlation(sim.calcium[ti], est.C[acc][ei]) if len(ti) else np.zeros(1)
    movie_mb = sim.movie.nbytes / 2**20
    return {
        "case": name, "movie": "x".join(map(str, sim.movie.shape)), "params": case["params"],
        "fit_s": round(t_fit, 1), "eval_s": round(t_eval, 1),
        "frames_per_s": round(sim.movie.shape[0] / t_fit, 1),
        "peak_alloc_mb": round(peak / 2**20), "peak_alloc_movies": round(peak / 2**20 / movie_mb, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_fit_mb": round(rss0),
        "K": int(est.n_components), "accepted": int(len(acc)), "n_true": int(sim.n_neurons),
        "F1": round(float(f1), 3), "median_trace_corr": round(float(np.median(corr)), 3),
        "pieces": float(np.median(shapes.pieces)),
        "solidity": round(float(np.nanmedian(shapes.solidity)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), help="run only this case (in-process)")
    ap.add_argument("--large", action="store_true", help="also run the 256x256 case")
    ap.add_argument("--n-processes", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the results to this file")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.n_processes)))
        return
    names = ["whole", "patches"] + (["large"] if args.large else [])
    results = []
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, "--case", name, "--n-processes", str(args.n_processes)],
            check=True, capture_output=True, text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res))
    print("\n| movie | case | fit (s) | frames/s | eval (s) | peak alloc (MB, x movie) "
          "| max RSS (MB) | K / accepted / true | F1 | median trace corr | pieces | solidity |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['movie']} | {r['case']} {r['params'] or ''} | {r['fit_s']} | "
              f"{r['frames_per_s']} | {r['eval_s']} | {r['peak_alloc_mb']} "
              f"({r['peak_alloc_movies']}x) | {r['max_rss_mb']} | {r['K']} / {r['accepted']} / "
              f"{r['n_true']} | {r['F1']} | {r['median_trace_corr']} | {r['pieces']:.0f} | "
              f"{r['solidity']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
