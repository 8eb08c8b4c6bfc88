"""Matching found components to known ones."""

import numpy as np

from mesmerize_helpers.scoring import (
    centroids,
    footprint_shapes,
    match_by_centroid,
    match_by_iou,
    row_correlation,
)


def _disk(cy, cx, r=3, shape=(32, 32)):
    yy, xx = np.indices(shape)
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(float)


def test_iou_matching_counts_overlaps_one_to_one():
    truth = np.stack([_disk(8, 8), _disk(8, 20), _disk(20, 14)])
    found = np.stack([_disk(8, 21), _disk(8, 8), _disk(8, 8.5), _disk(28, 28)])  # a duplicate
    m = match_by_iou(truth, found)
    assert sorted(zip(m.true_idx.tolist(), m.found_idx.tolist())) in ([(0, 1), (1, 0)],
                                                                       [(0, 2), (1, 0)])
    assert (m.precision, m.recall) == (0.5, 2 / 3)
    assert np.isclose(m.f1, 2 * 2 / 7)


def test_centroid_matching_respects_distance():
    truth = np.array([[5.0, 5.0], [20.0, 20.0]])
    found = np.array([[5.0, 9.0], [20.0, 26.0], [40.0, 40.0]])
    m = match_by_centroid(truth, found, max_dist=5)
    assert m.true_idx.tolist() == [0] and m.found_idx.tolist() == [0]
    assert match_by_centroid(truth, np.zeros((0, 2))).f1 == 0.0
    np.testing.assert_allclose(centroids(_disk(10, 12)[None]), [[10, 12]])


def test_row_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 100))
    np.testing.assert_allclose(row_correlation(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(row_correlation(a, -a), -1.0)


def test_footprint_shapes_pieces_solidity_area():
    yy, xx = np.indices((40, 40))
    blob = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 25).astype(float)  # one disk, r = 5
    pair = blob + ((yy - 30) ** 2 + (xx - 30) ** 2 <= 9)  # two disks far apart
    rng = np.random.default_rng(0)
    cloud = rng.random((40, 40)) * ((yy - 20) ** 2 + (xx - 20) ** 2 <= 144)
    cloud[cloud < 0.8] = 0  # specks over a disk of radius 12
    faint = 0.1 * blob  # the threshold is relative to each footprint's own peak
    faint[10, 30] = 1.0  # ... so a bright speck leaves only itself above 0.2
    s = footprint_shapes(np.stack([blob, pair, cloud, faint, np.zeros((40, 40))]))
    assert s.pieces.tolist()[:2] == [1, 2] and s.pieces[2] > 10 and s.pieces[3] == 1
    assert s.area.tolist() == [81, 81 + 29, int((cloud > 0.2).sum()), 1, 0]
    assert 0.85 < s.solidity[0] <= 1 and s.solidity[3] == 1
    # the hull of two disks far apart, or of specks, is mostly empty
    assert s.solidity[1] < 0.5 and s.solidity[2] < 0.35 and np.isnan(s.solidity[4])
    none = footprint_shapes(np.zeros((0, 40, 40)))  # no footprint accepted at all
    assert none.pieces.shape == none.solidity.shape == none.area.shape == (0,)
