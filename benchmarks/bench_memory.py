"""Peak memory, time and disk of cnmf / cnmfe jobs against the number of frames (issue 14).

Each case generates a movie on disk (a uint16 TIFF rendered a chunk of frames at a time:
``simulate_2p(..., tiff=)`` for cnmf, ``simulate_1p_vignette(..., tiff=)`` for cnmfe), makes
a batch in the scratch folder and runs its items through the batch API, ``s.caiman.run()``,
each in a child Python process (``--code DIR`` runs another checkout of the package, e.g.
``main`` for the in-RAM baseline). Measured per job:

- **peak RSS**: the high-water mark of the job process's resident memory (``VmHWM`` of
  ``/proc/<pid>/status``, read every 0.1 s while it runs: a high-water mark, so no peak
  between two reads is missed), the process Snakemake starts for the item
  (``.../run_item.py``), not Snakemake itself;
- **time**: the item's ``algo_duration`` (the manifest's; what ``s.caiman.run()`` users
  see) and per frame;
- **disk**: the bytes of the item's folder (and of the files it shares with its parent);
- **results**: with ``--compare``, the job's components against the in-RAM fit of the same
  movie in this process (the engine with an unlimited budget: the whole movie in memory),
  where that fits: components matched by footprint (cosine >= 0.9), the largest
  difference of their traces relative to the trace's range.

Usage (OPENBLAS_CORETYPE=SkylakeX; the scratch folder is deleted after each case unless
``--keep``)::

    python benchmarks/bench_memory.py --algo cnmf --frames 1000 4000 16000 64000 --size 256
    python benchmarks/bench_memory.py --algo cnmf --frames 1000 4000 --size 256 \
        --baseline /path/main --compare     # the in-RAM code on the same movies, right after
    python benchmarks/bench_memory.py --algo cnmf --frames 20000 --size 512 --mcorr
    python benchmarks/bench_memory.py --algo cnmfe --frames 10000 --size 480

``--json out.json`` appends one JSON line per case. ``--caiman PYTHON`` runs mesmerize-core's
item with CaImAn (``caiman_cnmf_item.py``) on the same movie; ``--movie M.tif`` (with
``--lens LENS.npy``, < 0.5 = dark border) runs a recorded movie instead of a generated one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Params of the cases: CaImAn's demo settings for two-photon (patches of 30 px, 4
#: components each) and one-photon data (CNMF-E's demo values with patches).
PARAMS = {
    "cnmf": {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 2, "rf": 15, "stride": 6, "K": 4,
             "gSig": [4, 4], "ssub": 2, "tsub": 2, "merge_thr": 0.8, "min_SNR": 2.5,
             "rval_thr": 0.8},
    "cnmfe": {"fr": 10, "decay_time": 0.6, "gSig": [3, 3], "min_corr": 0.8, "min_pnr": 5,
              "rf": 24, "stride": 12, "nb": 0, "ssub_B": 2, "merge_thr": 0.7,
              "min_SNR": 3.0, "rval_thr": 0.85,
              # the built-in CNMF-E's defaults (the demo's), spelled out for CaImAn, whose
              # defaults are two-photon ones: with its ssub = tsub = 2 it finds no cell here
              "gSiz": [13, 13], "ssub": 1, "tsub": 1, "p": 1, "K": None, "nb_patch": 0,
              "low_rank_background": None, "ring_size_factor": 1.5, "del_duplicates": True},
}
MCORR = {"max_shifts": [8, 8], "pw_rigid": False, "border_nan": "copy"}

#: Neurons per 128 x 128 px (the density of the benchmarks' synthetic cases).
DENSITY = {"cnmf": 30, "cnmfe": 25}


def make_movie(algo: str, n_frames: int, shape: tuple[int, int], path: Path, seed: int = 0,
               motion: float | None = None) -> dict:
    """Write the case's movie as a uint16 TIFF; return its ground truth summary."""
    sys.path.insert(0, str(ROOT))
    from mesmerize_helpers.synthetic import simulate_1p_vignette, simulate_2p

    n = int(DENSITY[algo] * shape[0] * shape[1] / 128**2)
    t0 = time.perf_counter()
    if algo == "cnmf":
        sim = simulate_2p(n_frames=n_frames, shape=shape, n_neurons=n, seed=seed,
                          motion=motion, tiff=path)
    else:
        sim = simulate_1p_vignette(n_frames=n_frames, shape=shape, n_neurons=n,
                                   seed=seed, tiff=path)
    np.save(path.with_suffix(".footprints.npy"), sim.footprints)
    if "lens" in sim.background:
        np.save(path.with_suffix(".lens.npy"), sim.background["lens"])
    return {"neurons": n, "generate_s": round(time.perf_counter() - t0, 1),
            "tiff_mb": round(path.stat().st_size / 2**20)}


