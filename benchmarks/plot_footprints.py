"""Contours of accepted footprints on the mean image, before / after, from the files that
``bench_footprints.py --save DIR`` keeps (used by its ``--figure``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Rows (fit, title) and columns (engine, title) of the panels: the labelled quarter, with
#: this benchmark's usual parameters ("nf").
ROWS = [("activity", "activity fit"), ("seeded", "seeded (somata)")]
COLUMNS = [("before", "before"), ("ours", "now"), ("caiman", "CaImAn 1.12.1")]


def _footprints(path: Path, dims: tuple[int, int]) -> np.ndarray:
    import scipy.sparse as sp

    res = np.load(path)
    A = sp.csc_matrix((res["data"], res["indices"], res["indptr"]), shape=tuple(res["shape"]))
    return np.asarray(A.toarray().T.reshape(-1, dims[1], dims[0]).transpose(0, 2, 1))


def contour_figure(folder: Path, png: Path, movie: str = "nf-tl",
                   labels: Path | None = None) -> Path:
    """Panels (``ROWS`` x ``COLUMNS``, those run): accepted footprints' outlines at 0.2 x
    their peak (red) and the hand labels (cyan) on the mean image of the movie saved in
    ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.measure import find_contours

    from mesmerize_helpers.scoring import footprint_shapes

    mean = np.load(folder / f"{movie}.npy", mmap_mode="r").mean(axis=0)
    if labels is None:
        from bench_footprints import DATA, MOVIES

        labels = DATA / MOVIES[movie]["masks"]
    masks = np.load(labels)["masks"]
    cols = [c for c in COLUMNS if (folder / f"{movie}_nf_activity_{c[0]}.npz").exists()]
    fig, axes = plt.subplots(len(ROWS), len(cols), figsize=(3.3 * len(cols), 3.5 * len(ROWS)),
                             squeeze=False)
    lo, hi = np.percentile(mean, [1, 99.5])
    for (fit, row), (engine, col), ax in zip(
            [r for r in ROWS for _ in cols], cols * len(ROWS), axes.ravel()):
        title = f"{row}, {col}"
        fp = _footprints(folder / f"{movie}_nf_{fit}_{engine}.npz", mean.shape)
        s = footprint_shapes(fp)
        ax.imshow(mean, cmap="gray", vmin=lo, vmax=hi)
        for m in masks:
            for c in find_contours(m.astype(float), 0.5):
                ax.plot(c[:, 1], c[:, 0], color="cyan", lw=0.4)
        for a in fp:
            for c in find_contours(a, 0.2 * a.max()):
                ax.plot(c[:, 1], c[:, 0], color="red", lw=0.4)
        ax.set_title(f"{title}\n{len(fp)} accepted, median {np.median(s.pieces):.0f} "
                     f"piece(s), solidity {np.nanmedian(s.solidity):.2f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{movie}: accepted footprints at 0.2 x peak (red), hand labels (cyan)",
                 fontsize=8)
    fig.tight_layout()
    _save_small(fig, png, dpi=100)
    plt.close(fig)
    return png


def _save_small(fig: Any, png: Path, dpi: int) -> None:
    """Save with a 64-colour palette: a fraction of the size of a full-colour PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    img = Image.open(buf).convert("RGB").quantize(colors=64)
    img.save(png, optimize=True)
