"""Synthetic calcium-imaging movies with known ground truth.

Used by the tests, the benchmarks and the README demo. The simulators:

- :func:`simulate_2p`: two-photon-like movie. Compact, roughly Gaussian somata with some shape
  variability; AR(1) calcium driven by Poisson spikes; a smooth static baseline plus a low-rank
  neuropil background with slow fluctuations; Poisson (shot) noise plus Gaussian read noise;
  optional rigid motion with known per-frame shifts.
- :func:`simulate_1p`: one-photon / microendoscope-like movie. Larger, blurrier footprints
  under a background 5-10 times brighter than the cells that drifts in space and time.
  :func:`simulate_1p_vignette`: the same seen through a GRIN lens, a bright disk in a dark
  frame, with the sensor's horizontal line noise (where CNMF-E must find no cells).
- :func:`simulate_dim_2p`: a dim, noise-limited two-photon movie at realistic photon counts
  with random rigid shifts applied exactly (Fourier shift of a periodic scene), to measure
  motion-correction accuracy where noise, not the method, limits it.
- :func:`simulate_2p_dense`: a dim, crowded two-photon field as real cortical recordings are:
  a couple of photons per pixel and frame, somata touching each other, each a bright ring of
  cytoplasm around a dimmer nucleus, at rest as bright as the active neuropil around them.

Units: the movie is in photon counts (before read noise). ``footprints`` have a peak of 1, and
``calcium`` is in counts at a footprint's peak pixel, so ``movie ~= sum_k footprints[k] *
calcium[k] + background + noise``.
"""

from __future__ import annotations

from .common import SyntheticMovie, save_tiff
from .dim_motion import simulate_dim_2p
from .one_photon import simulate_1p, simulate_1p_vignette
from .two_photon import simulate_2p, simulate_2p_dense

__all__ = ["SyntheticMovie", "simulate_2p", "simulate_1p", "simulate_1p_vignette",
           "simulate_dim_2p", "simulate_2p_dense", "save_tiff"]
