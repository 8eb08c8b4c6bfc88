"""mesmerize-core's mcorr item done with CaImAn, for the benchmarks (run with CaImAn's Python).

What mesmerize-core's ``algorithms/mcorr.py`` does for an item, in one process
(``dview=None``): ``MotionCorrect(..., **motion params).motion_correct(save_movie=True)``, then
the mean / std / max projections of the registered memmap (``np.nan*`` over frames, as its
``save_projections_parallel``) and CaImAn's ``local_correlations(movie, swap_dim=False)`` (as
its ``save_correlation_parallel`` on a field that fits in memory); each image saved as
``.npy``. Prints one JSON line: wall and CPU seconds of the whole item and of the motion
correction alone, peak RSS, and the path of the applied shifts (``.npy``).

Usage::

    $CAIMAN_PY benchmarks/caiman_mcorr_item.py MOVIE OUT_DIR '{"max_shifts": [8, 8]}' [motion-only]

With ``motion-only`` the images are skipped (accuracy runs need only the shifts).

This file does not import mesmerize-helpers (CaImAn's environment has numpy < 2).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    movie_path, out_dir, params = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    motion_only = sys.argv[4:] == ["motion-only"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["CAIMAN_TEMP"] = str(out_dir)
    import caiman as cm
    from caiman.motion_correction import MotionCorrect
    from caiman.source_extraction.cnmf.params import CNMFParams
    from caiman.summary_images import local_correlations

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    opts = CNMFParams(params_dict=dict(params))
    mc = MotionCorrect([movie_path], dview=None, **opts.get_group("motion"))
    mc.motion_correct(save_movie=True)
    wall_mc, cpu_mc = time.perf_counter() - wall0, cpu_seconds() - cpu0
    mmap = mc.mmap_file[0]
    Yr, dims, n_frames = cm.load_memmap(mmap)  # (pixels, frames), F-ordered pixels
    if not motion_only:
        for kind in ("mean", "std", "max"):
            image = getattr(np, "nan" + kind)(Yr, axis=1).reshape(dims, order="F")
            np.save(out_dir / f"{kind}_projection.npy", image)
        movie = cm.load(mmap)
        np.save(out_dir / "cn.npy", local_correlations(movie, swap_dim=False))
        del movie
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    if params.get("pw_rigid"):
        # x_shifts_els holds the row (axis 0) shifts, y_shifts_els the column ones
        shifts = np.stack([np.asarray(mc.x_shifts_els), np.asarray(mc.y_shifts_els)], axis=-1)
    else:
        shifts = np.asarray(mc.shifts_rig)
    np.save(out_dir / "shifts.npy", shifts)
    del Yr
    Path(mmap).unlink(missing_ok=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": int(n_frames), "wall": wall, "cpu": cpu, "wall_mc": wall_mc,
                      "cpu_mc": cpu_mc, "peak_mb": peak, "caiman": cm.__version__,
                      "shifts": str(out_dir / "shifts.npy")}))


if __name__ == "__main__":
    main()
