"""Speed and accuracy of the built-in motion correction (mesmerize_helpers.engine.motion).

Synthetic two-photon-like movies with known rigid shifts (uniform in +/-5 px, sub-pixel), and
the real optinist mouse 2p movie when /work/shared/data is present. Prints markdown tables.

Run from the repository root::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_motion.py            # full
    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_motion.py --quick    # smaller movies

Reported: frames/s of a whole ``motion_correct`` call (template estimation, shift estimation,
warping and writing into a preallocated float32 output; single process; best of 2 runs), by
wall time and by CPU time of the process (the fair figure on a shared machine when
everything runs on one thread, ``workers=1``), RMSE (px) of the
recovered shifts after removing their constant offset (the template's position), and the
ratio of our rigid time per frame to one forward + inverse ``scipy.fft.rfft2`` of a frame on
one thread, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesmerize_helpers.engine.motion import motion_correct  # noqa: E402

REAL_MOVIE = Path("/work/shared/data/optinist_mouse2p_2000x128x128_uint16.tif")


def make_scene(size: int, pad: int, seed: int = 0) -> np.ndarray:
    """Neuropil-like smooth texture plus Gaussian somata, (size + 2 pad)^2 pixels."""
    rng = np.random.default_rng(seed)
    n = size + 2 * pad
    texture = ndi.gaussian_filter(rng.standard_normal((n, n)), 3) * 60
    n_cells = int(70 * (n / 160) ** 2)
    cells = np.zeros((n, n))
    cy, cx = rng.uniform(0, n, (2, n_cells))
    radius = rng.uniform(2.5, 4.5, n_cells)
    bright = rng.uniform(40, 100, n_cells)
    for y, x, r, b in zip(cy, cx, radius, bright):
        y0, y1 = int(max(0, y - 4 * r)), int(min(n, y + 4 * r + 1))
        x0, x1 = int(max(0, x - 4 * r)), int(min(n, x + 4 * r + 1))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cells[y0:y1, x0:x1] += b * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r**2))
    return 100 + texture + cells


def make_movie(n_frames: int, size: int, amplitude: float = 5.0, noise: float = 5.0,
               seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(frames, size, size) uint16 movie of the scene displaced by known shifts (y, x)."""
    pad = int(np.ceil(amplitude)) + 4
    scene = make_scene(size, pad)
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-amplitude, amplitude, (n_frames, 2))
    movie = np.empty((n_frames, size, size), np.uint16)
    for t, s in enumerate(shifts):
        frame = ndi.shift(scene, s, order=3, mode="nearest")[pad:-pad, pad:-pad]
        frame = frame + rng.normal(0, noise, frame.shape)
        movie[t] = np.clip(np.round(frame), 0, 65535)
    return movie, shifts


def shift_rmse(applied: np.ndarray, true_displacement: np.ndarray) -> float:
    """RMSE (px, Euclidean) of applied shifts vs -displacement, constant offset removed."""
    err = applied.reshape(len(applied), -1, 2) + true_displacement[:, None, :]
    err = err - err.mean(axis=(0, 1))
    return float(np.sqrt((err**2).sum(axis=-1).mean()))


def fft_pair_time(size: int, repeats: int = 50) -> float:
    """CPU seconds for one rfft2 + irfft2 of a float32 frame, one thread (best of 3)."""
    frame = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    best = np.inf
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(repeats):
            scipy.fft.irfft2(scipy.fft.rfft2(frame, workers=1), s=frame.shape, workers=1)
        best = min(best, (time.process_time() - t0) / repeats)
    return best


def run(movie, params: dict, workers: int = 1, repeats: int = 2
        ) -> tuple[float, float, object, np.ndarray]:
    """Best wall time and best CPU time (s) of ``repeats`` runs, result, output.

    The CPU time (this process, all threads) is the fairer figure on a shared machine for
    ``workers=1``, where everything runs on one thread.
    """
    out = np.empty(movie.shape, np.float32)
    wall = cpu = np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = motion_correct(movie, params, out, progress=False, workers=workers)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, res, out


