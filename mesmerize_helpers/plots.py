"""Summary figures of finished items, for a quick look without a notebook viewer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def _figure(n_panels: int, width: float = 4.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)


def plot_mcorr(row: pd.Series, path: str | os.PathLike) -> Path:
    """Mean image before/after registration and the rigid shifts of an mcorr item (PNG)."""
    import matplotlib.pyplot as plt

    fig, axes = _figure(3)
    raw = row.caiman.get_input_movie()
    n = min(raw.shape[0], 500)
    axes[0, 0].imshow(np.asarray(raw[:n], dtype=np.float32).mean(axis=0), cmap="gray")
    axes[0, 0].set_title(f"input: mean of first {n} frames")
    axes[0, 1].imshow(row.caiman.get_projection("mean"), cmap="gray")
    axes[0, 1].set_title("registered: mean image")
    y_shifts, x_shifts = row.mcorr.get_shifts(pw_rigid=False)  # axis 0 (rows) first
    axes[0, 2].plot(y_shifts, label="y")
    axes[0, 2].plot(x_shifts, label="x")
    axes[0, 2].set_xlabel("frame")
    axes[0, 2].set_ylabel("shift (px)")
    axes[0, 2].legend()
    for ax in axes[0, :2]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def plot_cnmf(row: pd.Series, path: str | os.PathLike, n_traces: int = 8) -> Path:
    """Contours of accepted (green) and rejected (red) components on the correlation image,
    and the first accepted traces (PNG)."""
    import matplotlib.pyplot as plt

    fig, axes = _figure(2, width=5)
    axes[0, 0].imshow(row.caiman.get_corr_image(), cmap="gray")
    for which, colour in (("good", "lime"), ("bad", "red")):
        contours, _ = row.cnmf.get_contours(which, swap_dim=False)  # (x, y) = (column, row)
        for contour in contours:
            if len(contour):  # NaN rows separate the pieces: matplotlib breaks the line there
                axes[0, 0].plot(contour[:, 0], contour[:, 1], color=colour, linewidth=0.8)
    good = row.cnmf.get_good_components()
    axes[0, 0].set_title(f"{len(good)} accepted / {row.cnmf.get_n_components()} components")
    axes[0, 0].set_axis_off()
    traces = row.cnmf.get_temporal(good[:n_traces])
    scale = np.abs(traces).max() or 1.0
    for i, trace in enumerate(traces):
        axes[0, 1].plot(trace / scale + i, linewidth=0.7)
    axes[0, 1].set_xlabel("frame")
    axes[0, 1].set_yticks([])
    axes[0, 1].set_title("accepted components: C (normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
