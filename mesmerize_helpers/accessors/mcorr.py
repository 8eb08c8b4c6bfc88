"""``s.mcorr``: the outputs of a motion-correction item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io.movies import open_memmap
from .common import checked_outputs, output_file
from .results import held_still

_ALGOS = ("mcorr",)


@pd.api.extensions.register_series_accessor("mcorr")
class MCorrExtensions:
    """Registered movie and shifts of an mcorr row."""

    def __init__(self, s: pd.Series):
        self._series = s

    def get_output_path(self) -> Path:
        """The registered movie: our C-order float32 ``.npy``, or CaImAn's F-order ``.mmap``
        in a mesmerize-core batch."""
        return output_file(self._series, "mcorr-output-path", _ALGOS)

    def get_output(self, mode: str = "r") -> np.memmap:
        """The registered movie as a (frames, y, x) float32 memmap.

        Parameters
        ----------
        mode
            numpy memmap mode: ``"r"``, ``"r+"`` or ``"c"`` (copy on write).
        """
        return open_memmap(self.get_output_path(), mode)

    def get_shifts(self, pw_rigid: bool | None = None) -> list[np.ndarray]:
        """The shifts applied to register each frame, in pixels, as mesmerize-core returns
        CaImAn's: one array per axis, axis 0 (rows, CaImAn's "x") first.

        Parameters
        ----------
        pw_rigid
            True: the piecewise-rigid shifts of each patch; False: the rigid (whole-frame)
            shifts; None: as the item was run.

        Returns
        -------
        list of ndarray
            Rigid: ``[shifts along axis 0, shifts along axis 1]``, each (frames,).
            Piecewise: the same, each (frames, n_patches), patches in row-major order of the
            patch grid (axis 0 outer), as CaImAn's ``x_shifts_els`` / ``y_shifts_els``.

        Raises
        ------
        ValueError
            ``pw_rigid=True`` for an item run rigid.
        """
        with held_still(self._series):  # both files from the same run
            outputs, folder = checked_outputs(self._series, _ALGOS)
            shifts = np.load(folder / outputs["shifts"])
            patches = (np.load(folder / outputs["shifts-pw"])  # (frames, ny, nx, axes)
                       if "shifts-pw" in outputs and shifts.ndim != 3 else None)
        if shifts.ndim == 3:  # mesmerize-core's file: (axes, frames, patches) when pw_rigid
            piecewise = list(shifts)
            rigid = None
        else:
            piecewise = None
            if patches is not None:
                flat = patches.reshape(patches.shape[0], -1, patches.shape[-1])
                piecewise = [flat[..., axis] for axis in range(flat.shape[-1])]
            rigid = list(shifts.T)
        if pw_rigid is None:
            pw_rigid = piecewise is not None
        if pw_rigid:
            if piecewise is None:
                raise ValueError(f"Item {self._series['uuid']} was run rigid (pw_rigid False); "
                                 "it has no patch shifts.")
            return piecewise
        if rigid is None:
            raise ValueError(f"Item {self._series['uuid']} is a mesmerize-core pw-rigid item, "
                             "whose files keep only the patch shifts; use pw_rigid=True.")
        return rigid
