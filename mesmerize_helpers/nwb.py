"""NWB export of a cnmf / cnmfe item (pynwb, the ``nwb`` extra: ``pip install -e ".[nwb]"``).

One file per item, with what DANDI and NWB tools (roiextractors' ``NwbSegmentationExtractor``,
neuroconv, NWB widgets) look for, under the names they look for:

- ``Device``, ``OpticalChannel`` and ``ImagingPlane`` (``imaging_rate`` = the fit's ``fr``);
- processing module ``ophys``:
    - ``ImageSegmentation/PlaneSegmentation``: one row per component (accepted and
      rejected), footprints as ``image_mask`` (compressed; zeros cost little) and/or
      ``pixel_mask`` (the sparse footprint's pixels, exactly), boolean columns ``Accepted``
      and ``Rejected``, and ``snr`` / ``r_value`` when evaluated;
    - ``Fluorescence``: ``RoiResponseSeries`` (raw: ``C + YrA``), ``Denoised`` (``C``),
      ``Deconvolved`` (``S``); ``DfOverF/RoiResponseSeries`` once ``run_detrend_dfof()`` ran;
    - ``SegmentationImages``: mean, max, std, correlation (and for cnmfe the PNR and the
      filtered movie's correlation);
    - ``MotionCorrectionShifts`` (and ``PiecewiseMotionCorrectionShifts``): the parent
      mcorr item's shifts, in pixels;
    - optionally the movie the item was fitted on (``movie=True``), as a chunked, compressed
      ``TwoPhotonSeries`` (cnmf) or ``OnePhotonSeries`` (cnmfe).

Images and masks follow NWB's axis order, (x, y) = (column, row): the transpose of the
(y, x) numpy images the accessors return (roiextractors and CaImAn transpose them back).
Traces are (time, component). Every array is the one the accessors return.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["export_nwb", "export_batch_nwb", "MASKS"]

#: Footprint representations: ``"image"`` (dense (x, y) weights per ROI, compressed),
#: ``"pixel"`` ((x, y, weight) of the footprint's pixels), ``"both"``.
MASKS = ("image", "pixel", "both")
_MODALITY = {"cnmf": "two-photon", "cnmfe": "one-photon"}
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}
#: Bytes of data per chunk read while writing masks and the movie (bounded memory).
_BUFFER_BYTES = 64 * 2**20


def _require_pynwb() -> Any:
    try:
        import pynwb
    except ImportError as err:
        raise ImportError('NWB export needs pynwb: pip install -e ".[nwb]" (or pip install '
                          'pynwb).') from err
    return pynwb


# --- the file and its metadata -------------------------------------------------------

def _start_time(s: pd.Series, value: datetime | str | None) -> tuple[datetime, str | None]:
    """The session start (timezone-aware) and, when guessed, a note saying from what."""
    if value is not None:
        when = datetime.fromisoformat(value) if isinstance(value, str) else value
        return (when if when.tzinfo else when.astimezone()), None
    try:
        movie = _raw_movie(s)
        when = datetime.fromtimestamp(os.stat(movie).st_mtime).astimezone()
        return when, (f"session_start_time was not given: it is the modification time of "
                      f"the raw movie {movie}.")
    except OSError:
        when = datetime.now().astimezone()
        return when, "session_start_time was not given: it is the time of the export."


def _raw_movie(s: pd.Series) -> Path:
    """The raw movie at the root of the item's lineage."""
    from .accessors.common import batch_path_of
    from .batch import load_batch

    row = s
    if s.get("parent") is not None:
        df = load_batch(batch_path_of(s))
        root = df.caiman.get_parent(s["uuid"], root=True)
        row = df.caiman.uloc(root)
    return Path(row.caiman.get_input_movie_path())


