"""Accuracy and behaviour of the built-in CNMF on simulated two-photon movies.

Scoring: a found component matches a true neuron when their masks (pixels above 20 % of the
footprint's peak) overlap with IoU >= 0.5, one-to-one by Hungarian matching. Traces are
compared by Pearson correlation of C with the true calcium; spikes by the correlation of S
with the true spike train after smoothing both with a Gaussian of 2 frames (67 ms at 30 Hz),
which tolerates the one-frame timing jitter inherent to deconvolution of noisy traces.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.ndimage import gaussian_filter1d

from mesmerize_helpers.engine.cnmf import (
    CNMF_DEFAULTS,
    Estimates,
    detrend_df_f,
    evaluate_components,
    fit_cnmf,
)
from mesmerize_helpers.engine.params import UnknownParameterError
from mesmerize_helpers.io.estimates import load_estimates, save_estimates
from mesmerize_helpers.scoring import match_by_iou, row_correlation
from mesmerize_helpers.synthetic import simulate_2p

N_NEURONS = 30
BASE_PARAMS = {
    "fr": 30, "decay_time": 0.4, "p": 1, "nb": 2, "gSig": [4, 4], "merge_thr": 0.8,
    "ssub": 2, "tsub": 2, "min_SNR": 2.5, "rval_thr": 0.8,
}


@pytest.fixture(scope="module")
def sim():
    return simulate_2p(n_frames=1000, shape=(128, 128), n_neurons=N_NEURONS, seed=11)


def match_components(true_fp: np.ndarray, est_fp: np.ndarray, iou_thr: float = 0.5):
    """Hungarian matching on mask IoU; returns (f1, true indices, estimated indices)."""
    m = match_by_iou(true_fp, est_fp, iou_thr)
    return m.f1, m.true_idx, m.found_idx


def check_accuracy(sim, est: Estimates, *, f1_min=0.9, trace_min=0.9, spike_min=0.85):
    good = est.idx_components
    f1, r, c = match_components(sim.footprints, est.footprints(good))
    k = good[c]
    trace_corr = np.median(row_correlation(sim.calcium[r], est.C[k]))
    smooth = lambda x: gaussian_filter1d(x.astype(float), 2, axis=1)  # noqa: E731
    spike_corr = np.median(row_correlation(smooth(sim.spikes[r]), smooth(est.S[k])))
    assert f1 >= f1_min, f"F1 {f1:.3f}"
    assert trace_corr >= trace_min, f"median trace correlation {trace_corr:.3f}"
    assert spike_corr >= spike_min, f"median spike correlation {spike_corr:.3f}"
    return f1, trace_corr, spike_corr


@pytest.fixture(scope="module")
def whole_field(sim):
    params = {**BASE_PARAMS, "K": 40, "rf": None}
    est = fit_cnmf(sim.movie, params, progress=False)
    return evaluate_components(est, sim.movie, params), params


def test_whole_field_accuracy(sim, whole_field):
    est, _ = whole_field
    check_accuracy(sim, est)


def test_estimates_layout(sim, whole_field):
    est, _ = whole_field
    K, T = est.C.shape
    d = 128 * 128
    assert est.A.shape == (d, K) and est.A.format == "csc"
    assert est.b.shape == (d, 2) and est.f.shape == (2, T) and T == 1000
    assert est.S.shape == est.YrA.shape == (K, T)
    assert est.sn.shape == (d,) and est.g.shape == (K, 1)
    assert est.bl.shape == est.c1.shape == est.neurons_sn.shape == (K,)
    assert est.dims == (128, 128)
    np.testing.assert_allclose(np.asarray(est.A.power(2).sum(0)).ravel(), 1, rtol=1e-4)
    # Fortran pixel order: the image of a footprint peaks where the true soma is
    img = est.A[:, 0].toarray().reshape(est.dims, order="F")
    peak = np.unravel_index(np.argmax(img), img.shape)
    centres = [np.unravel_index(np.argmax(f), f.shape) for f in sim.footprints]
    assert min(np.hypot(peak[0] - y, peak[1] - x) for y, x in centres) < 4
    assert len(est.idx_components) + len(est.idx_components_bad) == K
    assert est.SNR_comp.shape == est.r_values.shape == (K,)


def test_patches_accuracy(sim):
    params = {**BASE_PARAMS, "K": 4, "rf": 15, "stride": 6}
    est = fit_cnmf(sim.movie, params, progress=False, n_processes=2)
    est = evaluate_components(est, sim.movie, params)
    check_accuracy(sim, est)


def test_seeded_from_masks(sim):
    params = {**BASE_PARAMS, "K": 4}
    Ain = sim.masks(0.3).transpose(1, 2, 0)  # (y, x, n) boolean, CaImAn's layout
    est = fit_cnmf(sim.movie, params, Ain=Ain, progress=False)
    est = evaluate_components(est, sim.movie, params)
    check_accuracy(sim, est, f1_min=0.95)


def test_seed_index_names_the_mask_of_each_component(sim, tmp_path):
    masks = sim.masks(0.3)  # (n, y, x)
    order = np.random.default_rng(0).permutation(len(masks))
    seeds = np.concatenate([masks[order], np.zeros_like(masks[:1])])  # shuffled + an empty one
    params = {**BASE_PARAMS, "K": 4}
    est = fit_cnmf(sim.movie, params, Ain=seeds, progress=False)
    assert est.seed_index.shape == (est.n_components,)
    assert np.all(est.seed_index >= 0) and len(masks) not in est.seed_index
    # each component lies on the mask it names, and that mask is its true cell's
    fp = est.footprints()
    for k, s in enumerate(est.seed_index):
        assert fp[k][seeds[s]].sum() > 0.6 * fp[k].sum(), k
    true_cell = order[est.seed_index]
    f1, r, c = match_components(sim.footprints, fp)
    assert f1 >= 0.9 and np.array_equal(true_cell[c], r)
    # it follows a selection and survives the HDF5 file
    assert np.array_equal(est.select([2, 0]).seed_index, est.seed_index[[2, 0]])
    back = load_estimates(save_estimates(tmp_path / "seeded.hdf5", est, params))
    np.testing.assert_array_equal(back.seed_index, est.seed_index)


def test_evaluation_rejects_noise_components():
    # seed the true cells plus blobs where there is nothing but noise (no neuropil
    # fluctuations in this movie): those must not be accepted
    sim = simulate_2p(n_frames=1000, shape=(80, 80), n_neurons=12, neuropil=0.0, seed=5)
    true_masks = sim.masks(0.3)
    occupied = sim.masks(0.02).any(axis=0)
    yy, xx = np.mgrid[:80, :80]
    fakes = []
    for y in range(8, 72, 6):
        for x in range(8, 72, 6):
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= 16
            if not (disk & occupied).any():
                fakes.append(disk)
        if len(fakes) >= 4:
            break
    assert len(fakes) >= 2
    Ain = np.concatenate([true_masks, np.array(fakes)]).transpose(1, 2, 0)
    params = {**BASE_PARAMS, "K": 4}
    est = fit_cnmf(sim.movie, params, Ain=Ain, refit=False, progress=False)
    est = evaluate_components(est, sim.movie, params)
    accepted = est.footprints(est.idx_components)
    fake_imgs = np.array(fakes, float)
    _, matched_fakes, _ = match_components(fake_imgs, accepted, iou_thr=0.2)
    assert len(matched_fakes) == 0
    assert len(est.idx_components) == 12


def test_noise_only_movie_yields_no_accepted_component():
    rng = np.random.default_rng(0)
    movie = (50 + rng.normal(0, 5, size=(500, 64, 64))).astype(np.float32)
    params = {**BASE_PARAMS, "K": 10}
    est = fit_cnmf(movie, params, progress=False)
    est = evaluate_components(est, movie, params)
    assert len(est.idx_components) == 0


def test_unknown_param_is_an_error(sim):
    with pytest.raises(UnknownParameterError, match="gSig"):
        fit_cnmf(sim.movie[:50], {"gSigg": [4, 4]}, progress=False)


def test_other_steps_keys_are_ignored_and_use_cnn_warns(sim):
    params = {**BASE_PARAMS, "K": 5, "max_shifts": [6, 6], "pw_rigid": True, "use_cnn": True}
    with pytest.warns(UserWarning, match="use_cnn"):
        est = fit_cnmf(sim.movie[:200, :48, :48], params, progress=False, refit=False)
    assert est.C.shape[1] == 200


def test_defaults_are_caimans():
    assert CNMF_DEFAULTS["merge_thr"] == 0.8 and CNMF_DEFAULTS["p"] == 2
    assert CNMF_DEFAULTS["min_SNR"] == 2.5 and CNMF_DEFAULTS["rval_thr"] == 0.8
    assert CNMF_DEFAULTS["method_init"] == "greedy_roi" and CNMF_DEFAULTS["nb"] == 1
    # footprint thresholding (CaImAn's spatial group, CNMFParams 1.12)
    assert {k: CNMF_DEFAULTS[k] for k in ("medw", "thr_method", "maxthr", "nrgthr",
                                          "extract_cc", "se", "ss")} == {
        "medw": None, "thr_method": "nrg", "maxthr": 0.1, "nrgthr": 0.9999,
        "extract_cc": True, "se": None, "ss": None}


def test_movie_is_not_modified(sim, tmp_path):
    path = tmp_path / "movie.npy"
    np.save(path, sim.movie[:300, :64, :64])
    mm = np.load(path, mmap_mode="r")  # read-only: any write would raise
    before = np.array(mm)
    est = fit_cnmf(mm, {**BASE_PARAMS, "K": 10}, progress=False, refit=False)
    np.testing.assert_array_equal(np.load(path), before)
    assert est.C.shape[1] == 300


def test_hdf5_round_trip(whole_field, tmp_path):
    est, params = whole_field
    est.F_dff = detrend_df_f(est)
    path = save_estimates(tmp_path / "cnmf.hdf5", est, params)
    back = load_estimates(path)
    assert (back.A != est.A).nnz == 0
    for name in ("b", "C", "f", "S", "YrA", "sn", "g", "bl", "c1", "neurons_sn",
                 "idx_components", "idx_components_bad", "SNR_comp", "r_values", "F_dff"):
        np.testing.assert_array_equal(getattr(back, name), getattr(est, name), err_msg=name)
    assert back.dims == est.dims
    assert back.extra["params"]["K"] == params["K"]
    # CaImAn's layout: sparse A as a group, params by group, None as "NoneType"
    import h5py

    with h5py.File(path) as fh:
        assert set(fh["estimates/A"]) == {"data", "indices", "indptr", "shape"}
        assert fh["params/init/K"][()] == params["K"]
        assert fh["params/patch/rf"][()] in (b"NoneType", "NoneType")
        assert tuple(fh["dims"][()]) == est.dims


def test_dff_of_constructed_trace():
    """One component on a known background: dF/F must be C / (background + resting)."""
    T, dims = 600, (16, 16)
    a = np.zeros(dims)
    a[5:10, 5:10] = 1.0
    a = a.ravel(order="F") / np.linalg.norm(a)
    t = np.arange(T)
    transient = np.where(t % 150 >= 100, 40.0 * np.exp(-(t % 150 - 100) / 10.0), 0.0)
    resting, background = 50.0, 200.0  # in units of the trace (a has unit norm)
    import scipy.sparse as sp

    est = Estimates(
        A=sp.csc_matrix(a[:, None]), b=(background * a)[:, None], C=transient[None],
        f=np.ones((1, T)), S=np.zeros((1, T)), YrA=np.full((1, T), resting),
        sn=np.ones(a.size), g=np.zeros((1, 1)), bl=np.array([resting]), c1=np.zeros(1),
        neurons_sn=np.ones(1), dims=dims,
    )
    expected = transient / (background + resting)
    dff = detrend_df_f(est, frames_window=None)
    np.testing.assert_allclose(dff[0], expected, atol=2e-3)
    # a running window sees fewer samples: its percentile wobbles slightly
    dff = detrend_df_f(est, frames_window=300)
    np.testing.assert_allclose(dff[0], expected, atol=1e-2)
    dff = detrend_df_f(est, flag_auto=False, quantileMin=8, frames_window=None)
    np.testing.assert_allclose(dff[0], expected, atol=2e-3)
    only = detrend_df_f(est, detrend_only=True, frames_window=None)
    np.testing.assert_allclose(only[0], transient, atol=1e-3)
    # a slow drift of the baseline is removed by the running percentile
    drift = 20.0 * t / T
    est.YrA = (resting + drift)[None]
    dff = detrend_df_f(est, frames_window=100)
    assert np.abs(dff[0] - expected).max() < 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = detrend_df_f(est, frames_window=100, use_fast=True)
    assert np.abs(fast[0] - expected).max() < 0.03


@pytest.mark.parametrize("p", [0, 2])
def test_ar_orders(p):
    sim = simulate_2p(n_frames=400, shape=(64, 64), n_neurons=8, seed=2)
    params = {**BASE_PARAMS, "K": 12, "p": p}
    est = fit_cnmf(sim.movie, params, progress=False)
    est = evaluate_components(est, sim.movie, params)
    assert est.g.shape == (est.n_components, p)
    f1, r, c = match_components(sim.footprints, est.footprints(est.idx_components))
    assert f1 >= 0.8
    k = est.idx_components[c]
    assert np.median(row_correlation(sim.calcium[r], est.C[k])) >= 0.85


def test_seed_as_sparse_matrix_and_select(sim):
    import scipy.sparse as sp

    masks = sim.masks(0.3)[:5]
    Ain = sp.csc_matrix(masks.transpose(1, 2, 0).reshape(-1, 5, order="F").astype(float))
    est = fit_cnmf(sim.movie[:300], {**BASE_PARAMS, "K": 4}, Ain=Ain, refit=False,
                   progress=False)
    assert est.n_components == 5
    sub = est.select([0, 2])
    assert sub.n_components == 2 and sub.C.shape == (2, 300)
    np.testing.assert_array_equal(sub.C[1], est.C[2])


def test_patches_fitted_separately_give_the_same_result(sim):
    from mesmerize_helpers.engine.patches import fit_movie_patch, n_patches

    params = {**BASE_PARAMS, "K": 4, "rf": 16, "stride": 6}
    movie = sim.movie[:400, :64, :64]
    n = n_patches(movie.shape[1:], params)
    assert n == 9 and n_patches(movie.shape[1:], {**params, "rf": None}) == 0  # 3 x 3
    parts = [fit_movie_patch(movie, params, i) for i in range(n)]
    est_a = fit_cnmf(movie, params, patch_results=parts, progress=False)
    est_b = fit_cnmf(movie, params, progress=False)
    assert est_a.n_components == est_b.n_components
    np.testing.assert_allclose(est_a.C, est_b.C, rtol=1e-3, atol=1e-2)
    with pytest.raises(ValueError, match="patch results"):
        fit_cnmf(movie, params, patch_results=parts[:2], progress=False)


def test_seeded_component_stays_at_its_seed(sim):
    # one cell is seeded only by a disk 2 gSig off its centre (a roughly drawn or misplaced
    # ROI), the others by their true masks: the cell's activity is unexplained, yet the
    # off-centre seed may refine its outline only within gSig of its mask, not move onto it
    from scipy import ndimage

    from mesmerize_helpers.engine.spatial import disk
    from mesmerize_helpers.scoring import centroids

    masks = sim.masks(0.3)
    centres = centroids(masks)
    yy, xx = np.mgrid[:128, :128]
    best = None
    for i, c in enumerate(centres):  # the offset position farthest from every other cell
        for d in ((8, 0), (-8, 0), (0, 8), (0, -8)):
            s = c + d
            if not (8 <= s[0] < 120 and 8 <= s[1] < 120):
                continue
            gap = np.delete(np.hypot(*(centres - s).T), i).min()
            if best is None or gap > best[0]:
                best = (gap, i, s)
    _, i, s = best
    off = (yy - s[0]) ** 2 + (xx - s[1]) ** 2 <= 16
    Ain = np.concatenate([off[None], np.delete(masks, i, axis=0)]).transpose(1, 2, 0)
    est = fit_cnmf(sim.movie, {**BASE_PARAMS, "K": 4}, Ain=Ain, progress=False)
    fp = est.footprints()
    k = int(np.argmax((fp * off).sum(axis=(1, 2))))
    allowed = ndimage.binary_dilation(off, disk(4))
    assert fp[k][~allowed].sum() == 0
    # unconstrained, this component ends up centred on the cell, 8 px from its seed
    assert np.hypot(*(centroids(fp[k:k + 1] > 0)[0] - s)) < 6


def test_merge_reports_which_components_it_merged():
    from mesmerize_helpers.engine.merging import merge_components

    rng = np.random.default_rng(0)
    A = np.zeros((30, 3), np.float32)
    A[0:10, 0] = 1
    A[5:15, 1] = 1  # overlaps 0
    A[20:30, 2] = 1
    c = rng.exponential(size=200)
    C = np.stack([c, c + 0.01 * rng.normal(size=200), rng.exponential(size=200)])
    A2, C2, n, origins = merge_components(A, C.astype(np.float32), 0.8, return_origins=True)
    assert n == 1 and A2.shape == (30, 2) and sp.issparse(A2)
    assert [sorted(o.tolist()) for o in origins] == [[2], [0, 1]]
    np.testing.assert_array_equal(A2.toarray()[:, 0], A[:, 2])


def test_missing_values_are_filled_with_a_warning():
    """NaN borders (motion correction with border_nan=True) used to stop the fit with
    "SVD did not converge"; they are filled with each pixel's mean, with a warning."""
    sim = simulate_2p(n_frames=300, shape=(64, 64), n_neurons=8, seed=0)
    movie = sim.movie.copy()
    movie[100:200, :, :3] = np.nan  # frames shifted by 3 px: a NaN band at the left border
    movie[:, 60, 60] = np.nan  # a pixel missing in every frame
    params = {**BASE_PARAMS, "K": 15, "ssub": 1, "tsub": 1, "fr": 30}
    with pytest.warns(UserWarning, match="193 pixel"):
        est = fit_cnmf(movie, params, progress=False)
    with pytest.warns(UserWarning, match="missing values"):
        est = evaluate_components(est, movie, params)
    assert np.isfinite(est.C).all() and np.isfinite(est.A.data).all()
    found = match_by_iou(sim.footprints, est.footprints(est.idx_components), 0.5)
    assert found.recall >= 7 / 8
    assert np.isnan(movie[150, :, :3]).all()  # the input itself is left alone
