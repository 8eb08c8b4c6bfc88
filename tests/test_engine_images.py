"""Tests of the streaming summary images (engine/images.py) against direct computations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from mesmerize_helpers.engine.images import (
    SummaryAccumulator,
    local_correlations,
    projections,
    summary_images,
)
from mesmerize_helpers.engine.pnr_images import (
    _filtered_stats,
    corr_image_filtered,
    correlation_pnr,
    pnr_filter_kernel,
    pnr_image,
)


def make_movie(frames: int = 90, dims: tuple[int, int] = (36, 44), seed: int = 0) -> np.ndarray:
    """Small movie: a few cells with random traces, a shared smooth fluctuation, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:dims[0], 0:dims[1]]
    movie = np.zeros((frames, *dims))
    for _ in range(6):
        cy, cx = rng.uniform(4, dims[0] - 4), rng.uniform(4, dims[1] - 4)
        footprint = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
        trace = ndi.gaussian_filter1d(rng.exponential(1.0, frames), 2)
        movie += 50 * trace[:, None, None] * footprint
    movie += ndi.gaussian_filter(rng.standard_normal((frames, *dims)), (0, 3, 3)) * 20
    movie += rng.normal(0, 3, movie.shape) + 1000
    return movie.astype(np.float32)


def reference_local_correlations(movie: np.ndarray, eight: bool = True) -> np.ndarray:
    """Whole-movie correlation image written the obvious way, independently of the module."""
    y = movie.astype(np.float64)
    std = y.std(axis=0)
    z = (y - y.mean(axis=0)) / np.where(std > 0, std, np.inf)  # constant pixel: z = 0
    t, h, w = z.shape
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    if not eight:
        offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            vals = [np.mean(z[:, i, j] * z[:, i + dy, j + dx]) for dy, dx in offsets
                    if 0 <= i + dy < h and 0 <= j + dx < w]
            out[i, j] = np.mean(vals)
    return out


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    return make_movie()


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 40])
def test_local_correlations_chunked_equals_whole_movie(movie, chunk_size):
    expected = reference_local_correlations(movie)
    got = local_correlations(movie, chunk_size=chunk_size)
    assert got.shape == movie.shape[1:] and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_local_correlations_four_neighbours(movie):
    expected = reference_local_correlations(movie, eight=False)
    np.testing.assert_allclose(local_correlations(movie, chunk_size=11, eight_neighbours=False),
                               expected, atol=2e-5)


def test_local_correlations_constant_pixel_is_finite(movie):
    m = movie.copy()
    m[:, 5, 5] = 7.0
    img = local_correlations(m, chunk_size=10)
    assert np.isfinite(img).all()
    # a constant pixel correlates with nothing
    assert img[5, 5] == 0.0


def test_local_correlations_nan_border_is_skipped(movie):
    m = movie.copy()
    m[:20, :, :3] = np.nan  # a registration border, NaN in some frames
    img = local_correlations(m, chunk_size=16)
    assert np.isfinite(img).all()
    # pixels away from the NaN strip keep their whole-movie value
    np.testing.assert_allclose(img[:, 6:], reference_local_correlations(movie)[:, 6:], atol=2e-5)


