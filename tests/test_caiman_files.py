"""Our cnmf/cnmfe estimates files are CaImAn's: read by roiextractors'
``CaimanSegmentationExtractor`` (what neuroconv converts CaImAn results with) and, when
CaImAn is installed, by its own ``load_CNMF``, with the arrays the accessors return.

The cnmf item's file was saved twice (the job, then ``run_detrend_dfof``), so what a job
adds (``Cn``, the engine's params) must survive a re-save.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from interop_batch import interop_batch  # noqa: F401 (a fixture)

roiextractors = pytest.importorskip("roiextractors")


@pytest.fixture(params=[1, 2], ids=["cnmf", "cnmfe"])
def row(request, interop_batch):  # noqa: F811
    return interop_batch.iloc[request.param]


#: (path, dtype) of what CaImAn 1.12's CNMF.save writes and its readers use.
LAYOUT = [
    ("dims", np.int64), ("estimates/A/data", np.float32), ("estimates/A/indices", np.int32),
    ("estimates/A/indptr", np.int32), ("estimates/A/shape", np.int64),
    ("estimates/C", np.float32), ("estimates/YrA", np.float32), ("estimates/S", np.float32),
    ("estimates/R", np.float32), ("estimates/b", np.float32), ("estimates/f", np.float32),
    ("estimates/sn", np.float32), ("estimates/g", np.float64), ("estimates/bl", np.float64),
    ("estimates/c1", np.float64), ("estimates/neurons_sn", np.float64),
    ("estimates/SNR_comp", np.float64), ("estimates/r_values", np.float64),
    ("estimates/idx_components", np.int64), ("estimates/idx_components_bad", np.int64),
    ("estimates/dims", np.int64), ("estimates/center", np.float64),
    ("params/data/dims", np.int64), ("params/data/decay_time", np.float64),
    ("params/quality/min_SNR", np.float64), ("params/init/gSig", np.int64),
]


def test_layout_has_caimans_names_and_dtypes(row):
    with h5py.File(row.cnmf.get_output_path(), "r") as fh:
        for path, dtype in LAYOUT:
            assert path in fh, path
            assert fh[path].dtype == dtype, (path, fh[path].dtype)
        dims = tuple(row.caiman.get_corr_image().shape)
        assert tuple(fh["params/data/dims"][()]) == dims == tuple(fh["dims"][()])
        assert fh["estimates/Cn"].shape == dims
        # every CaImAn params group, with the values the engine used where the item set none
        assert {"data", "init", "preprocess", "patch", "spatial", "temporal", "merging",
                "quality", "motion", "online", "ring_CNN"} <= set(fh["params"])
        fr = fh["params/data/fr"][()]
        assert fr == (20 if row["algo"] == "cnmf" else 10)  # cnmfe: the engine's default
        if row["algo"] == "cnmf":
            assert fh["params/init/K"][()] == 8
        else:
            assert fh["params/init"].attrs["method_init"] == "corr_pnr"
            assert fh["params/init/center_psf"][()]
            assert "W" in fh["estimates"] and "b0" in fh["estimates"]


def test_roiextractors_reads_rois_traces_and_images(row):
    from roiextractors import CaimanSegmentationExtractor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ex = CaimanSegmentationExtractor(row.cnmf.get_output_path())
    s = row.cnmf
    n = s.get_n_components()
    assert n >= 3
    assert tuple(ex.get_frame_shape()) == s.get_output().dims
    assert ex.get_num_rois() == n
    assert ex.get_sampling_frequency() == s.get_output().params.data["fr"]
    ids = ex.get_roi_ids()
    np.testing.assert_allclose(ex.get_roi_image_masks(ids), s.get_spatial(), rtol=1e-6)
    traces = ex.get_traces_dict()
    np.testing.assert_allclose(traces["raw"], s.get_temporal(add_residuals=True).T, rtol=1e-5)
    np.testing.assert_array_equal(traces["denoised"], s.get_temporal().T)
    np.testing.assert_array_equal(traces["deconvolved"], s.get_output().estimates.S.T)
    if row["algo"] == "cnmf":
        np.testing.assert_array_equal(traces["dff"], s.get_detrend_dfof().T)
    images = ex.get_images_dict()
    np.testing.assert_array_equal(images["correlation"], row.caiman.get_corr_image())
    accepted = np.zeros(n, bool)
    accepted[s.get_good_components()] = True
    np.testing.assert_array_equal(ex.get_property("is_accepted", ids), accepted)
    np.testing.assert_allclose(ex.get_property("snr", ids), s.get_output().estimates.SNR_comp)


def test_caiman_load_cnmf_reads_our_file(row):
    pytest.importorskip("caiman.source_extraction.cnmf",
                        reason="CaImAn is not installed (not on PyPI)")
    from caiman.source_extraction.cnmf.cnmf import load_CNMF

    cnm = load_CNMF(str(row.cnmf.get_output_path()))
    ours = row.cnmf.get_output()
    assert (cnm.estimates.A != ours.estimates.A).nnz == 0
    np.testing.assert_array_equal(cnm.estimates.C, ours.estimates.C)
    assert cnm.params.data["fr"] == ours.params.data["fr"]
    assert tuple(cnm.estimates.dims) == ours.dims
    assert cnm.estimates.Cn.shape == ours.dims
    cnm.estimates.detrend_df_f()
    assert cnm.estimates.F_dff.shape == ours.estimates.C.shape


def test_saved_params_keep_the_engines_values_through_get_output(row):
    params = row.cnmf.get_output().params
    assert params.data["fr"] == (20 if row["algo"] == "cnmf" else 10)
    assert params.data["dims"] == row.cnmf.get_output().dims
    est = row.cnmf.get_output().estimates
    np.testing.assert_array_equal(est.Cn, row.caiman.get_corr_image())
