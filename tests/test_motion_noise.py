"""The noise model of motion correction (engine/motion/weighting.py, template.py): variance
stabilisation, the template's Wiener filter, cross-validated template refinement, on
generated data with known noise and shifts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mesmerize_helpers.engine.motion import motion_correct
from mesmerize_helpers.engine.motion.config import parse_params
from mesmerize_helpers.engine.motion.driver import _thread_limits
from mesmerize_helpers.engine.motion.template import initial_template
from mesmerize_helpers.engine.motion.weighting import noise_model, template_gain


def scene(size: int = 96, level: float = 20.0, seed: int = 0) -> np.ndarray:
    """A positive textured image (mean ``level``, spread over about 0.2-1.8 times it)."""
    rng = np.random.default_rng(seed)
    tex = ndi.gaussian_filter(rng.standard_normal((size, size)), 3, mode="wrap")
    return (level * (1 + 0.8 * tex / np.abs(tex).max())).astype(np.float64)


@pytest.mark.parametrize("gain,offset,read", [(1.0, 0.0, 1.0), (3.0, 100.0, 4.0)])
def test_noise_model_finds_shot_noise(gain, offset, read):
    """Frames of ``gain`` counts per photon over a dark ``offset`` with read noise: the
    fitted transform is sqrt(x + 3 gain / 8 + read^2 / gain - offset), which makes the
    noise variance the same at every level."""
    rng = np.random.default_rng(1)
    clean = scene()
    frames = gain * rng.poisson(clean, (200, *clean.shape)) + offset
    frames = (frames + rng.normal(0, read, frames.shape)).astype(np.float32)
    fitted = noise_model(frames, frames.mean(axis=0), border=0)
    expected = 3 * gain / 8 + read**2 / gain - offset
    assert fitted is not None
    assert fitted.offset == pytest.approx(expected, abs=0.1 * clean.mean())
    stable = fitted(frames)
    spread = stable.var(axis=0)
    dim, bright = clean < np.percentile(clean, 20), clean > np.percentile(clean, 80)
    assert spread[bright].mean() == pytest.approx(spread[dim].mean(), rel=0.1)


def test_noise_model_leaves_constant_noise_alone():
    """Noise that does not grow with the signal (e.g. a camera's): no transform."""
    rng = np.random.default_rng(2)
    clean = scene(level=1000.0)
    frames = (clean + rng.normal(0, 20, (100, *clean.shape))).astype(np.float32)
    assert noise_model(frames, frames.mean(axis=0), border=0) is None


def test_template_gain_removes_noise_keeps_signal():
    """A template averaged from noisy frames: the filter brings it closer to the clean image
    (it cuts the frequencies where it is mostly noise); from noise-free frames it changes
    nothing."""
    rng = np.random.default_rng(3)
    clean = scene(size=128)
    frames = clean + rng.normal(0, 10, (60, *clean.shape))
    half_a, half_b = frames[::2].mean(axis=0), frames[1::2].mean(axis=0)
    template = frames.mean(axis=0)
    filtered = template_gain(template, half_a, half_b, 30, 30).apply(template)
    inner = (slice(8, -8), slice(8, -8))
    before = np.sqrt(((template - clean)[inner] ** 2).mean())
    after = np.sqrt(((filtered - clean)[inner] ** 2).mean())
    assert after < 0.6 * before
    exact = template_gain(clean, clean, clean, 30, 30).apply(clean)
    np.testing.assert_allclose(exact, clean, atol=1e-3 * clean.mean())


def test_cross_validated_template_is_closer_to_the_truth():
    """On a dim movie, the sample's template against the mean of the same frames placed at
    their true shifts: their mean absolute difference is 3.2 % of one frame's noise (seed
    4; 3.3 % on seed 5; 3.9 % / 3.2 % before the per-frame masks and NaN-aware template
    rounds, bba84e2); the code before f2c8c56 (frames registered to templates holding
    them, a median of bin means) gave 8.7 % / 9.6 %."""
    from mesmerize_helpers.engine.motion.template import read_sample
    from mesmerize_helpers.engine.motion.warping import shift_rigid_cv
    from mesmerize_helpers.synthetic import simulate_dim_2p

    sim = simulate_dim_2p(n_frames=150, shape=(96, 96), seed=4, keep_footprints=False)
    cfg = parse_params({})
    sample = read_sample(sim.movie, 150, (96, 96), 64)
    template, weights = initial_template(sample, cfg, None, 1, 64)
    truth = shift_rigid_cv(sim.movie, -sim.shifts, "copy").mean(axis=0)
    inner = (slice(10, -10), slice(10, -10))

    def misfit(image: np.ndarray) -> float:  # up to the template's own (constant) offset
        best = min(((dy, dx) for dy in np.arange(-1, 1.01, 0.25)
                    for dx in np.arange(-1, 1.01, 0.25)),
                   key=lambda d: np.abs(ndi.shift(image, d, order=3) - truth)[inner].mean())
        return float(np.abs(ndi.shift(image, best, order=3) - truth)[inner].mean())

    assert weights.template_filter is not None and weights.stabilizer is not None
    noise = np.abs(sim.movie[0] - truth)[inner].mean()
    assert misfit(template) < 0.06 * noise


@pytest.mark.parametrize("seed", [0, 1])
def test_dim_small_field_accuracy(seed):
    """A 96 px field, 200 frames, at the nominal light (neuropil 2-10 photons): fewer pixels
    and frames than the 128 px tests, so the template's noise and each frame's weigh more.
    Measured 0.132 / 0.123 px (seeds 0 / 1; 0.123-0.186 over seeds 0-5); before the
    per-frame masks (bba84e2) 0.145 / 0.133 (0.133-0.211), before this noise model
    (f2c8c56) 0.194 / 0.202 (0.169-0.308)."""
    from mesmerize_helpers.synthetic import simulate_dim_2p

    sim = simulate_dim_2p(n_frames=200, shape=(96, 96), seed=seed, keep_footprints=False)
    res = motion_correct(sim.movie, {}, progress=False)
    err = res.shifts_rig + sim.shifts
    err -= err.mean(axis=0)
    assert float(np.sqrt((err**2).sum(axis=1).mean())) <= 0.15


def fourier_shifted(image: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(n, y, x) copies of a periodic image displaced by ``shifts`` (n, 2) px, exactly."""
    fy = np.fft.fftfreq(image.shape[0])[None, :, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, None, :]
    ramp = np.exp(-2j * np.pi * (fy * shifts[:, 0, None, None] + fx * shifts[:, 1, None, None]))
    return np.fft.irfft2(np.fft.rfft2(image) * ramp, s=image.shape)


@pytest.mark.parametrize("weighted", [False, True])
def test_own_mask_fine_stage_is_the_correlation_under_that_mask(weighted):
    """match(own_masks=...) equals match() of the same template under the rectangle fitted to
    each image's integer displacement (its template terms come from the rectangle's
    separable spectrum instead of precomputed maps): same displacement to 1e-4 px."""
    from mesmerize_helpers.engine.motion.correlation import MaskedTemplates
    from mesmerize_helpers.engine.motion.grid import border_mask

    size, radius, margin, edge = 64, (6, 6), 2, 3
    template = scene(size, seed=5)
    rng = np.random.default_rng(6)
    weights = None
    if weighted:
        weights = ndi.gaussian_filter(rng.uniform(0.3, 1.0, (1, size, size)), (0, 4, 4))
    truth = np.array([[2.3, -1.6], [-4.4, 0.2], [5.4, 5.3]])
    images = fourier_shifted(template, truth) + rng.normal(0, 2.0, (3, size, size))
    fixed = border_mask((size, size), (8, 8, 8, 8))[None]
    tmpl = MaskedTemplates(template[None], fixed, radius, weights=weights)
    bound = np.full((3, 1, 2), 6.0)
    got = tmpl.match(images[:, None], -bound, bound, 1, own_masks=(margin, edge))[:, 0]
    reach = tmpl.offsets[-1]
    for image, d, found in zip(images, truth, got):
        r = np.round(d)  # the integer peak of these nearly noise-free images
        low = np.maximum(edge, np.maximum(0, np.ceil(r + reach)).astype(int) + margin)
        high = np.maximum(edge, np.maximum(0, np.ceil(reach - r)).astype(int) + margin)
        mask = border_mask((size, size), (low[0], high[0], low[1], high[1]))[None]
        reference = MaskedTemplates(template[None], mask, radius, weights=weights)
        lo, hi = (np.reshape(r + side, (1, 1, 2)) for side in (-0.49, 0.49))
        expected = reference.match(image[None, None], lo, hi, 1)[0, 0]
        np.testing.assert_allclose(found, expected, atol=1e-4)
    assert np.abs(got - truth).max() < 0.1


def test_own_masks_lower_the_noise_of_the_shifts():
    """Noisy copies of a 96 px scene displaced within +/-5 px, searched within +/-6: under a
    mask fitted to each displacement (border of 3-9 px instead of 8 on every side) about a
    fifth more pixels are matched, and the shifts' RMSE falls by about a tenth (measured
    0.89 of the fixed mask's, 0.885-0.893 over three noise seeds); no bias on noise-free
    copies."""
    from mesmerize_helpers.engine.motion.correlation import MaskedTemplates
    from mesmerize_helpers.engine.motion.grid import border_mask

    size, n = 96, 300
    template = scene(size, level=20.0, seed=7)
    rng = np.random.default_rng(8)
    truth = rng.uniform(-5, 5, (n, 2))
    clean = fourier_shifted(template, truth)
    fixed = border_mask((size, size), (8, 8, 8, 8))[None]
    tmpl = MaskedTemplates(template[None], fixed, (6, 6))
    bound = np.full((n, 1, 2), 6.0)

    def errors(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with _thread_limits(1):  # as in motion_correct (threaded BLAS: 30x slower here)
            plain, own = (tmpl.match(images[:, None], -bound, bound, 1, own)[:, 0] - truth
                          for own in (None, (2, 0)))
        return plain, own

    exact, exact_own = errors(clean)
    assert np.abs(exact).max() < 0.01 and np.abs(exact_own).max() < 0.01
    noisy, noisy_own = errors(clean + rng.normal(0, 12.0, clean.shape))
    rmse, rmse_own = (float(np.sqrt((e**2).sum(axis=1).mean())) for e in (noisy, noisy_own))
    assert rmse_own < 0.95 * rmse