@pytest.mark.parametrize("chunk_size", [None, 13])
def test_projections_match_numpy(movie, chunk_size):
    proj = projections(movie, chunk_size=chunk_size)
    np.testing.assert_allclose(proj["mean"], movie.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(proj["max"], movie.max(axis=0))
    np.testing.assert_allclose(proj["std"], movie.astype(np.float64).std(axis=0), rtol=1e-4)
    assert all(v.dtype == np.float32 and v.shape == movie.shape[1:] for v in proj.values())


def test_projections_large_baseline_std_is_accurate():
    rng = np.random.default_rng(1)
    m = (60000 + rng.normal(0, 0.5, (200, 8, 9))).astype(np.float32)
    proj = projections(m, chunk_size=9)
    np.testing.assert_allclose(proj["std"], m.astype(np.float64).std(axis=0), rtol=1e-3)


def test_projections_nan_aware(movie):
    m = movie.copy()
    m[:30, :4, :] = np.nan
    m[:, -1, -1] = np.nan  # never has data
    proj = projections(m, chunk_size=8)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = {"mean": np.nanmean(m, 0), "max": np.nanmax(m, 0), "std": np.nanstd(m, 0)}
    for key in expected:
        np.testing.assert_allclose(proj[key], expected[key], rtol=1e-4, equal_nan=True)
    assert np.isnan(proj["mean"][-1, -1])


def test_pnr_filter_kernel_shape_and_zero_sum():
    ker = pnr_filter_kernel(3)
    assert ker.shape == (13, 13)
    assert abs(ker.sum()) < 1e-6
    np.testing.assert_allclose(ker, ker.T, atol=1e-7)
    assert ker[6, 6] == ker.max() > 0
    blur = pnr_filter_kernel((2, 3), center_psf=False)
    assert blur.shape == (9, 13) and abs(blur.sum() - 1) < 1e-5


def blob_movie(frames: int = 200, dims: tuple[int, int] = (48, 56), seed: int = 2):
    """Noise + strong smooth background + one blob that lights up in a few frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:dims[0], 0:dims[1]]
    centre = (30, 20)
    blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 3.0**2))
    background = 500 * np.exp(-((yy - 10) ** 2 + (xx - 45) ** 2) / (2 * 20.0**2))
    trace = np.zeros(frames)
    trace[100:110] = np.linspace(60, 20, 10)
    slow = 1 + 0.05 * np.sin(np.arange(frames) / 30)  # background fluctuates a little
    movie = (slow[:, None, None] * background + trace[:, None, None] * blob
             + rng.normal(0, 4, (frames, *dims)))
    return movie.astype(np.float32), centre


def test_pnr_peaks_at_transient_blob():
    movie, (cy, cx) = blob_movie()
    pnr = pnr_image(movie, gSig=3)
    py, px = np.unravel_index(np.argmax(pnr), pnr.shape)
    assert abs(py - cy) <= 2 and abs(px - cx) <= 2
    # the blob stands out: far above the typical pixel (noise only: PNR of a few)
    assert pnr[py, px] > 3 * np.median(pnr)


def test_correlation_pnr_chunked_consistent_and_blob_correlated():
    movie, (cy, cx) = blob_movie()
    cn, pnr = correlation_pnr(movie, gSig=3, chunk_size=64)
    cn2, pnr2 = correlation_pnr(movie, gSig=3)  # one chunk
    np.testing.assert_allclose(pnr, pnr2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cn, cn2, atol=1e-5)
    np.testing.assert_allclose(pnr, pnr_image(movie, gSig=3, chunk_size=128), rtol=1e-5)
    np.testing.assert_allclose(cn, corr_image_filtered(movie, gSig=3, chunk_size=128), atol=1e-5)
    assert cn[cy, cx] > 0.5
    assert np.median(cn) < 0.1


def test_correlation_pnr_matches_direct_computation():
    """The correlation image equals the whole-movie recipe given the same noise level."""
    movie, _ = blob_movie(frames=128)
    cn, pnr = correlation_pnr(movie, gSig=2, chunk_size=64)
    ker = pnr_filter_kernel(2)
    filt = np.stack([cv2.filter2D(f, -1, ker, borderType=cv2.BORDER_REPLICATE) for f in movie])
    filt = filt.astype(np.float64) - filt.mean(axis=0)
    noise = filt.max(axis=0) / np.where(pnr > 0, pnr, np.nan)  # noise implied by the PNR
    keep = np.isfinite(noise)
    z = filt / np.where(keep, noise, np.inf)
    z[z < 3] = 0
    expected = reference_local_correlations(z)
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(cn[inner], expected[inner], atol=2e-3)


def test_noise_level_of_white_noise():
    rng = np.random.default_rng(5)
    m = rng.normal(0, 2.0, (640, 10, 12)).astype(np.float32)
    m += np.linspace(0, 50, 640, dtype=np.float32)[:, None, None]  # slow drift: not noise
    _, _, noise = _filtered_stats(m, None, 64, 128, False)
    np.testing.assert_allclose(noise, 2.0, rtol=0.15)
    assert abs(noise.mean() - 2.0) < 0.05


def test_correlation_pnr_fills_nan_borders():
    movie, _ = blob_movie(frames=128)
    with_nan = movie.copy()
    copied = movie.copy()
    for t in range(0, 128, 3):  # a registration border in some frames
        with_nan[t, :2] = np.nan
        with_nan[t, :, -3:] = np.nan
        copied[t, :2] = movie[t, 2]
        copied[t, :, -3:] = copied[t, :, -4:-3]
    cn, pnr = correlation_pnr(with_nan, gSig=2)
    cn_ref, pnr_ref = correlation_pnr(copied, gSig=2)
    assert np.isfinite(cn).all() and np.isfinite(pnr).all()
    np.testing.assert_allclose(pnr, pnr_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cn, cn_ref, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The one-pass accumulator (what motion correction feeds chunk by chunk)
# --------------------------------------------------------------------------------------------


def nan_bordered(movie: np.ndarray, seed: int = 4) -> np.ndarray:
    """The movie with registration-like NaN strips of random width in random frames, and a
    pixel that never has data."""
    rng = np.random.default_rng(seed)
    m = movie.copy()
    for t in range(len(m)):
        top, left = rng.integers(0, 4, 2)
        m[t, :top] = np.nan
        m[t, :, m.shape[2] - left:] = np.nan
    m[:, 20, 20] = np.nan
    return m


@pytest.mark.parametrize("chunks", [(90,), (1,) * 90, (7, 40, 3, 40), (33, 57)])
def test_accumulator_equals_whole_movie_images(movie, chunks):
    """Any chunking gives the whole-movie numpy projections and the reference correlation."""
    acc = SummaryAccumulator(movie.shape[1:])
    start = 0
    for n in chunks:
        acc.add(movie[start:start + n])
        start += n
    images = acc.images()
    np.testing.assert_allclose(images["mean"], movie.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_array_equal(images["max"], movie.max(0))
    np.testing.assert_allclose(images["std"], movie.astype(np.float64).std(0), rtol=1e-4)
    np.testing.assert_allclose(images["corr"], reference_local_correlations(movie), atol=2e-5)


def test_accumulator_with_nan_borders_matches_nan_aware_numpy(movie):
    m = nan_bordered(movie)
    acc = SummaryAccumulator(m.shape[1:])
    for start in range(0, len(m), 16):
        acc.add(m[start:start + 16])
    images = acc.images()
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = {"mean": np.nanmean(m.astype(np.float64), 0), "max": np.nanmax(m, 0),
                    "std": np.nanstd(m.astype(np.float64), 0)}
    for key, value in expected.items():
        np.testing.assert_allclose(images[key], value, rtol=1e-4, equal_nan=True)
    # correlation: pixels that lack data in some frame are left out, the rest is exact
    complete = ~np.isnan(m).any(axis=0)
    reference = reference_local_correlations(np.where(complete, m, 0.0))
    inner = np.zeros_like(complete)
    inner[1:-1, 1:-1] = True
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= np.roll(complete, (dy, dx), (0, 1))
    np.testing.assert_allclose(images["corr"][inner], reference[inner], atol=2e-5)
    assert np.isfinite(images["corr"]).all() and images["corr"][20, 20] == 0.0


def test_summary_images_is_projections_and_local_correlations(movie):
    """The one-pass function equals the separate ones (which the accessors and CNMF-E use)."""
    images = summary_images(movie, chunk_size=17)
    for key, value in projections(movie, chunk_size=5).items():
        np.testing.assert_allclose(images[key], value, rtol=1e-5)
    np.testing.assert_allclose(images["corr"], local_correlations(movie, chunk_size=29),
                               atol=1e-6)
    assert set(summary_images(movie, correlation=False)) == {"mean", "max", "std"}
