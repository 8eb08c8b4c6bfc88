"""Shift estimation: high-pass filtering, masked normalised cross-correlation, sub-pixel peaks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.fft

from ..params import as_pair

# Upsampling factor of the DFT used to refine correlation peaks, followed by a parabolic fit
# on that 1/4 px grid: the fit's own error is below 0.002 px for peaks wider than 0.6 px,
# and the small grid costs 6x less than CaImAn's 1/10 px grid.
_UPSAMPLE_FFT = 4


def highpass_kernel(gSig: tuple[float, float] | float) -> np.ndarray:
    """Zero-sum "centred Gaussian" kernel used to high-pass frames (CaImAn's ``gSig_filt``).

    A Gaussian of width ``gSig`` is kept on the disk where it exceeds its largest value on the
    kernel's edge, and its mean over that disk is subtracted, so that the kernel sums to zero:
    it removes smooth background and keeps structures of about the size of a cell.

    Parameters
    ----------
    gSig
        Gaussian standard deviation (y, x) in pixels.

    Returns
    -------
    np.ndarray
        (ky, kx) float32 kernel, odd sizes ``(3 * gSig) // 2 * 2 + 1``.
    """
    gy, gx = as_pair(gSig, "gSig_filt")
    sizes = [int(3 * g) // 2 * 2 + 1 for g in (gy, gx)]
    axes = [np.arange(n) - (n - 1) / 2 for n in sizes]
    ker = np.outer(np.exp(-axes[0] ** 2 / (2 * gy**2)), np.exp(-axes[1] ** 2 / (2 * gx**2)))
    ker /= ker.sum()
    edge = max(ker[0].max(), ker[:, 0].max())
    support = ker >= edge
    ker[support] -= ker[support].mean()
    ker[~support] = 0.0
    return ker.astype(np.float32)


def highpass_filter(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter each frame of a (frames, y, x) float32 stack with ``kernel`` (reflected borders)."""
    out = np.empty_like(frames, dtype=np.float32)
    for i, frame in enumerate(frames):
        cv2.filter2D(frame, cv2.CV_32F, kernel, dst=out[i], borderType=cv2.BORDER_REFLECT)
    return out


# --------------------------------------------------------------------------------------------
# Cross-correlation peaks
# --------------------------------------------------------------------------------------------


def _gather_windows(maps: np.ndarray, lo: np.ndarray, size: tuple[int, int],
                    which: np.ndarray | None = None) -> np.ndarray:
    """Cut, from circular correlation maps, the window of displacements ``lo + [0, size)``.

    Parameters
    ----------
    maps
        (Q, h, w) maps indexed by displacement modulo (h, w).
    lo
        (N, 2) int first displacement of each item's window (negative allowed, wrapped).
    size
        (size_y, size_x) window size.
    which
        (N,) index of the map of each item; ``arange(N)`` if None.

    Returns
    -------
    np.ndarray
        (N, size_y, size_x).
    """
    _, h, w = maps.shape
    rows = (lo[:, 0, None] + np.arange(size[0])) % h  # (N, my)
    cols = (lo[:, 1, None] + np.arange(size[1])) % w  # (N, mx)
    idx = np.arange(len(lo)) if which is None else which
    return maps[idx[:, None, None], rows[:, :, None], cols[:, None, :]]


def _correlation_window(spec: np.ndarray, shape: tuple[int, int], start: np.ndarray,
                        size: tuple[int, int], workers: int) -> np.ndarray:
    """Inverse FFT of cross-power spectra, evaluated only in a window of displacements.

    Only ``size[0]`` of the ``h`` rows are needed: after the inverse transform along y, the
    inverse real transform along x is done for those rows only, which halves the cost of a
    full ``irfft2``.

    Parameters
    ----------
    spec
        (N, h, w // 2 + 1) half spectra.
    shape
        (h, w) image size.
    start
        (N, 2) first displacement of each item's window (wrapped modulo the size).
    size
        (size_y, size_x) window size.

    Returns
    -------
    np.ndarray
        (N, size_y, size_x) correlation values (``irfft2`` normalisation).
    """
    h, w = shape
    n = len(spec)
    by_row = scipy.fft.ifft(spec, axis=-2, workers=workers)
    rows = (start[:, 0, None] + np.arange(size[0])) % h
    part = by_row[np.arange(n)[:, None], rows]  # (N, size_y, wc)
    full_rows = scipy.fft.irfft(part, n=w, axis=-1, workers=workers)
    cols = (start[:, 1, None] + np.arange(size[1])) % w
    return full_rows[np.arange(n)[:, None, None], np.arange(size[0])[None, :, None],
                     cols[:, None, :]]


def _phase_kernel(freqs: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """exp(2 pi i f (c + o)) as (N, K, F), factorised as exp(2 pi i f c) * exp(2 pi i f o).

    The per-item factor has N*F entries and the fixed one K*F, so only those are computed with
    complex exponentials; their product is a cheap broadcast multiply.
    """
    two_pi = np.float32(2 * np.pi)
    per_item = np.exp(1j * (two_pi * freqs[None, :] * centres[:, None].astype(np.float32)))
    fixed = np.exp(1j * (two_pi * freqs[None, :] * offsets[:, None].astype(np.float32)))
    return per_item[:, None, :] * fixed[None, :, :]


def _upsampled_correlation(spec: np.ndarray, width: int, centres: np.ndarray,
                           offsets: np.ndarray) -> np.ndarray:
    """Cross-correlation at displacements ``centres + offsets`` by a matrix DFT.

    ``spec`` (N, h, width // 2 + 1) is the half (rfft) cross-power spectrum; the correlation
    is real, so the full inverse DFT is the real part of the half-spectrum sum with the
    non-self-conjugate columns counted twice. Costs h * wc * K per item, against a full
    upsampled inverse FFT of (h * uf) * (w * uf).

    Returns (N, K, K) with K = len(offsets).
    """
    n, h, wc = spec.shape
    fy = np.fft.fftfreq(h).astype(np.float32)
    fx = np.fft.rfftfreq(width).astype(np.float32)
    weight_x = np.full(wc, 2.0, dtype=np.float32)
    weight_x[0] = 1.0
    if width % 2 == 0:
        weight_x[-1] = 1.0
    ker_y = _phase_kernel(fy, centres[:, 0], offsets)  # (N, K, h)
    ker_x = _phase_kernel(fx, centres[:, 1], offsets) * weight_x  # (N, K, wc)
    return np.matmul(ker_y, np.matmul(spec, ker_x.transpose(0, 2, 1))).real


def _parabola_offset(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three equally spaced samples, in sample units."""
    denom = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def _fine_offsets(upsample: int = _UPSAMPLE_FFT) -> np.ndarray:
    """Offsets (pixels) of the sub-pixel grid evaluated around an integer peak.

    The true peak is within 1/2 px of the integer one; one more grid step on each side lets
    the parabola be fitted around any grid maximum inside that range.
    """
    half = math.ceil(0.5 * upsample) + 1
    return np.arange(-half, half + 1) / upsample


def _locate_peak(grid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sub-pixel maximum of (N, K, K) values sampled at ``offsets`` x ``offsets``.

    Takes the grid maximum and fits a parabola through it and its neighbours along each axis.
    Returns (N, 2) offsets in pixels.
    """
    k = len(offsets)
    step = offsets[1] - offsets[0]
    flat = grid.reshape(len(grid), -1).argmax(axis=1)
    iy, ix = np.divmod(flat, k)
    iy_c = np.clip(iy, 1, k - 2)
    ix_c = np.clip(ix, 1, k - 2)
    n = np.arange(len(grid))
    dy = _parabola_offset(grid[n, iy_c - 1, ix], grid[n, iy_c, ix], grid[n, iy_c + 1, ix])
    dx = _parabola_offset(grid[n, iy, ix_c - 1], grid[n, iy, ix_c], grid[n, iy, ix_c + 1])
    dy = np.where(iy == iy_c, dy, 0.0)  # no fit at the window edge
    dx = np.where(ix == ix_c, dx, 0.0)
    return np.stack([offsets[iy] + dy * step, offsets[ix] + dx * step], axis=1)


def _periodic_extension(images: np.ndarray, pad: int) -> np.ndarray:
    """Extend (Q, h, w) images by at least ``pad`` pixels so that they wrap around smoothly.

    The sub-pixel correlation is a Fourier (periodic) interpolation of the template. At the
    template's wrap-around, a jump between opposite edges (e.g. a brightness gradient) rings
    into the interpolated values, up to tenths of a pixel of bias for strong gradients. The
    extra rows / columns blend from the last row / column back to the first one, so the
    periodic template is continuous. The FFT size is rounded up to a fast length.
    """
    if pad <= 0:
        return images
    q, h, w = images.shape
    big_h = scipy.fft.next_fast_len(h + pad, real=True)
    big_w = scipy.fft.next_fast_len(w + pad, real=True)
    out = np.zeros((q, big_h, big_w))
    out[:, :h, :w] = images
    a = (np.arange(1, big_h - h + 1) / (big_h - h + 1))[:, None]
    a = a * a * (3 - 2 * a)  # smoothstep: flat at both ends
    out[:, h:, :w] = (1 - a) * images[:, -1:, :] + a * images[:, :1, :]
    b = (np.arange(1, big_w - w + 1) / (big_w - w + 1))[None, :]
    b = b * b * (3 - 2 * b)
    out[:, :, w:] = (1 - b) * out[:, :, w - 1:w] + b * out[:, :, :1]
    return out


class MaskedTemplates:
    """Templates prepared for masked, normalised matching of images.

    Plain circular cross-correlation of a frame with a template is biased towards zero shift
    when the frame is not periodic: the overlap of frame and template shrinks with the
    displacement, and new content enters at the edges (about 0.2-0.3 px at 8 px shifts).
    Here the image is restricted to a mask whose border is at least the largest displacement
    searched, so that every masked pixel has a template pixel at every candidate displacement
    (no wrap-around), and the template energy under the shifted mask is accounted for:

    ``ncc(d) = sum_p m(p) (f(p) - mu) t(p - d) / sqrt(E(d))``, with
    ``E(d) = sum_p m(p) t(p - d)^2 - (sum_p m(p) t(p - d))^2 / sum(m)``,

    the normalised cross-correlation of the masked image (mean ``mu`` within the mask) with
    the template. The terms ``S1(d) = sum_p m(p) t(p - d)`` and ``S2`` (same with t^2) are
    correlations of the mask with the template, fixed per template: they are computed once,
    on the integer grid and on the sub-pixel grid, and cost nothing per frame. The sub-pixel
    values come from the DFT, i.e. from the periodic template, which is therefore extended to
    wrap around smoothly (:func:`_periodic_extension`); images are zero-padded to that size.

    Parameters
    ----------
    templates
        (Q, h, w) templates (one per patch, or one for the whole frame).
    masks
        (Q, h, w) binary masks applied to the images matched against each template.
    radius
        (y, x) largest |displacement| (pixels) that will be searched.
    workers
        Threads for scipy.fft.
    pad
        Minimum number of rows / columns of the smooth periodic extension.
    """

    def __init__(self, templates: np.ndarray, masks: np.ndarray, radius: tuple[float, float],
                 workers: int, pad: int = 8) -> None:
        t = templates.astype(np.float64)
        t = t - t.mean(axis=(1, 2), keepdims=True)
        self.image_shape = t.shape[1:]
        t = _periodic_extension(t, pad)
        self.shape = t.shape[1:]
        masks = np.pad(masks, ((0, 0), (0, self.shape[0] - self.image_shape[0]),
                               (0, self.shape[1] - self.image_shape[1])))
        self.masks = masks.astype(np.float32)
        self.wsum = self.masks.sum(axis=(1, 2)).astype(np.float64)
        tc = np.conj(scipy.fft.rfft2(t, workers=workers))
        mask_spec = scipy.fft.rfft2(self.masks.astype(np.float64), workers=workers)
        s1_spec = mask_spec * tc
        s2_spec = mask_spec * np.conj(scipy.fft.rfft2(t * t, workers=workers))
        self.s1 = scipy.fft.irfft2(s1_spec, s=self.shape, workers=workers)
        s2 = scipy.fft.irfft2(s2_spec, s=self.shape, workers=workers)
        self.energy = np.maximum(s2 - self.s1**2 / self.wsum[:, None, None], 1e-12)
        self.tc = tc.astype(np.complex64)
        # S1 and S2 on the sub-pixel grid covering every window the refinement can visit.
        self.offsets = _fine_offsets()
        self.fine_origin = np.array([math.ceil(r) + 1 for r in radius])
        n_steps = 2 * self.fine_origin * _UPSAMPLE_FFT + 1
        grid_y = np.arange(n_steps[0]) / _UPSAMPLE_FFT - self.fine_origin[0]
        grid_x = np.arange(n_steps[1]) / _UPSAMPLE_FFT - self.fine_origin[1]
        self.s1_fine = self._fine_grid(s1_spec, grid_y, grid_x)
        self.s2_fine = self._fine_grid(s2_spec, grid_y, grid_x)

    def _fine_grid(self, spec: np.ndarray, grid_y: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
        """(Q, Gy, Gx) correlation values at displacements grid_y x grid_x."""
        h, w = self.shape
        ky = np.exp(2j * np.pi * grid_y[:, None] * np.fft.fftfreq(h)[None, :])  # (Gy, h)
        weight_x = np.full(w // 2 + 1, 2.0)
        weight_x[0] = 1.0
        if w % 2 == 0:
            weight_x[-1] = 1.0
        kx = weight_x[:, None] * np.exp(2j * np.pi * np.fft.rfftfreq(w)[:, None] * grid_x)
        return (ky @ spec @ kx).real / (h * w)

    def apply_masks(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masked images and their means within the masks.

        Parameters
        ----------
        images
            (n, Q, h, w) images, image ``q`` to be matched to template ``q``.

        Returns
        -------
        masked, means
            (n, Q, H, W) images times masks, zero-padded to the extended template size;
            (n, Q) means within the masks. The mean is subtracted from the correlations
            later through S1 (cheaper than here).
        """
        h, w = self.image_shape
        masks = self.masks[:, :h, :w]
        sums = np.einsum("nqyx,qyx->nq", images, masks)
        # Written straight into the zero-padded FFT buffer (one pass instead of two).
        padded = np.zeros((*images.shape[:2], *self.shape), dtype=np.float32)
        np.multiply(images, masks, out=padded[..., :h, :w])
        return padded, sums / self.wsum

    def spectra(self, masked: np.ndarray, workers: int) -> np.ndarray:
        """rfft2 of masked images from :meth:`apply_masks`."""
        return scipy.fft.rfft2(masked, workers=workers)

    def displacements(self, spectra: np.ndarray, means: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray, workers: int) -> np.ndarray:
        """Displacement of image content relative to the templates, within [lo, hi].

        Parameters
        ----------
        spectra
            (n, Q, h, w // 2 + 1) rfft2 of masked images, and ``means`` (n, Q), from
            :meth:`apply_masks`.
        lo, hi
            (n, Q, 2) float bounds of the search (pixels, inclusive), within ``radius``.

        Returns
        -------
        np.ndarray
            (n, Q, 2) displacement d (pixels) with ``image(p) ~ template(p - d)``.
        """
        n, q = spectra.shape[:2]
        h, w = self.shape
        spec = (spectra * self.tc).reshape(n * q, h, -1)
        lo, hi = lo.reshape(n * q, 2), hi.reshape(n * q, 2)
        means = means.reshape(n * q)[:, None, None]
        which = np.tile(np.arange(q), n)
        start = np.ceil(lo - 1e-9).astype(int)
        stop = np.floor(hi + 1e-9).astype(int)
        size = tuple(int(v) for v in np.maximum((stop - start).max(axis=0) + 1, 1))
        s1 = _gather_windows(self.s1, start, size, which)
        win = _correlation_window(spec, self.shape, start, size, workers) - means * s1
        energy = _gather_windows(self.energy, start, size, which)
        ncc = win / np.sqrt(energy)
        # Items whose window is narrower than the common one: mask the excess displacements.
        too_far_y = np.arange(size[0])[None, :] > (stop - start)[:, 0, None]
        too_far_x = np.arange(size[1])[None, :] > (stop - start)[:, 1, None]
        ncc[too_far_y[:, :, None] | too_far_x[:, None, :]] = -np.inf
        flat = ncc.reshape(len(ncc), -1).argmax(axis=1)
        iy, ix = np.divmod(flat, size[1])
        peaks = start + np.stack([iy, ix], axis=1)
        # Sub-pixel: the same normalised correlation on a fine grid around the integer peak,
        # the correlation by an upsampled DFT, S1 and S2 from the per-template fine grids.
        grid = _upsampled_correlation(spec, w, peaks.astype(float), self.offsets)
        grid = grid.astype(np.float64) / (h * w)  # float64: cc and mean * S1 nearly cancel
        k = len(self.offsets)
        rows = (peaks[:, 0, None] + self.fine_origin[0]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        cols = (peaks[:, 1, None] + self.fine_origin[1]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        fine_idx = (which[:, None, None], rows[:, :, None], cols[:, None, :])
        fine_s1 = self.s1_fine[fine_idx]
        fine_energy = self.s2_fine[fine_idx] - fine_s1**2 / self.wsum[which][:, None, None]
        grid -= means * fine_s1
        grid /= np.sqrt(np.maximum(fine_energy, 1e-12))
        # The sub-pixel step may leave the search range by < 1 px: keep to the bounds.
        disp = np.clip(peaks + _locate_peak(grid, self.offsets), lo, hi)
        return disp.reshape(n, q, 2)


