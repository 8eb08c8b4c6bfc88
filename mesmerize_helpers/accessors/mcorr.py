"""``s.mcorr``: the outputs of a motion-correction item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import checked_manifest, output_file

_ALGOS = ("mcorr",)


@pd.api.extensions.register_series_accessor("mcorr")
class MCorrExtension:
    """Registered movie and shifts of an mcorr row."""

    def __init__(self, s: pd.Series):
        self._series = s

    def get_output_path(self) -> Path:
        """The registered movie, a C-order float32 ``.npy`` of shape (frames, y, x)."""
        return output_file(self._series, "mcorr-output-path", _ALGOS)

    def get_output(self, mode: str = "r") -> np.memmap:
        """The registered movie as a memmap, (frames, y, x) float32."""
        return np.load(self.get_output_path(), mmap_mode=mode)

    def get_shifts(self, pw_rigid: bool | None = None) -> list[np.ndarray]:
        """Shifts that registered each frame, in pixels.

        Parameters
        ----------
        pw_rigid
            Piecewise-rigid shifts if the item was run with ``pw_rigid`` (default: as run).

        Returns
        -------
        list of ndarray
            Rigid: ``[x_shifts, y_shifts]``, each (frames,). Piecewise rigid:
            ``[x_shifts, y_shifts]``, each (frames, n_patches) with patches in row-major order.
        """
        manifest, folder = checked_manifest(self._series, _ALGOS)
        outputs = manifest["outputs"]
        if pw_rigid is None:
            pw_rigid = "shifts-pw" in outputs
        if pw_rigid:
            if "shifts-pw" not in outputs:
                raise ValueError(f"Item {self._series['uuid']} was not run with pw_rigid=True.")
            shifts = np.load(folder / outputs["shifts-pw"])
            flat = shifts.reshape(shifts.shape[0], -1, 2)
            return [flat[..., 1], flat[..., 0]]
        shifts = np.load(folder / outputs["shifts"])
        return [shifts[:, 1], shifts[:, 0]]
