"""Writing an item's output files, and the summary images that mcorr and cnmf items share.

Summary images are computed once per movie: an mcorr item makes the mean / max / std
projections and the local correlation image in the same pass as the registration
(:class:`~.engine.images.SummaryAccumulator`); a cnmf item on that item's output links the
parent's files into its own folder instead of computing them again. CNMF-E's images (PNR and
the correlation image of the ``gSig``-filtered movie) are made for cnmfe items, and for other
items only when asked for (:func:`add_pnr_images`, behind ``s.caiman.get_pnr_image()``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import read_manifest

SUMMARY_IMAGES = {
    "mean-projection-path": "mean_projection.npy",
    "std-projection-path": "std_projection.npy",
    "max-projection-path": "max_projection.npy",
    "corr-img-path": "corr_img.npy",
    "pnr-image-path": "pnr_img.npy",
    "corr-pnr-img-path": "corr_pnr_img.npy",
}
#: Output key of each image kind made by :class:`~.engine.images.SummaryAccumulator` and
#: :func:`~.engine.pnr_images.correlation_pnr`.
IMAGE_KEYS = {"mean": "mean-projection-path", "std": "std-projection-path",
              "max": "max-projection-path", "corr": "corr-img-path",
              "pnr": "pnr-image-path", "corr_pnr": "corr-pnr-img-path"}
#: The images every mcorr and cnmf item has; cnmfe items also have the PNR pair.
PLAIN_IMAGES = ("mean", "max", "std", "corr")
PNR_IMAGES = ("pnr", "corr_pnr")
#: Output key recording the filter width (px, (y, x)) the PNR pair was computed with.
PNR_GSIG_KEY = "pnr-gSig"
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


class MovieWriter:
    """A C-order ``.npy`` (float32 unless ``dtype``) written front to back with large
    sequential writes.

    Behaves as the write side of a (frames, y, x) array: ``writer[a:b] = frames``. Each
    assignment is one ``pwrite`` of the chunk at its offset, so nothing of the movie stays
    mapped in the process (its memory does not grow with the number of frames, unlike a
    memmap's dirty pages). Use as a context manager; the file is flushed to the OS on exit.

    Parameters
    ----------
    path
        The ``.npy`` to create (replaced if present).
    shape
        (frames, y, x).
    dtype
        Of the values written (converted to it).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...],
                 dtype: Any = np.float32) -> None:
        self.path = Path(path)
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self._frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                    "shape": self.shape})
            self._offset = f.tell()
            f.truncate(self._offset + self.shape[0] * self._frame_bytes)
        self._fd = os.open(self.path, os.O_WRONLY)

    def __setitem__(self, key: slice, frames: np.ndarray) -> None:
        start, stop, step = key.indices(self.shape[0])
        data = np.ascontiguousarray(frames, dtype=self.dtype)
        if step != 1 or data.shape != (stop - start, *self.shape[1:]):
            raise ValueError(f"MovieWriter takes whole frames [a:b] of shape {self.shape[1:]}; "
                             f"got {data.shape} for [{start}:{stop}:{step}].")
        _pwrite_all(self._fd, data, self._offset + start * self._frame_bytes)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MovieWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Tee:
    """The write side of a (frames, y, x) array that writes every chunk to several."""

    def __init__(self, *outs: Any) -> None:
        self.outs = outs
        self.shape = tuple(outs[0].shape)

    def __setitem__(self, key: slice, frames: np.ndarray) -> None:
        for out in self.outs:
            out[key] = frames


