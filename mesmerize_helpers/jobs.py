"""Running one batch item into its own folder: the code behind every workflow rule.

The common path (open the input, time the step, catch the traceback, write the manifest) is
shared; each algorithm only supplies a step function ``step(movie, params, folder, ...)`` that
writes its files into ``folder`` and returns mesmerize-core's ``outputs`` keys.
"""

from __future__ import annotations

import ctypes
import os
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .batch import SOMATA_SEEDS
from .io.movies import open_movie
from .manifest import read_manifest, write_manifest
from .outputs import (
    MovieWriter,
    describe,
    open_movie_output,
    pnr_gsig,
    save_array,
    save_images,
    sequential_frames,
    summary_images_for,
)

Step = Callable[..., dict[str, str]]


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


def keep_freed_memory() -> None:
    """Let this (job) process reuse the memory it frees instead of returning it to the OS.

    glibc hands large blocks (a chunk of frames, its spectra) back to the OS when freed and
    maps fresh, zeroed pages for the next one: a page fault per 4 kB, which cost a job as
    much system time as the FFTs' user time. Raising malloc's mmap and trim thresholds keeps
    a few chunks' worth of memory in the heap; it stays bounded by the largest chunk
    working set. No-op where glibc's ``mallopt`` is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    limit = 1 << 30
    for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD):
        libc.mallopt(option, limit)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt option numbers


# --- steps --------------------------------------------------------------------------------

def mcorr_step(
    movie: Any, params: dict, folder: Path, progress: bool = True, Ain: Any = None,
    patch_files: list[str] | None = None,
) -> dict[str, str]:
    """Motion-correct ``movie`` into ``folder``: registered movie, shifts, and the mean / max /
    std projections and correlation image, all in one pass over the movie."""
    from .engine.images import SummaryAccumulator
    from .engine.motion import motion_correct

    keep_freed_memory()
    images = SummaryAccumulator(tuple(int(v) for v in movie.shape[1:]))
    with MovieWriter(folder / "mcorr.npy", tuple(movie.shape)) as out:
        result = motion_correct(sequential_frames(movie), params["main"], out,
                                progress=progress, accumulate=images)
    outputs: dict[str, Any] = {"mcorr-output-path": "mcorr.npy",
                               "add-to-movie": float(result.add_to_movie),
                               "border-to-0": int(result.border_to_0)}
    outputs["shifts"] = save_array(folder, "shifts_rig.npy", result.shifts_rig)
    if result.shifts_pw is not None:
        outputs["shifts-pw"] = save_array(folder, "shifts_pw.npy", result.shifts_pw)
        outputs["patch-centers"] = save_array(folder, "patch_centers.npy", result.patch_centers)
    outputs.update(save_images(folder, images.images()))
    return outputs


def source_extraction(algo: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The engine's (fit, evaluate) functions of ``"cnmf"`` (2p) or ``"cnmfe"`` (1p)."""
    if algo == "cnmfe":
        from .engine import cnmfe

        return cnmfe.fit_cnmfe, cnmfe.evaluate_components
    from .engine import cnmf

    return cnmf.fit_cnmf, cnmf.evaluate_components


def cnmf_step(
    movie: Any, params: dict, folder: Path, progress: bool = True, Ain: Any = None,
    patch_files: list[str] | None = None, algo: str = "cnmf",
) -> dict[str, str]:
    """Fit CNMF (or CNMF-E) on ``movie``, evaluate components, save the estimates as HDF5.

    ``Ain``: seed masks, (y, x, n) boolean or float (CaImAn's convention), or None.
    ``patch_files``: patch fits made by separate jobs (:func:`run_patch`), gathered here.
    """
    from .io.estimates import save_estimates

    movie, outputs = cnmf_input_memmap(movie, folder)
    fit, evaluate = source_extraction(algo)
    options: dict[str, Any] = {"refit": bool(params.get("refit", True)),
                               "n_processes": n_processes(), "progress": progress}
    if Ain is not None:
        if algo == "cnmfe":
            raise ValueError("Seeded CNMF-E (params['Ain']) is not supported; use a cnmf item.")
        options["Ain"] = Ain
    if patch_files:
        options["patch_results"] = load_patches(patch_files)
    estimates = fit(movie, params["main"], **options)
    estimates = evaluate(estimates, movie, {**params["main"], **params.get("eval", {})})
    save_estimates(folder / "cnmf.hdf5", estimates, params["main"])
    outputs["cnmf-hdf5-path"] = "cnmf.hdf5"
    outputs.update(summary_images_for(
        movie, folder, pnr_gsig(params["main"]) if algo == "cnmfe" else None, progress))
    return outputs


