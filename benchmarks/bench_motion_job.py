"""The whole mcorr job (what ``s.caiman.run()`` waits for) against mesmerize-core's item done
with CaImAn, measured in the same run.

For each movie (400 and 2000 frames at 512x512, 4000 at 256x256: the textured two-photon-like
scene of ``bench_motion.make_movie``, uniform shifts within +/-5 px, stored as a contiguous
uint16 TIFF under ``--scratch``) and each mode (rigid; piecewise rigid with CaImAn's default
strides 96 / overlaps 32, ``max_deviation_rigid`` 3; both ``max_shifts`` 8):

- **job (batch)**: ``algo_duration`` of an mcorr item run with ``s.caiman.run()`` (Snakemake,
  one core): reading the movie, registration, the summary images, writing ``mcorr.npy``,
  shifts and images;
- **job (process)**: the same step (``jobs.run_item``) in a fresh process of its own, by wall
  time and by CPU time (user + system) of that process, with its peak RSS;
- **engine**: ``motion_correct`` alone writing the registered movie (no summary images), in a
  fresh process;
- **CaImAn item** (with ``--caiman PYTHON``): ``caiman_mcorr_item.py`` in CaImAn's
  environment: ``MotionCorrect(save_movie=True)``, the projections and ``local_correlations``,
  one process;
- **FFT pair**: CPU time of one ``scipy.fft.rfft2`` + ``irfft2`` of a float32 frame on one
  thread, measured in this run; ``job CPU / FFT`` is the job's CPU time per frame over it;
- **load**: the 1-minute load average before and after each case (the machine is shared).

Usage (from the repository root)::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_motion_job.py \\
        --caiman /work/scratch/caiman/venv/bin/python --scratch /work/scratch/motion
    ... --quick    # 400x512x512 and 1000x256x256 only

The movies (up to 1 GB each) are left in ``--scratch``; ``--cleanup`` deletes them at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.fft

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_motion import fft_pair_time  # noqa: E402

MODES = {
    "rigid": {"max_shifts": [8, 8]},
    "pw-rigid": {"max_shifts": [8, 8], "pw_rigid": True, "max_deviation_rigid": 3},
}
CASES = [(400, 512), (2000, 512), (4000, 256)]
QUICK_CASES = [(400, 512), (1000, 256)]
# CaImAn's environment for single-core comparisons (as /work/scratch/caiman/env.sh sets it)
CAIMAN_ENV = {"MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def write_movie(path: Path, n_frames: int, size: int, chunk: int = 100) -> Path:
    """A contiguous uint16 TIFF of ``bench_motion.make_movie`` frames, written in chunks."""
    import tifffile
    from bench_motion import make_movie

    if path.exists():
        return path
    tmp = path.with_suffix(".partial.tif")
    out = tifffile.memmap(tmp, shape=(n_frames, size, size), dtype=np.uint16, bigtiff=True)
    for start in range(0, n_frames, chunk):
        out[start:start + chunk], _ = make_movie(min(chunk, n_frames - start), size,
                                                 seed=1 + start)
    out.flush()
    del out
    tmp.rename(path)
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- probes: run in a fresh process of their own (``--probe``) ------------------------------

def probe(kind: str, movie: str, params: dict, out: str) -> dict:
    """Time one job step (``job``) or the engine alone (``engine``) in this process."""
    from mesmerize_helpers.io.movies import open_movie

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    if kind == "job":
        from mesmerize_helpers.jobs import run_item

        manifest = run_item(out, uuid="bench", algo="mcorr", params={"main": params},
                            input_movie=movie, progress=False)
        if not manifest["success"]:
            raise RuntimeError(manifest["traceback"])
    else:
        from mesmerize_helpers.engine.motion import motion_correct
        from mesmerize_helpers.outputs import MovieWriter

        frames = open_movie(movie)
        Path(out).mkdir(parents=True, exist_ok=True)
        with MovieWriter(Path(out) / "registered.npy", frames.shape) as writer:
            motion_correct(frames, params, writer, progress=False)
    return {"wall": time.perf_counter() - wall0, "cpu": cpu_seconds() - cpu0,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_probe(kind: str, movie: Path, params: dict, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--probe", kind, str(movie), json.dumps(params), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_caiman(python: str, movie: Path, params: dict, out: Path) -> dict:
    env = {**os.environ, **CAIMAN_ENV, "OPENBLAS_CORETYPE": os.environ.get(
        "OPENBLAS_CORETYPE", "SkylakeX")}
    cmd = [python, str(ROOT / "benchmarks" / "caiman_mcorr_item.py"), str(movie), str(out),
           json.dumps(params)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_batch_item(movie: Path, params: dict, folder: Path) -> float:
    """``algo_duration`` (s) of an mcorr item run with ``s.caiman.run()`` on one core."""
    import mesmerize_helpers as mh

    df = mh.create_batch(folder / "batch.tsv", remove_existing=True)
    df.caiman.add_item("mcorr", "bench", movie, {"main": params})
    manifest = df.iloc[0].caiman.run(wait=False, cores=1).wait()
    return float(manifest["algo_duration"])


def measure(n_frames: int, size: int, mode: str, movie: Path, work: Path,
            caiman: str | None) -> dict:
    params = MODES[mode]
    row = {"movie": f"{n_frames}x{size}x{size}", "mode": mode, "load_before": os.getloadavg()[0]}
    row["fft"] = fft_pair_time(size)
    row["batch"] = run_batch_item(movie, params, work / "batch")
    shutil.rmtree(work / "batch", ignore_errors=True)
    row["job"] = run_probe("job", movie, params, work / "job")
    shutil.rmtree(work / "job", ignore_errors=True)
    row["engine"] = run_probe("engine", movie, params, work / "engine")
    shutil.rmtree(work / "engine", ignore_errors=True)
    if caiman:
        row["caiman"] = run_caiman(caiman, movie, params, work / "caiman")
        shutil.rmtree(work / "caiman", ignore_errors=True)
    row["load_after"] = os.getloadavg()[0]
    return row


def fps(n: int, seconds: float) -> str:
    return f"{n / seconds:.0f}"


def print_table(rows: list[dict]) -> None:
    print("\n| movie | mode | job fps (batch, algo_duration) | job fps (process: wall / CPU) "
          "| job peak RSS (MB) | engine fps (wall / CPU) | CaImAn item fps (wall / CPU) "
          "| CaImAn MC-only fps (wall) | job / CaImAn item (CPU) | job CPU per frame / FFT pair "
          "| load before / after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = int(r["movie"].split("x")[0])
        job, eng, cm = r["job"], r["engine"], r.get("caiman")
        cm_fps = f"{fps(n, cm['wall'])} / {fps(n, cm['cpu'])}" if cm else "-"
        cm_mc = fps(n, cm["wall_mc"]) if cm else "-"
        ratio = f"{cm['cpu'] / job['cpu']:.1f}x" if cm else "-"
        print(f"| {r['movie']} | {r['mode']} | {fps(n, r['batch'])} | {fps(n, job['wall'])} / "
              f"{fps(n, job['cpu'])} | {job['peak_mb']:.0f} | {fps(n, eng['wall'])} / "
              f"{fps(n, eng['cpu'])} | {cm_fps} | {cm_mc} | {ratio} | "
              f"{job['cpu'] / n / r['fft']:.1f} | {r['load_before']:.1f} / {r['load_after']:.1f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--caiman", help="Python of an environment with CaImAn 1.12")
    parser.add_argument("--scratch", default=tempfile.gettempdir(),
                        help="folder for the movies and outputs")
    parser.add_argument("--cleanup", action="store_true", help="delete the movies at the end")
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        kind, movie, params, out = args.probe
        print(json.dumps(probe(kind, movie, json.loads(params), out)))
        return
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, cpus={os.cpu_count()}, "
          f"CaImAn: {args.caiman or 'not run'}", flush=True)
    rows, movies = [], []
    for n_frames, size in QUICK_CASES if args.quick else CASES:
        movie = write_movie(scratch / f"bench_job_{n_frames}x{size}.tif", n_frames, size)
        movies.append(movie)
        for mode in MODES:
            rows.append(measure(n_frames, size, mode, movie, scratch / "work", args.caiman))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    if args.cleanup:
        for movie in movies:
            movie.unlink(missing_ok=True)
        shutil.rmtree(scratch / "work", ignore_errors=True)


if __name__ == "__main__":
    main()
