"""Everything the viewer reads from a batch and its items' files, returned as the plain
containers of :mod:`.items`.

This is the only viewer module that knows the batch DataFrame, the accessors, manifests and
output files; when those change, this module is the one to adapt.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .items import FAILED, OUTDATED, STALE, CnmfData, ItemRow, McorrData

#: CaImAn's default frame rate, used when a cnmf item's params give none.
DEFAULT_FR = 30.0
#: Input frames averaged for an mcorr item's "before" image, spread over the movie.
INPUT_MEAN_FRAMES = 200
#: Registered-movie samples (each the mean of a few consecutive frames) for residual motion.
RESIDUAL_SAMPLES, RESIDUAL_WINDOW = 30, 10
#: Margin (px) around each footprint's crop.
FOOTPRINT_PAD = 2


def load(batch: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The batch as a DataFrame, from a TSV path or a loaded batch (reloaded from disk so the
    viewer shows the latest results)."""
    from ..batch import load_batch

    if isinstance(batch, pd.DataFrame):
        return batch.caiman.reload_from_disk()
    return load_batch(batch)


def batch_path(df: pd.DataFrame) -> Path:
    """The TSV the batch was loaded from."""
    return df.paths.get_batch_path()


def rows(df: pd.DataFrame) -> list[pd.Series]:
    """The batch rows, each keeping the batch path the accessors need."""
    return [df.iloc[i] for i in range(len(df))]


def item_rows(df: pd.DataFrame) -> list[ItemRow]:
    """One :class:`ItemRow` per batch item, in batch order, each in the state the rest of the
    package gives it (:mod:`mesmerize_helpers.runstate`: done, FAILED, not run, outdated,
    stale)."""
    from ..batch import batch_states, lineage

    parents = {s["uuid"]: s["parent"] for s in rows(df)}
    inputs = {s["uuid"]: s["input_movie_path"] for s in rows(df)}
    states = batch_states(batch_path(df))
    diffs = _params_diffs(df)
    out = []
    for s in rows(df):
        state = states[s["uuid"]]
        manifest = state.manifest
        failed = state.state == FAILED
        out.append(ItemRow(
            uuid=s["uuid"], algo=s["algo"], name=str(s["item_name"]), parent=s["parent"],
            state=state.state, message=_state_message(state),
            traceback=(manifest or {}).get("traceback") if failed else None,
            duration=None if manifest is None else manifest.get("algo_duration"),
            params_diff=diffs.get(s["uuid"], {}),
            group=str(inputs[lineage(s["uuid"], parents)[0]]),
        ))
    return out


def _state_message(state: Any) -> str:
    """What the table says after the state: the error line of a failed item, why an item is
    outdated or stale."""
    if state.state == FAILED:
        return error_line(state.reason or "")
    if state.state in (OUTDATED, STALE):
        return (state.reason or "").split(": ", 1)[-1].removesuffix("; re-run it.")
    return ""


def error_line(traceback: str) -> str:
    """The exception line (``ValueError: ...``, first line of its message) of a traceback:
    the first unindented line after the last stack frame."""
    lines = traceback.strip().splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith("  File ")),
                     default=-1)
    for line in lines[last_frame + 1:]:
        if line.strip() and not line[0].isspace():
            name, sep, message = line.partition(": ")
            if sep and name.replace(".", "").replace("_", "").isalnum():
                name = name.rsplit(".", 1)[-1]  # the class without its module path
            return name + sep + message
    return lines[-1] if lines else "failed (no traceback)"