#: Keys of ``params["somata"]``: options of :func:`~.engine.anatomy.find_somata` and
#: :func:`~.engine.anatomy.disk_masks`.
SOMATA_OPTIONS = ("min_z", "polarity", "radius_factor")


def somata_seeds(movie: Any, params: dict, folder: Path, progress: bool = True,
                 mean: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Seed masks around the somata of ``movie``'s mean image (``params["Ain"] = "somata"``).

    The somata are the nuclei of :func:`~.engine.anatomy.find_somata` at CNMF's ``gSig``;
    ``params["somata"]`` may set its ``min_z`` and ``polarity`` and the disks'
    ``radius_factor``. The masks are saved as ``seeds.npy`` in ``folder``. ``mean``: the
    movie's mean image when already known (a parent mcorr item saved it); else computed.

    Returns
    -------
    masks, outputs
        (y, x, n) boolean masks, and the ``seed-masks-path`` output.
    """
    from .engine.anatomy import disk_masks, find_somata
    from .engine.cnmf import CNMF_DEFAULTS
    from .engine.images import projections

    options = dict(params.get("somata") or {})
    unknown = sorted(set(options) - set(SOMATA_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in params['somata']; valid keys are "
                         f"{', '.join(SOMATA_OPTIONS)}.")
    disk_options = {k: options.pop(k) for k in ("radius_factor",) if k in options}
    gsig = params["main"].get("gSig", CNMF_DEFAULTS["gSig"])
    if mean is None:
        mean = projections(movie, progress=progress)["mean"]
    centres = find_somata(mean, gsig, **options)
    if not len(centres):
        raise ValueError("params['Ain'] = 'somata' found no soma in the mean image; lower "
                         "params['somata']['min_z'] (default 2.5), check gSig (half-size of a "
                         "soma, px), or use polarity 'bright' for somata without a dark nucleus.")
    masks = disk_masks(centres, mean.shape, gsig, **disk_options)
    return masks, {"seed-masks-path": save_array(folder, "seeds.npy", masks)}


def cnmf_input_memmap(movie: Any, folder: Path) -> tuple[np.memmap, dict[str, str]]:
    """The movie a cnmf item fits as a C-order float32 ``.npy`` memmap, and its
    ``cnmf-memmap-path`` output: the input itself if it already is one, else a copy."""
    if _is_c_order_npy(movie):
        return movie, {"cnmf-memmap-path": os.path.relpath(movie.filename, folder)}
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


def run_patch(
    input_movie: Path, parent_dir: Path | None, params: dict, index: int, out: Path
) -> None:
    """Fit patch ``index`` of a scattered CNMF item and save its footprints and traces."""
    from .engine.patches import fit_movie_patch

    movie = open_movie(input_movie_for(input_movie, parent_dir))
    A, C = fit_movie_patch(movie, params["main"], index)
    np.savez(out, A=A, C=C)


def load_patches(patch_files: list[str] | None) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Patch fits in patch order (files named ``<index>.npz``), or None."""
    if not patch_files:
        return None
    ordered = sorted(patch_files, key=lambda p: int(Path(p).stem))
    results = []
    for path in ordered:
        with np.load(path) as data:
            results.append((data["A"], data["C"]))
    return results


STEPS: dict[str, Step] = {
    "mcorr": mcorr_step,
    "cnmf": cnmf_step,
    "cnmfe": lambda *args, **kwargs: cnmf_step(*args, **kwargs, algo="cnmfe"),
}

ENGINES = ("builtin", "caiman")


def engine_steps(engine: str) -> tuple[dict[str, Step], str]:
    """The step functions of ``engine`` and its version string for the manifest.

    ``"caiman"`` imports CaImAn (:mod:`.caiman_engine`) and raises ImportError if it is
    missing.
    """
    if engine == "builtin":
        return STEPS, f"mesmerize-helpers {__version__}"
    if engine == "caiman":
        from . import caiman_engine

        return caiman_engine.STEPS, (f"{caiman_engine.caiman_version()}, "
                                     f"mesmerize-helpers {__version__}")
    raise ValueError(f"Unknown engine {engine!r}; expected one of {', '.join(ENGINES)}.")


# --- the common path -------------------------------------------------------------------

def input_movie_for(input_movie: str | os.PathLike, parent_dir: str | os.PathLike | None) -> Path:
    """The file an item reads: its raw movie, or its parent's registered movie."""
    if parent_dir is None:
        return Path(input_movie)
    manifest = read_manifest(parent_dir)
    if manifest is None or not manifest.get("success"):
        raise RuntimeError(f"Parent item in {parent_dir} has no successful manifest.")
    return Path(parent_dir) / manifest["outputs"]["mcorr-output-path"]


def saved_mean(parent_dir: str | os.PathLike | None) -> np.ndarray | None:
    """The mean projection a parent item saved of its registered movie, or None."""
    if parent_dir is None:
        return None
    name = (read_manifest(parent_dir) or {}).get("outputs", {}).get("mean-projection-path")
    return None if name is None else np.load(Path(parent_dir) / name)


def run_item(
    folder: str | os.PathLike,
    *,
    uuid: str,
    algo: str,
    params: dict,
    input_movie: str | os.PathLike,
    parent_dir: str | os.PathLike | None = None,
    engine: str = "builtin",
    progress: bool = True,
    ain_path: str | os.PathLike | None = None,
    patch_files: list[str] | None = None,
) -> dict[str, Any]:
    """Run one item into ``folder`` and write its manifest; never raises for a failed step.

    Parameters
    ----------
    folder
        The item's output folder (created).
    uuid, algo, params
        The item's batch row.
    input_movie
        The resolved raw movie path (ignored when ``parent_dir`` is given).
    parent_dir
        The parent item's folder, whose registered movie is the input.
    engine
        ``"builtin"``, or ``"caiman"`` (real CaImAn, :mod:`.caiman_engine`; the item fails
        with an ImportError naming how to install it when CaImAn is missing).
    ain_path
        A ``.npy`` of seed masks (y, x, n) for seeded CNMF (``params["Ain"]``, resolved);
        with ``params["Ain"] = "somata"`` the seeds are found in the input's mean image
        instead (:func:`somata_seeds`).
    patch_files
        Patch fits of a scattered CNMF item, made by :func:`run_patch` jobs.

    Returns
    -------
    dict
        The manifest written (``success`` false and ``traceback`` set when the step raised).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "uuid": uuid, "algo": algo, "params": params, "engine": engine,
        "engine_version": f"mesmerize-helpers {__version__}",
        "parent": None if parent_dir is None else Path(parent_dir).name,
        "ran_time": datetime.now().isoformat(timespec="seconds"),
    }
    start = time.perf_counter()
    try:
        steps, manifest["engine_version"] = engine_steps(engine)
        movie_path = input_movie_for(input_movie, parent_dir)
        manifest["input_movie_path"] = str(movie_path)
        var_name = params["main"].get("var_name_hdf5", "mov")
        movie = open_movie(movie_path, var_name_hdf5=var_name)
        Ain, seed_outputs = None, {}
        if params.get("Ain") == SOMATA_SEEDS:
            Ain, seed_outputs = somata_seeds(movie, params, folder, progress,
                                             mean=saved_mean(parent_dir))
        elif ain_path is not None:
            Ain = np.load(ain_path)
        outputs = steps[algo](movie, params, folder, progress=progress, Ain=Ain,
                              patch_files=patch_files)
        outputs.update(seed_outputs)
        manifest.update(success=True, traceback=None, outputs=outputs)
        manifest["files"] = {
            key: {"path": name, **describe(folder / name)}
            for key, name in outputs.items() if isinstance(name, str) and name.endswith(".npy")
        }
    except Exception:
        manifest.update(success=False, traceback=traceback.format_exc(), outputs={})
    manifest["algo_duration"] = round(time.perf_counter() - start, 3)
    write_manifest(folder, manifest)
    return manifest
