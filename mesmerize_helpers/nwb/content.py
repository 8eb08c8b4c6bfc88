"""The NWB file's data: footprints, traces, summary images, shifts and the movie, each
added to the ``ophys`` processing module; arrays as the accessors return them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

COMPRESSION = {"compression": "gzip", "compression_opts": 4}
#: Bytes of data per chunk read while writing masks and the movie (bounded memory).
BUFFER_BYTES = 64 * 2**20


# --- footprints ----------------------------------------------------------------------

def blocks(shape: tuple[int, ...], read: Any, dtype: Any = np.float32,
           chunk_rows: int | None = None, progress: str | None = None) -> Any:
    """A dataset of ``shape`` that h5py writes block by block along axis 0: ``read(rows)``
    (a slice) gives those rows whole, so memory stays near :data:`BUFFER_BYTES` whatever
    the size. HDF5 chunks of at most ``chunk_rows`` rows and about 1 MB, compressed
    (:data:`COMPRESSION`)."""
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.data_utils import GenericDataChunkIterator

    class Blocks(GenericDataChunkIterator):
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(read(selection[0]), dtype)[(slice(None), *selection[1:])]

        def _get_maxshape(self) -> tuple[int, ...]:
            return shape

        def _get_dtype(self) -> np.dtype:
            return np.dtype(dtype)

    row_bytes = np.dtype(dtype).itemsize * int(np.prod(shape[1:]))
    rows = max(1, min(shape[0], BUFFER_BYTES // row_bytes))
    chunk = max(1, min(shape[0], chunk_rows or rows, 2**20 // row_bytes or 1))
    show = progress is not None and os.environ.get("MESMERIZE_PROGRESS", "1") != "0"
    iterator = Blocks(buffer_shape=(rows, *shape[1:]), chunk_shape=(chunk, *shape[1:]),
                      display_progress=show, progress_bar_options={"desc": progress})
    return H5DataIO(iterator, **COMPRESSION)


def _image_masks(A: sp.csc_matrix, dims: tuple[int, int]) -> Any:
    """Image masks (K, x, y), made a few components at a time while writing."""
    def read(rows: slice) -> np.ndarray:
        block = A[:, rows].toarray().T  # (k, pixels), Fortran pixel order: y + x * d1
        return block.reshape(-1, dims[1], dims[0])

    return blocks((A.shape[1], dims[1], dims[0]), read, chunk_rows=1)


def _pixel_masks(A: sp.csc_matrix, dims: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """NWB pixel masks of every footprint: (x, y, weight) records and the end of each ROI's."""
    A = sp.csc_matrix(A)
    A.sort_indices()
    records = np.empty(A.nnz, dtype=[("x", "<u4"), ("y", "<u4"), ("weight", "<f4")])
    records["x"] = A.indices // dims[0]  # Fortran pixel order: y + x * d1
    records["y"] = A.indices % dims[0]
    records["weight"] = A.data
    return records, A.indptr[1:].astype(np.int64)


def add_plane_segmentation(ophys: Any, plane: Any, s: pd.Series, fit: Any, masks: str) -> Any:
    """Add ``ImageSegmentation/PlaneSegmentation``: one row per component, its footprint
    as ``masks`` says, Accepted/Rejected and the evaluation's metrics; return the table."""
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    est = fit.estimates
    A = sp.csc_matrix(est.A)
    K = A.shape[1]
    good = np.asarray(s.cnmf.get_good_components(return_copy=False), int)
    accepted = np.zeros(K, bool)
    accepted[good] = True
    columns = []
    if masks in ("image", "both"):
        columns.append(VectorData(
            name="image_mask", description="footprint weights (x, y) of each component",
            data=_image_masks(A, fit.dims)))
    if masks in ("pixel", "both"):
        records, ends = _pixel_masks(A, fit.dims)
        pixel = VectorData(name="pixel_mask", data=records,
                           description="footprint pixels of each component: x (column), "
                                       "y (row), weight")
        columns += [pixel, VectorIndex(name="pixel_mask_index", data=ends, target=pixel)]
    columns += [
        VectorData(name="Accepted", data=accepted,
                   description="accepted by component evaluation (idx_components)"),
        VectorData(name="Rejected", data=~accepted,
                   description="rejected by component evaluation (idx_components_bad)"),
    ]
    for name, values, what in (("snr", est.SNR_comp, "signal-to-noise ratio (SNR_comp)"),
                               ("r_value", est.r_values, "spatial correlation (r_values)")):
        if values is not None and np.size(values) == K:
            columns.append(VectorData(name=name, data=np.asarray(values, np.float64),
                                      description=f"component evaluation: {what}"))
    ps = PlaneSegmentation(
        name="PlaneSegmentation", imaging_plane=plane,
        description=f"{s['algo'].upper()} components (CaImAn's estimates.A), accepted and "
                    "rejected; row k is component k of the item",
        id=ElementIdentifiers(name="id", data=np.arange(K)), columns=columns)
    segmentation = ImageSegmentation(name="ImageSegmentation")
    segmentation.add_plane_segmentation(ps)
    ophys.add(segmentation)
    return ps


# --- traces, images, shifts, movie ------------------------------------------------------

def _series(name: str, data: np.ndarray, rois: Any, fr: float, description: str,
            unit: str = "a.u.") -> Any:
    """A RoiResponseSeries of (K, T) traces, written as NWB's (T, K) a block at a time."""
    from pynwb.ophys import RoiResponseSeries

    return RoiResponseSeries(name=name, data=blocks(data.shape[::-1], lambda t: data[:, t].T,
                                                    data.dtype),
                             rois=rois, unit=unit, rate=float(fr), starting_time=0.0,
                             description=description)