RUNNER = r"""
import json, sys
import mesmerize_helpers as mh
batch, movie, algo, params, mcorr = sys.argv[1:6]
params, mcorr = json.loads(params), json.loads(mcorr)
df = mh.create_batch(batch)
if mcorr:
    df.caiman.add_item(algo="mcorr", item_name="m", input_movie_path=movie,
                       params={"main": mcorr})
    df = df.caiman.reload_from_disk()
    m = df.iloc[-1].caiman.run().wait()
    print("MCORR", json.dumps({"success": m["success"], "algo_duration": m.get("algo_duration"),
                               "traceback": (m.get("traceback") or "")[:2000]}), flush=True)
    df = df.caiman.reload_from_disk()
    source = df.iloc[-1]
else:
    source = movie
df.caiman.add_item(algo=algo, item_name="m", input_movie_path=source, params=params)
df = df.caiman.reload_from_disk()
m = df.iloc[-1].caiman.run().wait()
print("ITEM", json.dumps({"success": m["success"], "algo_duration": m.get("algo_duration"),
                          "uuid": m.get("uuid"), "traceback": (m.get("traceback") or "")[:2000]}),
      flush=True)
"""


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_batch(batch: Path, movie: Path, algo: str, params: dict, mcorr: dict | None,
              code: Path, mem_mb: float | None = None) -> dict:
    """Run the items through the batch API in a child process; watch every job process."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(code), "MESMERIZE_PROGRESS": "0"}
    cmd = [sys.executable, "-c", RUNNER, str(batch), str(movie), algo,
           json.dumps({"main": params, **({"resources": {"mem_mb": mem_mb}} if mem_mb else {})}),
           json.dumps(mcorr or {})]
    batch.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log_out, log_err = open(batch.parent / "run.out", "w+"), open(batch.parent / "run.err", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log_out, stderr=log_err, text=True,
                            cwd=str(code))
    top = psutil.Process(proc.pid)
    jobs: dict[int, dict] = {}  # job pid -> start time, high-water mark (kB), CPU s
    tree_peak, tick = 0, 0
    while proc.poll() is None:
        if tick % 10 == 0:  # the process tree once a second (its RSS, new jobs)
            try:
                procs = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                    if p.pid not in jobs and "run_item.py" in " ".join(p.cmdline()):
                        jobs[p.pid] = {"proc": p, "start": p.create_time(), "hwm_kb": 0}
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            tree_peak = max(tree_peak, total)
        for pid, job in jobs.items():  # the jobs' high-water marks every 0.1 s
            hwm = _status_kb(pid, "VmHWM")
            if hwm:
                job["hwm_kb"] = max(job["hwm_kb"], hwm)
                try:
                    cpu = job["proc"].cpu_times()
                    job["cpu_s"] = cpu.user + cpu.system
                except psutil.NoSuchProcess:
                    pass
        tick += 1
        time.sleep(0.1)
    proc.wait()
    wall = time.perf_counter() - t0
    log_out.seek(0), log_err.seek(0)
    out, err = log_out.read(), log_err.read()
    log_out.close(), log_err.close()
    lines = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
             for line in out.splitlines() if line.startswith(("MCORR ", "ITEM "))}
    if "ITEM" not in lines:
        raise RuntimeError(f"the batch run failed:\n{out[-3000:]}\n{err[-3000:]}")
    ordered = [j for _, j in sorted(jobs.items(), key=lambda kv: kv[1]["start"])]
    result = {"wall_s": round(wall, 1), "tree_peak_mb": round(tree_peak / 2**20),
              "item": lines["ITEM"],
              "item_peak_mb": round(ordered[-1]["hwm_kb"] / 1024) if ordered else None,
              # CPU seconds of the job process (its last reading, up to 0.1 s short)
              "item_cpu_s": round(ordered[-1].get("cpu_s", 0), 1) if ordered else None}
    if "MCORR" in lines:
        result["mcorr"] = lines["MCORR"]
        result["mcorr_peak_mb"] = round(ordered[0]["hwm_kb"] / 1024) if len(ordered) > 1 else None
    return result


def disk(batch: Path) -> dict:
    """MB written per item folder (files under it, not its children's folders)."""
    sizes = {}
    for folder in sorted(p for p in batch.rglob("manifest.json")):
        item = folder.parent
        files = {f.name: f.stat().st_size for f in item.iterdir() if f.is_file()}
        sizes[item.name[:8]] = {"total_mb": round(sum(files.values()) / 2**20),
                                "largest": {k: round(v / 2**20) for k, v in sorted(
                                    files.items(), key=lambda kv: -kv[1])[:3]}}
    return sizes


def compare(batch: Path, movie_path: Path, algo: str, params: dict, uuid: str,
            registered: bool) -> dict:
    """The job's components against the in-RAM fit of the same movie (unlimited budget)."""
    sys.path.insert(0, str(ROOT))
    from mesmerize_helpers.engine import cnmf, cnmfe
    from mesmerize_helpers.io.estimates import load_estimates

    item = next(batch.rglob(f"{uuid}/manifest.json")).parent
    manifest = json.loads((item / "manifest.json").read_text())
    job = load_estimates(item / manifest["outputs"]["cnmf-hdf5-path"])
    if registered:  # the parent's registered movie, as the job read it
        movie = np.load(item.parent / "mcorr.npy")
    else:
        import tifffile

        movie = tifffile.imread(movie_path).astype(np.float32)
    engine = cnmf if algo == "cnmf" else cnmfe
    refit = params.get("refit") is True  # an item refits only when told to (mesmerize-core)
    t0 = time.perf_counter()
    est = engine.fit_cnmf(movie, params, refit=refit, progress=False) if algo == "cnmf" else \
        engine.fit_cnmfe(movie, params, refit=refit, progress=False)
    est = engine.evaluate_components(est, movie, params)
    fit_s = time.perf_counter() - t0
    del movie
    A1, A2 = job.A.toarray(), est.A.toarray()
    n1, n2 = np.linalg.norm(A1, axis=0), np.linalg.norm(A2, axis=0)
    cos = (A1.T @ A2) / np.maximum(np.outer(n1, n2), 1e-30)
    pairs = [(i, int(np.argmax(cos[i]))) for i in range(len(n1)) if cos.shape[1] and
             cos[i].max() >= 0.9]
    worst = 0.0
    for i, j in pairs:
        rng = max(float(np.ptp(est.C[j])), 1e-12)
        worst = max(worst, float(np.abs(job.C[i] - est.C[j]).max()) / rng)
    return {"K_job": int(A1.shape[1]), "K_ram": int(A2.shape[1]),
            "accepted_job": len(job.idx_components), "accepted_ram": len(est.idx_components),
            "matched": len(pairs), "max_trace_diff_rel": worst, "ram_fit_s": round(fit_s, 1),
            "same_accepted": bool(sorted(job.idx_components.tolist()) ==
                                  sorted(est.idx_components.tolist()))}


def border_components(batch: Path, uuid: str, lens_path: Path) -> dict:
    """Accepted cnmfe components whose peak lies in the dark border (lens < 0.5)."""
    sys.path.insert(0, str(ROOT))
    from mesmerize_helpers.io.estimates import load_estimates

    item = next(batch.rglob(f"{uuid}/manifest.json")).parent
    manifest = json.loads((item / "manifest.json").read_text())
    est = load_estimates(item / manifest["outputs"]["cnmf-hdf5-path"])
    peaks = np.asarray(est.A.argmax(axis=0)).ravel()
    acc = np.asarray(est.idx_components, int)
    border = in_border(peaks[acc], lens_path)
    return {"K": int(est.A.shape[1]), "accepted": len(acc), "accepted_in_border": border,
            "rejected_in_border": in_border(peaks, lens_path) - border}


def plot_case(batch: Path, uuid: str, png: Path, lens_path: Path | None = None,
              caiman_peaks: list[int] | None = None) -> Path:
    """Accepted (green) and rejected (red) contours of the item on its mean and correlation
    images, through the batch API as a user would draw them; the lens's edge (lens = 0.5)
    dashed, CaImAn's accepted components (their footprints' peaks) as crosses."""
    sys.path.insert(0, str(ROOT))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import mesmerize_helpers as mh

    df = mh.load_batch(batch)
    row = df[df["uuid"] == uuid].iloc[0]
    good, bad = (row.cnmf.get_contours(which, swap_dim=False)[0] for which in ("good", "bad"))
    images = {"mean": row.caiman.get_projection("mean"), "correlation": row.caiman.get_corr_image()}
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, (name, image) in zip(axes, images.items()):
        ax.imshow(image, cmap="gray")
        for contours, colour in ((bad, "red"), (good, "lime")):
            for c in contours:
                if len(c):
                    ax.plot(c[:, 0], c[:, 1], color=colour, linewidth=0.7)
        if lens_path is not None and lens_path.exists():
            ax.contour(np.load(lens_path), levels=[0.5], colors="cyan", linestyles="dashed",
                       linewidths=0.8)
        if caiman_peaks is not None:
            y, x = np.unravel_index(np.asarray(caiman_peaks, int), image.shape, order="F")
            ax.plot(x, y, "x", color="orange", markersize=4)
        ax.set_title(f"{name} image: {len(good)} accepted (green), {len(bad)} rejected (red)")
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return png


def run_caiman(algo: str, movie: Path, params: dict, out: Path, python: str) -> dict:
    """mesmerize-core's item done with CaImAn (``caiman_cnmf_item.py``) on the same movie."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::UserWarning:caiman",
           "CAIMAN_DATA": str(Path(python).parents[2] / "caiman_data")}
    env.pop("PYTHONPATH", None)
    res = subprocess.run([python, str(ROOT / "benchmarks" / "caiman_cnmf_item.py"), algo,
                          str(movie), str(out), json.dumps(params)], env=env,
                         capture_output=True, text=True)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode or not lines:
        raise RuntimeError(f"CaImAn's item failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return json.loads(lines[-1])


def in_border(peaks: list[int] | np.ndarray, lens_path: Path) -> int:
    """How many of these pixels (Fortran-order indices) lie in the dark border (lens < 0.5)."""
    lens = np.load(lens_path)
    return int((lens.ravel(order="F")[np.asarray(peaks, int)] < 0.5).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", choices=("cnmf", "cnmfe"), default="cnmf")
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--size", type=int, default=256, help="square frames of this side")
    ap.add_argument("--shape", type=int, nargs=2, help="frames of (height, width) instead")
    ap.add_argument("--movie", type=Path, help="run this movie instead of a generated one")
    ap.add_argument("--lens", type=Path, help="with --movie: (y, x) .npy, < 0.5 = dark border")
    ap.add_argument("--mcorr", action="store_true", help="run mcorr -> item (movie with motion)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout of the package to run")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the same movie with this checkout (e.g. the in-RAM code)")
    ap.add_argument("--mem-mb", type=float,
                    help="the item's params['resources']['mem_mb'] (default: the job's own)")
    ap.add_argument("--params", type=json.loads, default={}, help="extra params (JSON)")
    ap.add_argument("--compare", action="store_true", help="in-RAM fit of the same movie")
    ap.add_argument("--caiman", metavar="PYTHON",
                    help="also run the item with CaImAn (its Python) on the same movie")
    ap.add_argument("--figure", type=Path, metavar="PNG",
                    help="contours on the mean / correlation images (last case)")
    ap.add_argument("--scratch", type=Path, default=Path("/work/scratch/memory/bench"))
    ap.add_argument("--movie-scratch", type=Path,
                    help="write the generated movie here (e.g. /dev/shm when disk is short)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    params = {**PARAMS[args.algo], **args.params}
    shape = tuple(args.shape) if args.shape else (args.size, args.size)
    for n_frames in args.frames:
        case = args.scratch / f"{args.algo}_{shape[0]}x{shape[1]}_{n_frames}"
        shutil.rmtree(case, ignore_errors=True)
        case.mkdir(parents=True)
        movie_dir = case if args.movie_scratch is None else args.movie_scratch / case.name
        movie_dir.mkdir(parents=True, exist_ok=True)
        movie = args.movie or movie_dir / "movie.tif"
        lens = args.lens if args.movie else movie.with_suffix(".lens.npy")
        row: dict = {"algo": args.algo, "frames": n_frames, "size": args.size, "shape": shape,
                     "movie": str(args.movie or ""), "code": str(args.code), "params": params,
                     "mcorr": args.mcorr, "openblas": os.environ.get("OPENBLAS_CORETYPE", "")}
        try:
            if args.movie:
                import tifffile

                with tifffile.TiffFile(movie) as tif:
                    row["shape"] = tif.series[0].shape[1:]
                    row["frames"] = n_frames = tif.series[0].shape[0]
            else:
                row.update(make_movie(args.algo, n_frames, shape, movie,
                                      motion=3.0 if args.mcorr else None))
            row.update(run_batch(case / "batch" / "batch.tsv", movie, args.algo, params,
                                 MCORR if args.mcorr else None, args.code, args.mem_mb))
            row["mem_mb"] = args.mem_mb
            item = row["item"]
            if item["success"]:
                row["ms_per_frame"] = round(1000 * item["algo_duration"] / n_frames, 2)
            row["disk"] = disk(case / "batch")
            if args.algo == "cnmfe" and item["success"] and lens and lens.exists():
                row["border"] = border_components(case / "batch", item["uuid"], lens)
            if args.baseline:  # right after ours, same movie: a ratio measured in one run
                base = run_batch(case / "baseline" / "batch.tsv", movie, args.algo, params,
                                 MCORR if args.mcorr else None, args.baseline)
                if base["item"]["success"]:
                    base["ms_per_frame"] = round(
                        1000 * base["item"]["algo_duration"] / n_frames, 2)
                base["disk"] = disk(case / "baseline")
                row["baseline"] = {"code": str(args.baseline), **base}
            if args.compare and item["success"]:
                row["compare"] = compare(case / "batch", movie, args.algo, params,
                                         item["uuid"], args.mcorr)
            if args.caiman:
                cm = run_caiman(args.algo, movie, params, case / "caiman", args.caiman)
                peaks = cm.pop("accepted_peaks")
                if lens and lens.exists():
                    cm["accepted_in_border"] = in_border(peaks, lens)
                row["caiman"] = cm
            if args.figure and item["success"]:
                plot_case(case / "batch" / "batch.tsv", item["uuid"], args.figure, lens,
                          peaks if args.caiman else None)
        finally:
            if not args.keep:
                shutil.rmtree(case, ignore_errors=True)
                shutil.rmtree(movie_dir, ignore_errors=True)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