class FrameReader:
    """Frames of a memory-mapped movie read with ``pread`` instead of through the mapping.

    Slicing a memmap maps the file's pages into the process and keeps them there: a job
    reading a 2 GB movie front to back ends with 2 GB of it in its resident memory. Reading
    each ``reader[a:b]`` with one ``pread`` into a fresh array keeps the job's memory flat in
    frames (the OS still caches the file). Only for C-contiguous memmaps of whole frames; see
    :func:`sequential_frames`.
    """

    def __init__(self, movie: np.memmap) -> None:
        self.shape = tuple(int(v) for v in movie.shape)
        self.dtype = movie.dtype
        self.path = str(movie.filename)
        self.offset = int(movie.offset)
        self._frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("FrameReader takes slices of frames, movie[a:b].")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise TypeError("FrameReader takes contiguous slices of frames, movie[a:b].")
        out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            _pread_into(f.fileno(), out, self.offset + start * self._frame_bytes,
                        f"{self.path}: file ends before frame {stop}.")
        return out

    def window(self, y: slice, x: slice, out: np.ndarray | None = None) -> np.ndarray:
        """Pixels ``[:, y, x]`` of every frame, (T, rows, columns), one ``pread`` per frame:
        whole rows (``x`` covers the width) or a part of one row (``y`` is one row); into
        ``out`` (C-contiguous, of the movie's dtype) when given."""
        T, h, w = self.shape
        y0, y1, _ = y.indices(h)
        x0, x1, _ = x.indices(w)
        if not (x0 == 0 and x1 == w) and y1 - y0 != 1:
            raise ValueError("FrameReader.window reads whole rows or a part of one row.")
        shape = (T, y1 - y0, x1 - x0)
        if out is None:
            out = np.empty(shape, self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"window: out must be a C-contiguous {self.dtype} {shape} array.")
        flat = out.reshape(T, -1)
        skip = (y0 * w + x0) * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            for t in range(T):
                _pread_into(f.fileno(), flat[t], self.offset + t * self._frame_bytes + skip,
                            f"{self.path}: file ends in frame {t}.")
        return out


def _pwrite_all(fd: int, data: np.ndarray, position: int) -> None:
    """Write the C-contiguous ``data`` to file ``fd`` at byte ``position`` (all of it)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written


def _pread_into(fd: int, out: np.ndarray, position: int, short: str) -> None:
    """Fill the C-contiguous ``out`` from file ``fd`` at byte ``position`` (``short``: the
    error message when the file ends first)."""
    view = memoryview(out).cast("B")
    while view:
        read = os.preadv(fd, [view], position)
        if read <= 0:
            raise OSError(short)
        view, position = view[read:], position + read


def sequential_frames(movie: Any) -> Any:
    """A :class:`FrameReader` for a C-contiguous memmapped movie, else ``movie`` itself."""
    if (isinstance(movie, np.memmap) and movie.flags.c_contiguous and movie.ndim == 3
            and getattr(movie, "filename", None) and movie.offset is not None):
        return FrameReader(movie)
    return movie


def pnr_gsig(main: dict[str, Any]) -> Any:
    """The filter width for an item's PNR images: its gSig, else gSig_filt, else a default."""
    return main.get("gSig") or main.get("gSig_filt") or DEFAULT_PNR_GSIG


def _gsig_pair(gSig: Any) -> list[float]:
    from .engine.params import as_pair

    return [float(v) for v in as_pair(gSig, "gSig")]


def save_images(folder: Path, images: dict[str, np.ndarray]) -> dict[str, str]:
    """Save summary images (kinds of :data:`IMAGE_KEYS`) into ``folder``; their outputs."""
    return {IMAGE_KEYS[kind]: save_array(folder, SUMMARY_IMAGES[IMAGE_KEYS[kind]], image)
            for kind, image in images.items()}


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (a copy where links are not possible)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def source_item(movie: Any) -> tuple[Path, dict[str, Any]] | None:
    """The folder and outputs of the item whose registered movie ``movie`` is.

    ``movie`` is such a movie when it is a memmap of the file that a successful item's
    manifest names as its ``mcorr-output-path``; anything else gives None.
    """
    filename = getattr(movie, "filename", None)
    if not filename:
        return None
    path = Path(filename).resolve()
    manifest = read_manifest(path.parent)
    if not manifest or not manifest.get("success"):
        return None
    outputs = manifest.get("outputs") or {}
    name = outputs.get("mcorr-output-path")
    if not isinstance(name, str) or (path.parent / name).resolve() != path:
        return None
    return path.parent, outputs


