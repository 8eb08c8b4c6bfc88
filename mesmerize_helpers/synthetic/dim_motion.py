"""A dim two-photon movie with exact known rigid shifts: :func:`simulate_dim_2p`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import SyntheticMovie, ar1, finish, spike_trains


def _uniform_shifts(rng: np.random.Generator, n_frames: int, max_shift: float,
                    subpixel: float) -> np.ndarray:
    """(frames, 2) shifts uniform in +-max_shift; a fraction ``1 - subpixel`` of the frames
    (chosen at random) get whole-pixel shifts."""
    shifts = rng.uniform(-max_shift, max_shift, (n_frames, 2))
    whole = rng.random(n_frames) >= subpixel
    shifts[whole] = np.clip(np.round(shifts[whole]), -np.floor(max_shift), np.floor(max_shift))
    return shifts.astype(np.float32)


def _periodic_texture(rng: np.random.Generator, shape: tuple[int, int], scale: float
                      ) -> np.ndarray:
    """Band-limited periodic random texture, values spread uniformly over [0, 1].

    White noise low-passed with a Gaussian of width ``scale`` px in the Fourier domain
    (periodic on ``shape``), then mapped through its own normal CDF.
    """
    from scipy.special import ndtr

    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    gain = np.exp(-2 * (np.pi * scale) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * gain, s=shape)
    return ndtr((field - field.mean()) / field.std())


def _periodic_somata(rng: np.random.Generator, shape: tuple[int, int], n: int, gSig: float
                     ) -> Any:
    """(pixels, n) sparse Gaussian somata of peak 1 (widths gSig x 0.8-1.2), centred
    uniformly on a periodic canvas (they wrap around its edges, so it stays periodic)."""
    import scipy.sparse as sparse

    centres = rng.uniform(0, 1, (n, 2)) * np.array(shape)
    sig = gSig * rng.uniform(0.8, 1.2, (n, 2))
    half = int(np.ceil(4 * 1.2 * gSig))
    offsets = np.arange(-half, half + 1)
    base = np.floor(centres).astype(int)
    rows = base[:, :1] + offsets[None, :]  # (n, w) canvas rows around each centre
    cols = base[:, 1:] + offsets[None, :]
    gy = np.exp(-0.5 * ((rows - centres[:, :1]) / sig[:, :1]) ** 2)
    gx = np.exp(-0.5 * ((cols - centres[:, 1:]) / sig[:, 1:]) ** 2)
    values = gy[:, :, None] * gx[:, None, :]
    pixel = (rows % shape[0])[:, :, None] * shape[1] + (cols % shape[1])[:, None, :]
    neuron = np.broadcast_to(np.arange(n)[:, None, None], values.shape)
    keep = values >= 1e-3
    return sparse.csr_matrix((values[keep], (pixel[keep], neuron[keep])),
                             shape=(shape[0] * shape[1], n), dtype=np.float32)


def simulate_dim_2p(
    n_frames: int = 300,
    shape: tuple[int, int] = (128, 128),
    *,
    photons: float = 1.0,
    max_shift: float = 5.0,
    subpixel: float = 0.5,
    neuropil: tuple[float, float] = (2.0, 10.0),
    peak: tuple[float, float] = (30.0, 60.0),
    resting: float = 0.15,
    dff: float | None = None,
    vignette: float = 0.5,
    read_noise: float = 1.0,
    cell_area: float = 900.0,
    gSig: float = 4.0,
    fr: float = 30.0,
    decay_time: float = 0.4,
    firing_rate: float = 0.3,
    texture_scale: float = 4.0,
    seed: int = 0,
    dtype: str = "float32",
    keep_footprints: bool = True,
) -> SyntheticMovie:
    """A dim two-photon movie with known rigid shifts, at realistic photon counts.

    The tissue is a neuropil texture plus Gaussian somata whose fluorescence rises from rest
    to their peak during calcium transients. Each frame shows the tissue displaced by its
    shift, under a vignette fixed to the microscope (it does not move with the tissue), with
    Poisson shot noise and Gaussian read noise. The displacement is exact: the tissue is
    periodic and band-limited on a canvas larger than the field of view and is shifted by a
    Fourier phase ramp, so the ground truth has no interpolation error.

    Parameters
    ----------
    n_frames
        Number of frames.
    shape
        Field of view (y, x) in pixels.
    photons
        Scale of every photon count below (1: the nominal dim movie; 4: four times brighter,
        half the relative shot noise).
    max_shift
        Shifts are uniform in +-max_shift px along each axis.
    subpixel
        Fraction of frames with sub-pixel shifts; the others are shifted by whole pixels.
    neuropil
        (low, high) photons per pixel and frame of the neuropil texture (uniformly spread).
    peak
        Range of the neurons' brightest fluorescence (photons at their centre pixel, at the
        top of their largest transient); drawn uniformly per neuron.
    resting
        Resting fluorescence as a fraction of the neuron's peak.
    vignette
        Relative loss of light at the corners of the field (quadratic in the radius).
    read_noise
        Standard deviation of the Gaussian read noise (photon units; not scaled).
    cell_area
        Field area per neuron (px^2): the number of neurons is ``y * x / cell_area``.
    gSig
        Gaussian width (px) of the somata.
    fr, decay_time, firing_rate
        Frame rate (Hz), calcium decay (s), mean firing rate (Hz).
    texture_scale
        Correlation length (px) of the neuropil texture.
    seed
        Random seed.
    dtype
        ``"float32"`` or ``"uint16"``.
    keep_footprints
        Return the dense (n, y, x) footprints (about 1 MB per neuron at 512 x 512); when
        False, ``footprints``, ``calcium`` and ``spikes`` are empty (0, ...) arrays.

    Returns
    -------
    SyntheticMovie
        ``shifts`` (frames, 2) is the displacement of each frame (``frame(p) =
        tissue(p - shift)``, registered by applying ``-shift``); ``footprints`` and
        ``calcium`` (photons at the centre pixel, above rest) are those of the neurons
        whose centre lies in the field of view, at zero shift;
        ``background["baseline"]`` is the unshifted neuropil under the vignette.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    pad = int(np.ceil(max_shift)) + 4 * int(np.ceil(gSig))
    canvas = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    crop = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    g = float(np.exp(-1.0 / (decay_time * fr)))

    texture = neuropil[0] + (neuropil[1] - neuropil[0]) * _periodic_texture(
        rng, canvas, texture_scale)
    n = max(1, int(round(canvas[0] * canvas[1] / cell_area)))
    somata = _periodic_somata(rng, canvas, n, gSig)  # (canvas pixels, n) sparse
    spikes = spike_trains(rng, n, n_frames, fr, firing_rate, 1.0)
    calcium = ar1(spikes, g)
    top = rng.uniform(*peak, size=n).astype(np.float32)
    rest = resting * top
    # transients scaled so that each neuron's largest one reaches its peak (or rest * (1 + dff))
    height = top - rest if dff is None else dff * rest
    calcium *= (height / np.maximum(calcium.max(axis=1), 1e-6))[:, None]

    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = (yy - (shape[0] - 1) / 2) ** 2 + (xx - (shape[1] - 1) / 2) ** 2
    light = (1.0 - vignette * r2 / r2.max()).astype(np.float32)
    shifts = _uniform_shifts(rng, n_frames, max_shift, subpixel)

    fy = np.fft.fftfreq(canvas[0])[None, :, None]
    fx = np.fft.rfftfreq(canvas[1])[None, None, :]
    movie = np.empty((n_frames, *shape), np.float32)
    for t0 in range(0, n_frames, 64):
        t1 = min(n_frames, t0 + 64)
        cells = somata @ (rest[:, None] + calcium[:, t0:t1])  # (canvas pixels, frames)
        tissue = cells.T.reshape(t1 - t0, *canvas) + texture
        s = shifts[t0:t1].astype(np.float64)
        ramp = np.exp(-2j * np.pi * (fy * s[:, 0, None, None] + fx * s[:, 1, None, None]))
        moved = np.fft.irfft2(np.fft.rfft2(tissue) * ramp, s=canvas)[:, crop[0], crop[1]]
        clean = np.clip(photons * moved * light, 0, None)
        movie[t0:t1] = rng.poisson(clean) + rng.normal(0.0, read_noise, clean.shape)

    centre_pixels = somata.argmax(axis=0).A.ravel()
    cy, cx = np.divmod(centre_pixels, canvas[1])
    inside = np.flatnonzero((cy >= pad) & (cy < pad + shape[0])
                            & (cx >= pad) & (cx < pad + shape[1]))
    if not keep_footprints:
        inside = inside[:0]
    footprints = np.stack([somata[:, k].toarray().reshape(canvas)[crop] for k in inside]
                          ) if len(inside) else np.zeros((0, *shape), np.float32)
    return SyntheticMovie(
        movie=finish(movie, dtype),
        footprints=footprints.astype(np.float32),
        calcium=(photons * calcium[inside]).astype(np.float32),
        spikes=spikes[inside],
        background={"baseline": (photons * texture[crop] * light).astype(np.float32),
                    "resting": (photons * rest[inside]).astype(np.float32),
                    "light": light},
        shifts=shifts,
        params={"gSig": (gSig, gSig), "fr": fr, "decay_time": decay_time, "g": g,
                "photons": photons},
    )
