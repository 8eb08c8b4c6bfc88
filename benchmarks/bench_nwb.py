"""How long ``s.cnmf.export_nwb`` takes, how big the file is, and how much memory it needs,
for a large item: K footprints on a (y, x) field and T frames, against writing the same
arrays with h5py alone (footprints as dense gzip'd (K, x, y), four (T, K) trace arrays).

The item is synthetic (Gaussian footprints, random traces) and written straight into a
batch folder with a manifest, so no fit is timed: only the export.

    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_nwb.py            # 300 x 512^2 x 54000
    OPENBLAS_CORETYPE=SkylakeX python benchmarks/bench_nwb.py --quick    # 100 x 256^2 x 9000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

import mesmerize_helpers as mh
from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.io.estimates import save_estimates
from mesmerize_helpers.manifest import write_manifest
from mesmerize_helpers.synthetic import save_tiff


def footprints(K: int, dims: tuple[int, int], rng: np.random.Generator) -> sp.csc_matrix:
    """K unit-norm Gaussian footprints (sigma 4 px, cut at 3 sigma), Fortran pixel order."""
    cols = []
    yy, xx = np.mgrid[-12:13, -12:13]
    blob = np.exp(-(yy ** 2 + xx ** 2) / 32.0)
    for _ in range(K):
        cy, cx = rng.integers(12, dims[0] - 13), rng.integers(12, dims[1] - 13)
        image = np.zeros(dims, np.float32)
        image[cy - 12:cy + 13, cx - 12:cx + 13] = blob
        cols.append(sp.csc_matrix(image.reshape(-1, 1, order="F") / np.linalg.norm(blob)))
    return sp.hstack(cols).tocsc()


def make_item(folder: Path, K: int, dims: tuple[int, int], T: int) -> object:
    rng = np.random.default_rng(0)
    raw = folder / "raw.tif"
    save_tiff(raw, rng.normal(size=(2, *dims)).astype(np.float32))
    df = mh.create_batch(folder / "batch.tsv")
    uuid = df.caiman.add_item("cnmf", "big", raw, {"main": {"fr": 30.0, "K": K}})
    row = df.caiman.uloc(uuid)
    item = row.caiman.get_output_dir()
    item.mkdir(parents=True)
    C = rng.gamma(1.0, 1.0, (K, T)).astype(np.float32)
    est = Estimates(A=footprints(K, dims, rng), b=np.ones((dims[0] * dims[1], 1), np.float32),
                    C=C, f=np.ones((1, T), np.float32), S=C * 0.1, YrA=C * 0.05,
                    sn=np.ones(dims[0] * dims[1], np.float32), g=np.full((K, 1), 0.9),
                    bl=np.zeros(K), c1=np.zeros(K), neurons_sn=np.ones(K), dims=dims,
                    idx_components=np.arange(0, K, 2), idx_components_bad=np.arange(1, K, 2),
                    SNR_comp=rng.uniform(1, 10, K), r_values=rng.uniform(0, 1, K), F_dff=C)
    save_estimates(item / "cnmf.hdf5", est, {"fr": 30.0, "K": K})
    write_manifest(item, {"success": True, "uuid": uuid, "algo": "cnmf",
                          "outputs": {"cnmf-hdf5-path": "cnmf.hdf5"}})
    return df.caiman.reload_from_disk().caiman.uloc(uuid), est


def h5py_baseline(path: Path, est: Estimates) -> float:
    """The same arrays written with h5py alone: the floor for the export."""
    start = time.perf_counter()
    dims = est.dims
    with h5py.File(path, "w") as fh:
        masks = fh.create_dataset("masks", (est.A.shape[1], dims[1], dims[0]), np.float32,
                                  chunks=(1, dims[1], dims[0]), compression="gzip",
                                  compression_opts=4)
        for k in range(est.A.shape[1]):
            masks[k] = est.A[:, k].toarray().reshape(dims[1], dims[0])
        for name in ("raw", "C", "S", "dff"):
            fh.create_dataset(name, data=np.ascontiguousarray(est.C.T), compression="gzip",
                              compression_opts=4)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    K, dims, T = (100, (256, 256), 9000) if args.quick else (300, (512, 512), 54000)
    folder = Path(tempfile.mkdtemp(prefix="bench_nwb_", dir=os.environ.get("BENCH_DIR")))
    try:
        row, est = make_item(folder, K, dims, T)
        base = h5py_baseline(folder / "baseline.h5", est)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = row.cnmf.export_nwb(folder / "big.nwb")
        took = time.perf_counter() - start
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"K={K} dims={dims} T={T} OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
        print(f"export_nwb: {took:.1f} s, file {path.stat().st_size / 1e6:.0f} MB; "
              f"h5py alone: {base:.1f} s, {(folder / 'baseline.h5').stat().st_size / 1e6:.0f} MB;"
              f" ratio {took / base:.2f}")
        print(f"peak RSS {rss1 / 1024:.0f} MB (before the export {rss0 / 1024:.0f} MB; dense "
              f"masks would be {K * dims[0] * dims[1] * 4 / 1e6:.0f} MB, one trace array "
              f"{K * T * 4 / 1e6:.0f} MB)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