def _new_file(s: pd.Series, fit: Any, options: Mapping[str, Any]) -> Any:
    from pynwb import NWBFile
    from pynwb.file import Subject

    from . import __version__

    start, note = _start_time(s, options.get("session_start_time"))
    manifest = _manifest(s)
    run = manifest.get("run_id")
    description = options.get("session_description") or (
        f"{_MODALITY[s['algo']]} calcium imaging: {s['algo']} results of item "
        f"{s['item_name']!r} ({s['uuid']}), {fit.estimates.A.shape[1]} components")
    subject = options.get("subject")
    if isinstance(subject, Mapping):
        subject = Subject(**subject)
    if subject is None:
        warnings.warn("No subject given: NWB files for DANDI need one (subject={'subject_id': "
                      "..., 'species': ..., 'sex': ..., 'age': 'P90D'}); nwbinspector reports "
                      "it as critical.", stacklevel=3)
    notes = [f"Exported by mesmerize-helpers {__version__} from item {s['uuid']}"
             + (f" (run {run})" if run else "") + f", engine {manifest.get('engine_version')}."]
    if note:
        notes.append(note)
    return NWBFile(
        session_description=description,
        identifier=options.get("identifier") or (f"{s['uuid']}-{run}" if run else s["uuid"]),
        session_start_time=start,
        experimenter=options.get("experimenter"),
        lab=options.get("lab"),
        institution=options.get("institution"),
        subject=subject,
        source_script="mesmerize-helpers (mesmerize_helpers.nwb.export_nwb)",
        source_script_file_name="mesmerize_helpers/nwb.py",
        notes=" ".join(notes),
    )


def _manifest(s: pd.Series) -> dict[str, Any]:
    from .accessors.common import batch_path_of
    from .legacy import is_legacy

    if is_legacy(batch_path_of(s)):
        return {"engine_version": "CaImAn (mesmerize-core batch)"}
    return s.caiman.get_manifest()


def _imaging_plane(nwbfile: Any, s: pd.Series, fr: float, options: Mapping[str, Any]) -> Any:
    from pynwb.ophys import OpticalChannel

    modality = _MODALITY[s["algo"]]
    device = {"name": "Microscope", "description": f"{modality} microscope",
              **(options.get("device") or {})}
    channel = {"name": "OpticalChannel", "description": "the imaged channel",
               "emission_lambda": float("nan"), **(options.get("optical_channel") or {})}
    plane = {"name": "ImagingPlane", "description": f"the {modality} imaging plane",
             "indicator": "unknown", "location": "unknown",
             "excitation_lambda": float("nan"), **(options.get("imaging_plane") or {})}
    plane["imaging_rate"] = float(fr)
    return nwbfile.create_imaging_plane(
        device=nwbfile.create_device(**device), optical_channel=OpticalChannel(**channel),
        **plane)


# --- footprints -------------------------------------------------------------------------

