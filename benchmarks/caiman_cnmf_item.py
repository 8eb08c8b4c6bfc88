"""mesmerize-core's cnmf / cnmfe item done with CaImAn, for the benchmarks (run with CaImAn's
Python).

What mesmerize-core's ``algorithms/cnmf.py`` and ``algorithms/cnmfe.py`` do for an item, in
one process (``dview=None``): the movie saved as CaImAn's C-order memmap
(``caiman.save_memmap``), ``CNMF(params).fit(images)``, for cnmf ``refit`` when
``params["refit"]`` is true, then ``evaluate_components``; for cnmfe mesmerize-core forces
``method_init="corr_pnr"``, ``only_init=True``, ``center_psf=True``,
``normalize_init=False``. Prints one JSON line: wall and CPU seconds of the whole item and
of the fit alone, the peak RSS of the process (``ru_maxrss``), the number of components and
of accepted ones, and where the accepted components' footprints peak (pixel indices in
CaImAn's Fortran order) for scoring.

Usage::

    $CAIMAN_PY benchmarks/caiman_cnmf_item.py cnmf|cnmfe MOVIE OUT_DIR '{"gSig": [3, 3]}' [refit]

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
    algo, movie_path, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    params = json.loads(sys.argv[4])
    refit = sys.argv[5:] == ["refit"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["CAIMAN_TEMP"] = str(out_dir)
    import caiman as cm
    from caiman.source_extraction.cnmf import cnmf
    from caiman.source_extraction.cnmf.params import CNMFParams

    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    if algo == "cnmfe":
        params = {"method_init": "corr_pnr", "only_init": True, "center_psf": True,
                  "normalize_init": False, **params}
    params.setdefault("use_cnn", False)
    opts = CNMFParams(params_dict=dict(params))
    fname = cm.save_memmap([movie_path], base_name=str(out_dir / "memmap_"), order="C")
    Yr, dims, n_frames = cm.load_memmap(fname)
    images = np.reshape(Yr.T, [n_frames, *dims], order="F")
    wall_fit0, cpu_fit0 = time.perf_counter(), cpu_seconds()
    cnm = cnmf.CNMF(n_processes=1, dview=None, params=opts)
    cnm.fit(images)
    if refit:
        cnm = cnm.refit(images, dview=None)
    wall_fit, cpu_fit = time.perf_counter() - wall_fit0, cpu_seconds() - cpu_fit0
    cnm.estimates.evaluate_components(images, cnm.params, dview=None)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    A = cnm.estimates.A
    good = np.asarray(cnm.estimates.idx_components, int)
    peaks = np.asarray(A.argmax(axis=0)).ravel()
    print(json.dumps({
        "algo": algo, "frames": int(n_frames), "dims": list(dims), "refit": refit,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "fit_wall_s": round(wall_fit, 1),
        "fit_cpu_s": round(cpu_fit, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "K": int(A.shape[1]), "accepted": int(len(good)),
        "accepted_peaks": peaks[good].tolist(),
    }))
    del images, Yr
    os.remove(fname)


if __name__ == "__main__":
    main()
