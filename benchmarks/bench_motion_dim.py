"""Motion-correction accuracy on dim, noise-limited two-photon movies, at several photon
levels: the built-in engine now, before (an older commit, optional) and CaImAn (optional).

Movies: ``synthetic.simulate_dim_2p`` (neuropil texture of 2-10 photons, a vignette fixed to
the microscope, neurons firing up to 30-60 photons at their peak, Poisson shot noise plus
read noise of 1 photon; uniformly random shifts within +/-5 px, half of them sub-pixel,
applied exactly), all counts scaled by ``photons``. Each is registered rigidly and
piecewise-rigidly with ``gSig_filt=(3, 3)`` (CaImAn's default strides 96 / overlaps 32; 48 / 24
on fields under 256 px), CaImAn's other defaults (``max_shifts`` 6). Reported: RMSE (px) of
the applied shifts against the true ones after removing their constant offset, over every
frame (and every patch); with several ``--seeds``, the mean over the seeds' movies and, in
brackets, the worst.

Usage (from the repository root)::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_motion_dim.py --before e6331c8 \\
        --caiman /work/scratch/caiman/venv/bin/python --scratch /work/scratch/motion \\
        --sizes 128 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("MOTION_BENCH_OTHER_CODE"):
    sys.path.insert(0, str(ROOT))

MODES = {"rigid": {}, "pw-rigid, gSig_filt": {"pw_rigid": True, "gSig_filt": [3, 3]}}


def params_for(mode: str, size: int) -> dict:
    small = {"strides": [48, 48], "overlaps": [24, 24]} if size < 256 and "pw" in mode else {}
    return {**MODES[mode], **small}


def shift_rmse(applied: np.ndarray, displacement: np.ndarray) -> float:
    """RMSE (px) of applied shifts (frames, [patches,] 2) against -displacement, constant
    offset removed."""
    err = applied.reshape(len(applied), -1, 2) + displacement[:, None, :]
    err = err - err.mean(axis=(0, 1))
    return float(np.sqrt((err**2).sum(axis=-1).mean()))


def register(movie_path: str, params: dict, out: str) -> None:
    """Register with whichever mesmerize_helpers is importable; save the applied shifts."""
    import tifffile

    from mesmerize_helpers.engine.motion import motion_correct

    res = motion_correct(tifffile.imread(movie_path), params, progress=False)
    np.save(out, res.shifts_pw if res.shifts_pw is not None else res.shifts_rig)


def run_other_code(code_dir: Path, movie: Path, params: dict, out: Path) -> np.ndarray:
    env = {**os.environ, "PYTHONPATH": str(code_dir), "MOTION_BENCH_OTHER_CODE": "1"}
    cmd = [sys.executable, __file__, "--register", str(movie), json.dumps(params), str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return np.load(out)


def run_caiman(python: str, movie: Path, params: dict, work: Path) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_motion_job import CAIMAN_ENV

    env = {**os.environ, **CAIMAN_ENV}
    cmd = [python, str(ROOT / "benchmarks" / "caiman_mcorr_item.py"), str(movie), str(work),
           json.dumps(params), "motion-only"]
    result = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return np.load(json.loads(result.stdout.strip().splitlines()[-1])["shifts"])


def export_commit(commit: str, folder: Path) -> Path:
    """The package as it was at ``commit`` (git archive), to import in a subprocess."""
    archive = folder / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit,
                    "mesmerize_helpers"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "before", filter="data")
    return folder / "before"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--photons", default="0.25,0.5,1,2,4")
    parser.add_argument("--seeds", default="0", help="comma-separated movie seeds")
    parser.add_argument("--before", help="git commit of the code to compare with")
    parser.add_argument("--caiman", help="Python of an environment with CaImAn 1.12")
    parser.add_argument("--scratch", default=tempfile.gettempdir())
    parser.add_argument("--register", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.register:
        movie, params, out = args.register
        register(movie, json.loads(params), out)
        return
    import tifffile

    from mesmerize_helpers.synthetic import simulate_dim_2p

    scratch = Path(tempfile.mkdtemp(prefix="bench_dim_", dir=args.scratch))
    before = export_commit(args.before, scratch) if args.before else None
    seeds = [int(v) for v in args.seeds.split(",")]
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, {args.frames} frames, "
          f"seeds {seeds}, before: {args.before or '-'}, CaImAn: {args.caiman or '-'}",
          flush=True)
    columns = []
    for mode in MODES:
        columns += [(mode, "ours")] + ([(mode, args.before)] if before else []) + (
            [(mode, "CaImAn")] if args.caiman else [])
    header = ["field", "photons"] + [f"{mode}: {who}" for mode, who in columns]
    lines = ["| " + " | ".join(header) + " |", "|---|---:" + "|---:" * (len(header) - 2) + "|"]
    for size in (int(s) for s in args.sizes.split(",")):
        for photons in (float(p) for p in args.photons.split(",")):
            errors: dict[tuple[str, str], list[float]] = {c: [] for c in columns}
            for seed in seeds:
                sim = simulate_dim_2p(args.frames, (size, size), photons=photons, seed=seed,
                                      keep_footprints=False)
                movie = scratch / "movie.tif"
                tifffile.imwrite(movie, sim.movie)
                for mode in MODES:
                    params = params_for(mode, size)
                    out = scratch / "shifts.npy"
                    register(str(movie), params, str(out))
                    errors[mode, "ours"].append(shift_rmse(np.load(out), sim.shifts))
                    if before:
                        old = run_other_code(before, movie, params, out)
                        errors[mode, args.before].append(shift_rmse(old, sim.shifts))
                    if args.caiman:
                        theirs = run_caiman(args.caiman, movie, params, scratch / "caiman")
                        errors[mode, "CaImAn"].append(shift_rmse(theirs, sim.shifts))
            cells = [f"{size}x{size}", f"{photons:g}"] + [
                f"{np.mean(e):.3f}" + (f" ({np.max(e):.3f})" if len(e) > 1 else "")
                for e in errors.values()]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    subprocess.run(["rm", "-rf", str(scratch)], check=False)


if __name__ == "__main__":
    main()
