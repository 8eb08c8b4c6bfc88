"""NWB export: the file passes nwbinspector (no critical or best-practice-violation
message), reads back with pynwb with every array equal to what the accessors return, and
roiextractors' ``NwbSegmentationExtractor`` reads its ROIs and traces.

The fields are not square (48 x 64, 40 x 56): NWB's (x, y) order against the accessors'
(y, x) is checked, not assumed.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
from interop_batch import interop_batch  # noqa: F401 (a fixture)

pynwb = pytest.importorskip("pynwb")
nwbinspector = pytest.importorskip("nwbinspector")

from mesmerize_helpers.cli import main as cli  # noqa: E402

#: What a lab gives for DANDI (nwbinspector requires a subject with species and age, and
#: for a mouse an Allen CCF location).
METADATA = {
    "session_start_time": datetime(2024, 5, 17, 9, 30, tzinfo=timezone.utc),
    "experimenter": ["Doe, Jane"], "institution": "Test Institute", "lab": "Imaging Lab",
    "subject": {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D",
                "description": "test subject"},
    "imaging_plane": {"location": "VISp", "indicator": "GCaMP6f", "excitation_lambda": 920.0},
    "optical_channel": {"emission_lambda": 510.0},
}


@pytest.fixture(params=[1, 2], ids=["cnmf", "cnmfe"])
def row(request, interop_batch):  # noqa: F811
    return interop_batch.iloc[request.param]


def problems(path) -> list[str]:
    """nwbinspector's critical and best-practice-violation messages for a file."""
    serious = {nwbinspector.Importance.CRITICAL, nwbinspector.Importance.BEST_PRACTICE_VIOLATION,
               nwbinspector.Importance.ERROR}
    return [f"{m.importance.name} {m.check_function_name}: {m.message}"
            for m in nwbinspector.inspect_nwbfile(nwbfile_path=str(path))
            if m.importance in serious]


def test_export_passes_nwbinspector_and_reads_back_equal(row, tmp_path):
    path = row.cnmf.export_nwb(tmp_path / "item.nwb", masks="both", **METADATA)
    assert problems(path) == []
    s, fit = row.cnmf, row.cnmf.get_output()
    spatial = s.get_spatial()  # (y, x, K)
    K = spatial.shape[-1]
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == METADATA["session_start_time"]
        assert nwb.subject.subject_id == "m1"
        plane = nwb.imaging_planes["ImagingPlane"]
        assert plane.imaging_rate == fit.params.data["fr"] and plane.location == "VISp"
        ophys = nwb.processing["ophys"]
        ps = ophys["ImageSegmentation"]["PlaneSegmentation"]
        assert len(ps) == K
        np.testing.assert_array_equal(ps["image_mask"].data[:], spatial.transpose(2, 1, 0))
        for k in range(K):  # sparse masks: exactly the footprint's pixels and weights
            image = np.zeros(fit.dims, np.float32)
            for x, y, weight in ps["pixel_mask"][k]:
                image[y, x] = weight
            np.testing.assert_array_equal(image, spatial[..., k])
        accepted = np.zeros(K, bool)
        accepted[s.get_good_components()] = True
        np.testing.assert_array_equal(ps["Accepted"].data[:], accepted)
        np.testing.assert_array_equal(ps["Rejected"].data[:], ~accepted)
        np.testing.assert_array_equal(ps["snr"].data[:], fit.estimates.SNR_comp)
        series = ophys["Fluorescence"].roi_response_series
        for name, expected in (("RoiResponseSeries", s.get_temporal(add_residuals=True)),
                               ("Denoised", s.get_temporal()),
                               ("Deconvolved", fit.estimates.S)):
            assert series[name].rate == fit.params.data["fr"]
            np.testing.assert_array_equal(series[name].data[:], expected.T)
            np.testing.assert_array_equal(series[name].rois.data[:], np.arange(K))
        images = ophys["SegmentationImages"].images
        np.testing.assert_array_equal(images["mean"].data[:], row.caiman.get_projection("mean").T)
        np.testing.assert_array_equal(images["correlation"].data[:],
                                      row.caiman.get_corr_image(filtered=False).T)
        if row["algo"] == "cnmf":  # dF/F computed; shifts of its mcorr parent
            np.testing.assert_array_equal(ophys["DfOverF"]["RoiResponseSeries"].data[:],
                                          s.get_detrend_dfof().T)
            parent = row.caiman.get_input_movie_path().parent.name
            y, x = interop_batch_row(row, parent).mcorr.get_shifts(pw_rigid=False)
            np.testing.assert_array_equal(ophys["MotionCorrectionShifts"].data[:],
                                          np.stack([y, x], axis=1))
            y, x = interop_batch_row(row, parent).mcorr.get_shifts(pw_rigid=True)
            assert y.shape[1] > 1  # (frames, patches)
            np.testing.assert_array_equal(ophys["PiecewiseMotionCorrectionShifts"].data[:],
                                          np.stack([y, x], axis=-1))
        else:
            assert "DfOverF" not in ophys.data_interfaces
            assert "MotionCorrectionShifts" not in ophys.data_interfaces
            np.testing.assert_array_equal(images["pnr"].data[:], row.caiman.get_pnr_image().T)


