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
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from . import content, metadata

__all__ = ["export_nwb", "export_batch_nwb", "MASKS"]

#: Footprint representations: ``"image"`` (dense (x, y) weights per ROI, compressed),
#: ``"pixel"`` ((x, y, weight) of the footprint's pixels), ``"both"``.
MASKS = ("image", "pixel", "both")


def _require_pynwb() -> Any:
    try:
        import pynwb
    except ImportError as err:
        raise ImportError('NWB export needs pynwb: pip install -e ".[nwb]" (or pip install '
                          'pynwb).') from err
    return pynwb


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
    nwbfile: Mapping[str, Any] | None = None,
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
    nwbfile
        Other ``NWBFile`` arguments: ``keywords``, ``experiment_description``,
        ``session_id``, ``related_publications``, ...
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
    # read only: the cached object itself (raises the accessors' errors for an item not done)
    fit = s.cnmf.get_output(return_copy=False)
    fr = float(fit.params.data["fr"])
    options = {"session_description": session_description, "identifier": identifier,
               "session_start_time": session_start_time, "experimenter": experimenter,
               "lab": lab, "institution": institution, "subject": subject, "device": device,
               "optical_channel": optical_channel, "imaging_plane": imaging_plane,
               "nwbfile": nwbfile}
    nwb = metadata.new_file(s, fit, options)
    plane = metadata.add_imaging_plane(nwb, s, fr, options)
    ophys = nwb.create_processing_module(
        name="ophys", description=f"{s['algo']} source extraction (mesmerize-helpers)")
    ps = content.add_plane_segmentation(ophys, plane, s, fit, masks)
    content.add_traces(ophys, ps, s, fit, fr)
    content.add_summary_images(ophys, s)
    content.add_shifts(ophys, s, fr)
    if movie:
        content.add_movie(ophys, s, plane, fr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_batch_nwb(df: pd.DataFrame, folder: str | os.PathLike, **kwargs: Any) -> list[Path]:
    """Export every finished cnmf / cnmfe item of a batch, one ``<uuid>.nwb`` each in
    ``folder``; items not done are skipped. ``kwargs`` as :func:`export_nwb` (an
    ``identifier`` is not taken: each file gets its own)."""
    from ..errors import BatchItemNotRunError, BatchItemUnsuccessfulError

    kwargs.pop("identifier", None)
    folder = Path(folder)
    written = []
    for _, s in df[df["algo"].isin(tuple(metadata.MODALITY))].iterrows():
        try:
            s.cnmf.get_output_path()
        except (BatchItemNotRunError, BatchItemUnsuccessfulError):  # or no longer current
            continue
        written.append(export_nwb(s, folder / f"{s['uuid']}.nwb", **kwargs))
    return written
