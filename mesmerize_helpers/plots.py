"""Summary figures of finished items, and the per-item files of ``snakemake --report``: the
figure and the item's viewer page (:mod:`.viewer`), which the figure's caption links."""

from __future__ import annotations

import contextlib
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The files the report rule makes in an item's folder: summary figure, viewer page.
REPORT_FILES = ("summary.png", "viewer.html")
#: Size (MB) an item's own viewer page aims to stay under (one per item: kept small; about
#: 2000 samples per trace for 300 components).
ITEM_PAGE_MB = 10.0


def _figure(n_panels: int, width: float = 4.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def plot_mcorr(row: pd.Series, path: str | os.PathLike) -> Path:
    """Mean image before/after registration and the rigid shifts of an mcorr item (PNG)."""
    from .viewer.data import read_mcorr

    data = read_mcorr(row)
    fig, axes = _figure(3)
    for ax, title in zip(axes[0, :2], ("mean (input)", "mean (registered)")):
        if title in data.images:
            ax.imshow(data.images[title], cmap="gray")
        ax.set_title(title)
        ax.set_axis_off()
    axes[0, 2].plot(data.shifts[:, 0], label="y")
    axes[0, 2].plot(data.shifts[:, 1], label="x")
    axes[0, 2].set_xlabel("frame")
    axes[0, 2].set_ylabel("shift (px)")
    axes[0, 2].legend()
    return _save(fig, path)


def plot_cnmf(row: pd.Series, path: str | os.PathLike, n_traces: int = 8) -> Path:
    """Contours of accepted (green) and rejected (red) components on the correlation image,
    and the traces C of the accepted components with the highest SNR (PNG)."""
    from .viewer.data import read_cnmf

    data = read_cnmf(row)
    fig, axes = _figure(2, width=5)
    if data.images:
        axes[0, 0].imshow(next(iter(data.images.values())), cmap="gray")
    for accepted, colour in ((True, "lime"), (False, "red")):
        for k in np.flatnonzero(data.accepted == accepted):
            contour = data.contours[k]
            if len(contour):
                axes[0, 0].plot(contour[:, 1], contour[:, 0], color=colour, linewidth=0.8)
    axes[0, 0].set_title(f"{int(data.accepted.sum())} accepted / {data.n_components} components")
    axes[0, 0].set_axis_off()
    good = np.flatnonzero(data.accepted)
    best = good[np.argsort(-np.nan_to_num(data.snr[good], nan=-np.inf))][:n_traces]
    traces = data.traces["C"][best]
    scale = np.abs(traces).max() if traces.size else 1.0
    t = np.arange(traces.shape[1]) / data.fr
    for i, trace in enumerate(traces):
        axes[0, 1].plot(t, trace / (scale or 1.0) + i, linewidth=0.7)
    axes[0, 1].set_xlabel("time (s)")
    axes[0, 1].set_yticks([])
    axes[0, 1].set_title("accepted components, highest SNR: C (normalised)")
    return _save(fig, path)


def report_files(folder: str | os.PathLike) -> list[Path]:
    """The report rule's files of the item in ``folder``: [summary figure, viewer page]."""
    return [Path(folder) / name for name in REPORT_FILES]


def with_report_files(folders: dict[str, Path], made: bool = True) -> dict[str, Path]:
    """The items of ``folders`` (uuid -> folder) whose report files all exist (``made``), or
    the others."""
    return {uuid: folder for uuid, folder in folders.items()
            if all(p.is_file() for p in report_files(folder)) == made}


def _error_figure(message: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = _figure(1, width=8, height=2)
    axes[0, 0].text(0, 0.5, message[:400], wrap=True, fontsize=9, va="center")
    axes[0, 0].set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_item_report(batch_path: str | os.PathLike, uuid: str, figure: str | os.PathLike,
                      page: str | os.PathLike) -> None:
    """Write the summary figure and the viewer page of one finished item.

    A figure or page that cannot be made is replaced by one saying why (and the traceback
    goes to stderr, the rule's log): the item's results are fine, and its run must not fail.
    """
    import html

    from .batch import load_batch
    from .viewer import write_viewer

    row = load_batch(batch_path).caiman.uloc(uuid)
    try:
        (plot_mcorr if row["algo"] == "mcorr" else plot_cnmf)(row, figure)
    except Exception as err:
        traceback.print_exc()
        _error_figure(f"No summary figure for item {uuid}: {type(err).__name__}: {err}",
                      Path(figure))
    try:
        write_viewer(batch_path, page, uuids=[uuid], max_mb=ITEM_PAGE_MB, progress=False)
    except Exception as err:
        traceback.print_exc()
        Path(page).write_text(
            f"<html><body><p>No viewer page for item {html.escape(uuid)}: "
            f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</p><p>Install the "
            "viewer (pip install \"mesmerize-helpers[viewer]\") and run "
            "<code>mesmerize-helpers view</code> on the batch.</p></body></html>",
            encoding="utf-8")


def report_from_snakemake(smk: Any) -> None:
    """Body of ``scripts/plot_item.py``: the report files of one item, log to ``smk.log``."""
    with open(smk.log[0], "w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
        write_item_report(Path(smk.config["batch"]).resolve(), smk.params.item,
                          smk.output.figure, smk.output.viewer)
