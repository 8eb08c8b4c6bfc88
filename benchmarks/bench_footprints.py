"""Do accepted footprints look like cells? Shapes and detection scores on real and generated
two-photon movies, for this engine, another checkout of it (before / after) and CaImAn.

Per accepted footprint, thresholded at 0.2 x its peak (``scoring.footprint_shapes``): the
number of 8-connected pieces, solidity (area / convex hull area) and area; medians are
reported. Against labels or the true footprints: F1 by mask IoU >= 0.5 and by centroid
distance <= 5 px (Hungarian matching, ``scoring``). Generated movies also report the median
IoU of matched pairs and the median correlation of their traces with the true calcium.

Movies (``../shared/data`` or ``$MESMERIZE_BENCH_DATA``; each skipped when absent):

- ``nf-tl``: the labelled Neurofinder 00 quarter (600x256x256, 99 labels);
- ``optinist``: 2000x128x128 with real motion, registered rigidly by ``engine.motion`` first;
- ``allen``: 100x100x100 Allen Brain Observatory crop; ``sima``: 20x128x256 (too short for
  activity: shapes only);
- ``dense0``..: ``simulate_2p_dense`` (128x128, 500 frames, 40 somata), scored against the
  neurons that fire;
- any labelled movie given as ``--labelled NAME=MOVIE.tif:MASKS.npz`` (masks: key
  ``masks``, (n, y, x) bool), e.g. Neurofinder quarters not used in development.

Fits: ``activity`` (greedy initialization; Neurofinder movies run twice, with this
benchmark's usual parameters ``nf`` and with the best setting of CaImAn's 432-setting grid
``caiman-grid``) and ``seeded`` (``params["Ain"] = "somata"``: disks around the somata
``anatomy.find_somata`` finds in the mean image, the same seeds for every engine). Each fit
+ evaluation runs in a child process, with this checkout (``ours``), another one
(``--before-root``, e.g. a worktree of an older commit) or CaImAn (``--caiman-python``, an
interpreter with CaImAn installed: its ``CNMF.fit``, ``refit`` and ``evaluate_components``
without the CNN, on a C-order memmap of the same movie). Times are the child's wall clock of
fit + refit + evaluation.

Usage::

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_footprints.py
        [--movies nf-tl,optinist,allen,sima,dense0] [--labelled NAME=MOVIE:MASKS ...]
        [--before-root PATH] [--caiman-python PATH] [--save DIR] [--figure PNG]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MESMERIZE_BENCH_DATA", ROOT.parent / "shared" / "data"))

#: This benchmark's usual Neurofinder parameters (as bench_cnmf.py): somata ~9 px across,
#: GCaMP6s at ~7 Hz, 50 px patches.
NF_PARAMS = {
    "fr": 7, "decay_time": 1.0, "p": 1, "nb": 1, "rf": 25, "stride": 10, "K": 10,
    "gSig": [4, 4], "ssub": 1, "tsub": 1, "merge_thr": 0.8, "min_SNR": 2.0, "rval_thr": 0.8,
}
#: CaImAn's best setting on the shared quarter over the 432-setting grid (benchmarks/README).
CAIMAN_GRID_PARAMS = {
    "fr": 7, "decay_time": 1.5, "p": 1, "nb": 2, "rf": 20, "stride": 10, "K": 6,
    "gSig": [6, 6], "ssub": 1, "tsub": 1, "merge_thr": 0.85, "min_SNR": 2.0, "rval_thr": 0.7,
}
#: Whole-field settings of the other movies (somata sizes from their mean images).
WHOLE = {"p": 1, "nb": 1, "ssub": 1, "tsub": 1, "merge_thr": 0.8, "min_SNR": 2.0,
         "rval_thr": 0.8}
MOVIES = {
    "nf-tl": {"file": "neurofinder00_tl256_600x256x256_uint16.tif",
              "masks": "neurofinder00_tl256_roi_masks.npz",
              "params": {"nf": NF_PARAMS, "caiman-grid": CAIMAN_GRID_PARAMS}},
    "optinist": {"file": "optinist_mouse2p_2000x128x128_uint16.tif", "motion": True,
                 "params": {"own": {**WHOLE, "fr": 30, "decay_time": 0.4, "K": 60,
                                    "gSig": [4, 4]}}},
    "allen": {"file": "allen792757260_crop_100x100x100_int16.tif",
              "params": {"own": {**WHOLE, "fr": 30, "decay_time": 0.4, "K": 30,
                                 "gSig": [5, 5]}}},
    "sima": {"file": "sima_example_20x128x256_uint16.tif",
             "params": {"own": {**WHOLE, "fr": 7, "decay_time": 1.0, "K": 60,
                                "gSig": [5, 5]}}},
}
DENSE = {"n_frames": 500, "shape": (128, 128), "n_neurons": 40}
DENSE_PARAMS = {**WHOLE, "fr": 10, "decay_time": 1.0, "K": 60, "gSig": [4, 4]}


# ------------------------------------------------------------------------------ children


def _fit_ours(movie: np.ndarray, params: dict, seeds: np.ndarray | None) -> tuple:
    from mesmerize_helpers.engine.cnmf import evaluate_components, fit_cnmf

    if seeds is not None:
        params = {**params, "rf": None}
    est = fit_cnmf(movie, params, Ain=seeds, progress=False)
    est = evaluate_components(est, movie, params)
    return est.A, est.C, est.idx_components


def _fit_caiman(movie: np.ndarray, params: dict, seeds: np.ndarray | None,
                tmp: Path) -> tuple:
    import scipy.sparse as sp
    from caiman import load_memmap
    from caiman.source_extraction.cnmf.cnmf import CNMF
    from caiman.source_extraction.cnmf.params import CNMFParams

    T, h, w = movie.shape
    # CaImAn's C-order memmap: (pixels in Fortran order, frames), dims in the name
    path = tmp / f"Yr_d1_{h}_d2_{w}_d3_1_order_C_frames_{T}.mmap"
    Yr = np.memmap(path, np.float32, "w+", shape=(h * w, T), order="C")
    for t0 in range(0, T, 200):
        Yr[:, t0:t0 + 200] = movie[t0:t0 + 200].transpose(2, 1, 0).reshape(h * w, -1)
    Yr.flush()
    del Yr
    Yr, dims, T = load_memmap(str(path))
    images = np.reshape(Yr.T, [T, *dims], order="F")
    main = {**params, "use_cnn": False}
    Ain = None
    if seeds is not None:
        main.update(rf=None, only_init=False)
        Ain = seeds.reshape(-1, seeds.shape[-1], order="F")
    cnm = CNMF(1, params=CNMFParams(params_dict=main), dview=None, Ain=Ain)
    cnm.fit(images)
    cnm = cnm.refit(images, dview=None)
    cnm.estimates.evaluate_components(images, cnm.params, dview=None)
    e = cnm.estimates
    return sp.csc_matrix(e.A, dtype=np.float32), np.asarray(e.C), np.asarray(e.idx_components)


def run_child(args: argparse.Namespace) -> None:
    """Fit one movie in this process and save the accepted footprints (see module doc)."""
    import scipy.sparse as sp

    if args.child == "ours":
        sys.path.insert(0, str(args.root))
        import mesmerize_helpers

        if not Path(mesmerize_helpers.__file__).resolve().is_relative_to(Path(args.root)):
            raise RuntimeError(f"imported {mesmerize_helpers.__file__}, not {args.root}")
    movie = np.load(args.movie, mmap_mode="r")
    params = json.loads(args.params)
    seeds = np.load(args.seeds) if args.seeds else None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=Path(args.out).parent) as tmp:
        if args.child == "ours":
            A, C, good = _fit_ours(np.asarray(movie), params, seeds)
        else:
            A, C, good = _fit_caiman(movie, params, seeds, Path(tmp))
    seconds = time.perf_counter() - t0
    A = sp.csc_matrix(A)
    good = np.asarray(good if good is not None else np.arange(A.shape[1]), int)
    Ag = A[:, good].tocsc()
    np.savez_compressed(args.out, data=Ag.data, indices=Ag.indices, indptr=Ag.indptr,
                        shape=Ag.shape, C=np.asarray(C)[good], K=A.shape[1], seconds=seconds)


# ------------------------------------------------------------------------------ parent


def load_movie(spec: dict, workdir: Path, name: str) -> tuple[Path, np.ndarray | None]:
    """The movie as a C-order float32 .npy in ``workdir`` (registered first if it moves)
    and its labels (None without)."""
    import tifffile

    movie = tifffile.imread(spec["path"]).astype(np.float32)
    if spec.get("motion"):
        movie = _register(movie)
    path = workdir / f"{name}.npy"
    np.save(path, movie)
    masks = np.load(spec["masks"])["masks"] if spec.get("masks") else None
    return path, masks


def _register(movie: np.ndarray) -> np.ndarray:
    """Rigid registration with the built-in motion correction (borders copied, not NaN:
    CaImAn and the engine before 2083558 stop on NaN)."""
    from mesmerize_helpers.engine.motion import motion_correct

    out = np.empty(movie.shape, np.float32)
    motion_correct(movie, {"max_shifts": (12, 12), "pw_rigid": False, "border_nan": "copy"},
                   out, progress=False)
    return out


def somata_seeds(mean: np.ndarray, gsig: list, path: Path) -> Path:
    """``params["Ain"] = "somata"``: disks around the somata of the mean image."""
    from mesmerize_helpers.engine.anatomy import disk_masks, find_somata

    centres = find_somata(mean, tuple(gsig))
    np.save(path, disk_masks(centres, mean.shape, tuple(gsig)))
    return path


def run_fit(python: str, engine: str, root: Path, movie: Path, params: dict,
            seeds: Path | None, out: Path) -> dict:
    cmd = [python, __file__, "--child", engine, "--root", str(root), "--movie", str(movie),
           "--params", json.dumps(params), "--seeds", str(seeds or ""), "--out", str(out)]
    env = dict(os.environ, OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "SkylakeX"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{engine} fit of {movie.name} failed:\n{proc.stderr[-3000:]}")
    return dict(np.load(out))


def footprints_of(res: dict, dims: tuple[int, int]) -> np.ndarray:
    """(n, y, x) accepted footprints from a child's saved sparse columns."""
    import scipy.sparse as sp

    A = sp.csc_matrix((res["data"], res["indices"], res["indptr"]), shape=tuple(res["shape"]))
    return np.asarray(A.toarray().T.reshape(-1, dims[1], dims[0]).transpose(0, 2, 1))


