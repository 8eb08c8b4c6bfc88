"""The CaImAn adapter's input file, written without CaImAn (its layout is checked against
CaImAn itself in test_caiman_engine.py where CaImAn is installed)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mesmerize_helpers.caiman_engine import save_caiman_memmap


def test_layout_is_caimans(tmp_path):
    rng = np.random.default_rng(0)
    movie = rng.random((450, 7, 5)).astype(np.float32)  # several chunks, non-square frames
    path = save_caiman_memmap(movie, tmp_path)
    assert path.name == "caiman_C_d1_7_d2_5_d3_1_order_C_frames_450.mmap"
    Yr = np.memmap(path, np.float32, "r", shape=(35, 450), order="C")
    # pixel p is (y, x) = (p % 7, p // 7): Fortran order of the frame
    for p, (y, x) in [(0, (0, 0)), (1, (1, 0)), (7, (0, 1)), (34, (6, 4))]:
        np.testing.assert_allclose(Yr[p], movie[:, y, x] + 1e-4, rtol=0, atol=1e-6)


def _peak_bytes(tmp_path, n_frames: int) -> int:
    """Peak Python memory of writing a (n_frames, 64, 64) uint16 movie read from disk."""
    movie_path = tmp_path / f"movie{n_frames}.npy"
    movie = np.lib.format.open_memmap(movie_path, "w+", np.uint16, (n_frames, 64, 64))
    movie[:] = 7
    movie.flush()
    del movie
    movie = np.load(movie_path, mmap_mode="r")
    out = tmp_path / str(n_frames)
    out.mkdir()
    tracemalloc.start()
    save_caiman_memmap(movie, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_movie_is_never_held_in_memory(tmp_path):
    # memory set by the chunk, not the movie: 4x the frames, about the same peak
    short, long = _peak_bytes(tmp_path, 1000), _peak_bytes(tmp_path, 4000)
    full = 4000 * 64 * 64 * 4  # the long movie as float32: 66 MB
    assert long < 1.2 * short, f"peak {long / 1e6:.1f} MB vs {short / 1e6:.1f} MB"
    assert long < full / 4, f"peak {long / 1e6:.1f} MB for a {full / 1e6:.0f} MB movie"


def test_not_a_movie_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\(frames, y, x\).*\(5, 5\)"):
        save_caiman_memmap(np.zeros((5, 5), np.float32), tmp_path)
