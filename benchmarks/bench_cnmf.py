"""Speed, memory and accuracy of the built-in CNMF.

Cases:

- ``synthetic``: ``simulate_2p(n_frames=1000, shape=(128, 128), n_neurons=30, seed=0)`` with
  patches (rf=15, stride=6, K=4, gSig=4, ssub=tsub=2), the setting of the CaImAn reference
  numbers; scored against the true footprints (IoU >= 0.5, Hungarian) and calcium traces.
- ``neurofinder``: the real movie ``neurofinder00_tl256_600x256x256_uint16.tif`` with its
  99 hand-labelled ROIs, scored Neurofinder-style (Hungarian matching on centroid distance,
  a pair counts when the centroids are within 5 px). Skipped when ``../shared/data`` (or
  ``$MESMERIZE_BENCH_DATA``) is absent.

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own. The time of every stage (fit, refit, evaluation) is wall-clock; the memory of every stage
is the peak resident memory of the process during it (sampled every 5 ms), which includes
the movie itself and everything kept from the stages before.

- ``scaling``: ``simulate_2p`` fields of 128, 256 and 512 px square (300 frames, the same
  density of neurons: 30, 120, 480), fitted with the synthetic case's params by
  ``fit_cnmf``: time and peak memory above the movie against the size of the field. Memory
  must grow with the movie, not with pixels x components.
- ``neurofinder-seeded``: seeded CNMF on the same movie, from the somata that
  :func:`mesmerize_helpers.engine.anatomy.find_somata` finds in the mean image (what a cnmf
  item with ``params["Ain"] = "somata"`` does; its defaults and three neighbours), and, as a
  control of what activity can tell, from the 99 labels plus as many random disks away from
  them (how many of each the evaluation accepts).

Usage::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_cnmf.py
        [--case synthetic|neurofinder|neurofinder-seeded|scaling]
        [--n-processes N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mesmerize_helpers.scoring import (  # noqa: E402
    centroids,
    footprint_masks,
    match_by_centroid,
    match_by_iou,
    row_correlation,
)

DATA = Path(os.environ.get("MESMERIZE_BENCH_DATA", ROOT.parent / "shared" / "data"))
NF_MOVIE = DATA / "neurofinder00_tl256_600x256x256_uint16.tif"
NF_MASKS = DATA / "neurofinder00_tl256_roi_masks.npz"

SYNTHETIC_PARAMS = {
    "fr": 30, "decay_time": 0.4, "p": 1, "nb": 2, "rf": 15, "stride": 6, "K": 4,
    "gSig": [4, 4], "ssub": 2, "tsub": 2, "merge_thr": 0.8, "min_SNR": 2.5, "rval_thr": 0.8,
}
# what a user would pick after looking at the movie: somata about 9 px across (gSig 4),
# GCaMP6s at about 7 Hz (decay ~1 s), a 256 px field in 50 px patches
#: find_somata settings of the seeded case: the defaults (``params["Ain"] = "somata"``)
#: first, then the nuclei alone (the default before filled somata counted) at three
#: thresholds, and both polarities at min_z
SOMATA_SETTINGS = [("auto", 2.5), ("dark", 2.5), ("dark", 2.0), ("dark", 3.0), ("both", 2.5)]
NEUROFINDER_PARAMS = {
    "fr": 7, "decay_time": 1.0, "p": 1, "nb": 1, "rf": 25, "stride": 10, "K": 10,
    "gSig": [4, 4], "ssub": 1, "tsub": 1, "merge_thr": 0.8, "min_SNR": 2.0, "rval_thr": 0.8,
}


# ------------------------------------------------------------------------------ scoring


def score_iou(true_fp: np.ndarray, est_fp: np.ndarray, iou_thr: float = 0.5):
    """Precision, recall, F1 and matched pairs on mask IoU (masks: > 20 % of the peak)."""
    m = match_by_iou(true_fp, est_fp, iou_thr)
    return m.precision, m.recall, m.f1, (m.true_idx, m.found_idx)


def score_centroids(true_masks: np.ndarray, est_fp: np.ndarray, max_dist: float = 5.0):
    """Neurofinder-style scores: Hungarian on centroid distance, pairs within ``max_dist``
    (see :func:`mesmerize_helpers.scoring.match_by_centroid`); a component's centroid is
    that of its mask (pixels above 20 % of its peak), as for the labels."""
    est_masks = footprint_masks(est_fp).reshape(est_fp.shape)
    m = match_by_centroid(centroids(true_masks), centroids(est_masks), max_dist)
    return m.precision, m.recall, m.f1


# ------------------------------------------------------------------------------ running


def _rss_mb() -> float:
    """Resident memory of this process (MB), from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _stage(fn, *args, **kwargs):
    """Run one stage; return (result, seconds, peak RSS MB during it).

    A thread samples the resident memory every 5 ms (``tracemalloc`` would slow the stage).
    """
    peak = [_rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return out, seconds, max(peak[0], _rss_mb())


def run_case(case: str, n_processes: int) -> dict:
    """Fit, refit and evaluate one case in this process; return timings and scores."""
    from mesmerize_helpers.engine.cnmf import (
        cnmf_params,
        evaluate_components,
        fit_cnmf,
        movie_to_Y,
        to_estimates,
    )
    from mesmerize_helpers.engine.cnmf_field import fit_field, refine
    from mesmerize_helpers.engine.noise import pixel_noise

    if case == "synthetic":
        from mesmerize_helpers.synthetic import simulate_2p

        sim = simulate_2p(n_frames=1000, shape=(128, 128), n_neurons=30, seed=0)
        movie, params = sim.movie, SYNTHETIC_PARAMS
    else:
        import tifffile

        movie = tifffile.imread(NF_MOVIE)
        params = NEUROFINDER_PARAMS
    P = cnmf_params(params)

    # "fit" = what CaImAn's cnm.fit does (patches or whole-field init + one round of updates),
    # "refit" = the second whole-field round seeded with the fit (cnm.refit)
    def fit():
        from mesmerize_helpers.engine.data import as_data

        Y, dims = movie_to_Y(movie)
        Y = as_data(Y, dims)  # the engine reads blocks of a DataMatrix (unlimited budget here)
        sn = pixel_noise(Y, P["noise_range"], P["noise_method"])
        if P["rf"] is not None:
            from mesmerize_helpers.engine.patches import fit_patches

            m = fit_patches(Y, dims, P, n_processes=n_processes, progress=False)
            m = refine(Y, dims, m, P, sn, drop_background=True)
        else:  # drops as fit_cnmf
            m = fit_field(Y, dims, P, K=int(P["K"]), nb=int(P["nb"]), sn=sn)
        return Y, dims, sn, m

    (Y, dims, sn, m), t_fit, mem_fit = _stage(fit)
    m, t_refit, mem_refit = _stage(refine, Y, dims, m, P, sn, drop_background=True)
    est = to_estimates(m, sn, dims, int(P["p"]))
    del Y
    est, t_eval, mem_eval = _stage(evaluate_components, est, movie, params)
    # the public one-call API, to check it gives the same components
    _, t_total, _ = _stage(fit_cnmf, movie, params, n_processes=n_processes, progress=False)

    good = est.idx_components
    out = {
        "case": case, "movie": list(movie.shape), "params": params,
        "fit_s": t_fit, "refit_s": t_refit, "eval_s": t_eval, "fit_cnmf_s": t_total,
        "fit_peak_mb": mem_fit, "refit_peak_mb": mem_refit, "eval_peak_mb": mem_eval,
        "n_components": est.n_components, "n_accepted": int(len(good)),
    }
    if case == "synthetic":
        p, r, f1, (ti, ei) = score_iou(sim.footprints, est.footprints(good))
        out.update(precision=p, recall=r, f1=f1,
                   trace_corr_median=float(np.median(row_correlation(sim.calcium[ti],
                                                               est.C[good[ei]]))))
    else:
        masks = np.load(NF_MASKS)["masks"]
        p, r, f1 = score_centroids(masks, est.footprints(good))
        out.update(precision=p, recall=r, f1=f1, n_labelled=int(len(masks)))
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


SCALING_SIDES = (128, 256, 512)


def run_scaling(side: int) -> dict:
    """fit_cnmf + evaluation on a simulated ``side`` x ``side`` field (300 frames, the
    synthetic case's density of neurons); memory is counted above the movie's."""
    from mesmerize_helpers.engine.cnmf import evaluate_components, fit_cnmf
    from mesmerize_helpers.synthetic import simulate_2p

    n = int(round(30 * (side / 128) ** 2))
    sim = simulate_2p(n_frames=300, shape=(side, side), n_neurons=n, seed=0)
    movie = np.ascontiguousarray(sim.movie, np.float32)
    base = _rss_mb()
    est, t_fit, mem_fit = _stage(fit_cnmf, movie, SYNTHETIC_PARAMS, progress=False)
    est, t_eval, mem_eval = _stage(evaluate_components, est, movie, SYNTHETIC_PARAMS)
    good = est.idx_components
    p, r, f1, (ti, ei) = score_iou(sim.footprints, est.footprints(good))
    return {
        "case": "scaling", "movie": list(movie.shape), "n_neurons": n,
        "movie_mb": movie.nbytes / 2**20, "fit_cnmf_s": t_fit, "eval_s": t_eval,
        "fit_extra_mb": mem_fit - base, "eval_extra_mb": mem_eval - base,
        "n_components": est.n_components, "n_accepted": int(len(good)),
        "precision": p, "recall": r, "f1": f1,
        "trace_corr_median": float(np.median(row_correlation(sim.calcium[ti],
                                                             est.C[good[ei]]))),
    }


def random_disks(avoid: np.ndarray, n: int, radius: float, seed: int = 0) -> np.ndarray:
    """(n, y, x) disks of ``radius`` px placed at random, 3 px or more away from ``avoid``
    (a (y, x) boolean image) and from each other."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = avoid.shape
    yy, xx = np.mgrid[:h, :w]
    taken = ndimage.binary_dilation(avoid, iterations=3)
    out = []
    for _ in range(100 * n):
        if len(out) == n:
            break
        cy, cx = rng.uniform(radius + 8, (h - radius - 8, w - radius - 8))
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        if not (d & taken).any():
            out.append(d)
            taken |= ndimage.binary_dilation(d, iterations=3)
    return np.array(out)


def run_seeded() -> dict:
    """Seeded CNMF on the neurofinder movie: from somata found in the mean image
    (:mod:`mesmerize_helpers.engine.anatomy`), and, as a control of what activity can tell,
    from the 99 labels plus as many random disks away from them."""
    import tifffile

    from mesmerize_helpers.engine.anatomy import disk_masks, find_somata
    from mesmerize_helpers.engine.cnmf import evaluate_components, fit_cnmf

    movie = tifffile.imread(NF_MOVIE)
    masks = np.load(NF_MASKS)["masks"]
    params = {**NEUROFINDER_PARAMS, "rf": None}
    gsig = tuple(params["gSig"])
    out: dict = {"case": "neurofinder-seeded", "params": params}

    def fit(seeds: np.ndarray):
        t0 = time.perf_counter()
        est = fit_cnmf(movie, params, Ain=seeds, n_processes=1, progress=False)
        est = evaluate_components(est, movie, params)
        return est, time.perf_counter() - t0

    # anatomy: dark nuclei (and bright filled somata) of the mean image; the defaults
    # (params["Ain"] = "somata") first, then their neighbours, to show how much hangs on them
    mean = movie.mean(axis=0)
    out["anatomy"] = []
    for polarity, min_z in SOMATA_SETTINGS:
        t0 = time.perf_counter()
        centres = find_somata(mean, gsig, min_z=min_z, polarity=polarity)
        t_find = time.perf_counter() - t0
        m = match_by_centroid(centroids(masks), centres.astype(float), 5.0)
        disks = disk_masks(centres, movie.shape[1:], gsig).transpose(2, 0, 1)
        est, t_fit = fit(disks)
        good = est.idx_components
        # how far components end from their seed (a seed should stay the cell it marks)
        on = est.seed_index >= 0  # seeded components all lie on their mask
        fp = est.footprints(np.flatnonzero(on))
        drift = np.hypot(*(centroids(footprint_masks(fp).reshape(fp.shape))
                           - centres[est.seed_index[on]]).T)
        out["anatomy"].append({
            "polarity": polarity, "min_z": min_z,
            "n_found": int(len(centres)), "find_s": t_find, "fit_eval_s": t_fit,
            "found": [m.precision, m.recall, m.f1],
            "n_components": est.n_components, "n_accepted": int(len(good)),
            "drift_median_px": float(np.median(drift)),
            "all": list(score_centroids(masks, est.footprints())),
            "accepted": list(score_centroids(masks, est.footprints(good))),
        })
    # control: do labelled cells stand out by their activity from random places?
    rnd = random_disks(masks.any(axis=0), len(masks), radius=np.sqrt(np.median(
        masks.sum(axis=(1, 2))) / np.pi))
    seeds = np.concatenate([masks, rnd])
    est, _ = fit(seeds)
    origin = est.seed_index
    labelled = (origin >= 0) & (origin < len(masks))
    # per seed: a seed is accepted when a component made from it is (dropped: not)
    seed_ok = np.zeros(len(seeds), bool)
    accepted = origin[est.idx_components]
    seed_ok[accepted[accepted >= 0]] = True
    out["control"] = {
        "n_random": int(len(rnd)),
        "accepted_labelled": float(seed_ok[: len(masks)].mean()),
        "accepted_random": float(seed_ok[len(masks):].mean()),
        "snr_median_labelled": float(np.median(est.SNR_comp[labelled])),
        "snr_median_random": float(np.median(est.SNR_comp[(origin >= len(masks))])),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append",
                    choices=["synthetic", "neurofinder", "neurofinder-seeded", "scaling"])
    ap.add_argument("--side", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n-processes", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cases = args.case or ["synthetic", "neurofinder"]
    if args.child:
        case = cases[0]
        if case == "neurofinder-seeded":
            res = run_seeded()
        elif case == "scaling":
            res = run_scaling(args.side)
        else:
            res = run_case(case, args.n_processes)
        print(json.dumps(res))
        return
    results = []
    for case in cases:
        if case.startswith("neurofinder") and not NF_MOVIE.exists():
            print(f"skipping {case}: {NF_MOVIE} not found")
            continue
        for side in SCALING_SIDES if case == "scaling" else (None,):
            cmd = [sys.executable, __file__, "--child", "--case", case,
                   "--n-processes", str(args.n_processes)]
            cmd += ["--side", str(side)] if side else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    seeded = [r for r in results if r["case"] == "neurofinder-seeded"]
    scaling = [r for r in results if r["case"] == "scaling"]
    results = [r for r in results if r["case"] not in ("neurofinder-seeded", "scaling")]
    if results:
        print("| case | movie | fit s | refit s | eval s | fit_cnmf s | peak RSS MB "
              "(fit/refit/eval) | max RSS MB | K / accepted | precision | recall | F1 "
              "| trace corr |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {'x'.join(map(str, r['movie']))} | {r['fit_s']:.1f} | "
              f"{r['refit_s']:.1f} | {r['eval_s']:.2f} | {r['fit_cnmf_s']:.1f} | "
              f"{r['fit_peak_mb']:.0f} / {r['refit_peak_mb']:.0f} / {r['eval_peak_mb']:.0f} | "
              f"{r['maxrss_mb']:.0f} | {r['n_components']} / {r['n_accepted']} | "
              f"{r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | "
              f"{r.get('trace_corr_median', float('nan')):.3f} |")
    for r in seeded:
        c = r["control"]
        print("\nneurofinder, seeded from the somata of the mean image:\n\n"
              "| polarity, min_z | somata (find s) | P / R / F1 of the somata | seeded fit + "
              "eval s | components / accepted | median px to seed | P / R / F1 all | "
              "P / R / F1 accepted |\n|---|---|---|---|---|---|---|---|")
        for a in r["anatomy"]:
            print(f"| {a['polarity']}, {a['min_z']} | {a['n_found']} ({a['find_s']:.2f}) | "
                  f"{_prf(a['found'])} | {a['fit_eval_s']:.1f} | {a['n_components']} / "
                  f"{a['n_accepted']} | {a['drift_median_px']:.1f} | {_prf(a['all'])} | "
                  f"{_prf(a['accepted'])} |")
        print(f"control, seeded from the 99 labels + {c['n_random']} random disks: accepted "
              f"{c['accepted_labelled']:.0%} of labelled vs {c['accepted_random']:.0%} of "
              f"random; median SNR {c['snr_median_labelled']:.1f} vs "
              f"{c['snr_median_random']:.1f}")
    if scaling:
        print("\n| field | neurons | movie MB | fit_cnmf s | eval s | peak MB above the movie "
              "(fit / eval) | x movie (fit) | K / accepted | F1 | trace corr |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in scaling:
        print(f"| {'x'.join(map(str, r['movie']))} | {r['n_neurons']} | {r['movie_mb']:.0f} | "
              f"{r['fit_cnmf_s']:.1f} | {r['eval_s']:.1f} | {r['fit_extra_mb']:.0f} / "
              f"{r['eval_extra_mb']:.0f} | {r['fit_extra_mb'] / r['movie_mb']:.1f} | "
              f"{r['n_components']} / {r['n_accepted']} | {r['f1']:.2f} | "
              f"{r['trace_corr_median']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results + seeded + scaling, indent=2))


def _prf(v) -> str:
    return "/".join(f"{x:.2f}" for x in v)


if __name__ == "__main__":
    main()