def add_traces(ophys: Any, ps: Any, s: pd.Series, fit: Any, fr: float) -> None:
    """Add ``Fluorescence`` (raw C + YrA, Denoised C, Deconvolved S) and, once computed,
    ``DfOverF``, each (frames, components) at ``fr`` Hz over every row of ``ps``."""
    from pynwb.ophys import DfOverF, Fluorescence

    from ..errors import DfofNotComputedError

    K = fit.estimates.A.shape[1]

    def rois() -> Any:
        return ps.create_roi_table_region(region=list(range(K)), description="all components")

    fluorescence = Fluorescence(name="Fluorescence")
    ophys.add(fluorescence)  # first: a series' ROI region must share the file with its table
    fluorescence.add_roi_response_series(_series(
        "RoiResponseSeries", s.cnmf.get_temporal(add_residuals=True, return_copy=False), rois(), fr,
        "raw fluorescence of each component: denoised trace plus residual (C + YrA)"))
    fluorescence.add_roi_response_series(_series(
        "Denoised", s.cnmf.get_temporal(return_copy=False), rois(), fr,
        "denoised calcium trace of each component (C)"))
    fluorescence.add_roi_response_series(_series(
        "Deconvolved", np.asarray(fit.estimates.S, np.float32), rois(), fr,
        "deconvolved activity of each component (S)"))
    try:
        dff = s.cnmf.get_detrend_dfof(return_copy=False)
    except DfofNotComputedError:
        return
    dfof = DfOverF(name="DfOverF")
    ophys.add(dfof)
    dfof.add_roi_response_series(_series(
        "RoiResponseSeries", dff, rois(), fr,
        "detrended dF/F of each component (run_detrend_dfof, F_dff)", unit="n.a."))


def add_summary_images(ophys: Any, s: pd.Series) -> None:
    """Add ``SegmentationImages``: the item's projections and correlation images, (x, y)."""
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    kinds = {
        "mean": ("mean-projection-path", "mean of the movie's frames"),
        "max": ("max-projection-path", "maximum of the movie's frames"),
        "std": ("std-projection-path", "standard deviation of the movie's frames"),
        "correlation": ("corr-img-path", "local (8-neighbour) correlation image"),
    }
    if s["algo"] == "cnmfe":
        kinds["pnr"] = ("pnr-image-path", "peak-to-noise ratio of the gSig-filtered movie")
        kinds["correlation_filtered"] = ("corr-pnr-img-path", "local correlation image of "
                                         "the gSig-filtered movie CNMF-E seeds from")
    images = []
    for name, (key, what) in kinds.items():
        image = _output_image(s, key)
        if image is not None:
            images.append(GrayscaleImage(name=name, data=image.T, description=f"{what}; "
                                         "axes (x, y)"))
    if images:
        ophys.add(Images(name="SegmentationImages", images=images,
                         description="summary images of the movie the item was fitted on"))


def _output_image(s: pd.Series, key: str) -> np.ndarray | None:
    from ..accessors.common import output_file

    try:
        return np.load(output_file(s, key))
    except FileNotFoundError:  # e.g. a mesmerize-core item: no such image
        return None


def add_shifts(ophys: Any, s: pd.Series, fr: float) -> None:
    """Add the parent mcorr item's rigid and piecewise shifts (pixels), if it has one."""
    from pynwb import TimeSeries

    parent = _parent_mcorr(s)
    if parent is None:
        return
    from hdmf.backends.hdf5 import H5DataIO

    try:
        rigid = np.stack(parent.mcorr.get_shifts(pw_rigid=False), axis=1)
        ophys.add(TimeSeries(
            name="MotionCorrectionShifts", data=H5DataIO(rigid, **COMPRESSION),
            unit="pixels", rate=float(fr), starting_time=0.0,
            description=f"rigid shifts applied by mcorr item {parent['uuid']} to register "
                        "each frame: column 0 along rows (y), column 1 along columns (x)"))
    except ValueError:
        pass  # a mesmerize-core pw-rigid item keeps only its patch shifts
    try:
        piecewise = np.stack(parent.mcorr.get_shifts(pw_rigid=True), axis=-1)
    except ValueError:
        return  # run rigid
    ophys.add(TimeSeries(
        name="PiecewiseMotionCorrectionShifts", data=H5DataIO(piecewise, **COMPRESSION),
        unit="pixels", rate=float(fr), starting_time=0.0,
        description=f"piecewise-rigid shifts of mcorr item {parent['uuid']}, (frames, "
                    "patches, 2): patches in row-major order of its patch grid, last axis "
                    "along rows (y) then columns (x)"))


def _parent_mcorr(s: pd.Series) -> pd.Series | None:
    from ..accessors.common import batch_path_of
    from ..batch import load_batch

    if s.get("parent") is None:
        return None
    parent = load_batch(batch_path_of(s)).caiman.uloc(s["parent"])
    return parent if parent["algo"] == "mcorr" else None


def add_movie(ophys: Any, s: pd.Series, plane: Any, fr: float) -> None:
    """Add the movie the item was fitted on as a Two/OnePhotonSeries, (frames, x, y)."""
    from pynwb.ophys import OnePhotonSeries, TwoPhotonSeries

    kind = OnePhotonSeries if s["algo"] == "cnmfe" else TwoPhotonSeries
    movie = s.cnmf.get_cnmf_memmap()
    ophys.add(kind(
        name=kind.__name__, imaging_plane=plane, unit="a.u.", rate=float(fr),
        starting_time=0.0, data=blocks((movie.shape[0], *movie.shape[:0:-1]),
                                        lambda t: np.asarray(movie[t]).transpose(0, 2, 1),
                                        chunk_rows=64, progress="movie to NWB"),
        description="the movie the item was fitted on (after motion correction when it "
                    "has an mcorr parent), axes (frames, x, y)"))
