"""Sparse footprint matrices: the helpers, the HALS spatial update on supports only, and the
memory of the whole-field steps (which must not grow with pixels x components)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from mesmerize_helpers.engine import footprints as fpm
from mesmerize_helpers.engine.merging import merge_components
from mesmerize_helpers.engine.shaping import Shaping, shape_footprint
from mesmerize_helpers.engine.spatial import dilated_supports, surround_levels, update_spatial
from mesmerize_helpers.engine.temporal import update_temporal


def disks(dims: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    """(pixels, K) dense Gaussian-ish disks in Fortran pixel order."""
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    cols = []
    for cy, cx in centres:
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        img = np.where(d2 <= radius**2, np.exp(-d2 / radius**2), 0.0)
        cols.append(img.ravel(order="F"))
    return np.stack(cols, 1).astype(np.float32)


def test_column_helpers_match_dense():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 6)) * (rng.random((50, 6)) < 0.2)
    dense[:, 3] = 0  # an empty column
    A = fpm.as_footprints(dense)
    assert sp.isspmatrix_csc(A) and A.dtype == np.float32 and A.has_sorted_indices
    np.testing.assert_allclose(fpm.column_norms(A), np.linalg.norm(dense, axis=0), rtol=1e-6)
    np.testing.assert_allclose(fpm.column_peaks(A), dense.max(axis=0), rtol=1e-6)
    peak = np.maximum(dense.max(axis=0), 1e-30)
    np.testing.assert_array_equal(fpm.areas(A, 0.3), (dense > 0.3 * peak).sum(axis=0))
    s = rng.random(6)
    np.testing.assert_allclose(fpm.scale_columns(A, s).toarray(), dense * s, rtol=1e-6)
    i, j = fpm.overlapping_pairs(A)
    share = ((dense > 0).T.astype(int) @ (dense > 0).astype(int)) > 0
    expected = {(a, b) for a in range(6) for b in range(a + 1, 6) if share[a, b]}
    assert set(zip(i.tolist(), j.tolist())) == expected
    idx = [np.flatnonzero(dense[:, k]) for k in range(6)]
    back = fpm.from_columns(idx, [dense[ix, k] for k, ix in enumerate(idx)], 50)
    np.testing.assert_allclose(back.toarray(), dense, rtol=1e-6)
    # a footprint drawn in its box: pixel (y=2, x=3) of a 5 x 6 frame is index 2 + 3 * 5
    img, r0, c0 = fpm.box_image(np.array([2 + 3 * 5]), np.array([7.0]), (5, 6), 1)
    assert (r0, c0) == (1, 2) and img.shape == (3, 3) and img[1, 1] == 7.0


def dense_hals(Y, A, C, b, f, supports, n_iter=3):
    """Textbook HALS on dense matrices, each footprint restricted to its support."""
    K = A.shape[1]
    H = np.vstack([C, f]).astype(np.float64)
    W = np.hstack([A, b]).astype(np.float64)
    U, V = Y.astype(np.float64) @ H.T, H @ H.T
    mask = np.zeros(A.shape, bool)
    for k, s in enumerate(supports):
        mask[s, k] = True
    W[:, :K] *= mask
    for _ in range(n_iter):
        for k in range(K):
            s = supports[k]
            W[s, k] = np.maximum(W[s, k] + (U[s, k] - W[s] @ V[:, k]) / V[k, k], 0)
        for j in range(K, W.shape[1]):
            W[:, j] = np.maximum(W[:, j] + (U[:, j] - W @ V[:, j]) / V[j, j], 0)
    return W[:, :K], W[:, K:]


def test_update_spatial_is_hals_on_the_supports():
    rng = np.random.default_rng(1)
    dims, T = (40, 48), 200
    centres = np.array([[10, 10], [14, 15], [30, 12], [20, 36], [24, 38]])  # two overlaps
    A_true = disks(dims, centres, 4)
    C = rng.exponential(1.0, (len(centres), T)).astype(np.float32)
    b_true = (1 + rng.random((dims[0] * dims[1], 1))).astype(np.float32)
    f = np.ones((1, T), np.float32)
    Y = (A_true @ C + b_true @ f + 0.05 * rng.standard_normal((A_true.shape[0], T)))
    Y = Y.astype(np.float32)
    A0 = A_true * (A_true > 0.5)  # shrunken starting footprints: the update must grow them
    b0 = np.full_like(b_true, 1.5)
    ref_A, ref_b = dense_hals(Y, A0, C, b0, f, dilated_supports(A0, dims, 2))
    # without shaping (a 1 x 1 median, no threshold, no piece picked), the plain HALS values
    no_shaping = Shaping(medw=(1, 1), thr_method="max", maxthr=0.0, extract_cc=False)
    A_plain, b_plain = update_spatial(Y, A0, C, b0, f, dims, radius=2, shaping=no_shaping)
    assert sp.isspmatrix_csc(A_plain)
    np.testing.assert_allclose(A_plain.toarray(), ref_A, atol=1e-4 * ref_A.max())
    np.testing.assert_allclose(b_plain, ref_b, rtol=1e-4)
    # with it, each HALS footprint shaped (no noise given: no noise test)
    A1, b1 = update_spatial(Y, A0, C, b0, f, dims, radius=2)
    for k in range(len(centres)):
        idx, val = shape_footprint(np.arange(len(ref_A)), ref_A[:, k], dims, Shaping())
        ref = np.zeros(len(ref_A))
        ref[idx] = val
        np.testing.assert_allclose(A1[:, [k]].toarray()[:, 0], ref, atol=1e-4 * ref.max())
    np.testing.assert_allclose(b1, ref_b, rtol=1e-4)
    # and it recovers the true footprints where they were cut off (the 3 x 3 median of the
    # shaping rounds the peaks of these 4 px disks a little)
    assert np.corrcoef(A_plain.toarray().ravel(), A_true.ravel())[0, 1] > 0.99
    assert np.corrcoef(A1.toarray().ravel(), A_true.ravel())[0, 1] > 0.98
    # a footprint stays where it is allowed
    allowed = np.zeros(A0.shape, bool)
    allowed[:, 0] = A0[:, 0] > 0
    allowed[:, 1:] = True
    A2, _ = update_spatial(Y, A0, C, b0, f, dims, radius=2, allowed=allowed)
    assert A2[:, [0]].toarray()[~allowed[:, 0], 0].sum() == 0


def test_neuropil_plateau_correlated_with_the_cell_is_not_part_of_its_footprint():
    # real neuropil carries some of the cell's activity: every pixel around the soma
    # regresses on its trace with a small positive weight, significant once pooled
    rng = np.random.default_rng(3)
    dims, T = (48, 48), 300
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    soma = disks(dims, np.array([[24, 24]]), 4)
    plateau = (np.hypot(yy - 24, xx - 24) <= 16).ravel(order="F")[:, None].astype(np.float32)
    c = rng.exponential(1.0, (1, T)).astype(np.float32)
    b, f = np.full((soma.shape[0], 1), 2.0, np.float32), np.ones((1, T), np.float32)
    Y = soma @ c + 0.2 * plateau @ c + b @ f + rng.standard_normal((soma.shape[0], T))
    Y = Y.astype(np.float32)
    sn = np.ones(soma.shape[0])
    shaping = Shaping(open_radius=2)
    kw = dict(radius=4, max_radius=12, update_background=False, shaping=shaping, sn=sn)
    truth = soma[:, 0] > 0
    iou = {}
    for surround in (False, True):
        A, _ = update_spatial(Y, soma, c, b, f, dims, surround=surround, **kw)
        got = A.toarray()[:, 0] > 0
        iou[surround] = (got & truth).sum() / (got | truth).sum()
    # without the surround the footprint takes in the plateau out to its support (radius 8
    # around a radius-4 soma: a quarter of it is the cell); above it, it is the soma, less
    # some of its rim (0.37 of the peak there, 0.17 above the plateau: ~4 noise levels)
    assert iou[False] < 0.45 and iou[True] > 0.7
    # the level on a support of radius 10: 0.2 of the soma's peak, where the plateau is
    pix = np.flatnonzero(np.hypot(yy - 24, xx - 24).ravel(order="F") <= 10)
    raw = (soma[:, 0] + 0.2 * plateau[:, 0])[pix] + 0.05 * rng.standard_normal(pix.size)
    ptr, inside = np.array([0, pix.size]), truth[pix]
    assert abs(surround_levels(raw, pix, inside, ptr, dims)[0] - 0.2) < 0.01
    # a ring darker than nothing (negative weights) is not added back; no ring, no level
    assert surround_levels(raw - 0.4, pix, inside, ptr, dims)[0] == 0
    assert surround_levels(raw, pix, np.ones(pix.size, bool), ptr, dims)[0] == 0


@pytest.fixture(scope="module")
def crowded_field():
    """A 256 x 256 field with 625 small cells: dense (pixels, K) float32 is 164 MB."""
    rng = np.random.default_rng(2)
    dims, T = (256, 256), 30
    g = np.arange(6, 256, 10)
    centres = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    A = sp.csc_matrix(disks(dims, centres, 4))
    C = rng.exponential(1.0, (A.shape[1], T)).astype(np.float32)
    Y = np.asarray(A @ C, np.float32) + rng.random((A.shape[0], T), np.float32)
    b, f = np.ones((A.shape[0], 1), np.float32), np.ones((1, T), np.float32)
    return Y, A, C, b, f, dims


def test_whole_field_steps_do_not_hold_pixels_times_components(crowded_field):
    Y, A, C, b, f, dims = crowded_field
    dense_mb = A.shape[0] * A.shape[1] * 4 / 2**20
    steps = {
        "spatial": lambda: update_spatial(Y, A, C, b, f, dims, radius=2),
        "temporal": lambda: update_temporal(Y, A, C, b, f, p=0, g_prior=np.zeros(0)),
        "merge": lambda: merge_components(A, C, 0.8),
    }
    for name, step in steps.items():
        tracemalloc.start()
        out = step()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert peak < dense_mb / 8, f"{name}: {peak:.0f} MB (dense A: {dense_mb:.0f} MB)"
    A1 = steps["spatial"]()[0]
    assert A1.shape == A.shape and A1.nnz < 2 * A.nnz
    assert out[2] == 0  # merge: separate cells with independent traces stay separate


@pytest.mark.parametrize("small, full", [((32, 40), (64, 80)), ((21, 30), (64, 90))])
def test_upsample_footprints_is_opencvs_bilinear_zoom(small, full):
    import cv2

    from mesmerize_helpers.engine.initialization import upsample_footprints

    rng = np.random.default_rng(3)
    # patches of random values, two of them touching the frame's edges (clamped there)
    corners = [(0, 0), (small[0] - 5, small[1] - 5), (8, 12), (12, 3)]
    A = np.zeros((small[0] * small[1], len(corners)), np.float32)
    for k, (y, x) in enumerate(corners):
        img = np.zeros(small, np.float32)
        img[y:y + 5, x:x + 5] = rng.random((5, 5))
        A[:, k] = img.ravel(order="F")
    up = upsample_footprints(A, small, full)
    for k in range(len(corners)):
        ref = cv2.resize(A[:, k].reshape(small, order="F"), (full[1], full[0]),
                         interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(up[:, [k]].toarray()[:, 0], ref.ravel(order="F"),
                                   atol=1e-6)


def test_fit_in_patches_holds_a_few_movies_not_pixels_times_components():
    """End to end: 192 px field in 30 px patches (~260 components before merging). The
    (pixels, T) float32 working copy is one movie; measured peak 2.9 movies (11.3 when the
    footprints were dense)."""
    from mesmerize_helpers.engine.cnmf import fit_cnmf
    from mesmerize_helpers.synthetic import simulate_2p

    sim = simulate_2p(n_frames=100, shape=(192, 192), n_neurons=68, seed=0)
    movie = np.ascontiguousarray(sim.movie, np.float32)
    params = {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 2, "rf": 15, "stride": 6, "K": 4,
              "gSig": [4, 4], "ssub": 2, "tsub": 2, "merge_thr": 0.8}
    tracemalloc.start()
    est = fit_cnmf(movie, params, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert est.n_components >= 40
    assert peak <= 4 * movie.nbytes, f"peak {peak / movie.nbytes:.1f} movies"
