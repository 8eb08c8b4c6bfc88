"""Accuracy and behaviour of the built-in CNMF-E on simulated one-photon movies.

Ground truth comes from :func:`mesmerize_helpers.synthetic.simulate_1p`: blurry neurons under
a background about 4-7 times brighter than their transients (mean 200 counts) made of a
static map plus three smooth spatial modes at different scales whose weights drift
independently, so that the background pattern changes in space and time; Poisson noise.

Matching: a true and an estimated component match when their masks (pixels above 0.2 of
the footprint's peak) overlap with IoU >= 0.5, one-to-one by Hungarian matching (as the 2p
CNMF tests). IoU rather than centroid distance because it also checks the footprint's
extent: a component that found the right centre but swallowed background around it (the
typical one-photon failure) must not count as a hit. F1 = 2 TP / (n_true + n_estimated),
over the accepted components. Traces: Pearson correlation of each matched component's ``C``
with the true calcium.

``min_pnr=5``: the simulated noise is shot noise on a 200-count background (about 14 counts
per frame) against transients of 30-100 counts at the peak pixel, so the per-frame
peak-to-noise ratio of most cells after filtering is 5-15 (pure noise gives about 3.5);
CaImAn's demo value 10 (the default) would miss the dimmer half, as it would in real data
this noisy. A movie without neurons yields no component at this setting (tested below).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.engine.cnmfe import (
    CNMFE_DEFAULTS,
    background_frames,
    cnmfe_params,
    evaluate_components,
    fit_cnmfe,
)
from mesmerize_helpers.engine.params import UnknownParameterError
from mesmerize_helpers.engine.ring import (
    compute_W,
    decimation_matrix,
    ring_background,
    ring_offsets,
)
from mesmerize_helpers.scoring import match_by_iou, row_correlation
from mesmerize_helpers.synthetic import simulate_1p

PARAMS = {"gSig": (3, 3), "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5}


@pytest.fixture(scope="module")
def sim():
    return simulate_1p(n_frames=600, shape=(96, 96), n_neurons=20, seed=0)


def match_components(true_fp: np.ndarray, est_fp: np.ndarray, iou_thr: float = 0.5):
    """Hungarian matching on mask IoU; returns (f1, true indices, estimated indices)."""
    m = match_by_iou(true_fp, est_fp, iou_thr)
    return m.f1, m.true_idx, m.found_idx


def check_accuracy(sim, est: Estimates, *, f1_min: float = 0.85, trace_min: float = 0.85):
    acc = est.idx_components
    assert acc is not None
    f1, ti, ei = match_components(sim.footprints, est.footprints(acc))
    assert f1 >= f1_min, f"F1 {f1:.3f}"
    corr = row_correlation(sim.calcium[ti], est.C[acc][ei])
    assert np.median(corr) >= trace_min, f"median trace correlation {np.median(corr):.3f}"
    return f1, corr


@pytest.fixture(scope="module")
def whole_field(sim):
    est = fit_cnmfe(sim.movie, PARAMS, progress=False)
    return evaluate_components(est, sim.movie, PARAMS)


def test_whole_field_accuracy(sim, whole_field):
    check_accuracy(sim, whole_field)


def test_patches_accuracy(sim):
    params = {**PARAMS, "rf": 32, "stride": 16}
    est = evaluate_components(fit_cnmfe(sim.movie, params, progress=False), sim.movie, params)
    check_accuracy(sim, est)


def test_temporally_downsampled_seeding(sim):
    """tsub=2 seeds on frame pairs (min_pnr is scaled by sqrt(2) as CaImAn, so it is
    lowered here to keep the same selection); the refinement is at full rate."""
    params = {**PARAMS, "tsub": 2, "min_pnr": 4}
    est = evaluate_components(fit_cnmfe(sim.movie, params, progress=False), sim.movie, params)
    assert est.C.shape[1] == sim.movie.shape[0]
    check_accuracy(sim, est)


def test_estimates_layout(sim, whole_field):
    est = whole_field
    T, h, w = sim.movie.shape
    K = est.n_components
    assert isinstance(est.A, sp.csc_matrix) and est.A.shape == (h * w, K)
    assert est.b.shape == (h * w, 0) and est.f.shape == (0, T)
    assert est.C.shape == est.S.shape == est.YrA.shape == (K, T)
    W, b0 = est.extra["W"], est.extra["b0"]
    assert isinstance(W, sp.csc_matrix) and est.extra["ssub_B"] == 2 and est.extra["nb"] == 0
    assert W.shape == ((h + 1) // 2 * ((w + 1) // 2),) * 2
    assert b0.shape == (h * w,)
    # footprints have unit norm; the background is about the true mean brightness
    np.testing.assert_allclose(np.sqrt(est.A.power(2).sum(0)).A1, 1, rtol=1e-4)
    assert abs(b0.mean() - 200) < 20


def test_background_frames_any_subset(sim, whole_field):
    est = whole_field
    every = background_frames(est, sim.movie, slice(100, 110))
    some = background_frames(est, sim.movie, [103, 101])
    np.testing.assert_allclose(some, every[[3, 1]], rtol=1e-5, atol=1e-3)
    # the estimate follows the drifting background: far closer to it than its time average
    true_bg = (sim.background["baseline"]
               + np.tensordot(sim.background["temporal"].T, sim.background["spatial"], axes=1))
    err = np.sqrt(np.mean((every - true_bg[100:110]) ** 2))
    err_mean = np.sqrt(np.mean((true_bg.mean(axis=0) - true_bg[100:110]) ** 2))
    assert err < 0.3 * err_mean, (err, err_mean)


def test_ring_background_beats_constant_on_a_pure_background():
    """No neurons: the ring model predicts the drifting background far better than b0."""
    movie, true_bg = _pure_background(seed=3)
    T, h, w = movie.shape
    Y = movie.transpose(2, 1, 0).reshape(h * w, T)
    empty_A, empty_C = np.zeros((h * w, 0), np.float32), np.zeros((0, T), np.float32)
    W, b0 = compute_W(Y, empty_A, empty_C, (h, w), radius=19.5, ssub_B=2)
    B = ring_background(W, b0, movie, (h, w), 2)
    const = b0.reshape(w, h).T[None]
    err_ring = np.sqrt(np.mean((B - true_bg) ** 2))
    err_const = np.sqrt(np.mean((const - true_bg) ** 2))
    assert err_ring < 0.5 * err_const, (err_ring, err_const)
    # one frame at a time gives the same frames
    np.testing.assert_allclose(ring_background(W, b0, movie[7], (h, w), 2), B[7],
                               rtol=1e-5, atol=1e-3)


def _pure_background(seed: int, n_frames: int = 300, shape=(64, 64)):
    """simulate_1p's drifting background alone, with its shot + read noise.

    (simulate_1p itself cannot make a movie without neurons yet.)
    """
    sim = simulate_1p(n_frames=n_frames, shape=shape, n_neurons=1, seed=seed)
    true_bg = (sim.background["baseline"]
               + np.tensordot(sim.background["temporal"].T, sim.background["spatial"], axes=1))
    rng = np.random.default_rng(seed)
    movie = (rng.poisson(true_bg) + rng.normal(0, 2, true_bg.shape)).astype(np.float32)
    return movie, true_bg


def test_evaluation_sees_through_the_background(sim, whole_field):
    """Spatial consistency is measured on Y - B: real cells score high, blobs placed where
    there is no cell score about 0 and are rejected with rval_lowest."""
    est = whole_field
    assert np.median(est.r_values) > 0.9
    T, h, w = sim.movie.shape
    rng = np.random.default_rng(1)
    occupied = est.footprints().max(0) + sim.footprints.max(0)
    yy, xx = np.mgrid[:h, :w]
    fakes = []
    while len(fakes) < 3:
        cy, cx = rng.uniform(10, h - 10, 2)
        if occupied[int(cy), int(cx)] < 0.01:
            fp = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.6**2)).ravel(order="F")
            fakes.append(fp / np.linalg.norm(fp))
    spikes = rng.poisson(0.03, (3, T)).astype(float)
    C_fake = np.stack([np.convolve(s_, np.exp(-np.arange(20) / 6))[:T] for s_ in spikes])
    C_fake *= est.C.max() / 3
    n = est.n_components
    fake = Estimates(
        A=sp.hstack([est.A, sp.csc_matrix(np.stack(fakes, 1))]).tocsc(), b=est.b,
        C=np.vstack([est.C, C_fake]).astype(np.float32), f=est.f,
        S=np.vstack([est.S, np.zeros((3, T))]), YrA=np.vstack([est.YrA, np.zeros((3, T))]),
        sn=est.sn, g=np.vstack([est.g, np.zeros((3, est.g.shape[1]))]),
        bl=np.r_[est.bl, np.zeros(3)], c1=np.r_[est.c1, np.zeros(3)],
        neurons_sn=np.r_[est.neurons_sn, np.zeros(3)], dims=est.dims, extra=est.extra,
    )
    params = {**PARAMS, "rval_lowest": 0.3}
    fake = evaluate_components(fake, sim.movie, params)
    assert (fake.r_values[n:] < 0.3).all()
    np.testing.assert_array_equal(fake.idx_components_bad, np.arange(n, n + 3))


def test_no_neurons_no_components():
    movie, _ = _pure_background(seed=4)
    est = evaluate_components(fit_cnmfe(movie, PARAMS, progress=False), movie, PARAMS)
    assert len(est.idx_components) == 0
    assert est.extra["W"].nnz > 0 and est.extra["b0"].shape == (64 * 64,)


def test_ring_geometry_and_decimation():
    dy, dx = ring_offsets(3.0)
    d = np.hypot(dy, dx)
    assert (d > 3).all() and (d <= 4).all() and len(d) > 16
    D = decimation_matrix((5, 3), 2)  # partial blocks at the bottom and the right
    assert D.shape == (3 * 2, 15)
    np.testing.assert_allclose(np.asarray(D.sum(1)).ravel(), 1)
    img = np.arange(15, dtype=np.float32).reshape(5, 3)
    small = (D @ img.ravel(order="F")).reshape(3, 2, order="F")
    assert small[0, 0] == img[:2, :2].mean() and small[2, 1] == img[4, 2]


def test_unknown_param_is_an_error(sim):
    with pytest.raises(UnknownParameterError, match="min_pnr"):
        fit_cnmfe(sim.movie[:20], {**PARAMS, "min_pnrr": 5}, progress=False)


def test_other_method_init_is_refused_clearly():
    with pytest.raises(ValueError, match="corr_pnr.*cnmf|greedy_roi"):
        cnmfe_params({"method_init": "greedy_roi"})
    with pytest.raises(ValueError, match="ring_size_factor"):
        cnmfe_params({"ring_size_factor": None})
    with pytest.raises(ValueError, match="nb"):
        cnmfe_params({"nb": -2})


def test_defaults_are_cnmfe_ones():
    P = cnmfe_params({})
    assert P["method_init"] == "corr_pnr" and P["center_psf"] is True
    assert P["nb"] == 0 and P["ring_size_factor"] == 1.5 and P["ssub_B"] == 2
    assert P["gSiz"] == (13, 13)  # 4 gSig + 1 for gSig = 3
    assert set(CNMFE_DEFAULTS) >= {"min_corr", "min_pnr", "rf", "stride", "merge_thr",
                                   "min_SNR", "rval_thr", "p", "low_rank_background"}
    # other steps' keys (motion correction) are accepted and ignored
    cnmfe_params({"max_shifts": (5, 5), "pw_rigid": True})
    assert cnmfe_params(P) == P  # resolving twice changes nothing
    assert cnmfe_params({"nb": -1})["update_background_components"] is False


def test_low_rank_and_full_rank_background_options():
    sim = simulate_1p(n_frames=200, shape=(48, 48), n_neurons=4, seed=5)
    T, h, w = sim.movie.shape
    low = fit_cnmfe(sim.movie, {**PARAMS, "nb": 2}, refit=False, progress=False)
    assert low.b.shape == (h * w, 2) and low.f.shape == (2, T) and "W" not in low.extra
    assert (low.b >= 0).all() and low.b.any()
    full = fit_cnmfe(sim.movie, {**PARAMS, "nb": -1}, refit=False, progress=False)
    assert full.extra["nb"] == -1 and "W" in full.extra and full.b.shape == (h * w, 0)


def test_movie_is_not_modified():
    sim = simulate_1p(n_frames=100, shape=(40, 40), n_neurons=3, seed=2)
    before = sim.movie.copy()
    fit_cnmfe(sim.movie, PARAMS, refit=False, progress=False)
    np.testing.assert_array_equal(sim.movie, before)


def test_seeded_with_true_footprints_keeps_them():
    """Seeded CNMF-E (mesmerize-core's ``Ain_path`` on a cnmfe item): the true cells' masks,
    in CaImAn's (pixels, n) Fortran layout, shuffled, plus an empty mask. Every seed is kept
    (no search for others, none dropped), each component on its own mask; footprints match
    the truth; each trace is within 0.1 of an oracle's correlation with the true calcium
    (the movie less the *true* background, projected on the *true* footprint: the best a
    linear read-out can do against this noise) and never below 0.75 (the oracle itself
    reaches about 0.8 for a cell with a single transient)."""
    sim = simulate_1p(n_frames=400, shape=(72, 72), n_neurons=10, seed=1)
    order = np.random.default_rng(0).permutation(sim.n_neurons)
    masks = np.concatenate([sim.masks(0.3)[order], np.zeros((1, 72, 72), bool)])
    ain = sp.csc_matrix(masks.transpose(2, 1, 0).reshape(-1, len(masks)))  # F pixel order
    est = fit_cnmfe(sim.movie, {**PARAMS, "rf": 24, "stride": 8}, Ain=ain, refit=False,
                    progress=False)
    assert est.n_components == sim.n_neurons
    assert sorted(est.seed_index) == list(range(sim.n_neurons))  # not the empty mask
    truth = order[est.seed_index]
    fp = est.footprints()  # (K, y, x)
    for k, t in enumerate(truth):
        assert np.corrcoef(fp[k].ravel(), sim.footprints[t].ravel())[0, 1] > 0.95, k
    bg = sim.background
    B = bg["baseline"] + np.einsum("jyx,jt->tyx", bg["spatial"], bg["temporal"])
    oracle = row_correlation(sim.calcium[truth], np.einsum(
        "tyx,kyx->kt", sim.movie - B, sim.footprints[truth]))
    corr = row_correlation(sim.calcium[truth], est.C)
    assert np.all(corr >= np.minimum(oracle - 0.1, 0.75)), (corr, oracle)
    assert np.median(corr) > 0.9
    assert "W" in est.extra  # the ring background