def synthetic(n_frames: int, size: int, pw_params: dict) -> list[dict]:
    movie, shifts = make_movie(n_frames, size)
    fft_time = fft_pair_time(size)
    base = {"max_shifts": (8, 8)}
    cases = [
        ("rigid", {**base}, 1),
        ("rigid, workers=-1", {**base}, -1),
        ("pw-rigid", {**base, "pw_rigid": True, **pw_params}, 1),
        ("pw-rigid, gSig_filt=(3,3)", {**base, "pw_rigid": True, "gSig_filt": (3, 3),
                                       **pw_params}, 1),
    ]
    rows = []
    for name, params, workers in cases:
        wall, cpu, res, _ = run(movie, params, workers)
        applied = res.shifts_pw if res.shifts_pw is not None else res.shifts_rig
        rows.append({
            "movie": f"{n_frames}x{size}x{size}",
            "mode": name,
            "fps": n_frames / wall,
            "cpu_fps": n_frames / cpu if workers == 1 else float("nan"),
            "rmse": shift_rmse(applied, shifts),
            "fft_ratio": (cpu / n_frames) / fft_time if workers == 1 else float("nan"),
        })
    return rows


def mean_corr_and_crispness(movie: np.ndarray, border: int) -> tuple[float, float]:
    """Mean Pearson correlation of frames with the mean image, and the mean image's
    crispness (Frobenius norm of its gradient magnitude), inside ``border``."""
    inner = (slice(None), slice(border, -border), slice(border, -border))
    m = np.asarray(movie[inner], dtype=np.float64)
    mean = np.nanmean(m, axis=0)
    mc = mean - mean.mean()
    corrs = []
    for frame in m:
        f = np.where(np.isfinite(frame), frame, mean) - np.nanmean(frame)
        corrs.append(float((f * mc).sum() / np.sqrt((f * f).sum() * (mc * mc).sum())))
    gy, gx = np.gradient(mean)
    return float(np.mean(corrs)), float(np.linalg.norm(np.sqrt(gy**2 + gx**2)))


def real_movie() -> list[dict]:
    if not REAL_MOVIE.exists():
        print(f"\n{REAL_MOVIE} not found: real-movie benchmark skipped.")
        return []
    import tifffile

    movie = tifffile.imread(REAL_MOVIE)
    border = 12
    rows = [{"mode": "raw", "fps": float("nan"), "cpu_fps": float("nan"),
             **dict(zip(("corr", "crisp"), mean_corr_and_crispness(movie, border)))}]
    base = {"max_shifts": (10, 10)}
    for name, params in (("rigid", base),
                         ("pw-rigid (strides 48, overlaps 24)",
                          {**base, "pw_rigid": True, "strides": (48, 48),
                           "overlaps": (24, 24)})):
        wall, cpu, _, out = run(movie, params)
        corr, crisp = mean_corr_and_crispness(out, border)
        rows.append({"mode": name, "fps": len(movie) / wall, "cpu_fps": len(movie) / cpu,
                     "corr": corr, "crisp": crisp})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller movies")
    args = parser.parse_args()
    n128, n512 = (300, 100) if args.quick else (1000, 400)

    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy "
          f"{scipy.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}, "
          f"cpus={os.cpu_count()}")
    rows = synthetic(n128, 128, {"strides": (48, 48), "overlaps": (24, 24)})
    rows += synthetic(n512, 512, {"strides": (96, 96), "overlaps": (32, 32)})
    print("\n| movie | mode | frames/s (wall) | frames/s (CPU) | shift RMSE (px) "
          "| CPU time/frame over rfft2+irfft2 |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['movie']} | {r['mode']} | {r['fps']:.0f} | {r['cpu_fps']:.0f} | "
              f"{r['rmse']:.3f} | {r['fft_ratio']:.1f} |")

    real = real_movie()
    if real:
        print("\n| optinist 2000x128x128 | frames/s (wall) | frames/s (CPU) "
              "| mean frame-to-mean corr | crispness |")
        print("|---|---:|---:|---:|---:|")
        for r in real:
            print(f"| {r['mode']} | {r['fps']:.0f} | {r['cpu_fps']:.0f} | {r['corr']:.4f} "
                  f"| {r['crisp']:.0f} |")


if __name__ == "__main__":
    main()
