"""What every step function shares, built-in or CaImAn: the cores a job may use, where a
run stages its files, and the C-order movie memmap that source extraction reads.

Kept apart from :mod:`.jobs` (which dispatches to the engines) so that
:mod:`.caiman_engine` and :mod:`.jobs` do not import each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import open_movie_output

#: A run writes its files into ``<item folder>/<STAGING_PREFIX><run_id>/`` and moves them
#: into the item folder when it succeeds (:mod:`.commit`).
STAGING_PREFIX = ".run-"


def n_processes() -> int:
    """Cores for one job: ``MESMERIZE_N_PROCESSES``; inside a SLURM job, the cores it was
    given; else all cores this process may use but one (at least 1)."""
    for name in ("MESMERIZE_N_PROCESSES", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(name):
            return max(1, int(os.environ[name]))
    try:
        available = len(os.sched_getaffinity(0))  # honours cpusets and taskset
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 2
    return max(1, available - 1)


def final_folder(folder: str | os.PathLike) -> Path:
    """The item folder a step's files end up in: ``folder`` itself, or the item folder
    holding it when ``folder`` is a run's staging folder."""
    folder = Path(folder)
    return folder.parent if folder.name.startswith(STAGING_PREFIX) else folder


def cnmf_input_memmap(movie: Any, folder: Path) -> tuple[np.memmap, dict[str, str]]:
    """The movie a cnmf item fits as a C-order float32 ``.npy`` memmap, and its
    ``cnmf-memmap-path`` output: the input itself if it already is one (the path then is
    relative to the item's final folder, not to the staging folder), else a copy."""
    if _is_c_order_npy(movie):
        return movie, {"cnmf-memmap-path": os.path.relpath(movie.filename, final_folder(folder))}
    # CNMF reads pixels and frames many times: give it one C-order float32 copy on disk
    out = open_movie_output(folder, "cnmf_memmap.npy", tuple(movie.shape))
    for start in range(0, movie.shape[0], 200):
        out[start:start + 200] = np.asarray(movie[start:start + 200], dtype=np.float32)
    out.flush()
    del out
    return np.load(folder / "cnmf_memmap.npy", mmap_mode="r"), {
        "cnmf-memmap-path": "cnmf_memmap.npy"}


def _is_c_order_npy(movie: Any) -> bool:
    return (
        isinstance(movie, np.memmap)
        and movie.dtype == np.float32
        and movie.flags.c_contiguous
        and str(getattr(movie, "filename", "")).endswith(".npy")
    )