def score(fp: np.ndarray, C: np.ndarray, truth: np.ndarray | None,
          calcium: np.ndarray | None) -> dict:
    """Shape medians, and F1 (IoU, centroid) against labels or true footprints."""
    from mesmerize_helpers.scoring import (
        centroids,
        footprint_masks,
        footprint_shapes,
        match_by_centroid,
        match_by_iou,
        row_correlation,
    )

    s = footprint_shapes(fp)
    out = {"accepted": len(fp), "pieces": float(np.median(s.pieces)) if len(fp) else np.nan,
           "solidity": float(np.nanmedian(s.solidity)) if len(fp) else np.nan,
           "area": float(np.median(s.area)) if len(fp) else np.nan}
    if truth is None:
        return out
    tmask = footprint_masks(truth).reshape(truth.shape)
    fmask = footprint_masks(fp).reshape(fp.shape)
    out["f1_iou"] = match_by_iou(truth, fp).f1
    out["f1_centroid"] = match_by_centroid(centroids(tmask), centroids(fmask)).f1
    out["truth_area"] = float(np.median(tmask.sum(axis=(1, 2))))
    if calcium is not None and len(fp):
        m = match_by_iou(truth, fp, 0.3)
        t, f = tmask[m.true_idx].reshape(len(m.true_idx), -1), fmask[m.found_idx]
        f = f.reshape(len(m.found_idx), -1)
        out["iou_matched"] = float(np.median((t & f).sum(1) / (t | f).sum(1)))
        out["trace_corr"] = float(np.median(row_correlation(calcium[m.true_idx],
                                                            C[m.found_idx])))
    return out


