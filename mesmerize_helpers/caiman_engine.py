"""Adapter to real CaImAn (``engine: caiman``): the same steps and output files as the
built-in engine (:mod:`.jobs`), computed by ``caiman.motion_correction.MotionCorrect`` and
``caiman.source_extraction.cnmf.CNMF``.

CaImAn is imported lazily, only when a step runs: the package installs and works without it.
It is not on PyPI (the PyPI package named ``caiman`` is unrelated); install it with conda.

Output layout (what the accessors read, identical to the built-in engine):

- mcorr: ``mcorr.npy`` (frames, y, x) C-order float32 and the pixel-major copy that
  source extraction reads (:mod:`.pixel_major`), both copied frame chunk by chunk from
  CaImAn's F-order ``.mmap`` (which is then deleted); ``shifts_rig.npy`` (frames, 2);
  with ``pw_rigid``, ``shifts_pw.npy`` (frames, ny, nx, 2) and ``patch_centers.npy``
  (ny, nx, 2); summary images.

  Shifts: CaImAn's ``shifts_rig`` are already the shifts *applied* to each frame
  (``tile_and_correct`` returns ``-register_translation(...)``, and the frame is moved by
  that amount: ``registered(y, x) = frame(y - s_y, x - s_x)``), in array-axis order
  (axis 0 = rows = y, axis 1 = columns = x) even though CaImAn calls them "x" and "y".
  That is the built-in engine's convention, so they are saved unchanged as (y, x). Likewise
  ``x_shifts_els`` is the axis-0 (y) and ``y_shifts_els`` the axis-1 (x) component of the
  per-patch applied shifts, patches in row-major order on CaImAn's patch grid.
- cnmf / cnmfe: ``cnmf.hdf5`` written by :func:`~.io.estimates.save_estimates` from
  ``cnm.estimates`` (CaImAn's ring-model background, ``W``/``b0``, in
  ``Estimates.extra``). CaImAn's input is the item's pixel-major movie, which *is*
  CaImAn's C-order ``.mmap`` (``caiman.load_memmap`` reads it): the parent mcorr item's,
  or for a raw movie one written by the step, as for the built-in engine
  (``cnmf-memmap-path`` names it). No other copy is made.

MotionCorrect gets its input as the C-order ``.mmap`` that ``caiman.save_memmap`` would
write (so any movie our readers open works), written by :func:`save_caiman_memmap` a chunk
of frames at a time (CaImAn's ``save_memmap`` holds the whole movie in memory), a temporary
file deleted at the end of the step.

Notes: CaImAn adds ``1e-4`` to every pixel of the ``.mmap`` files it writes, and so does
:func:`save_caiman_memmap`; the pixel-major movie CNMF reads holds the movie's values
unchanged (CaImAn's fit does not depend on that offset beyond float rounding). cnmfe
items always get ``center_psf=True`` and ``method_init="corr_pnr"``, and CaImAn's 1p-demo
settings (:data:`CNMFE_DEFAULTS`: ring model ``nb=0``, ``ssub=tsub=1``, ...) unless their
params say otherwise; seeded cnmf and cnmfe items (``params["Ain"]`` or
``params["Ain_path"]``) get ``Ain`` and run with ``rf=None``, ``only_init=False``, as
mesmerize-core forces for both. ``use_cnn`` defaults to False here (the CNN classifier
needs CaImAn's model files, ``caimanmanager install``); set it explicitly to use it.
CaImAn's temporary files go to ``<item folder>/caiman_tmp`` (``CAIMAN_TEMP``), removed at
the end of the step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .engine.images import SummaryAccumulator
from .outputs import (
    MovieWriter,
    pnr_gsig,
    save_array,
    save_images,
    sequential_frames,
    summary_images_for,
)

__all__ = ["CAIMAN_MISSING", "require_caiman", "mcorr_step", "cnmf_step", "cnmfe_step",
           "STEPS", "caiman_version", "save_caiman_memmap"]

CAIMAN_MISSING = (
    "engine: caiman needs CaImAn installed (conda install -c conda-forge caiman); "
    "it is not on PyPI"
)

#: CNMF-E settings of CaImAn's 1p demo (no spatial or temporal downsampling for
#: the seed search, as the built-in engine), used unless the item's params set them.
CNMFE_DEFAULTS: dict[str, Any] = {
    "nb": 0, "low_rank_background": None, "update_background_components": True,
    "nb_patch": 0, "ssub_B": 2, "normalize_init": False, "only_init": True,
    "del_duplicates": True, "method_deconvolution": "oasis", "ssub": 1, "tsub": 1,
}
#: CNMF-E settings that define it (always set for a cnmfe item).
CNMFE_FORCED: dict[str, Any] = {"center_psf": True, "method_init": "corr_pnr"}

_CHUNK = 200  # frames copied at a time between memmaps


def require_caiman() -> Any:
    """Import CaImAn, or raise ImportError saying how to install it."""
    try:
        import caiman
        import caiman.motion_correction  # noqa: F401  (the unrelated PyPI 'caiman' has neither)
        import caiman.source_extraction.cnmf  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{CAIMAN_MISSING} (import failed: {err})") from err
    return caiman


def caiman_version() -> str:
    """``"caiman <version>"`` of the installed CaImAn."""
    return f"caiman {getattr(require_caiman(), '__version__', 'unknown')}"


@contextmanager
def _caiman_temp(folder: Path) -> Iterator[Path]:
    """Point CaImAn's temporary dir (``CAIMAN_TEMP``) into the item folder, then remove it."""
    tmp = folder / "caiman_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("CAIMAN_TEMP")
    os.environ["CAIMAN_TEMP"] = str(tmp)
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("CAIMAN_TEMP", None)
        else:
            os.environ["CAIMAN_TEMP"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def save_caiman_memmap(movie: Any, folder: str | os.PathLike) -> Path:
    """Write ``movie`` as CaImAn's C-order ``.mmap``, a chunk of frames at a time.

    The file is what ``caiman.save_memmap(..., order="C")`` writes for one movie, without
    holding the movie in memory as CaImAn does: float32 (pixels, frames) in C order (each
    pixel's time series contiguous), pixels in Fortran order of (y, x), ``1e-4`` added to
    every value as CaImAn adds, named ``caiman_C_d1_<y>_d2_<x>_d3_1_order_C_frames_<T>.mmap``
    (``caiman.load_memmap`` reads the shape from the name).

    Parameters
    ----------
    movie
        (frames, y, x) array-like; read ``_CHUNK`` frames at a time.
    folder
        Where to write (the item's ``caiman_tmp``).

    Returns
    -------
    Path
        The ``.mmap`` file.
    """
    if len(movie.shape) != 3:
        raise ValueError(f"A movie for CaImAn must be (frames, y, x); got shape "
                         f"{tuple(movie.shape)}.")
    n_frames, ny, nx = (int(n) for n in movie.shape)
    path = Path(folder) / f"caiman_C_d1_{ny}_d2_{nx}_d3_1_order_C_frames_{n_frames}.mmap"
    out = np.memmap(path, np.float32, "w+", shape=(ny * nx, n_frames), order="C")
    for start in range(0, n_frames, _CHUNK):
        block = np.asarray(movie[start:start + _CHUNK], np.float32)
        # (n, x, y) flattened in C order = pixels in Fortran order of (y, x)
        pixels = block.transpose(0, 2, 1).reshape(len(block), -1).T
        out[:, start:start + len(block)] = pixels + np.float32(1e-4)
    out.flush()
    del out
    return path


def _remove(*paths: str | os.PathLike | None) -> None:
    for path in paths:
        if path and os.path.exists(path):
            os.remove(path)


def _params(main: dict[str, Any]) -> Any:
    from caiman.source_extraction.cnmf.params import CNMFParams

    return CNMFParams(params_dict=dict(main))


# --- mcorr --------------------------------------------------------------------------------

def mcorr_step(
    movie: Any, params: dict, folder: Path, progress: bool = True, Ain: Any = None,
    patch_files: list[str] | None = None, yr: Any = None, mem_mb: float | None = None,
) -> dict[str, Any]:
    """Motion-correct ``movie`` with CaImAn's ``MotionCorrect``; outputs as :func:`.jobs.mcorr_step`."""
    require_caiman()
    from caiman.motion_correction import MotionCorrect, get_patch_centers

    from .pixel_major import write_pixel_major, yr_name
    from .step_support import NONFINITE_KEY, YR_KEY, job_budget, run_id_of

    main = params["main"]
    n_frames, dims = int(movie.shape[0]), tuple(int(d) for d in movie.shape[1:])
    with _caiman_temp(folder) as tmp:
        source = registered_mmap = None
        try:
            source = str(save_caiman_memmap(movie, tmp))
            mc = MotionCorrect([source], dview=None, **_params(main).get_group("motion"))
            mc.motion_correct(save_movie=True)
            registered_mmap = mc.mmap_file[0]
            # CaImAn writes it as (pixels, frames) in F order. Not caiman.load_memmap: the
            # name, "<input name>_rig__d1_.._order_F_frames_T.mmap", holds the input's
            # "order_C" too, and CaImAn 1.12's decode_mmap_filename_dict keeps the first.
            expected = 4 * n_frames * int(np.prod(dims))
            if os.path.getsize(registered_mmap) != expected:
                raise RuntimeError(f"CaImAn's registered movie {registered_mmap} has "
                                   f"{os.path.getsize(registered_mmap)} bytes, expected "
                                   f"{expected} ({n_frames} float32 frames of {dims}).")
            Yr = np.memmap(registered_mmap, np.float32, "r", shape=(int(np.prod(dims)), n_frames),
                           order="F")
            # copied as our frame-major movie, the summary images accumulated on the way
            images = SummaryAccumulator(dims)
            with MovieWriter(folder / "mcorr.npy", (n_frames, *dims)) as movie_out:
                for start in range(0, n_frames, _CHUNK):
                    block = np.asarray(Yr[:, start:start + _CHUNK])  # (pixels, n), F order
                    frames = block.reshape(*dims, -1, order="F").transpose(2, 0, 1)
                    movie_out[start:start + len(frames)] = frames
                    images.add(frames)
            del Yr
            # and pixel-major, for source extraction (as the built-in mcorr job writes it)
            yr_file = yr_name(run_id_of(folder), dims, n_frames)
            seen = write_pixel_major(
                sequential_frames(np.load(folder / "mcorr.npy", mmap_mode="r")),
                folder / yr_file, job_budget(params, mem_mb).block_bytes(), warn=False)
        finally:
            _remove(source, registered_mmap)

    outputs: dict[str, Any] = {
        "mcorr-output-path": "mcorr.npy", YR_KEY: yr_file,
        NONFINITE_KEY: seen.nonfinite_values,
        "add-to-movie": float(-mc.min_mov) if mc.nonneg_movie else 0.0,
        "border-to-0": int(mc.border_to_0),
    }
    # applied shifts, (y, x) = (axis 0, axis 1): see the module docstring
    shifts_rig = np.asarray(mc.shifts_rig, np.float32).reshape(n_frames, 2)
    outputs["shifts"] = save_array(folder, "shifts_rig.npy", shifts_rig)
    if mc.pw_rigid:
        cy, cx = get_patch_centers(dims, overlaps=mc.overlaps, strides=mc.strides,
                                   shifts_opencv=mc.shifts_opencv,
                                   upsample_factor_grid=mc.upsample_factor_grid)
        sy = np.asarray(mc.x_shifts_els, np.float32)  # axis 0 (CaImAn's "x")
        sx = np.asarray(mc.y_shifts_els, np.float32)  # axis 1
        if sy.shape != (n_frames, len(cy) * len(cx)):
            raise RuntimeError(f"CaImAn's patch shifts {sy.shape} do not match its patch grid "
                               f"{len(cy)} x {len(cx)}.")
        shifts_pw = np.stack([sy, sx], axis=-1).reshape(n_frames, len(cy), len(cx), 2)
        grid = np.stack(np.meshgrid(cy, cx, indexing="ij"), axis=-1).astype(np.float32)
        outputs["shifts-pw"] = save_array(folder, "shifts_pw.npy", shifts_pw)
        outputs["patch-centers"] = save_array(folder, "patch_centers.npy", grid)
    outputs.update(save_images(folder, images.images()))
    return outputs


# --- cnmf / cnmfe -------------------------------------------------------------------------

def _main_params(params: dict, algo: str, seeded: bool = False) -> dict[str, Any]:
    """The CaImAn params of a cnmf/cnmfe item: ``use_cnn`` off unless set, CNMF-E's settings,
    and for seeded CNMF or CNMF-E what mesmerize-core forces (whole field, full fit of the
    seeds: ``rf=None``, ``only_init=False``)."""
    main = dict(params["main"])
    main.setdefault("use_cnn", False)
    if algo == "cnmfe":
        for key, value in CNMFE_DEFAULTS.items():
            main.setdefault(key, value)
        main.update(CNMFE_FORCED)
    if seeded:
        main.update(rf=None, only_init=False)
    return main


def to_estimates(cnm_estimates: Any, dims: tuple[int, int], cnm_params: Any) -> Any:
    """Our :class:`~.engine.cnmf.Estimates` from CaImAn's ``cnm.estimates`` and
    ``cnm.params`` (a ``CNMFParams``: the values CaImAn actually used)."""
    from .engine.cnmf import Estimates
    from .engine.ring import ring_radius

    e = cnm_estimates
    A = sp.csc_matrix(e.A, dtype=np.float32)
    n_pixels, K = A.shape
    C = np.asarray(e.C, np.float32)
    T = C.shape[1]

    def arr(value: Any, shape: tuple[int, ...]) -> np.ndarray:
        if value is None or np.size(value) == 0:
            return np.zeros(shape, np.float32)
        return np.asarray(value, np.float32).reshape(shape)

    nb = 0 if e.b is None else np.asarray(e.b).reshape(n_pixels, -1).shape[1]
    p = int(cnm_params.get("preprocess", "p"))

    def optional(value: Any) -> np.ndarray | None:
        return None if value is None or np.size(value) == 0 else np.asarray(value)

    g = (np.asarray(e.g, np.float32).reshape(K, -1) if e.g is not None and np.size(e.g)
         else np.zeros((K, p), np.float32))
    cnn = optional(e.cnn_preds)
    est = Estimates(
        A=A, b=arr(e.b, (n_pixels, nb)), C=C, f=arr(e.f, (nb, T)), S=arr(e.S, (K, T)),
        YrA=arr(e.YrA, (K, T)), sn=arr(e.sn, (n_pixels,)), g=g,
        bl=arr(e.bl, (K,)), c1=arr(e.c1, (K,)), neurons_sn=arr(e.neurons_sn, (K,)), dims=dims,
        idx_components=optional(e.idx_components),
        idx_components_bad=optional(e.idx_components_bad),
        SNR_comp=optional(e.SNR_comp), r_values=optional(e.r_values),
        cnn_preds=cnn if cnn is not None else np.full(K, np.nan, np.float32),
    )
    if getattr(e, "W", None) is not None:  # CNMF-E ring model (nb = 0)
        est.extra["W"] = sp.csc_matrix(e.W, dtype=np.float32)
        est.extra["b0"] = np.asarray(e.b0, np.float32).ravel()
        init = cnm_params.init
        est.extra["ssub_B"] = int(init["ssub_B"])
        est.extra["nb"] = int(init["nb"])
        est.extra["ring_radius"] = ring_radius(float(init["ring_size_factor"]), init["gSiz"])
    return est


def cnmf_step(
    movie: Any, params: dict, folder: Path, progress: bool = True, Ain: Any = None,
    patch_files: list[str] | None = None, algo: str = "cnmf", yr: Any = None,
    mem_mb: float | None = None,
) -> dict[str, Any]:
    """Fit CaImAn's CNMF (or CNMF-E), refit (only when ``params["refit"] is True``, as
    mesmerize-core), evaluate (``params["eval"]`` overrides quality params); outputs as
    :func:`.jobs.cnmf_step`."""
    caiman = require_caiman()
    from caiman.source_extraction.cnmf.cnmf import CNMF

    from .io.estimates import save_estimates
    from .step_support import cnmf_input, job_budget, n_processes, refits

    if patch_files:
        raise ValueError("params['scatter_patches'] (patches fitted by separate jobs) is a "
                         "built-in engine feature; engine: caiman fits patches itself (rf).")
    main = _main_params(params, algo, seeded=Ain is not None)
    # our pixel-major copy is CaImAn's C-order memmap (the parent's, or written here)
    data, outputs, computed = cnmf_input(movie, folder, job_budget(params, mem_mb), yr,
                                         progress)
    dims = data.dims
    seeds = None
    if Ain is not None:  # (y, x, n) -> (pixels, n) in CaImAn's Fortran pixel order
        Ain = np.asarray(Ain)
        seeds = Ain.reshape(-1, Ain.shape[-1], order="F")
        if seeds.dtype != bool:
            seeds = seeds.astype(np.float32)
    with _caiman_temp(folder):
        Yr, mdims, T = caiman.load_memmap(str(data.path))
        images = np.reshape(Yr.T, [T, *mdims], order="F")
        cnm = CNMF(n_processes(), params=_params(main), dview=None, Ain=seeds)
        cnm.fit(images)
        # as mesmerize-core: only when params["refit"] is True (whose cnmfe never refits;
        # CaImAn's refit of a ring-model fit re-seeds it poorly)
        if refits(params):
            cnm = cnm.refit(images, dview=None)
        if params.get("eval"):
            cnm.params.change_params(params_dict=dict(params["eval"]))
        cnm.estimates.evaluate_components(images, cnm.params, dview=None)
        estimates = to_estimates(cnm.estimates, dims, cnm.params)
        del images, Yr
    save_estimates(folder / "cnmf.hdf5", estimates, main)
    outputs["cnmf-hdf5-path"] = "cnmf.hdf5"
    outputs.update(summary_images_for(movie, folder, pnr_gsig(main) if algo == "cnmfe" else None,
                                      progress, computed=computed))
    return outputs


def cnmfe_step(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """CNMF-E: :func:`cnmf_step` with ``center_psf=True``, ``method_init="corr_pnr"``."""
    return cnmf_step(*args, **kwargs, algo="cnmfe")


STEPS = {"mcorr": mcorr_step, "cnmf": cnmf_step, "cnmfe": cnmfe_step}
