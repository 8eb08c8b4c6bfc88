"""``get_contours`` as mesmerize-core returns it from CaImAn (``mesmerize_helpers.contours``).

Expected values come from three places: geometry (an off-centre footprint on a non-square
frame, so a swapped axis cannot pass), an independent dense re-statement of CaImAn's
documented algorithm (whole-frame image of cumulative energies, reshaped as CaImAn reshapes
it, ``find_contours`` on its transpose, pieces closed and NaN-separated), and CaImAn itself
when it is installed (the comparison is skipped otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from skimage.measure import find_contours, points_in_poly

from mesmerize_helpers.contours import caiman_contours, contour_centers

DIMS = (30, 50)


def column(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, order="F")  # CaImAn's pixel order, y + x * d1


def blob(cy: float, cx: float, sy: float = 2.5, sx: float = 4.0, dims=DIMS, cut=0.05):
    yy, xx = np.mgrid[:dims[0], :dims[1]]
    img = np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    img[img < cut] = 0
    return img


def caiman_reference(A, dims, swap_dim: bool, thr: float = 0.9) -> list[np.ndarray]:
    """CaImAn 1.12's get_contours as documented, called as mesmerize-core calls it (dims
    swapped and C-order reshape when swap_dim), on the whole frame."""
    A = sp.csc_matrix(A)
    shape = (dims[1], dims[0]) if swap_dim else tuple(dims)
    out = []
    for k in range(A.shape[1]):
        data = A.data[A.indptr[k]:A.indptr[k + 1]]
        if data.size == 0:
            out.append(np.zeros((0, 2)))
            continue
        order = np.argsort(data)[::-1]
        energy = np.cumsum(data[order] ** 2)
        frame = np.ones(A.shape[0])
        frame[A.indices[A.indptr[k]:A.indptr[k + 1]][order]] = energy / energy[-1]
        B = frame.reshape(shape, order="C" if swap_dim else "F")
        d1, d2 = B.shape
        pieces = [np.full((1, 2), np.nan)]
        for v in find_contours(B.T, thr):
            n_close = np.sum(np.isclose(v[0], v[-1]))
            if n_close == 0:
                corner = np.round(v[[0, -1]].mean(axis=0) / [d2, d1]) * [d2, d1]
                v = np.vstack([corner, v, corner])
            elif n_close == 1:
                v = np.vstack([v, v[:1]])
            pieces += [v, np.full((1, 2), np.nan)]
        out.append(np.vstack(pieces))
    return out


def random_footprints(seed: int, dims=DIMS, n: int = 120, ties: bool = True) -> sp.csc_matrix:
    """Blobs anywhere (also cut by the frame's edges and corners), some flat (ties), some
    with scattered pixels (several pieces), some empty."""
    rng = np.random.default_rng(seed)
    cols = []
    for k in range(n):
        img = blob(rng.uniform(-3, dims[0] + 3), rng.uniform(-3, dims[1] + 3),
                   rng.uniform(1, 4), rng.uniform(1, 4), dims, cut=rng.uniform(0.05, 0.5))
        if ties and k % 7 == 0:
            img[img > 0] = 1.0
        if k % 11 == 0:
            scattered = rng.random(dims) < 0.02
            img[scattered] = rng.uniform(0.2, 1) if ties else rng.uniform(0.2, 1, scattered.sum())
        if k % 13 == 0:
            img[:] = 0
        cols.append(column(img))
    return sp.csc_matrix(np.stack(cols, axis=1))


def test_axis_order_on_an_off_centre_footprint():
    """swap_dim=True (mesmerize-core's default): (row, column); False: (column, row)."""
    A = sp.csc_matrix(column(blob(8.0, 37.0))[:, None])
    (rc,), (rc_centre,) = caiman_contours(A, DIMS), contour_centers(caiman_contours(A, DIMS))
    (xy,) = caiman_contours(A, DIMS, swap_dim=False)
    np.testing.assert_allclose(rc_centre, (8.0, 37.0), atol=0.3)
    np.testing.assert_allclose(contour_centers([xy])[0], (37.0, 8.0), atol=0.3)
    outline = rc[~np.isnan(rc).any(axis=1)]
    assert outline[:, 0].max() < 15 and outline[:, 1].min() > 28  # rows near 8, columns near 37
    assert points_in_poly([[8.0, 37.0]], outline)[0]
    assert np.isnan(rc[0]).all() and np.isnan(rc[-1]).all() and np.isnan(rc).any(axis=1).sum() == 2


def test_pieces_edges_and_degenerate_footprints():
    two = blob(8, 10) + blob(22, 40)
    corner = blob(0, 0, 3, 3)
    single = np.zeros(DIMS)
    single[5, 5] = 1.0
    A = sp.csc_matrix(np.stack([column(two), column(corner), column(single),
                                np.zeros(DIMS[0] * DIMS[1])], axis=1))
    pieces, at_corner, one_pixel, empty = caiman_contours(A, DIMS)
    assert np.isnan(pieces).any(axis=1).sum() == 3  # two closed pieces between NaN rows
    # cut by two frame edges: closed through the frame corner (CaImAn puts it at (0, 0))
    inner = at_corner[1:-1]
    np.testing.assert_array_equal(inner[0], inner[-1])
    assert (inner[0] == 0).all()
    np.testing.assert_array_equal(one_pixel, [[np.nan, np.nan]])  # all energy in one pixel
    assert empty.shape == (0, 2)
    centres = contour_centers([pieces, one_pixel, empty])
    assert np.isnan(centres[1]).all() and np.isnan(centres[2]).all()


@pytest.mark.parametrize("swap_dim", [True, False])
@pytest.mark.parametrize("dims", [DIMS, (47, 23)])
def test_equals_caimans_algorithm(swap_dim, dims):
    A = random_footprints(1, dims)
    ours, reference = caiman_contours(A, dims, swap_dim=swap_dim), caiman_reference(A, dims, swap_dim)
    for k, (a, b) in enumerate(zip(ours, reference)):
        assert a.shape == b.shape, k
        # tracing in the footprint's box shifts vertices back by whole pixels: equal but
        # for the last bits of a float (1e-15 px)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_thr_method_max_and_bad_input():
    A = sp.csc_matrix(column(blob(12, 20))[:, None])
    (c,) = caiman_contours(A, DIMS, thr=0.5, thr_method="max")
    outline = c[~np.isnan(c).any(axis=1)]
    radius_y = (outline[:, 0].max() - outline[:, 0].min()) / 2
    np.testing.assert_allclose(radius_y, 2.5 * np.sqrt(2 * np.log(2)), atol=0.3)  # half max
    with pytest.raises(ValueError, match="thr_method"):
        caiman_contours(A, DIMS, thr_method="median")
    with pytest.raises(ValueError, match="pixel rows"):
        caiman_contours(A, (10, 10))


def test_equals_caiman_itself():
    """Numerically identical to CaImAn's get_contours called as mesmerize-core calls it
    (run with CaImAn 1.12.1; skipped without CaImAn). Footprints without ties: the order
    numpy's argsort gives equal values differs between numpy builds."""
    visualization = pytest.importorskip("caiman.utils.visualization",
                                        reason="CaImAn is not installed")
    A = random_footprints(2, DIMS, ties=False)
    for swap_dim in (True, False):
        dims = (DIMS[1], DIMS[0]) if swap_dim else DIMS  # mesmerize-core's call
        theirs = visualization.get_contours(A, dims, swap_dim=swap_dim)
        ours = caiman_contours(A, DIMS, swap_dim=swap_dim)
        for a, b in zip(ours, theirs):
            b = np.asarray(b["coordinates"])
            if b.size == 0:
                assert a.size == 0
                continue
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
