"""Size and speed of the batch viewer page on a big grid search, and the README screenshot.

A grid of N cnmf items on one 512x512 movie, each with K components and T frames of traces
(C, C + YrA, S and dF/F), is written as item outputs (estimates HDF5 via save_estimates,
summary images, manifests; one HDF5 hard-linked into every item folder to spare the disk),
then ``mesmerize-helpers view`` is timed, its page measured and loaded in headless chromium.

    python benchmarks/bench_viewer.py                     # 50 items x 300 components x 54000 frames
    python benchmarks/bench_viewer.py --items 5 --frames 9000
    python benchmarks/bench_viewer.py --screenshot docs/viewer.png   # the README figure
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import mesmerize_helpers as mh
from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.io.estimates import save_estimates
from mesmerize_helpers.manifest import write_manifest

CNMF = {"main": {"fr": 30, "p": 1, "nb": 2, "K": 300, "gSig": [5, 5], "rf": 25, "stride": 10,
                 "min_SNR": 2.0, "rval_thr": 0.8}}


def estimates(k: int, n_frames: int, dims: tuple[int, int], seed: int = 0) -> Estimates:
    """K Gaussian footprints with AR(1) calcium traces from Poisson spikes, noisy residuals and
    a dF/F, in CaImAn's layout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:dims[0], :dims[1]]
    columns = []
    for cy, cx in rng.uniform(8, np.array(dims) - 8, (k, 2)):
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0 ** 2))
        blob[blob < 0.05] = 0
        columns.append(sp.csc_matrix(blob.T.reshape(-1, 1) / np.linalg.norm(blob)))
    A = sp.hstack(columns).tocsc()
    spikes = (rng.random((k, n_frames)) < 0.01) * rng.exponential(50, (k, n_frames))
    C = np.empty((k, n_frames), np.float32)
    C[:, 0] = spikes[:, 0]
    for t in range(1, n_frames):
        C[:, t] = 0.95 * C[:, t - 1] + spikes[:, t]
    YrA = rng.normal(0, 3, C.shape).astype(np.float32)
    snr = rng.gamma(3, 2, k)
    return Estimates(
        A=A, b=np.zeros((A.shape[0], 0)), C=C, f=np.zeros((0, n_frames)),
        S=spikes.astype(np.float32), YrA=YrA, sn=np.ones(A.shape[0]), g=np.full((k, 1), 0.95),
        bl=np.zeros(k), c1=np.zeros(k), neurons_sn=np.ones(k), dims=dims,
        idx_components=np.flatnonzero(snr >= 2), idx_components_bad=np.flatnonzero(snr < 2),
        SNR_comp=snr, r_values=rng.uniform(0.3, 1, k), F_dff=(C / 100).astype(np.float32),
    )


def fabricate_batch(folder: Path, n_items: int, k: int, n_frames: int, dims: tuple[int, int]
                    ) -> Path:
    """A batch of ``n_items`` finished cnmf items (a grid over min_SNR) on one movie."""
    folder.mkdir(parents=True, exist_ok=True)
    movie = folder / "movie.npy"
    np.save(movie, np.zeros((2, *dims), np.float32))  # the input the rows name; never read
    df = mh.create_batch(folder / "batch.tsv", remove_existing=True)
    uuids = df.caiman.add_grid("cnmf", "mouse1", movie, CNMF,
                               {"main.min_SNR": list(np.round(np.linspace(1.5, 4, n_items), 3))})
    shared = folder / "shared"
    shared.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    np.save(shared / "corr_img.npy", rng.random(dims).astype(np.float32))
    np.save(shared / "mean_projection.npy", rng.random(dims).astype(np.float32))
    save_estimates(shared / "cnmf.hdf5", estimates(k, n_frames, dims), CNMF["main"])
    for uuid in uuids:
        row = df.caiman.uloc(uuid)
        out = row.caiman.get_output_dir()
        out.mkdir(exist_ok=True)
        for name in ("cnmf.hdf5", "corr_img.npy", "mean_projection.npy"):
            if not (out / name).exists():
                os.link(shared / name, out / name)
        write_manifest(out, {
            "success": True, "params": row["params"], "algo_duration": 60.0,
            "ran_time": "2026-01-01T00:00:00",
            "outputs": {"cnmf-hdf5-path": "cnmf.hdf5", "corr-img-path": "corr_img.npy",
                        "mean-projection-path": "mean_projection.npy"}})
    return folder / "batch.tsv"


def load_in_chromium(page: Path) -> tuple[float, int]:
    """(seconds until Bokeh has drawn the page, number of console errors)."""
    from mesmerize_helpers.viewer.browser import chromium, errors, open_page

    with chromium() as driver:
        start = time.perf_counter()
        log = open_page(driver, page)
        return time.perf_counter() - start, len(errors(log))


def bench(args: argparse.Namespace) -> None:
    from mesmerize_helpers.viewer import write_viewer

    folder = Path(args.dir)
    start = time.perf_counter()
    batch = fabricate_batch(folder, args.items, args.components, args.frames, (512, 512))
    print(f"fabricated {args.items} items in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    page = write_viewer(batch, folder / "batch.html", max_mb=args.max_mb)
    build = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    size = page.stat().st_size / 1e6
    load, n_errors = load_in_chromium(page)
    print(f"| {args.items} x {args.components} x {args.frames} | {size:.1f} MB "
          f"(max_mb {args.max_mb:g}) | {build:.0f} s | {rss:.1f} GB | {load:.1f} s | "
          f"{n_errors} |")
    if not args.keep:
        shutil.rmtree(folder)


def screenshot(path: Path) -> None:
    """The demo batch's page with a component clicked, cropped and reduced to 256 colours."""
    from PIL import Image

    from mesmerize_helpers.demo import run_demo
    from mesmerize_helpers.viewer import write_viewer
    from mesmerize_helpers.viewer.browser import chromium, click_at, open_page

    with tempfile.TemporaryDirectory() as tmp:
        run_demo(Path(tmp) / "demo")
        df = mh.load_batch(Path(tmp) / "demo" / "batch.tsv")
        page = write_viewer(df, Path(tmp) / "batch.html", progress=False)
        row = df.iloc[1]
        contours, _ = row.cnmf.get_contours("all", swap_dim=False)  # (x, y) per component
        k = int(np.argsort([np.nanmean(c[:, 0]) for c in contours])[len(contours) // 2])
        with chromium(1280, 1400) as driver:
            open_page(driver, page, anchor=row["uuid"][:8])
            x, y = np.nanmean(contours[k], axis=0) + 0.5  # NaN rows separate pieces
            click_at(driver, f"contours-{row['uuid']}", x, y)
            time.sleep(0.5)
            driver.save_screenshot(str(Path(tmp) / "full.png"))
        image = Image.open(Path(tmp) / "full.png").convert("RGB")
        image = image.crop((0, 0, min(image.width, 1225), min(image.height, 1070)))
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--components", type=int, default=300)
    parser.add_argument("--frames", type=int, default=54_000, help="30 min at 30 Hz")
    parser.add_argument("--max-mb", type=float, default=50.0)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "bench_viewer"))
    parser.add_argument("--keep", action="store_true", help="keep the batch and its page")
    parser.add_argument("--screenshot", type=Path, help="write the README screenshot here")
    args = parser.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
        return
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", file=sys.stderr)
    bench(args)


if __name__ == "__main__":
    main()
