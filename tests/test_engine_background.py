"""The low-rank background's initialization (``engine/background.py``): a long movie is
factorized from the means of bins of frames, then fitted at full rate, in 3 passes over the
data, and the background it gives is the one the whole movie gives."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mesmerize_helpers.engine import background
from mesmerize_helpers.engine.data import DataMatrix


def _movie(T: int, seed: int = 0):
    """(pixels, T) rank-2 non-negative background (a static image and a slowly varying
    neuropil pattern) plus noise; its factors."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    b = np.stack([1 + np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 200),
                  np.exp(-((yy - 24) ** 2 + (xx - 8) ** 2) / 60)], axis=-1).reshape(-1, 2)
    t = np.arange(T)
    f = np.stack([np.full(T, 10.0), 4 + 3 * np.sin(2 * np.pi * t / 700) ** 2])
    Y = b @ f + rng.normal(0, 1.0, (b.shape[0], T))
    return Y.astype(np.float32), b, f


class _Counting(DataMatrix):
    """Counts how many times the whole matrix is read."""

    rows_read = 0

    def rows(self, start, stop):
        self.rows_read += stop - start
        return super().rows(start, stop)


def test_a_long_movie_is_read_three_times_and_gives_the_whole_movies_background():
    T = 3 * background.BACKGROUND_BINS + 17  # bins of 4 frames, the last of 1
    Y, b_true, f_true = _movie(T)
    A, C = sp.csc_matrix((Y.shape[0], 0), dtype=np.float32), np.zeros((0, T), np.float32)
    data = _Counting(Y, (32, 32))
    b, f = background.init_background(data, A, C, nb=2)
    assert data.rows_read == 3 * Y.shape[0]  # bin means, traces, footprints
    # the factorization of the whole movie (what short movies get), for reference
    r_dot, rt_dot = background._residual_products(DataMatrix(Y, (32, 32)), A, C)
    b_ref, f_ref = background._factorize(r_dot, rt_dot, Y.shape[0], T, 2, 10, 0)
    truth = b_true @ f_true
    error = np.linalg.norm(b @ f - truth) / np.linalg.norm(truth)
    error_ref = np.linalg.norm(b_ref @ f_ref - truth) / np.linalg.norm(truth)
    assert error < 1.05 * error_ref + 1e-3, (error, error_ref)
    assert f.shape == (2, T) and (f >= 0).all() and (b >= 0).all()


def test_a_short_movie_is_factorized_whole():
    Y, _, _ = _movie(background.BACKGROUND_BINS)
    A, C = sp.csc_matrix((Y.shape[0], 0), dtype=np.float32), np.zeros((0, Y.shape[1]))
    b, f = background.init_background(Y, A, C, nb=2)
    r_dot, rt_dot = background._residual_products(DataMatrix(Y, (32, 32)),
                                                  A, C.astype(np.float32))
    b_ref, f_ref = background._factorize(r_dot, rt_dot, Y.shape[0], Y.shape[1], 2, 10, 0)
    np.testing.assert_array_equal(b, b_ref)
    np.testing.assert_array_equal(f, f_ref)


def test_the_background_does_not_depend_on_the_budget(tmp_path):
    """Read from a file in small blocks, the bin means in a file (a job's workspace when
    they do not fit its budget): the background of the whole movie in memory, to float
    rounding (the job of a 1,000-frame movie once got wider bins from a smaller budget and
    another fit)."""
    from mesmerize_helpers.engine.data import MB, Budget
    from mesmerize_helpers.pixel_major import FileWorkspace, PixelMajorWriter

    T = 2 * background.BACKGROUND_BINS + 5
    Y, _, _ = _movie(T, seed=1)
    A, C = sp.csc_matrix((Y.shape[0], 0), dtype=np.float32), np.zeros((0, T), np.float32)
    b_ram, f_ram = background.init_background(Y, A, C, nb=2)
    with PixelMajorWriter(tmp_path / "yr.f32", Y.shape) as out:
        out.write(0, 0, Y)
    budget = Budget(total=404 * MB, block=MB // 8)  # work: 2 MB; the means (4 MB): a file
    on_disk = DataMatrix(np.memmap(tmp_path / "yr.f32", np.float32, "r", shape=Y.shape),
                         (32, 32), budget)
    workspace = FileWorkspace(tmp_path, budget)
    probe = workspace.matrix((Y.shape[0], background.BACKGROUND_BINS))
    assert type(probe).__name__ == "_FileMatrix"
    probe.done((32, 32))
    b, f = background.init_background(on_disk, A, C, nb=2, workspace=workspace)
    np.testing.assert_allclose(b @ f, b_ram @ f_ram, rtol=1e-4, atol=1e-3)