def _mask_iterator(A: sp.csc_matrix, dims: tuple[int, int]) -> Any:
    """Image masks (K, x, y) float32, made a few components at a time while writing."""
    from hdmf.data_utils import GenericDataChunkIterator

    class FootprintMasks(GenericDataChunkIterator):
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            block = A[:, selection[0]].toarray().T.astype(np.float32)  # (k, pixels)
            images = block.reshape(-1, dims[1], dims[0])  # Fortran pixels: (k, x, y)
            return images[:, selection[1], selection[2]]

        def _get_maxshape(self) -> tuple[int, ...]:
            return (A.shape[1], dims[1], dims[0])

        def _get_dtype(self) -> np.dtype:
            return np.dtype(np.float32)

    per_roi = dims[0] * dims[1] * 4
    n = max(1, min(A.shape[1], _BUFFER_BYTES // per_roi))
    return FootprintMasks(buffer_shape=(n, dims[1], dims[0]), chunk_shape=(1, dims[1], dims[0]),
                          display_progress=False)


def _pixel_masks(A: sp.csc_matrix, dims: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """NWB pixel masks of every footprint: (x, y, weight) records and the end of each ROI's."""
    A = sp.csc_matrix(A)
    A.sort_indices()
    records = np.empty(A.nnz, dtype=[("x", "<u4"), ("y", "<u4"), ("weight", "<f4")])
    records["x"] = A.indices // dims[0]  # Fortran pixel order: y + x * d1
    records["y"] = A.indices % dims[0]
    records["weight"] = A.data
    return records, A.indptr[1:].astype(np.int64)


def _plane_segmentation(ophys: Any, plane: Any, s: pd.Series, fit: Any, masks: str) -> Any:
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb.ophys import ImageSegmentation, PlaneSegmentation

    est = fit.estimates
    A = sp.csc_matrix(est.A)
    K = A.shape[1]
    good = np.asarray(s.cnmf.get_good_components(), int)
    accepted = np.zeros(K, bool)
    accepted[good] = True
    columns = []
    if masks in ("image", "both"):
        columns.append(VectorData(
            name="image_mask", description="footprint weights (x, y) of each component",
            data=H5DataIO(_mask_iterator(A, fit.dims), **_COMPRESSION)))
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
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.ophys import RoiResponseSeries

    return RoiResponseSeries(name=name, data=H5DataIO(np.ascontiguousarray(data.T),
                                                      **_COMPRESSION),
                             rois=rois, unit=unit, rate=float(fr), starting_time=0.0,
                             description=description)


def _traces(ophys: Any, ps: Any, s: pd.Series, fit: Any, fr: float) -> None:
    from pynwb.ophys import DfOverF, Fluorescence

    from .errors import DfofNotComputedError

    K = fit.estimates.A.shape[1]

    def rois() -> Any:
        return ps.create_roi_table_region(region=list(range(K)), description="all components")

    fluorescence = Fluorescence(name="Fluorescence")
    ophys.add(fluorescence)  # first: a series' ROI region must share the file with its table
    fluorescence.add_roi_response_series(_series(
        "RoiResponseSeries", s.cnmf.get_temporal(add_residuals=True), rois(), fr,
        "raw fluorescence of each component: denoised trace plus residual (C + YrA)"))
    fluorescence.add_roi_response_series(_series(
        "Denoised", s.cnmf.get_temporal(), rois(), fr,
        "denoised calcium trace of each component (C)"))
    fluorescence.add_roi_response_series(_series(
        "Deconvolved", np.asarray(fit.estimates.S, np.float32), rois(), fr,
        "deconvolved activity of each component (S)"))
    try:
        dff = s.cnmf.get_detrend_dfof()
    except DfofNotComputedError:
        return
    dfof = DfOverF(name="DfOverF")
    ophys.add(dfof)
    dfof.add_roi_response_series(_series(
        "RoiResponseSeries", dff, rois(), fr,
        "detrended dF/F of each component (run_detrend_dfof, F_dff)", unit="n.a."))


def _summary_images(ophys: Any, s: pd.Series) -> None:
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
    from .accessors.common import output_file

    try:
        return np.load(output_file(s, key))
    except FileNotFoundError:  # e.g. a mesmerize-core item: no such image
        return None


def _shifts(ophys: Any, s: pd.Series, fr: float) -> None:
    from pynwb import TimeSeries

    parent = _parent_mcorr(s)
    if parent is None:
        return
    from hdmf.backends.hdf5 import H5DataIO

    try:
        rigid = np.stack(parent.mcorr.get_shifts(pw_rigid=False), axis=1)
        ophys.add(TimeSeries(
            name="MotionCorrectionShifts", data=H5DataIO(rigid, **_COMPRESSION),
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
        name="PiecewiseMotionCorrectionShifts", data=H5DataIO(piecewise, **_COMPRESSION),
        unit="pixels", rate=float(fr), starting_time=0.0,
        description=f"piecewise-rigid shifts of mcorr item {parent['uuid']}, (frames, "
                    "patches, 2): patches in row-major order of its patch grid, last axis "
                    "along rows (y) then columns (x)"))


def _parent_mcorr(s: pd.Series) -> pd.Series | None:
    from .accessors.common import batch_path_of
    from .batch import load_batch

    if s.get("parent") is None:
        return None
    parent = load_batch(batch_path_of(s)).caiman.uloc(s["parent"])
    return parent if parent["algo"] == "mcorr" else None


def _movie_iterator(movie: Any) -> Any:
    """The (frames, y, x) movie as NWB's (frames, x, y), a block of frames at a time."""
    from hdmf.data_utils import GenericDataChunkIterator

    T, d1, d2 = movie.shape

    class Frames(GenericDataChunkIterator):
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            block = np.asarray(movie[selection[0]], np.float32)
            return block.transpose(0, 2, 1)[:, selection[1], selection[2]]

        def _get_maxshape(self) -> tuple[int, ...]:
            return (T, d2, d1)

        def _get_dtype(self) -> np.dtype:
            return np.dtype(np.float32)

    frames = max(1, min(T, _BUFFER_BYTES // (d1 * d2 * 4)))
    return Frames(buffer_shape=(frames, d2, d1), chunk_shape=(min(T, 64), d2, d1),
                  display_progress=os.environ.get("MESMERIZE_PROGRESS", "1") != "0",
                  progress_bar_options={"desc": "movie to NWB"})


def _movie(ophys: Any, s: pd.Series, plane: Any, fr: float) -> None:
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb.ophys import OnePhotonSeries, TwoPhotonSeries

    kind = OnePhotonSeries if s["algo"] == "cnmfe" else TwoPhotonSeries
    movie = s.cnmf.get_cnmf_memmap()
    ophys.add(kind(
        name=kind.__name__, imaging_plane=plane, unit="a.u.", rate=float(fr),
        starting_time=0.0, data=H5DataIO(_movie_iterator(movie), **_COMPRESSION),
        description="the movie the item was fitted on (after motion correction when it "
                    "has an mcorr parent), axes (frames, x, y)"))


# --- entry points ----------------------------------------------------------------------

def export_nwb(
    s: pd.Series,
    path: str | os.PathLike,
    *,
    session_description: str | None = None,
    identifier: str | None = None,
    session_start_time: datetime | str | None = None,
    experimenter: str | list[str] | None = None,
    lab: str | None = None,
    institution: str | None = None,
    subject: Mapping[str, Any] | Any | None = None,
    device: Mapping[str, Any] | None = None,
    optical_channel: Mapping[str, Any] | None = None,
    imaging_plane: Mapping[str, Any] | None = None,
    masks: str = "image",
    movie: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a finished cnmf / cnmfe item as an NWB file (module docstring: what is in it).

    Parameters
    ----------
    s
        The item's row.
    path
        The ``.nwb`` file to write (written beside and renamed: never half a file).
    session_description, identifier, session_start_time
        NWB's required fields. Defaults: a description of the item; its uuid and run id;
        the raw movie's modification time (the file's notes say so). A naive datetime (or
        ISO string) is taken as local time.
    experimenter, lab, institution
        Optional NWB fields.
    subject
        ``pynwb.file.Subject`` or its arguments (``subject_id``, ``species``, ``age``, ...).
    device, optical_channel, imaging_plane
        Arguments overriding the defaults of ``create_device`` (``name`` "Microscope"),
        ``OpticalChannel`` (``emission_lambda`` NaN: unknown) and ``create_imaging_plane``
        (``indicator``, ``location`` "unknown", ``excitation_lambda`` NaN, ``grid_spacing``,
        ...); ``imaging_rate`` is always the fit's ``fr``.
    masks
        ``"image"`` (default: what every NWB reader takes), ``"pixel"`` (sparse) or
        ``"both"``.
    movie
        Also write the movie the item was fitted on (big), chunked and compressed.
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ImportError
        pynwb is not installed.
    """
    _require_pynwb()
    from pynwb import NWBHDF5IO

    if masks not in MASKS:
        raise ValueError(f"masks must be one of {', '.join(MASKS)}; got {masks!r}.")
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it.")
    fit = s.cnmf.get_output()  # raises the accessors' errors for an item not done
    fr = float(fit.params.data["fr"])
    options = {"session_description": session_description, "identifier": identifier,
               "session_start_time": session_start_time, "experimenter": experimenter,
               "lab": lab, "institution": institution, "subject": subject, "device": device,
               "optical_channel": optical_channel, "imaging_plane": imaging_plane}
    nwbfile = _new_file(s, fit, options)
    plane = _imaging_plane(nwbfile, s, fr, options)
    ophys = nwbfile.create_processing_module(
        name="ophys", description=f"{s['algo']} source extraction (mesmerize-helpers)")
    ps = _plane_segmentation(ophys, plane, s, fit, masks)
    _traces(ophys, ps, s, fit, fr)
    _summary_images(ophys, s)
    _shifts(ophys, s, fr)
    if movie:
        _movie(ophys, s, plane, fr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_batch_nwb(df: pd.DataFrame, folder: str | os.PathLike, **kwargs: Any) -> list[Path]:
    """Export every finished cnmf / cnmfe item of a batch, one ``<uuid>.nwb`` each in
    ``folder``; items not done are skipped. ``kwargs`` as :func:`export_nwb` (an
    ``identifier`` is not taken: each file gets its own)."""
    from .errors import BatchItemNotRunError, BatchItemUnsuccessfulError

    kwargs.pop("identifier", None)
    folder = Path(folder)
    written = []
    for _, s in df[df["algo"].isin(tuple(_MODALITY))].iterrows():
        try:
            s.cnmf.get_output_path()
        except (BatchItemNotRunError, BatchItemUnsuccessfulError):  # or no longer current
            continue
        written.append(export_nwb(s, folder / f"{s['uuid']}.nwb", **kwargs))
    return written
