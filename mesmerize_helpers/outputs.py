"""Writing an item's output files, and the summary images that mcorr and cnmf items share."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_IMAGES = {
    "mean-projection-path": "mean_projection.npy",
    "std-projection-path": "std_projection.npy",
    "max-projection-path": "max_projection.npy",
    "corr-img-path": "corr_img.npy",
    "pnr-image-path": "pnr_img.npy",
    "corr-pnr-img-path": "corr_pnr_img.npy",
}
#: Filter width (px) of the PNR images when an item's params name none (gSig, gSig_filt).
DEFAULT_PNR_GSIG = (3, 3)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Shape and dtype of a ``.npy`` file, for the manifest's file list."""
    array = np.load(path, mmap_mode="r")
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def save_array(folder: Path, name: str, array: np.ndarray) -> str:
    """Save ``array`` as ``folder/name`` (a ``.npy``) and return the name."""
    np.save(folder / name, np.ascontiguousarray(array))
    return name


def open_movie_output(folder: Path, name: str, shape: tuple[int, ...]) -> np.memmap:
    """A C-order float32 ``.npy`` memmap to stream a movie into, frame chunk by chunk.

    The file's blocks are allocated up front: writing through a memmap into a sparse file
    on a full disk kills the process with SIGBUS, while a failed allocation here is an
    ``OSError`` (ENOSPC) that the job reports as "no space left".
    """
    path = folder / name
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    try:
        _preallocate(path)
    except OSError:
        del out
        path.unlink(missing_ok=True)
        raise
    return out


def _preallocate(path: Path) -> None:
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: no way to reserve the blocks
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a filesystem that cannot
            return
        raise OSError(err.errno, f"{os.strerror(err.errno)}: cannot allocate "
                      f"{os.fstat(fd).st_size / 1e6:.0f} MB for", str(path)) from None
    finally:
        os.close(fd)


def pnr_gsig(main: dict[str, Any]) -> Any:
    """The filter width for an item's PNR images: its gSig, else gSig_filt, else a default."""
    return main.get("gSig") or main.get("gSig_filt") or DEFAULT_PNR_GSIG


def write_summary_images(
    movie: Any, folder: Path, gSig: Any = DEFAULT_PNR_GSIG, progress: bool = True
) -> dict[str, str]:
    """Summary images of ``movie`` (frames, y, x), each (y, x) float32, saved in ``folder``.

    Mean/max/std projections, the local (8-neighbour) correlation image, and CNMF-E's seeding
    images: the peak-to-noise ratio and the correlation image of the movie filtered with a
    zero-mean kernel of width ``gSig`` (pixels), which removes a smooth one-photon background.

    Returns
    -------
    dict
        mesmerize-core's output keys (``mean-projection-path``, ``corr-img-path``,
        ``pnr-image-path``, ...) to file names in ``folder``.
    """
    from .engine.images import correlation_pnr, local_correlations, projections

    images = projections(movie, progress=progress)
    images["corr"] = local_correlations(movie, progress=progress)
    images["corr_pnr"], images["pnr"] = correlation_pnr(movie, gSig, progress=progress)
    names = {"mean": "mean-projection-path", "std": "std-projection-path",
             "max": "max-projection-path", "corr": "corr-img-path",
             "pnr": "pnr-image-path", "corr_pnr": "corr-pnr-img-path"}
    return {key: save_array(folder, SUMMARY_IMAGES[key], images[kind]) for kind, key in names.items()}
