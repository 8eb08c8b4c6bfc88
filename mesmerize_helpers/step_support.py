"""What every step function shares, built-in or CaImAn: the cores and memory a job may use,
where a run stages its files, and the pixel-major movie that source extraction reads.

Kept apart from :mod:`.jobs` (which dispatches to the engines) so that
:mod:`.caiman_engine` and :mod:`.jobs` do not import each other.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .commit import STAGING_PREFIX, new_run_id
from .engine.data import Budget, DataMatrix


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


#: Output key of an mcorr item's pixel-major copy of its registered movie.
YR_KEY = "yr-path"
#: Key under which an mcorr step hands the job the number of NaN or infinite values of its
#: registered movie (counted while writing the pixel-major copy); the job moves it from the
#: outputs into the manifest (``nonfinite_pixels``).
NONFINITE_KEY = "_nonfinite-values"

#: Memory budget (MB) of a source-extraction job when neither its params
#: (``params["resources"]["mem_mb"]``) nor the scheduler give one.
DEFAULT_MEM_MB = 3000


def job_budget(params: dict, mem_mb: float | None = None) -> Budget:
    """The memory budget of a job: the scheduler's ``mem_mb`` (Snakemake's resource, which
    ``params["resources"]["mem_mb"]`` sets), else the params', else :data:`DEFAULT_MEM_MB`."""
    given = (params.get("resources") or {}).get("mem_mb")
    value = mem_mb if mem_mb is not None else given if given is not None else DEFAULT_MEM_MB
    return Budget.from_mb(float(value))


def refits(params: dict) -> bool:
    """Whether a cnmf/cnmfe item refits: only when ``params["refit"] is True`` (a top-level
    key, not in ``"main"``), as mesmerize-core decides for cnmf items. mesmerize-core's
    cnmfe items never refit; here ``refit: True`` adds a whole-field round to CNMF-E too."""
    return params.get("refit") is True


def run_id_of(folder: str | os.PathLike) -> str:
    """The run id of a staging folder (``.run-<run_id>``), else a new one."""
    name = Path(folder).name
    if name.startswith(STAGING_PREFIX):
        return name[len(STAGING_PREFIX):]
    return new_run_id()


@contextlib.contextmanager
def _decoded_copy(folder: Path, movie: Any) -> Any:
    """A temporary C-order ``.npy`` of a movie's frames (a :class:`~.outputs.MovieWriter`
    in the movie's dtype, float32 for what :func:`~.pixel_major.write_pixel_major` does not
    read), removed on exit."""
    from .outputs import MovieWriter

    dtype = np.dtype(getattr(movie, "dtype", np.float32))
    if dtype.kind not in "uif" or dtype.itemsize > 4:
        dtype = np.dtype(np.float32)
    path = folder / f".frames-{new_run_id()}.npy"
    try:
        with MovieWriter(path, tuple(int(v) for v in movie.shape), dtype) as writer:
            yield writer
    finally:
        path.unlink(missing_ok=True)


def open_yr(path: str | os.PathLike, budget: Budget | None = None) -> DataMatrix:
    """A pixel-major movie file (:mod:`.pixel_major`) as the data matrix the engine reads."""
    from .io.movies import caiman_mmap_matrix

    yr, dims = caiman_mmap_matrix(path)
    if not yr.flags.c_contiguous:
        raise ValueError(f"{path} is an order_F CaImAn memmap; source extraction reads "
                         "order_C (pixel-major) files.")
    return DataMatrix(yr, dims, budget)


def cnmf_input(movie: Any, folder: Path, budget: Budget, yr: DataMatrix | None = None,
               progress: bool = True, run_id: str | None = None
               ) -> tuple[DataMatrix, dict[str, str], dict | None]:
    """The data a cnmf/cnmfe item fits, its ``cnmf-memmap-path`` output, and summary images.

    ``yr``: the pixel-major movie of the item's parent, opened by the job while the
    parent's run could not change (:func:`open_yr`): it is read where it is (the output is
    its path relative to the item's final folder). Otherwise one is written into
    ``folder`` from ``movie`` in one pass over its frames, which also gives the mean / max
    / std projections and the correlation image (returned, else None); it is named by
    ``run_id`` (default: the run whose staging folder ``folder`` is).
    """
    if yr is not None:
        path = os.path.relpath(yr.path, final_folder(folder))
        return yr.with_budget(budget), {"cnmf-memmap-path": path}, None
    from tqdm.auto import tqdm

    from .engine.images import SummaryAccumulator
    from .outputs import FrameReader, sequential_frames
    from .pixel_major import write_pixel_major, yr_name

    T, h, w = (int(v) for v in movie.shape)
    name = yr_name(run_id or run_id_of(folder), (h, w), T)
    block = budget.block_bytes() or (256 << 20)
    step = int(max(min(block // (h * w * 4 * 3), T), 1))  # frames, float32 and products
    images = SummaryAccumulator((h, w))
    frames = sequential_frames(movie)
    # the copy is transposed band by band from a file of whole frames (each byte written
    # once, see write_pixel_major); a movie that is not one (compressed TIFF, HDF5, ...)
    # is decoded into a temporary one first, in the images' pass
    with contextlib.ExitStack() as stack:
        plain = None if hasattr(frames, "window") else stack.enter_context(
            _decoded_copy(folder, movie))
        for start in tqdm(range(0, T, step), desc="summary images", disable=not progress):
            chunk = np.asarray(frames[start:start + step])
            if len(chunk) != min(step, T - start):  # a reader that lies about its length
                raise ValueError(f"The movie says it has {T} frames but frames "
                                 f"{start}:{start + step} gave {len(chunk)}: is the file "
                                 "complete?")
            if plain is not None:
                plain[start:start + len(chunk)] = chunk
            images.add(chunk.astype(np.float32, copy=False))
        source = frames if plain is None else FrameReader(np.load(plain.path, mmap_mode="r"))
        write_pixel_major(source, folder / name, block, progress=progress)
    return open_yr(folder / name, budget), {"cnmf-memmap-path": name}, images.images()
