"""Registration of chunks of frames to one template (rigid or piecewise rigid)."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from .config import MotionConfig
from .correlation import MaskedTemplates
from .grid import border_mask, dense_shift_field, patch_grid
from .warping import shift_dense, shift_rigid_cv, shift_rigid_fft
from .weighting import ShiftWeights, estimate_domain

# Pixels at the template's edge never matched: the search masks leave out a border as wide as
# the displacement plus this.
_MASK_MARGIN = 2
# The sub-pixel shift of each frame is found under a mask fitted to its own displacement
# (``own_masks`` of :meth:`.correlation.MaskedTemplates.match`: one more FFT per frame,
# measured 30-40 % less rigid CPU speed on 128 px bright movies) when that mask holds at
# least this many times the pixels of the fixed one (at zero displacement): the shift's
# variance falls about in proportion. 1.11-1.19 on a 128 px field searched within 6 px (the
# least with gSig_filt), 1.05-1.09 at 256 px, 1.02-1.04 at 512 px (not used there).
_OWN_MASK_PIXEL_GAIN = 1.1


class Registrar:
    """Registers chunks of frames to one template (rigid or piecewise rigid).

    Parameters
    ----------
    template
        (y, x) float32 template, unfiltered (``weights.template_filter`` and ``kernel`` are
        applied here).
    cfg
        Parsed parameters.
    kernel
        High-pass kernel applied to frames and template for estimating shifts, or None (after
        ``weights.stabilizer``, if any).
    piecewise
        Estimate patch shifts and warp with a dense field.
    border_nan
        Border handling of the registered frames.
    workers
        Threads for scipy.fft.
    weights
        How the correlation weighs pixels and frequencies (:func:`.weighting.estimate_weights`);
        unweighted by default.
    """

    def __init__(self, template: np.ndarray, cfg: MotionConfig, kernel: np.ndarray | None,
                 piecewise: bool, border_nan: bool | str, workers: int,
                 weights: ShiftWeights | None = None) -> None:
        self.cfg = cfg
        self.estimate_domain = estimate_domain(kernel, (weights or ShiftWeights()).stabilizer)
        self.workers = workers
        self.border_nan = border_nan
        self.shape = template.shape
        weights = weights or ShiftWeights()
        if weights.template_filter is not None:  # the template's noise, for the estimate only
            template = weights.template_filter.apply(template)
        est = self._prefilter(template[None].astype(np.float32))
        # Rigid search within +/-max_shifts: the frame mask excludes that border (+ margin).
        ms_y, ms_x = cfg.max_shifts
        m = _MASK_MARGIN
        mask = border_mask(self.shape, (ms_y + m, ms_y + m, ms_x + m, ms_x + m))
        pixels = None if weights.pixels is None else weights.pixels[None]
        self.frame_tmpl = MaskedTemplates(est, mask[None], cfg.max_shifts, workers,
                                          weights=pixels)
        # Per-frame masks: within the high-pass's half-width of their edges, frames and
        # template are filtered partly from reflected pixels, so those are not used (the
        # bright gSig_filt movie of benchmarks/bench_motion.py: 0.025 px with a margin of 2,
        # 0.020 with 4).
        edge = 0 if kernel is None else max(kernel.shape) // 2
        margin = max(m, edge)
        own = border_mask(self.shape, (math.ceil(self.frame_tmpl.offsets[-1]) + margin,) * 4)
        self.own_masks = ((margin, edge) if own.sum() >= _OWN_MASK_PIXEL_GAIN * mask.sum()
                          else None)
        self.piecewise = piecewise
        self.shrink = weights.patch_shrink
        if piecewise:
            self.starts_y, self.starts_x, self.patch = patch_grid(
                self.shape, cfg.strides, cfg.overlaps)
            self.centers_y = self.starts_y + (self.patch[0] - 1) / 2
            self.centers_x = self.starts_x + (self.patch[1] - 1) / 2
            self._patch_args = dict(
                templates=self._patches(est)[0],
                radius=(math.ceil(cfg.max_deviation_rigid) + 1,) * 2, workers=workers,
                weights=None if pixels is None else self._patches(pixels)[0])
            self.patch_tmpl = MaskedTemplates(masks=self._patch_masks(), **self._patch_args)

    @property
    def patch_centers(self) -> np.ndarray:
        cy, cx = np.meshgrid(self.centers_y, self.centers_x, indexing="ij")
        return np.stack([cy, cx], axis=-1).astype(np.float32)

    def _patch_masks(self) -> np.ndarray:
        """(n_patches, patch_y, patch_x) masks for the patch search.

        Patches are matched on frames pre-shifted by the integer rigid shift, so the residual
        search range is +/-(max_deviation_rigid + 1/2) px: that border is masked inside the
        image. Patch sides on the image edge also mask the strip that the pre-shift filled
        by replication (up to max_shifts).
        """
        (h, w), (ph, pw) = self.shape, self.patch
        inner = math.ceil(self.cfg.max_deviation_rigid) + 2
        edge_y, edge_x = (inner + m for m in self.cfg.max_shifts)
        masks = []
        for y in self.starts_y:
            for x in self.starts_x:
                borders = (edge_y if y == 0 else inner, edge_y if y + ph >= h else inner,
                           edge_x if x == 0 else inner, edge_x if x + pw >= w else inner)
                masks.append(border_mask((ph, pw), borders))
        return np.stack(masks)

    def _prefilter(self, frames: np.ndarray) -> np.ndarray:
        """Frames as the shift estimate sees them (variance-stabilised, high-passed)."""
        return frames if self.estimate_domain is None else self.estimate_domain(frames)

    def _patches(self, frames: np.ndarray) -> np.ndarray:
        """(n, y, x) -> (n, n_patches, patch_y, patch_x) copies of the patches."""
        ph, pw = self.patch
        return np.stack([frames[:, y:y + ph, x:x + pw]
                         for y in self.starts_y for x in self.starts_x], axis=1)

    def rigid(self, est: np.ndarray) -> np.ndarray:
        """(n, 2) displacements of (filtered) frames relative to the template."""
        bound = np.broadcast_to(np.asarray(self.cfg.max_shifts, float), (len(est), 1, 2))
        return self.frame_tmpl.match(est[:, None], -bound, bound, self.workers,
                                     self.own_masks)[:, 0]

    def _patch_stack(self, est: np.ndarray, rigid: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patches of each frame pre-shifted by its integer rigid displacement (cut at the
        patch position + offset from the frame padded by edge replication): (n, n_patches,
        patch_y, patch_x), the residual rigid displacement (n, n_patches, 2) and the integer
        offsets (n, 2)."""
        n = len(est)
        offset = np.round(rigid).astype(int)
        margin = np.abs(offset).max(initial=0)
        padded = np.pad(est, ((0, 0), (margin, margin), (margin, margin)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.patch, axis=(1, 2))
        gy, gx = np.meshgrid(self.starts_y, self.starts_x, indexing="ij")
        top = gy.ravel()[None, :] + offset[:, 0, None] + margin  # (n, n_patches)
        left = gx.ravel()[None, :] + offset[:, 1, None] + margin
        patches = windows[np.arange(n)[:, None], top, left]
        centre = np.broadcast_to((rigid - offset)[:, None, :], (n, top.shape[1], 2))
        return patches, centre, offset

    def patchwise(self, est: np.ndarray, rigid: np.ndarray,
                  templates: MaskedTemplates | None = None) -> np.ndarray:
        """(n, ny, nx, 2) patch displacements, each within rigid +/- max_deviation_rigid."""
        patches, centre, offset = self._patch_stack(est, rigid)
        dev = self.cfg.max_deviation_rigid
        disp = (templates or self.patch_tmpl).match(patches, centre - dev, centre + dev,
                                                    self.workers)
        ny, nx = len(self.starts_y), len(self.starts_x)
        return disp.reshape(len(est), ny, nx, 2) + offset[:, None, None, :]

    def patch_noise(self, frames: np.ndarray, rigid: np.ndarray, chunk: int, square: int = 8
                    ) -> np.ndarray:
        """(ny, nx, 2) variance (px^2) of the patch displacement estimates of ``frames``
        (raw, registered with applied rigid shifts ``rigid``; ``chunk`` at a time).

        Each patch is matched twice more, on complementary halves of its mask (a
        checkerboard of ``square``-px squares): the two estimates have independent errors of
        about twice the variance of the whole patch's, so their difference has four times it.
        """
        masks = self._patch_masks()
        yy, xx = np.mgrid[0:self.patch[0], 0:self.patch[1]]
        board = ((yy // square + xx // square) % 2).astype(np.float32)
        halves = [MaskedTemplates(masks=masks * part, **self._patch_args)
                  for part in (board, 1 - board)]
        differences = []
        for start in range(0, len(frames), chunk):
            est = self._prefilter(frames[start:start + chunk])
            a, b = (self.patchwise(est, -rigid[start:start + chunk], half) for half in halves)
            differences.append(a - b)
        return np.var(np.concatenate(differences), axis=0) / 4

    def _shrink(self, shifts_pw: np.ndarray, shifts_rig: np.ndarray) -> np.ndarray:
        """Patch shifts pulled towards the rigid shift where their deviations are mostly
        noise (:class:`.weighting.PatchShrinkage`)."""
        if self.shrink is None:
            return shifts_pw
        rig = shifts_rig[:, None, None, :]
        mean, factor = self.shrink.mean[None], self.shrink.factor[None, :, :, None]
        return (rig + mean + factor * (shifts_pw - rig - mean)).astype(np.float32)

    def register(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Register a chunk of frames.

        Parameters
        ----------
        frames
            (n, y, x) float32 raw frames.

        Returns
        -------
        shifts_rig
            (n, 2) applied rigid shifts (pixels).
        shifts_pw
            (n, ny, nx, 2) applied patch shifts, or None.
        registered
            (n, y, x) float32 registered frames.
        """
        est = self._prefilter(frames)
        shifts_rig = -self.rigid(est)
        if self.piecewise:
            shifts_pw = self._shrink(-self.patchwise(est, -shifts_rig), shifts_rig)
            field = dense_shift_field(shifts_pw, self.centers_y, self.centers_x, self.shape)
            return shifts_rig, shifts_pw, shift_dense(frames, field, self.border_nan)
        if self.cfg.shifts_opencv:
            registered = shift_rigid_cv(frames, shifts_rig, self.border_nan)
        else:
            spectra = scipy.fft.rfft2(frames, workers=self.workers)
            registered = shift_rigid_fft(spectra, self.shape, shifts_rig, self.border_nan,
                                          self.workers)
        return shifts_rig, None, registered


