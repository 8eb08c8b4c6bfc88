"""What the viewer shows of each item, as plain arrays: filled by :mod:`.data` (the one module
that reads batches and item files), drawn by :mod:`.cnmf_view`, :mod:`.mcorr_view` and
:mod:`.table`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# item states in the batch table: the package's own
from ..runstate import DONE, FAILED, NOT_RUN, OUTDATED, STALE  # noqa: F401


@dataclass
class ItemRow:
    """One row of the batch table.

    Attributes
    ----------
    state
        :data:`DONE`, :data:`FAILED`, :data:`NOT_RUN`, :data:`OUTDATED` or :data:`STALE`;
        only done items have results to show (the getters refuse the others).
    message
        Why: the first line of the error of a failed item, what changed for a stale one.
    traceback
        The full traceback of a failed item.
    duration
        ``algo_duration`` of the last run, seconds.
    params_diff
        Flattened params (``"main.gSig"``) that differ between this item and the other items
        of its algo and name, with this item's values.
    group
        The raw movie the item derives from (its own, or its mcorr ancestor's): items of one
        group show one field of view, so their image axes are linked.
    """

    uuid: str
    algo: str
    name: str
    parent: str | None
    state: str
    message: str = ""
    traceback: str | None = None
    duration: float | None = None
    params_diff: dict[str, Any] = field(default_factory=dict)
    group: str = ""


@dataclass
class McorrData:
    """A finished mcorr item.

    Attributes
    ----------
    fr
        Frame rate (Hz) if the item's params give one, else None (time axis in frames).
    shifts
        (frames, 2) rigid shifts (y, x) in pixels.
    pw_shifts
        (frames, patches, 2) piecewise-rigid shifts (y, x), None for a rigid run.
    images
        Title -> (y, x) image: the input's and the registered movie's mean, the correlation
        image. An image that cannot be read is absent.
    samples
        (n, y, x) registered frames, each the mean of a few consecutive frames spread over the
        movie, to measure the motion left after registration.
    """

    fr: float | None
    shifts: np.ndarray
    pw_shifts: np.ndarray | None
    images: dict[str, np.ndarray]
    samples: np.ndarray


@dataclass
class CnmfData:
    """A finished cnmf / cnmfe item.

    Attributes
    ----------
    fr
        Frame rate (Hz) of the traces.
    dims
        (y, x) frame size.
    images
        Title -> (y, x) background image for the contours (correlation, mean, PNR, ...).
    contours
        K (n_points, 2) outlines, (y, x) in frame pixels (pixel centres at integers).
    centers
        (K, 2) centres of mass, (y, x).
    accepted
        (K,) bool: accepted by the evaluation (all True before an evaluation).
    snr, r_values
        (K,) evaluation metrics, NaN when not evaluated.
    traces
        Name -> (K, frames) float32: ``"C"``, ``"C + YrA"``, ``"S"`` and ``"dF/F"`` (when
        computed).
    footprints
        K (crop, row0, col0): each footprint drawn in the box around it, with the frame
        coordinates of the box's top-left pixel.
    """

    fr: float
    dims: tuple[int, int]
    images: dict[str, np.ndarray]
    contours: list[np.ndarray]
    centers: np.ndarray
    accepted: np.ndarray
    snr: np.ndarray
    r_values: np.ndarray
    traces: dict[str, np.ndarray]
    footprints: list[tuple[np.ndarray, int, int]]

    @property
    def n_components(self) -> int:
        return len(self.contours)
