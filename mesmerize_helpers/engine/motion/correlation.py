"""Shift estimation: masked, normalised cross-correlation of images with templates, and
its sub-pixel peak.

:class:`MaskedTemplates` matches images to templates in two stages: the integer peak of the
masked normalised cross-correlation (FFT, evaluated only in the search window), then the
same correlation on a 1/4 px grid around it (matrix DFT) and a parabolic fit. Optionally,
pixels are weighted by how well they can be trusted (``weights``, e.g. low where cells
fire): see :mod:`.weighting`; and the sub-pixel stage uses a mask fitted to each image's
own displacement (``own_masks``): all the pixels that overlap the template there.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from .subpixel import (
    _UPSAMPLE_FFT,
    _derivative_maps,
    _fine_grid,
    _fine_offsets,
    _locate_peak,
    _rect_fine_grid,
    _taylor_coefficients,
    _upsampled_correlation,
)


def _window_indices(start: np.ndarray, size: int, period: int) -> np.ndarray:
    """(N, size) indices ``start + [0, size)`` wrapped modulo ``period``."""
    return (start[:, None] + np.arange(size)) % period


def _gather_windows(maps: np.ndarray, lo: np.ndarray, size: tuple[int, int],
                    which: np.ndarray) -> np.ndarray:
    """Cut, from (Q, h, w) circular maps, the (N, size_y, size_x) windows of displacements
    ``lo + [0, size)`` (``lo`` (N, 2) int, wrapped) of maps ``which`` (N,)."""
    _, h, w = maps.shape
    rows = _window_indices(lo[:, 0], size[0], h)
    cols = _window_indices(lo[:, 1], size[1], w)
    return maps[which[:, None, None], rows[:, :, None], cols[:, None, :]]


def _row_phases(h: int) -> np.ndarray:
    """(h, h) complex64 table ``exp(2 pi i r f_y) / h``: row r of the inverse DFT along y."""
    fy = np.fft.fftfreq(h)
    return (np.exp(2j * np.pi * np.outer(np.arange(h), fy)) / h).astype(np.complex64)


def _correlation_window(spec: np.ndarray, shape: tuple[int, int], start: np.ndarray,
                        size: tuple[int, int], workers: int,
                        row_phases: np.ndarray | None = None) -> np.ndarray:
    """Inverse FFT of cross-power spectra, evaluated only in a window of displacements.

    The inverse transform along y is needed for the window's ``size[0]`` rows only: a matrix
    product (about 3x cheaper than a full inverse FFT along y of every column), followed by
    the inverse real FFT along x of those rows.

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
    row_phases
        :func:`_row_phases` of ``h``, if already computed.

    Returns
    -------
    np.ndarray
        (N, size_y, size_x) correlation values (``irfft2`` normalisation).
    """
    h, w = shape
    rows = _window_indices(start[:, 0], size[0], h)
    table = _row_phases(h) if row_phases is None else row_phases
    part = np.matmul(table[rows], spec)  # (N, size_y, wc)
    full_rows = scipy.fft.irfft(part, n=w, axis=-1, workers=workers)
    cols = _window_indices(start[:, 1], size[1], w)
    n = len(spec)
    return full_rows[np.arange(n)[:, None, None], np.arange(size[0])[None, :, None],
                     cols[:, None, :]]


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

    With ``weights`` (a map in template coordinates: it moves with the tissue), the sub-pixel
    stage maximises the weighted Pearson correlation instead,

    ``r_w(d) = cov_w(f, t_d) / sqrt(var_w(f) var_w(t_d))`` with weights ``m(p) w(p - d)``,

    which needs, per image, ``C_f(d) = sum_p m (f - mu) w(p - d)`` and ``C_ff`` (same with
    the squared image): they are taken from a second-order Taylor expansion of ``w`` around
    the integer peak (``w`` is smooth), i.e. six dot products per image, not two more FFTs.
    The integer peak still comes from the unweighted correlation, so the fine grid spans
    +/-1 px instead of +/-1/2.

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
    weights
        (Q, h, w) non-negative, smooth pixel weights in template coordinates, or None.
    """

    def __init__(self, templates: np.ndarray, masks: np.ndarray, radius: tuple[float, float],
                 workers: int = 1, pad: int = 8, weights: np.ndarray | None = None) -> None:
        t = templates.astype(np.float64)
        t = t - t.mean(axis=(1, 2), keepdims=True)
        self.image_shape = t.shape[1:]
        t = _periodic_extension(t, pad)
        self.shape = t.shape[1:]
        t_spec = scipy.fft.rfft2(t, workers=workers)
        h, w = self.image_shape
        self.masks = masks.astype(np.float32)
        self.wsum = self.masks.sum(axis=(1, 2)).astype(np.float64)
        padded_masks = np.zeros((len(masks), *self.shape))
        padded_masks[:, :h, :w] = masks
        mask_spec = scipy.fft.rfft2(padded_masks, workers=workers)
        tc = np.conj(t_spec)
        s1_spec = mask_spec * tc
        s2_spec = mask_spec * np.conj(scipy.fft.rfft2(t * t, workers=workers))
        self.s1 = scipy.fft.irfft2(s1_spec, s=self.shape, workers=workers)
        s2 = scipy.fft.irfft2(s2_spec, s=self.shape, workers=workers)
        self.energy = np.maximum(s2 - self.s1**2 / self.wsum[:, None, None], 1e-12)
        self.tc = tc.astype(np.complex64)
        self._buffer: np.ndarray | None = None
        self._row_phases = _row_phases(self.shape[0])
        self._own_terms: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        # Fine-grid terms on the sub-pixel grid covering every window the refinement visits.
        self.weighted = weights is not None
        self.offsets = _fine_offsets(1.0 if self.weighted else 0.5)
        reach = math.ceil(self.offsets[-1])  # the grid's extent beyond an integer peak
        self.fine_origin = np.array([math.ceil(r) + reach for r in radius])
        n_steps = 2 * self.fine_origin * _UPSAMPLE_FFT + 1
        grid = [np.arange(n) / _UPSAMPLE_FFT - o for n, o in zip(n_steps, self.fine_origin)]

        def fine(spec: np.ndarray) -> np.ndarray:
            return _fine_grid(spec, self.shape, *grid)

        if not self.weighted:
            self.fine_tc = self.tc
            # template sides of C_t, C_tt, for masks other than ``masks`` (:meth:`refine`)
            self.template_terms = (tc, np.conj(scipy.fft.rfft2(t * t, workers=workers)))
            self.fine_t, self.fine_tt, self.fine_w = fine(s1_spec), fine(s2_spec), None
            return
        wext = np.maximum(_periodic_extension(weights.astype(np.float64), pad), 0.0)
        wt_spec = np.conj(scipy.fft.rfft2(wext * t, workers=workers))
        self.fine_tc = wt_spec.astype(np.complex64)
        self.template_terms = (wt_spec, np.conj(scipy.fft.rfft2(wext * t * t, workers=workers)),
                               np.conj(scipy.fft.rfft2(wext, workers=workers)))
        self.fine_t, self.fine_tt, self.fine_w = (fine(mask_spec * spec)
                                                  for spec in self.template_terms)
        self.taylor_maps = _derivative_maps(wext, self.image_shape, workers)
        self.taylor_coef = _taylor_coefficients(self.offsets)

    def _apply_masks(self, images: np.ndarray, rows: np.ndarray | None = None,
                     cols: np.ndarray | None = None) -> np.ndarray:
        """(n, Q, H, W) float32: images minus their mean within the masks, times the masks,
        zero-padded to the extended template size (the FFT buffer). The masks are
        ``self.masks``, or rectangles of their own, ``rows[i, y] * cols[i, x]`` for item
        ``i`` of the n * Q ((n * Q, h) and (n * Q, w) arrays)."""
        h, w = self.image_shape
        if rows is None:
            masks = self.masks
            means = np.einsum("nqyx,qyx->nq", images, masks) / self.wsum
        else:
            shape = images.shape[:2]
            rows, cols = rows.reshape(*shape, h), cols.reshape(*shape, w)
            means = np.einsum("nqyx,nqx->nqy", images, cols)
            means = (means * rows).sum(axis=-1) / (rows.sum(axis=-1) * cols.sum(axis=-1))
            rows, cols = rows[..., :, None], cols[..., None, :]
        # One zero-padded buffer, reused: only its inner part is ever written (a new zeroed
        # array per chunk costs a page fault per 4 kB).
        n = len(images)
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.zeros((n, *images.shape[1:2], *self.shape), dtype=np.float32)
        padded = self._buffer[:n]
        inner = padded[..., :h, :w]
        np.subtract(images, means[..., None, None].astype(np.float32), out=inner)
        if rows is None:
            inner *= masks
        else:
            inner *= rows
            inner *= cols
        return padded

    def _taylor_terms(self, masked: np.ndarray, peaks: np.ndarray, which: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """C_f and C_ff (N, K, K) on the fine grid around integer ``peaks`` (N, 2).

        ``C(d0 + e) = sum_q G(q + d0) w(q - e)`` for G the masked centred image (and its
        square), with w(q - e) from its Taylor maps: six dot products per image.
        """
        h, w = self.image_shape
        n_items = len(peaks)
        r = int(np.abs(peaks).max(initial=0))
        g = masked.reshape(n_items, *self.shape)[:, :h, :w]
        both = np.zeros((n_items, 2, h + 2 * r, w + 2 * r), np.float32)
        both[:, 0, r:r + h, r:r + w] = g
        np.square(both[:, 0], out=both[:, 1])
        windows = np.lib.stride_tricks.sliding_window_view(both, (h, w), axis=(2, 3))
        shifted = windows[np.arange(n_items), :, r + peaks[:, 0], r + peaks[:, 1]]
        sums = np.empty((n_items, 2, 6))
        for q in np.unique(which):
            items = which == q
            flat = shifted[items].reshape(-1, h * w)
            sums[items] = (flat @ self.taylor_maps[q].reshape(6, -1).T).reshape(-1, 2, 6)
        values = np.einsum("ngk,kij->ngij", sums, self.taylor_coef)
        return values[:, 0], values[:, 1]

    def match(self, images: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              workers: int, own_masks: tuple[int, int] | None = None) -> np.ndarray:
        """Displacement of image content relative to the templates, within [lo, hi].

        Parameters
        ----------
        images
            (n, Q, h, w) images, image ``q`` to be matched to template ``q``.
        lo, hi
            (n, Q, 2) float bounds of the search (pixels, inclusive), within ``radius``.
        own_masks
            (margin, edge) to find the sub-pixel displacement under a mask fitted to each
            image's integer displacement (:meth:`_fine_own_masks`), or None: under
            ``masks``.

        Returns
        -------
        np.ndarray
            (n, Q, 2) displacement d (pixels) with ``image(p) ~ template(p - d)``.
        """
        n, q = images.shape[:2]
        h, w = self.shape
        masked = self._apply_masks(images)
        spectra = scipy.fft.rfft2(masked, workers=workers)
        fine_spec = None
        if self.fine_tc is not self.tc and own_masks is None:
            fine_spec = spectra * self.fine_tc
        spec = np.multiply(spectra, self.tc, out=spectra).reshape(n * q, h, -1)
        lo, hi = lo.reshape(n * q, 2), hi.reshape(n * q, 2)
        which = np.tile(np.arange(q), n)
        start = np.ceil(lo - 1e-9).astype(int)
        stop = np.floor(hi + 1e-9).astype(int)
        size = tuple(int(v) for v in np.maximum((stop - start).max(axis=0) + 1, 1))
        win = _correlation_window(spec, self.shape, start, size, workers, self._row_phases)
        ncc = win / np.sqrt(_gather_windows(self.energy, start, size, which))
        # Items whose window is narrower than the common one: mask the excess displacements.
        too_far_y = np.arange(size[0])[None, :] > (stop - start)[:, 0, None]
        too_far_x = np.arange(size[1])[None, :] > (stop - start)[:, 1, None]
        ncc[too_far_y[:, :, None] | too_far_x[:, None, :]] = -np.inf
        iy, ix = np.divmod(ncc.reshape(len(ncc), -1).argmax(axis=1), size[1])
        peaks = start + np.stack([iy, ix], axis=1)
        if own_masks is not None:
            return self._fine_own_masks(images, peaks, lo, hi, *own_masks, workers)
        # Sub-pixel: the normalised correlation on a fine grid around the integer peak, the
        # correlation by an upsampled DFT, the template terms from the precomputed grids.
        if fine_spec is not None:
            spec = fine_spec.reshape(n * q, h, -1)
        cross = _upsampled_correlation(spec, w, peaks.astype(float), self.offsets)
        cross = cross.astype(np.float64) / (h * w)
        k = len(self.offsets)
        rows = (peaks[:, 0, None] + self.fine_origin[0]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        cols = (peaks[:, 1, None] + self.fine_origin[1]) * _UPSAMPLE_FFT + np.arange(k) - k // 2
        fine_idx = (which[:, None, None], rows[:, :, None], cols[:, None, :])
        c_w = (self.wsum[which][:, None, None] if self.fine_w is None
               else self.fine_w[fine_idx])
        score = self._score(cross, self.fine_t[fine_idx], self.fine_tt[fine_idx], c_w,
                            masked, peaks, which)
        # The sub-pixel step may leave the search range by < 1 px: keep to the bounds.
        disp = np.clip(peaks + _locate_peak(score, self.offsets), lo, hi)
        return disp.reshape(n, q, 2)

    def _score(self, cross: np.ndarray, c_t: np.ndarray, c_tt: np.ndarray, c_w: np.ndarray,
               masked: np.ndarray, peaks: np.ndarray, which: np.ndarray) -> np.ndarray:
        """(N, K, K) normalised (or weighted Pearson) correlation on the fine grid, from the
        cross term and the template terms under the mask."""
        if not self.weighted:
            return cross / np.sqrt(np.maximum(c_tt - c_t**2 / c_w, 1e-12))
        c_w = np.maximum(c_w, 1e-12)
        c_f, c_ff = self._taylor_terms(masked, peaks, which)
        variances = np.maximum((c_ff - c_f**2 / c_w) * (c_tt - c_t**2 / c_w), 1e-24)
        return (cross - c_f * c_t / c_w) / np.sqrt(variances)

    def _fine_own_masks(self, images: np.ndarray, peaks: np.ndarray, lo: np.ndarray,
                        hi: np.ndarray, margin: int, edge: int, workers: int) -> np.ndarray:
        """Sub-pixel displacements, each image under a mask fitted to its own displacement.

        ``masks`` leave out a border as wide as the largest displacement searched (plus a
        margin), for every image. Once an image's integer displacement ``r`` is known, only
        the pixels whose template counterparts ``p - d`` fall outside the template (less
        ``margin`` px), for ``d`` on the fine grid around ``r``, need leaving out, and
        ``edge`` px of the image's own border: a rectangle, with a narrow border on the side
        the image moved away from. On small fields that is many more pixels (on a 128 px
        field searched within 6 px, 11-19 % more at zero displacement), and the
        estimate's variance falls accordingly. Costs one more FFT per image.

        Parameters
        ----------
        images
            (n, Q, h, w) images, as for :meth:`match`.
        peaks
            (n * Q, 2) their integer displacements.
        lo, hi
            (n * Q, 2) bounds of the search (pixels).
        margin, edge
            Pixels of the template's edge, and of the image's, never used.

        Returns
        -------
        np.ndarray
            (n, Q, 2) displacements, within [lo, hi].
        """
        n, q = images.shape[:2]
        (h, w), (big_h, big_w) = self.image_shape, self.shape
        which = np.tile(np.arange(q), n)
        reach = self.offsets[-1]
        low_side = np.maximum(edge, np.maximum(0, np.ceil(peaks + reach)).astype(int) + margin)
        high_side = np.maximum(edge, np.maximum(0, np.ceil(reach - peaks)).astype(int) + margin)
        limit = np.array([h // 3, w // 3])
        low_side, high_side = np.minimum(low_side, limit), np.minimum(high_side, limit)
        rows = ((np.arange(h) >= low_side[:, 0, None])
                & (np.arange(h) < h - high_side[:, 0, None])).astype(np.float32)
        cols = ((np.arange(w) >= low_side[:, 1, None])
                & (np.arange(w) < w - high_side[:, 1, None])).astype(np.float32)
        masked = self._apply_masks(images, rows, cols)
        spectra = scipy.fft.rfft2(masked, workers=workers).reshape(n * q, big_h, -1)
        fine_tc = self.fine_tc[0] if q == 1 else self.fine_tc[which]
        cross = _upsampled_correlation(np.multiply(spectra, fine_tc, out=spectra), big_w,
                                       peaks.astype(float), self.offsets)
        cross = cross.astype(np.float64) / (big_h * big_w)
        terms = self._own_mask_terms(which, peaks, rows, cols, (margin, edge))
        c_w = ((rows.sum(axis=1) * cols.sum(axis=1))[:, None, None] if not self.weighted
               else terms[2])
        score = self._score(cross, terms[0], terms[1], c_w, masked, peaks, which)
        out = np.clip(peaks + _locate_peak(score, self.offsets), lo, hi)
        return out.reshape(n, q, 2)

    def _own_mask_terms(self, which: np.ndarray, peaks: np.ndarray, rows: np.ndarray,
                        cols: np.ndarray, rule: tuple[int, int]) -> np.ndarray:
        """The template terms (C_t, C_tt[, C_w]: (terms, N, K, K)) of :meth:`_fine_own_masks`
        under each item's rectangle (``rows`` x ``cols``, a function of the peak for a given
        ``rule`` (margin, edge)): from the rectangle's separable spectrum, computed once per
        template and integer peak."""
        reach = int(self.fine_origin.max())
        size = 2 * reach + 1
        if rule not in self._own_terms:
            k, n_terms = len(self.offsets), len(self.template_terms)
            self._own_terms[rule] = (np.zeros((len(self.masks), size, size), bool),
                                     np.zeros((n_terms, len(self.masks), size, size, k, k)))
        done, values = self._own_terms[rule]
        where = (which, peaks[:, 0] + reach, peaks[:, 1] + reach)
        missing = np.flatnonzero(~done[where])
        if len(missing):
            codes = np.ravel_multi_index(tuple(i[missing] for i in where), done.shape)
            first = missing[np.unique(codes, return_index=True)[1]]
            row_spec = scipy.fft.fft(rows[first], n=self.shape[0], axis=1)
            col_spec = scipy.fft.rfft(cols[first], n=self.shape[1], axis=1)
            new = tuple(i[first] for i in where)
            for term, spec in zip(values, self.template_terms):
                term[new] = _rect_fine_grid(row_spec, col_spec, spec, which[first],
                                            peaks[first], self.offsets, self.shape)
            done[new] = True
        return values[(slice(None), *where)]
