"""Running one batch item into its own folder: the code behind every workflow rule.

The common path (open the input, time the step, catch the traceback, write the manifest) is
shared; each algorithm only supplies a step function ``step(movie, params, folder, ...)`` that
writes its files into ``folder`` and returns mesmerize-core's ``outputs`` keys.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, validation
from .batch import SOMATA_SEEDS
from .commit import (
    clean_dead_runs,
    commit,
    new_run_id,
    publish_failure,
    reading_parent,
    staging_folder,
    write_done,
)
from .engine.params import flatten_main
from .failures import explain_failure
from .io.estimates import store_correlation_image
from .io.movies import open_movie
from .io.seeds import load_seed_masks
from .locks import RUN_LOCK, item_lock, log_waiting
from .manifest import read_manifest
from .outputs import (
    MovieWriter,
    describe,
    pnr_gsig,
    save_array,
    save_images,
    sequential_frames,
    summary_images_for,
)
from .runstate import file_stat, run_params
from .step_support import (  # noqa: F401 (n_processes re-exported)
    NONFINITE_KEY,
    YR_KEY,
    cnmf_input,
    job_budget,
    n_processes,
    open_yr,
    refits,
    run_id_of,
)

Step = Callable[..., dict[str, str]]


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
    patch_files: list[str] | None = None, yr: Any = None, mem_mb: float | None = None,
) -> dict[str, str]:
    """Motion-correct ``movie`` into ``folder``: registered movie, its pixel-major copy for
    source extraction (:mod:`.pixel_major`), shifts, and the mean / max / std projections
    and correlation image. Registration and the images take one pass over the movie; the
    pixel-major copy is then transposed from the registered file (one more read of it)."""
    from .engine.images import SummaryAccumulator
    from .engine.motion import motion_correct
    from .pixel_major import write_pixel_major, yr_name

    keep_freed_memory()
    shape = tuple(int(v) for v in movie.shape)
    images = SummaryAccumulator(shape[1:])
    with MovieWriter(folder / "mcorr.npy", shape) as out:
        result = motion_correct(sequential_frames(movie), params["main"], out,
                                progress=progress, accumulate=images)
    # transposed from the registered file (read back from the OS's cache, mostly): written
    # while registering, the copy's pages would be written to disk once per block of frames
    name = yr_name(run_id_of(folder), shape[1:], shape[0])
    seen = write_pixel_major(sequential_frames(np.load(folder / "mcorr.npy", mmap_mode="r")),
                             folder / name, job_budget(params, mem_mb).block_bytes(),
                             warn=False, progress=progress)
    outputs: dict[str, Any] = {"mcorr-output-path": "mcorr.npy", YR_KEY: name,
                               NONFINITE_KEY: seen.nonfinite_values,
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
    patch_files: list[str] | None = None, algo: str = "cnmf", yr: Any = None,
    mem_mb: float | None = None,
) -> dict[str, str]:
    """Fit CNMF (or CNMF-E) on ``movie``, evaluate components, save the estimates as HDF5.

    The fit reads the pixel-major copy of the movie (the parent's ``yr``, else one written
    here) a block at a time, within the job's memory budget (``mem_mb``, else
    ``params["resources"]["mem_mb"]``, :func:`~.step_support.job_budget`).
    ``Ain``: seed masks, (y, x, n) boolean or float (CaImAn's convention), or None; for
    CNMF and CNMF-E alike (mesmerize-core's ``params["Ain_path"]``).
    ``patch_files``: patch fits made by separate jobs (:func:`run_patch`), gathered here.
    """
    from .io.estimates import save_estimates
    from .pixel_major import FileWorkspace

    budget = job_budget(params, mem_mb)
    data, outputs, images = cnmf_input(movie, folder, budget, yr, progress)
    fit, evaluate = source_extraction(algo)
    options: dict[str, Any] = {"refit": refits(params),
                               "n_processes": n_processes(), "progress": progress}
    if Ain is not None:  # seeded: no search for neurons, no patches (CaImAn's rf=None)
        options["Ain"] = Ain
    if patch_files:
        options["patch_results"] = load_patches(patch_files)
    # working matrices too large for the budget go to a file (CNMF-E's Y - B, the
    # background's bin means of a long movie)
    options["workspace"] = FileWorkspace(folder, budget)
    estimates = fit(data, params["main"], **options)
    estimates = evaluate(estimates, data, {**params["main"], **params.get("eval", {})})
    save_estimates(folder / "cnmf.hdf5", estimates, params["main"])
    outputs["cnmf-hdf5-path"] = "cnmf.hdf5"
    outputs.update(summary_images_for(
        movie, folder, pnr_gsig(params["main"]) if algo == "cnmfe" else None, progress,
        computed=images))
    return outputs


#: Keys of ``params["somata"]``: options of :func:`~.engine.anatomy.find_somata` and
#: :func:`~.engine.anatomy.disk_masks`.
SOMATA_OPTIONS = ("min_z", "polarity", "radius_factor")


def somata_seeds(movie: Any, params: dict, folder: Path, progress: bool = True,
                 mean: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Seed masks around the somata of ``movie``'s mean image (``params["Ain"] = "somata"``).

    The somata are those of :func:`~.engine.anatomy.find_somata` at CNMF's ``gSig``;
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


def run_patch(
    input_movie: Path, parent_dir: Path | None, params: dict, index: int, out: Path
) -> None:
    """Fit patch ``index`` of a scattered CNMF item and save its footprints and traces."""
    from .engine.patches import fit_movie_patch

    if parent_dir is None:
        movie, parent_run = open_movie(input_movie), ""
    else:
        job_input = open_input(input_movie, Path(parent_dir), params, "cnmf")
        # the parent's pixel-major copy: only the patch's pixels are read
        movie = job_input.yr if job_input.yr is not None else job_input.movie
        parent_run = job_input.parent_run or ""
    A, C = fit_movie_patch(movie, flatten_main(params["main"]), index)
    # written beside and renamed: a killed job never leaves half a patch file
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, A=A, C=C, parent_run=parent_run)
    os.replace(tmp, out)


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

@dataclass
class JobInput:
    """What a job reads: the movie (opened), its path, the parent's run it comes from, the
    mean image the parent saved, the raw files' identity for the manifest, and the parent's
    pixel-major copy of the movie."""

    movie: Any
    path: Path
    parent_run: str | None = None
    mean: np.ndarray | None = None
    files: dict[str, Any] = field(default_factory=dict)
    yr: Any = None  # the parent's pixel-major copy (a DataMatrix), when it has one


#: What to do when a parent's registered movie holds NaN (border_nan=True leaves them where
#: frames were shifted): source extraction fills them, but registering a registered movie
#: again cannot build a template from them.
NAN_BORDER_HINT = ("The parent item's border_nan=True left them where frames were shifted; "
                   "the built-in motion correction cannot register NaN pixels: re-run the "
                   "parent with border_nan='copy' (or 'min', or False), or use engine: caiman.")


def open_input(input_movie: str | os.PathLike, parent_dir: Path | None, params: dict,
               algo: str, stored_input: str | None = None, allow_nan_parent: bool = False
               ) -> JobInput:
    """Open an item's input and check it: a raw movie's header and pixels (no NaN), or the
    registered movie of the parent's current run, opened while that run cannot change (and
    without NaN unless ``allow_nan_parent``: CaImAn interpolates them, the built-in engine
    cannot)."""
    var_name = flatten_main(params["main"]).get("var_name_hdf5", "mov")
    if parent_dir is None:
        path = Path(input_movie)
        shape = validation.check_movie(path, var_name)
        validation.check_params_for_movie(algo, params, shape)
        movie = open_movie(path, var_name_hdf5=var_name)
        validation.check_finite(sequential_frames(movie), path)  # pread: RSS stays flat
        stored = stored_input if stored_input is not None else str(path)
        return JobInput(movie, path, files={"movie": {"path": stored, **file_stat(path)}})
    with reading_parent(parent_dir) as parent:  # a memmap keeps its file even if replaced later
        path = parent_dir / parent["outputs"]["mcorr-output-path"]
        movie = open_movie(path)
        mean_name = parent["outputs"].get("mean-projection-path")
        mean = None if mean_name is None else np.load(parent_dir / mean_name)
        yr_path = parent["outputs"].get(YR_KEY)
        yr = None if yr_path is None or algo == "mcorr" else open_yr(parent_dir / yr_path)
    validation.check_params_for_movie(algo, params, tuple(movie.shape))
    recorded = parent.get("nonfinite_pixels")  # counted by the parent's run (else: count now)
    if allow_nan_parent or recorded == 0:
        if recorded and yr is not None:  # filled in the copy source extraction reads
            warnings.warn(f"The parent's registered movie has {recorded} missing values "
                          f"(NaN), e.g. the borders left by motion correction with "
                          f"border_nan=True; in the copy CNMF reads each is replaced by its "
                          f"pixel's mean over the other frames (border_nan='copy' in the mcorr "
                          f"params avoids them).", UserWarning, stacklevel=2)
    elif recorded is None:
        validation.check_finite(sequential_frames(movie), path, hint=NAN_BORDER_HINT)
    else:
        raise validation.InvalidItemError(
            f"Movie {path} has {recorded} NaN or infinite pixel value(s). {NAN_BORDER_HINT}")
    return JobInput(movie, path, parent.get("run_id"), mean, yr=yr)


def _check_patches(patch_files: list[str] | None, parent_run: str | None) -> None:
    for path in patch_files or []:
        with np.load(path) as data:
            used = str(data["parent_run"]) if "parent_run" in data.files else ""
        if used != (parent_run or ""):
            raise RuntimeError(
                f"Patch fit {path} was made from run {used or '?'} of the parent item, whose "
                f"results are now run {parent_run}; re-run the item (its patches re-fit).")


def _reusable(folder: Path, identity: dict[str, Any], parent_dir: Path | None,
              since: float) -> dict[str, Any] | None:
    """A successful run of exactly this item, params, input and parent run that another
    job committed after ``since`` (this snakemake run's start), or None."""
    manifest = read_manifest(folder)
    if not manifest or not manifest.get("success") or manifest.get("committed_at", 0) < since:
        return None
    ran = manifest.get("identity") or {}
    parent_run = None if parent_dir is None else (read_manifest(parent_dir) or {}).get("run_id")
    same = all(json.dumps(ran.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
               for k, v in identity.items())
    return manifest if same and ran.get("parent_run") == parent_run else None


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
    stored_input: str | None = None,
    item_name: str | None = None,
    reuse_since: float | None = None,
    mem_mb: float | None = None,
) -> dict[str, Any]:
    """Run one item into ``folder`` and write its manifest; never raises for a failed step.

    The run holds the item's run lock (a concurrent run of the same item waits), stages its
    files in a fresh folder and commits them atomically (:mod:`.commit`): the previous run's
    files are never rewritten in place.

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
        A ``.npy`` of seed masks (y, x, n) for seeded CNMF or CNMF-E (``params["Ain"]``, resolved);
        with ``params["Ain"] = "somata"`` the seeds are found in the input's mean image
        instead (:func:`somata_seeds`).
    patch_files
        Patch fits of a scattered CNMF item, made by :func:`run_patch` jobs.
    stored_input, item_name
        The row's input path as the batch stores it (recorded as the run's identity) and
        the item's name (for messages).
    reuse_since
        Reuse, instead of recomputing, a run of the same identity that another job committed
        after this time (epoch s): two snakemake runs that both scheduled the item.
    mem_mb
        The job's memory limit (the scheduler's resource); else the params' (see
        :func:`~.step_support.job_budget`). Steps size their blocks of data to it.

    Returns
    -------
    dict
        The manifest written (``success`` false and ``traceback`` set when the step raised).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parent_dir = None if parent_dir is None else Path(parent_dir)
    identity: dict[str, Any] = {
        "algo": algo, "params": run_params(params),
        "input": stored_input if stored_input is not None else str(input_movie),
        "parent": None if parent_dir is None else parent_dir.name,
    }
    label = f"{algo} item {uuid}" + (f" ({item_name!r})" if item_name else "")
    with item_lock(folder, RUN_LOCK, on_wait=log_waiting(f"another run of {label}")):
        if reuse_since is not None:
            reused = _reusable(folder, identity, parent_dir, reuse_since)
            if reused is not None:
                write_done(folder, reused["run_id"])
                return reused
        clean_dead_runs(folder)
        return _run(folder, identity, label, uuid=uuid, params=params, engine=engine,
                    input_movie=input_movie, parent_dir=parent_dir, progress=progress,
                    ain_path=ain_path, patch_files=patch_files, stored_input=stored_input,
                    mem_mb=mem_mb)


def _run(folder: Path, identity: dict[str, Any], label: str, *, uuid: str, params: dict,
         engine: str, input_movie: str | os.PathLike, parent_dir: Path | None, progress: bool,
         ain_path: str | os.PathLike | None, patch_files: list[str] | None,
         stored_input: str | None, mem_mb: float | None = None) -> dict[str, Any]:
    algo = identity["algo"]
    run_id = new_run_id()
    manifest: dict[str, Any] = {
        "uuid": uuid, "algo": algo, "params": params, "engine": engine, "run_id": run_id,
        "engine_version": f"mesmerize-helpers {__version__}", "parent": identity["parent"],
        "ran_time": datetime.now().isoformat(timespec="seconds"), "identity": identity,
    }
    staging = staging_folder(folder, run_id)
    start, job_input = time.perf_counter(), None
    try:
        # CaImAn's nested groups ({"main": {"init": {...}}}) become the flat keys engines read
        params = {**params, "main": flatten_main(params["main"])}
        steps, manifest["engine_version"] = engine_steps(engine)
        validation.check_params(algo, params)  # the TSV may have been edited by hand
        job_input = open_input(input_movie, parent_dir, params, algo, stored_input,
                               # CNMF and CNMF-E fill missing pixels (engine.model.movie_to_Y)
                               allow_nan_parent=engine == "caiman" or algo != "mcorr")
        manifest["input_movie_path"] = str(job_input.path)
        identity.update(parent_run=job_input.parent_run, files=job_input.files)
        Ain, seed_outputs = None, {}
        if params.get("Ain") == SOMATA_SEEDS:
            Ain, seed_outputs = somata_seeds(job_input.movie, params, staging, progress,
                                             mean=job_input.mean)
        elif ain_path is not None:  # params["Ain"], or mesmerize-core's params["Ain_path"]
            Ain = load_seed_masks(ain_path, tuple(job_input.movie.shape[1:]))
            stored = params.get("Ain_path") or params.get("Ain") or str(ain_path)
            identity["files"]["seeds"] = {"path": str(stored), **file_stat(ain_path)}
        _check_patches(patch_files, job_input.parent_run)
        outputs = steps[algo](job_input.movie, params, staging, progress=progress, Ain=Ain,
                              patch_files=patch_files, yr=job_input.yr, mem_mb=mem_mb)
        outputs.update(seed_outputs)
        store_correlation_image(staging, outputs, algo)  # CaImAn's estimates/Cn, any engine
        if "mcorr-output-path" in outputs:  # for its children: NaN borders or not
            # counted by the step as it wrote the pixel-major copy
            manifest["nonfinite_pixels"] = int(outputs.pop(NONFINITE_KEY))
        manifest.update(success=True, traceback=None, outputs=outputs)
        manifest["files"] = {
            key: {"path": name, **describe(staging / name)}
            for key, name in outputs.items()
            if isinstance(name, str) and name.endswith(".npy") and (staging / name).is_file()
        }
        manifest["algo_duration"] = round(time.perf_counter() - start, 3)
        manifest["committed_at"] = time.time()
        commit(staging, folder, manifest)
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)  # first: on a full disk this frees room
        where = job_input.path if job_input is not None else (
            Path(input_movie) if parent_dir is None else None)
        manifest.update(success=False, outputs={}, traceback=(
            explain_failure(err, label, where, folder) + "\n\n" + traceback.format_exc()))
        manifest["algo_duration"] = round(time.perf_counter() - start, 3)
        publish_failure(folder, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