def _params_diffs(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """uuid -> {dotted param: value} of the params that differ among items of one algo and
    name (``df.caiman.get_params_diffs``)."""
    out: dict[str, dict[str, Any]] = {}
    if df.empty:
        return out
    for (algo, name), group in df.groupby(["algo", "item_name"], sort=False):
        if len(group) < 2:
            continue
        diffs = df.caiman.get_params_diffs(algo, name)
        for index, values in diffs.iterrows():
            out[df.loc[index, "uuid"]] = {k: v for k, v in values.items()
                                          if not (np.isscalar(v) and pd.isna(v))}
    return out


def read_item(s: pd.Series) -> McorrData | CnmfData:
    """The data of a finished item (raises the accessors' errors for one that is not)."""
    return read_mcorr(s) if s["algo"] == "mcorr" else read_cnmf(s)


def _try_image(read: Any) -> np.ndarray | None:
    try:
        image = np.asarray(read(), dtype=np.float32)
    except (OSError, KeyError, ValueError):
        return None
    return image if image.ndim == 2 else None


def _images(pairs: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
    images = {}
    for title, read in pairs:
        image = _try_image(read)
        if image is not None:
            images[title] = image
    return images


def read_mcorr(s: pd.Series) -> McorrData:
    """Shifts, before/after means, correlation image and registered samples of an mcorr item."""
    y, x = s.mcorr.get_shifts(pw_rigid=False)  # axis 0 (rows) first, as mesmerize-core
    shifts = np.stack([np.asarray(y), np.asarray(x)], axis=1).astype(np.float32)
    try:
        py, px = s.mcorr.get_shifts(pw_rigid=True)
        pw = np.stack([np.asarray(py), np.asarray(px)], axis=-1).astype(np.float32)
    except ValueError:  # a rigid run
        pw = None
    images = _images([
        ("mean (input)", lambda: _input_mean(s)),
        ("mean (registered)", lambda: s.caiman.get_projection("mean")),
        ("correlation", lambda: s.caiman.get_corr_image()),
    ])
    fr = s["params"]["main"].get("fr")
    return McorrData(fr=None if fr is None else float(fr), shifts=shifts, pw_shifts=pw,
                     images=images, samples=_window_means(s.mcorr.get_output()))


def _input_mean(s: pd.Series) -> np.ndarray:
    """Mean of up to :data:`INPUT_MEAN_FRAMES` input frames spread over the movie."""
    movie = s.caiman.get_input_movie()
    n = movie.shape[0]
    total = np.zeros(movie.shape[1:], np.float64)
    indices = np.unique(np.linspace(0, n - 1, min(n, INPUT_MEAN_FRAMES)).astype(int))
    for i in indices:
        total += np.asarray(movie[int(i)], dtype=np.float64)
    return total / len(indices)


def _window_means(movie: Any) -> np.ndarray:
    """(n, y, x): means of :data:`RESIDUAL_WINDOW` consecutive frames at
    :data:`RESIDUAL_SAMPLES` places spread over the movie."""
    n = movie.shape[0]
    window = max(1, min(RESIDUAL_WINDOW, n // RESIDUAL_SAMPLES))
    starts = np.unique(np.linspace(0, n - window, min(RESIDUAL_SAMPLES, n)).astype(int))
    with warnings.catch_warnings():  # border_nan=True leaves all-NaN border pixels
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmean(np.asarray(movie[a:a + window], np.float32), axis=0)
                         for a in starts])


def _estimates(s: pd.Series) -> Any:
    out = s.cnmf.get_output()
    # mesmerize-core's get_output() returns a CNMF object whose results are .estimates
    return getattr(out, "estimates", out)


def _metric(values: Any, k: int) -> np.ndarray:
    if values is None:
        return np.full(k, np.nan, np.float32)
    return np.asarray(values, dtype=np.float32).reshape(k)


def read_cnmf(s: pd.Series) -> CnmfData:
    """Contours, metrics, traces, footprints and images of a cnmf / cnmfe item."""
    from ..contours import caiman_contours, contour_centers
    from ..engine.footprints import as_footprints, box_image, column

    est = _estimates(s)
    A = as_footprints(est.A, np.float32)
    dims = tuple(int(d) for d in est.dims)
    k = A.shape[1]
    # get_contours' outlines in (row, column): NaN rows separate the pieces of one outline
    contours = caiman_contours(A, dims, swap_dim=True)
    centers = contour_centers(contours)
    accepted = np.zeros(k, bool)
    accepted[np.asarray(s.cnmf.get_good_components(), int)] = True
    traces = {
        "C": s.cnmf.get_temporal("all"),
        "C + YrA": s.cnmf.get_temporal("all", add_residuals=True),
        "S": np.asarray(est.S, np.float32),
    }
    if getattr(est, "F_dff", None) is not None:
        traces["dF/F"] = np.asarray(s.cnmf.get_detrend_dfof("all"), np.float32)
    footprints = []
    for j in range(k):
        idx, val = column(A, j)
        footprints.append(box_image(idx, val, dims, FOOTPRINT_PAD) if idx.size
                          else (np.zeros((1, 1), np.float32), 0, 0))
    pairs = [("correlation", s.caiman.get_corr_image),
             ("mean", lambda: s.caiman.get_projection("mean"))]
    if s["algo"] == "cnmfe":
        pairs.append(("PNR", s.caiman.get_pnr_image))
    fr = s["params"]["main"].get("fr") or DEFAULT_FR
    return CnmfData(
        fr=float(fr), dims=dims, images=_images(pairs), contours=contours,
        centers=np.array(centers, np.float64).reshape(k, 2), accepted=accepted,
        snr=_metric(getattr(est, "SNR_comp", None), k),
        r_values=_metric(getattr(est, "r_values", None), k),
        traces=traces, footprints=footprints,
    )