def cases(args: argparse.Namespace) -> list[dict]:
    """Movies to run: name, file, labels, params sets, motion."""
    out = []
    for name in args.movies:
        if name.startswith("dense"):
            out.append({"name": name, "dense_seed": int(name[5:] or 0),
                        "params": {"own": DENSE_PARAMS}})
            continue
        spec = dict(MOVIES[name], name=name, path=DATA / MOVIES[name]["file"])
        if spec.get("masks"):
            spec["masks"] = DATA / spec["masks"]
        if spec["path"].exists():
            out.append(spec)
        else:
            print(f"skipping {name}: {spec['path']} not found", file=sys.stderr)
    for item in args.labelled:
        name, rest = item.split("=", 1)
        movie, masks = rest.rsplit(":", 1)
        out.append({"name": name, "path": Path(movie), "masks": Path(masks),
                    "params": {"nf": NF_PARAMS, "caiman-grid": CAIMAN_GRID_PARAMS}})
    return out


def prepare(case: dict, workdir: Path) -> tuple[Path, np.ndarray | None, np.ndarray | None]:
    """Movie file, truth (labels or firing footprints) and true calcium (generated only)."""
    if "dense_seed" in case:
        from mesmerize_helpers.synthetic import simulate_2p_dense

        sim = simulate_2p_dense(**DENSE, seed=case["dense_seed"])
        path = workdir / f"{case['name']}.npy"
        np.save(path, sim.movie)
        firing = sim.spikes.any(axis=1)
        return path, sim.footprints[firing], sim.calcium[firing]
    path, masks = load_movie(case, workdir, case["name"])
    return path, None if masks is None else masks.astype(np.float32), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--movies", type=lambda s: [m for m in s.split(",") if m],
                    default=["nf-tl", "optinist", "allen", "sima", "dense0", "dense1"])
    ap.add_argument("--labelled", action="append", default=[])
    ap.add_argument("--before-root", type=Path)
    ap.add_argument("--caiman-python", default=os.environ.get("CAIMAN_PY"))
    ap.add_argument("--no-caiman", action="store_true")
    ap.add_argument("--save", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--json", type=Path)
    for hidden in ("--child", "--root", "--movie", "--params", "--seeds", "--out"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args)
        return
    sys.path.insert(0, str(ROOT))
    engines = [("ours", sys.executable, ROOT)]
    if args.before_root:
        engines.insert(0, ("before", sys.executable, args.before_root.resolve()))
    if args.caiman_python and not args.no_caiman:
        engines.append(("caiman", args.caiman_python, ROOT))
    save = args.save or Path(tempfile.mkdtemp(prefix="bench_footprints_"))
    save.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases(args):
        movie_path, truth, calcium = prepare(case, save)
        movie = np.load(movie_path, mmap_mode="r")
        dims = movie.shape[1:]
        for pname, params in case["params"].items():
            seeds = somata_seeds(np.asarray(movie).mean(axis=0), params["gSig"],
                                 save / f"{case['name']}_{pname}_seeds.npy")
            for fit in ("activity", "seeded") if pname != "caiman-grid" else ("activity",):
                for label, python, root in engines:
                    out = save / f"{case['name']}_{pname}_{fit}_{label}.npz"
                    engine = "caiman" if label == "caiman" else "ours"
                    res = run_fit(python, engine, root, movie_path, params,
                                  seeds if fit == "seeded" else None, out)
                    fp = footprints_of(res, dims)
                    row = {"movie": case["name"], "params": pname, "fit": fit,
                           "engine": label, "K": int(res["K"]),
                           "seconds": float(res["seconds"]),
                           **score(fp, res["C"], truth, calcium)}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.figure:
        from plot_footprints import contour_figure

        contour_figure(save, args.figure)


def print_table(rows: list[dict]) -> None:
    def f(x, fmt):
        return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)

    print("| movie | params | fit | engine | K / accepted | pieces | solidity | area (truth) "
          "| F1 IoU | F1 centroid | IoU matched | trace corr | s |")
    print("|---|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        area = f(r.get("area"), ".0f") + (f" ({r['truth_area']:.0f})" if "truth_area" in r
                                          else "")
        print(f"| {r['movie']} | {r['params']} | {r['fit']} | {r['engine']} | {r['K']} / "
              f"{r['accepted']} | {f(r.get('pieces'), '.0f')} | {f(r.get('solidity'), '.2f')} "
              f"| {area} | {f(r.get('f1_iou'), '.2f')} | {f(r.get('f1_centroid'), '.2f')} | "
              f"{f(r.get('iou_matched'), '.2f')} | {f(r.get('trace_corr'), '.3f')} | "
              f"{r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
