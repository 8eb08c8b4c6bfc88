"""Built-in motion correction vs. CaImAn's MotionCorrect, on the same movies, in one run.

Needs CaImAn in the running environment (it is not on PyPI: conda, or a source build). Both
engines get the same uint16 TIFF with known shifts (``bench_motion.make_movie``: textured
2p-like scene, uniform sub-pixel shifts in +/-5 px), the same parameters, one process, and
produce a registered float32 movie:

- ours: ``motion_correct`` reading the TIFF and writing the output array;
- CaImAn: ``MotionCorrect(fname, dview=None).motion_correct(save_movie=True)``, which writes
  its own memmap (its usual output; the time to convert it to a C-order array is excluded).

Shift RMSE is against the true correction after removing a constant offset (px).

A second table uses noise-limited movies with activity: ``synthetic.simulate_2p`` (neurons
firing over neuropil, shot noise, about one photon-noise standard deviation of structure per
pixel and frame, smooth random-walk motion within +/-4 px; 96, 256 and 512 px fields with the
same density of neurons), rigid, ``max_shifts=(8, 8)``. There the template's noise, not the
correlation's bias, limits the accuracy.

Usage::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_motion_caiman.py [--frames 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_motion import make_movie, shift_rmse  # noqa: E402

from mesmerize_helpers.engine.motion import motion_correct  # noqa: E402
from mesmerize_helpers.io.movies import open_movie  # noqa: E402
from mesmerize_helpers.synthetic import simulate_2p  # noqa: E402

CASES = {
    128: {"strides": (48, 48), "overlaps": (24, 24)},
    512: {"strides": (96, 96), "overlaps": (32, 32)},
}


def run_ours(path: Path, params: dict) -> tuple[float, np.ndarray]:
    movie = open_movie(path)
    out = np.empty(movie.shape, np.float32)
    t0 = time.perf_counter()
    res = motion_correct(movie, params, out, progress=False)
    wall = time.perf_counter() - t0
    return wall, res.shifts_pw if res.shifts_pw is not None else res.shifts_rig


def run_caiman(path: Path, params: dict) -> tuple[float, np.ndarray]:
    from caiman.motion_correction import MotionCorrect

    mc = MotionCorrect([str(path)], dview=None, **params)
    t0 = time.perf_counter()
    mc.motion_correct(save_movie=True)
    wall = time.perf_counter() - t0
    for name in mc.mmap_file or []:
        Path(name).unlink(missing_ok=True)
    if params.get("pw_rigid"):
        # CaImAn's x_shifts_els holds the row (y) shifts, y_shifts_els the column (x) ones
        shifts = np.stack([np.asarray(mc.x_shifts_els), np.asarray(mc.y_shifts_els)], axis=-1)
    else:
        shifts = np.asarray(mc.shifts_rig)  # (frames, 2) applied shifts, (row, column)
    return wall, shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    import caiman

    print(f"CaImAn {caiman.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    print("| movie | mode | ours frames/s | CaImAn frames/s | speed ratio | ours RMSE (px) "
          "| CaImAn RMSE (px) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size, pw in CASES.items():
            movie, shifts = make_movie(args.frames, size)
            path = Path(tmp) / f"movie_{size}.tif"
            tifffile.imwrite(path, movie)
            for mode, params in (("rigid", {"max_shifts": (8, 8)}),
                                 ("pw-rigid", {"max_shifts": (8, 8), "pw_rigid": True,
                                               "max_deviation_rigid": 3, **pw})):
                t_ours, s_ours = run_ours(path, params)
                t_cm, s_cm = run_caiman(path, params)
                print(f"| {args.frames}x{size}x{size} | {mode} | {args.frames / t_ours:.0f} | "
                      f"{args.frames / t_cm:.0f} | {t_cm / t_ours:.1f}x | "
                      f"{shift_rmse(s_ours, shifts):.3f} | {shift_rmse(s_cm, shifts):.3f} |",
                      flush=True)
        print("\n| simulate_2p movie | neurons | ours frames/s | CaImAn frames/s | speed ratio "
              "| ours RMSE (px) | CaImAn RMSE (px) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for size in (96, 256, 512):
            n = int(round(20 * (size / 96) ** 2))
            sim = simulate_2p(n_frames=args.frames, shape=(size, size), n_neurons=n,
                              motion=4.0, seed=0)
            path = Path(tmp) / f"sim_{size}.tif"
            tifffile.imwrite(path, sim.movie)
            params = {"max_shifts": (8, 8), "border_nan": "copy"}
            t_ours, s_ours = run_ours(path, params)
            t_cm, s_cm = run_caiman(path, params)
            print(f"| {args.frames}x{size}x{size} | {n} | {args.frames / t_ours:.0f} | "
                  f"{args.frames / t_cm:.0f} | {t_cm / t_ours:.1f}x | "
                  f"{shift_rmse(s_ours, sim.shifts):.3f} | {shift_rmse(s_cm, sim.shifts):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
