"""The NWB file's metadata: session, subject, device, optical channel, imaging plane."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

#: What each source-extraction algo is used for (its data's imaging modality).
MODALITY = {"cnmf": "two-photon", "cnmfe": "one-photon"}


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
    from ..accessors.common import batch_path_of
    from ..batch import load_batch

    row = s
    if s.get("parent") is not None:
        df = load_batch(batch_path_of(s))
        root = df.caiman.get_parent(s["uuid"], root=True)
        row = df.caiman.uloc(root)
    return Path(row.caiman.get_input_movie_path())


def new_file(s: pd.Series, fit: Any, options: Mapping[str, Any]) -> Any:
    """The ``NWBFile`` of item ``s`` with the metadata of ``options`` (export_nwb's keyword
    arguments) and defaults for what they leave out; notes say which run it holds."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    from .. import __version__

    start, note = _start_time(s, options.get("session_start_time"))
    manifest = _manifest(s)
    run = manifest.get("run_id")
    description = options.get("session_description") or (
        f"{MODALITY[s['algo']]} calcium imaging: {s['algo']} results of item "
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
        **(options.get("nwbfile") or {}),
    )


def _manifest(s: pd.Series) -> dict[str, Any]:
    from ..accessors.common import batch_path_of
    from ..legacy import is_legacy

    if is_legacy(batch_path_of(s)):
        return {"engine_version": "CaImAn (mesmerize-core batch)"}
    return s.caiman.get_manifest()


def add_imaging_plane(nwbfile: Any, s: pd.Series, fr: float, options: Mapping[str, Any]) -> Any:
    """Add the device, optical channel and imaging plane (rate ``fr``, Hz); return the plane."""
    from pynwb.ophys import OpticalChannel

    modality = MODALITY[s["algo"]]
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