def reuse_images(movie: Any, folder: Path, kinds: tuple[str, ...], gSig: Any = None
                 ) -> dict[str, Any]:
    """Link into ``folder`` the images of ``kinds`` that the item which made ``movie`` has.

    PNR images are reused only when made with the same filter width ``gSig``. Returns the
    outputs of the images linked (with :data:`PNR_GSIG_KEY` when the PNR pair is).
    """
    found = source_item(movie)
    if found is None:
        return {}
    parent, parent_outputs = found
    if any(k in PNR_IMAGES for k in kinds):
        same = (gSig is not None and parent_outputs.get(PNR_GSIG_KEY) is not None
                and _gsig_pair(parent_outputs[PNR_GSIG_KEY]) == _gsig_pair(gSig))
        if not same:
            kinds = tuple(k for k in kinds if k not in PNR_IMAGES)
    outputs: dict[str, Any] = {}
    for kind in kinds:
        name = parent_outputs.get(IMAGE_KEYS[kind])
        if isinstance(name, str) and (parent / name).is_file():
            target = SUMMARY_IMAGES[IMAGE_KEYS[kind]]
            link_or_copy(parent / name, folder / target)
            outputs[IMAGE_KEYS[kind]] = target
    if IMAGE_KEYS["pnr"] in outputs:
        outputs[PNR_GSIG_KEY] = _gsig_pair(gSig)
    return outputs


def pnr_images(movie: Any, folder: Path, gSig: Any, progress: bool = True) -> dict[str, Any]:
    """CNMF-E's PNR image and filtered correlation image of ``movie`` (two streaming passes),
    saved into ``folder``; their outputs, with the filter width under :data:`PNR_GSIG_KEY`."""
    from .engine.pnr_images import correlation_pnr

    corr_pnr, pnr = correlation_pnr(sequential_frames(movie), gSig, progress=progress)
    outputs: dict[str, Any] = save_images(folder, {"pnr": pnr, "corr_pnr": corr_pnr})
    outputs[PNR_GSIG_KEY] = _gsig_pair(gSig)
    return outputs


def summary_images_for(movie: Any, folder: Path, pnr_gsig: Any = None,
                       progress: bool = True, computed: dict | None = None) -> dict[str, Any]:
    """The summary images of a source-extraction item, each made at most once per movie.

    Images the item that made ``movie`` already has are linked (:func:`reuse_images`); the
    plain ones it lacks are taken from ``computed`` (images already made in another pass
    over the movie, e.g. while writing its pixel-major copy) or computed in one pass
    (:func:`~.engine.images.summary_images`); with ``pnr_gsig`` (cnmfe items) the PNR pair
    too, unless reused.

    Returns
    -------
    dict
        mesmerize-core's output keys (``mean-projection-path``, ``corr-img-path``, ...) to file
        names in ``folder``.
    """
    from .engine.images import summary_images

    kinds = PLAIN_IMAGES + (PNR_IMAGES if pnr_gsig is not None else ())
    outputs = reuse_images(movie, folder, kinds, pnr_gsig)
    # a memmapped movie read with pread: through the mapping, every page read would stay in
    # the job's memory (the whole movie, by the end of a pass)
    frames = sequential_frames(movie)
    missing = [k for k in PLAIN_IMAGES if IMAGE_KEYS[k] not in outputs]
    if missing:
        images = computed if computed is not None else summary_images(
            frames, correlation="corr" in missing, progress=progress)
        outputs.update(save_images(folder, {k: images[k] for k in missing}))
    if pnr_gsig is not None and IMAGE_KEYS["pnr"] not in outputs:
        outputs.update(pnr_images(frames, folder, pnr_gsig, progress))
    return outputs