def interop_batch_row(row, uuid):
    import mesmerize_helpers as mh

    return mh.load_batch(row.paths.get_batch_path()).caiman.uloc(uuid)


def test_roiextractors_reads_the_nwb_file(row, tmp_path):
    from roiextractors import NwbSegmentationExtractor

    path = row.cnmf.export_nwb(tmp_path / "item.nwb", **METADATA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = NwbSegmentationExtractor(path)
        s = row.cnmf
        ids = ex.get_roi_ids()
        assert len(ids) == s.get_n_components()
        assert tuple(ex.get_frame_shape()) == s.get_output().dims
        assert ex.get_sampling_frequency() == s.get_output().params.data["fr"]
        np.testing.assert_array_equal(ex.get_roi_image_masks(ids), s.get_spatial())
        traces = ex.get_traces_dict()
        np.testing.assert_array_equal(traces["raw"], s.get_temporal(add_residuals=True).T)
        np.testing.assert_array_equal(traces["denoised"], s.get_temporal().T)
        if row["algo"] == "cnmf":
            np.testing.assert_array_equal(traces["dff"], s.get_detrend_dfof().T)
        accepted = np.isin(np.arange(len(ids)), s.get_good_components())
        np.testing.assert_array_equal(ex.get_property("accepted", ids), accepted)
        np.testing.assert_array_equal(ex.get_images_dict()["correlation"],
                                      row.caiman.get_corr_image(filtered=False))
        del ex


def test_movie_export_is_the_fitted_movie(interop_batch, tmp_path):  # noqa: F811
    row = interop_batch.iloc[2]  # cnmfe: OnePhotonSeries
    path = row.cnmf.export_nwb(tmp_path / "movie.nwb", movie=True, masks="pixel", **METADATA)
    assert problems(path) == []
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        series = io.read().processing["ophys"]["OnePhotonSeries"]
        assert series.data.compression == "gzip"
        np.testing.assert_array_equal(series.data[:],
                                      np.asarray(row.cnmf.get_cnmf_memmap()).transpose(0, 2, 1))
        assert series.imaging_plane.name == "ImagingPlane"


def test_defaults_warn_about_the_missing_subject_and_refuse_to_overwrite(interop_batch,  # noqa: F811
                                                                          tmp_path):
    row = interop_batch.iloc[1]
    with pytest.warns(UserWarning, match="No subject given"):
        path = row.cnmf.export_nwb(tmp_path / "plain.nwb")
    found = problems(path)  # the subject is the only thing nwbinspector misses
    assert found and all("check_subject_exists" in p for p in found), found
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.identifier.startswith(row["uuid"])
        assert "modification time of the raw movie" in nwb.notes
        assert nwb.session_start_time.tzinfo is not None
    with pytest.raises(FileExistsError, match="overwrite"):
        row.cnmf.export_nwb(path)
    with pytest.raises(ValueError, match="masks"):
        row.cnmf.export_nwb(tmp_path / "x.nwb", masks="dense")


def test_cli_exports_one_item_or_the_whole_batch(interop_batch, tmp_path, capsys):  # noqa: F811
    batch = str(interop_batch.paths.get_batch_path())
    uuid = interop_batch.iloc[1]["uuid"]
    meta = tmp_path / "meta.yaml"
    meta.write_text("subject: {subject_id: m1, species: Mus musculus, sex: F, age: P90D}\n"
                    "imaging_plane: {location: VISp}\n"
                    "session_start_time: '2024-05-17T09:30:00+00:00'\n")
    assert cli(["export-nwb", batch, uuid, str(tmp_path / "one.nwb"),
                "--metadata", str(meta)]) == 0
    assert problems(tmp_path / "one.nwb") == []
    assert cli(["export-nwb", batch, str(tmp_path / "all"), "--metadata", str(meta)]) == 0
    written = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert written == sorted(f"{u}.nwb" for u in interop_batch["uuid"][1:])  # not the mcorr
    assert cli(["export-nwb", batch, "no-such-uuid", str(tmp_path / "x.nwb")]) == 2
    assert "no-such-uuid" in capsys.readouterr().err
