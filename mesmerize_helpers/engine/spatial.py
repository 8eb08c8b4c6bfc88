"""Update of the spatial footprints and the spatial background (HALS).

Hierarchical alternating least squares on ``Y ~ A C + b f``: each footprint in turn gets
the non-negative least-squares update given all the others, restricted to a support made of
its current pixels dilated by a disk, so that footprints stay local but can grow or move.
The background footprints ``b`` are updated on the whole field. Each footprint is then
shaped like a cell (:mod:`.shaping`), free footprints as their excess over the neuropil
around them (:func:`surround_levels`). ``Y`` (a :class:`~.data.DataMatrix`) is read in two
products: its rows on each support times that footprint's trace
(:meth:`~.data.DataMatrix.support_dots`), and the whole matrix times the background traces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from .data import as_data
from .footprints import as_footprints, box_image, column, from_columns
from .linalg import pair_dots
from .shaping import SMOOTH, Shaping, shape_footprint

__all__ = ["update_spatial", "disk", "dilated_supports", "surround_levels", "SURROUND_GAP"]

#: Gap (px) between a footprint and the ring where its surround is measured: the footprint's
#: outline was drawn on a significance map blurred by ``SMOOTH`` px (:mod:`.shaping`), so the
#: cell's own values reach up to about two blur widths beyond it.
SURROUND_GAP = 2 * SMOOTH


def disk(radius: int) -> np.ndarray:
    """Boolean disk structuring element of the given radius (px)."""
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy**2 + xx**2) <= r * r + 0.5


def dilated_supports(
    A: Any, dims: tuple[int, int], radius: int, max_radius: float | None = None
) -> list[np.ndarray]:
    """Pixel indices (Fortran order) of each footprint's support dilated by ``radius`` px,
    limited to ``max_radius`` px around the footprint's centre of mass.

    Parameters
    ----------
    A
        (pixels, K) footprints (sparse or dense), Fortran pixel order on ``dims``.
    dims
        (y, x) frame size.
    radius
        Dilation radius (px).
    max_radius
        None: no limit.

    Returns
    -------
    list of np.ndarray
        K sorted int64 arrays of pixel indices.
    """
    A = A if sp.isspmatrix_csc(A) else as_footprints(A)
    h = dims[0]
    se = disk(radius)
    out = []
    for k in range(A.shape[1]):
        idx, val = column(A, k)
        pos = val > 0
        idx, val = idx[pos].astype(np.int64), val[pos].astype(np.float64)
        if not idx.size:
            out.append(np.zeros(0, np.int64))
            continue
        img, r0, c0 = box_image(idx, np.ones(idx.size, bool), dims, radius)
        yy, xx = np.nonzero(ndimage.binary_dilation(img, se))
        yy, xx = yy + r0, xx + c0
        if max_radius is not None:
            ys, xs = idx % h, idx // h
            cy, cx = (ys * val).sum() / val.sum(), (xs * val).sum() / val.sum()
            near = (yy - cy) ** 2 + (xx - cx) ** 2 <= max_radius**2
            yy, xx = yy[near], xx[near]
        out.append(np.sort(yy + xx * h))
    return out


def _values_on(A: sp.csc_matrix, supports: list[np.ndarray]) -> np.ndarray:
    """Values of each column of ``A`` on its support (0 where it has none), concatenated."""
    out = []
    for k, sup in enumerate(supports):
        idx, val = column(A, k)
        w = np.zeros(sup.size, np.float32)
        if sup.size and idx.size:
            pos = np.minimum(np.searchsorted(sup, idx), sup.size - 1)
            hit = sup[pos] == idx
            w[pos[hit]] = val[hit]
        out.append(w)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _shared_pixel_gram(
    pix: np.ndarray, comp: np.ndarray, C: np.ndarray
) -> sp.csr_matrix:
    """(L, L) matrix over the support entries (component, pixel): entry (e, e') is
    ``C[comp[e]] @ C[comp[e']]`` where e and e' are the same pixel, 0 elsewhere.

    Its product with the concatenated support values ``w`` gives, for each entry e,
    ``sum_j A[pix[e], j] * (C[j] @ C[comp[e]])``: the ``(A C C^T)[pix, k]`` of HALS on the
    pixels of each support, from the footprints that share those pixels only.
    """
    L = len(pix)
    order = np.argsort(pix, kind="stable")
    ps = pix[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    sizes = np.diff(np.r_[starts, L])
    g_start = np.repeat(starts, sizes)  # per sorted position: start and size of its pixel
    g_size = np.repeat(sizes, sizes)
    rows_s = np.repeat(np.arange(L), g_size)
    first = np.repeat(np.cumsum(g_size) - g_size, g_size)
    cols_s = np.repeat(g_start, g_size) + (np.arange(len(rows_s)) - first)
    rows, cols = order[rows_s], order[cols_s]
    # trace products of the component pairs involved, looked up by pair key
    K = C.shape[0]
    ci, cj = comp[rows], comp[cols]
    key = np.minimum(ci, cj) * K + np.maximum(ci, cj)
    ukey, inv = np.unique(key, return_inverse=True)
    prod = pair_dots(C, ukey // K, ukey % K)
    return sp.csr_matrix((prod[inv], (rows, cols)), shape=(L, L))


def surround_levels(
    raw: np.ndarray, pix: np.ndarray, inside: np.ndarray, ptr: np.ndarray,
    dims: tuple[int, int], gap: float = SURROUND_GAP,
) -> np.ndarray:
    """Each footprint's surround level: the median of its least-squares values on the ring
    of support pixels more than ``gap`` px from the current footprint (0 when negative or
    when there is no such ring).

    The neuropil around a soma carries the activity of its neighbours, dendrites and axons,
    so it is correlated with the cell's trace, and its pixels regress on that trace with a
    small positive weight: a plateau that is significant against pixel noise once pooled over
    a few pixels, and that a noise test alone keeps as part of the cell (footprints about
    twice the area of the soma, on real two-photon data). The cell is what stands above
    that plateau, as in neuropil subtraction; the median is robust to the neighbouring
    cells the ring crosses.

    Parameters
    ----------
    raw
        Concatenated least-squares values of all footprints on their supports.
    pix
        Same length: pixel indices (Fortran order on ``dims``).
    inside
        Same length, bool: the pixel belongs to the current footprint.
    ptr
        (K + 1,) offsets of each footprint's support in ``raw``.
    dims
        (y, x) frame size.
    gap
        Distance (px) from the footprint where the ring starts.

    Returns
    -------
    np.ndarray
        (K,) non-negative levels, in footprint units.
    """
    out = np.zeros(len(ptr) - 1)
    pad = int(np.ceil(gap)) + 1
    for k in range(len(out)):
        p, r, ins = pix[ptr[k]:ptr[k + 1]], raw[ptr[k]:ptr[k + 1]], inside[ptr[k]:ptr[k + 1]]
        if not ins.any() or ins.all():
            continue
        img, r0, c0 = box_image(p[ins], np.ones(int(ins.sum()), np.uint8), dims, pad)
        dist = ndimage.distance_transform_edt(img == 0)
        yy, xx = p % dims[0] - r0, p // dims[0] - c0
        near = np.zeros(p.size, bool)  # support pixels beyond the box are farther than pad
        inbox = (yy >= 0) & (yy < img.shape[0]) & (xx >= 0) & (xx < img.shape[1])
        near[inbox] = dist[yy[inbox], xx[inbox]] <= gap
        if (~near).any():
            out[k] = max(float(np.median(r[~near])), 0.0)
    return out


def update_spatial(
    Y: Any,
    A: Any,
    C: np.ndarray,
    b: np.ndarray,
    f: np.ndarray,
    dims: tuple[int, int],
    *,
    radius: int,
    n_iter: int = 3,
    update_background: bool = True,
    max_radius: float | None = None,
    allowed: Any = None,
    shaping: Shaping | None = None,
    sn: np.ndarray | None = None,
    surround: bool = False,
) -> tuple[sp.csc_matrix, np.ndarray]:
    """HALS update of the footprints ``A`` and background footprints ``b``.

    Only the pixels of each footprint's dilated support take part, so time and memory grow
    with the total support size (about K times the area of a soma), not with pixels x K.

    Parameters
    ----------
    Y
        (pixels, T) data, Fortran pixel order: an array or a :class:`~.data.DataMatrix`.
    A
        (pixels, K) current footprints (scipy.sparse or dense).
    C
        (K, T) traces (baseline-free calcium).
    b
        (pixels, nb) background footprints.
    f
        (nb, T) background traces.
    dims
        (y, x) frame size.
    radius
        Dilation radius (px) of each footprint's support.
    n_iter
        HALS sweeps.
    update_background
        Also update ``b``.
    max_radius
        Footprints stay within this distance (px) of their centre of mass (None: no limit):
        a soma has a bounded size, and a footprint spreading further is taking over
        background.
    allowed
        (pixels, K) boolean, sparse or dense: where each footprint may be non-zero (None:
        anywhere within its support), e.g. around a user's mask, so that a seeded component
        cannot move onto a neighbouring cell.
    shaping
        How footprints are shaped after the update (:mod:`.shaping`; default: CaImAn's
        defaults).
    sn
        (pixels,) noise standard deviation of each pixel of ``Y``: sets the noise floor of
        the shaping (None: no floor).
    surround
        Shape each footprint's excess over its local surround (:func:`surround_levels`,
        measured on the support's pixels more than ``SURROUND_GAP`` px from the current
        footprint): for footprints free to grow; a seed's support is clipped to its region,
        where the cell itself may lie, so seeded fits leave it off.

    Returns
    -------
    A, b
        Updated footprints, (pixels, K) ``scipy.sparse.csc_matrix`` float32, and (pixels,
        nb) float32 background footprints, non-negative. Footprints are shaped
        (:func:`~.shaping.shape_footprint`); they are not normalized here.
    """
    Y = as_data(Y, dims)
    A = as_footprints(A)
    d, K, nb = A.shape[0], A.shape[1], b.shape[1]
    C = np.ascontiguousarray(C, np.float32)
    f = np.ascontiguousarray(f, np.float32)
    b = np.array(b, np.float32)
    supports = dilated_supports(A, dims, radius, max_radius)
    if allowed is not None:
        allowed = sp.csc_matrix(allowed, dtype=bool)
        supports = [s[np.isin(s, allowed.indices[allowed.indptr[k]:allowed.indptr[k + 1]])]
                    for k, s in enumerate(supports)]
    sizes = np.fromiter((s.size for s in supports), np.int64, K)
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    pix = np.concatenate(supports) if K else np.zeros(0, np.int64)
    comp = np.repeat(np.arange(K), sizes)
    w = _values_on(A, supports)  # footprints restricted to their supports
    # the data projected on each trace, on the footprint's support only
    U = Y.support_dots(supports, C)
    M = _shared_pixel_gram(pix, comp, C)
    diag = np.einsum("kt,kt->k", C, C, dtype=np.float64)
    Vcb = (C @ f.T).astype(np.float64)  # (K, nb) trace products with the background
    Vbb = (f @ f.T).astype(np.float64)
    Ub = Y.dot(f.T) if (update_background and nb) else None  # (pixels, nb)
    # each entry's least-squares value before the non-negativity clamp (last sweep): its
    # noise is symmetric about the true value, which the shaping's noise test relies on
    raw = w.copy()
    for _ in range(n_iter):
        for k in range(K):
            s, e = ptr[k], ptr[k + 1]
            if diag[k] <= 0 or s == e:
                w[s:e] = 0
                continue
            a, z = M.indptr[s], M.indptr[e]
            terms = M.data[a:z] * w[M.indices[a:z]]
            acc = np.add.reduceat(terms, M.indptr[s:e] - a) + b[pix[s:e]] @ Vcb[k]
            raw[s:e] = w[s:e] + (U[s:e] - acc) / diag[k]
            w[s:e] = np.maximum(raw[s:e], 0)
        if Ub is not None:
            A_cur = sp.csc_matrix((w, pix, ptr), shape=(d, K))
            for j in range(nb):
                if Vbb[j, j] > 0:
                    fit = A_cur @ Vcb[:, j] + b @ Vbb[:, j]
                    b[:, j] = np.maximum(b[:, j] + (Ub[:, j] - fit) / Vbb[j, j], 0)
    shaping = Shaping() if shaping is None else shaping
    norms = np.sqrt(diag)
    if surround:
        levels = surround_levels(raw, pix, _values_on(A, supports) > 0, ptr, dims)
        raw -= np.repeat(levels, sizes).astype(raw.dtype)
    cols = [shape_footprint(pix[ptr[k]:ptr[k + 1]], raw[ptr[k]:ptr[k + 1]], dims, shaping,
                            sn, norms[k]) if diag[k] > 0 else (pix[:0], w[:0])
            for k in range(K)]
    A_new = from_columns([c[0] for c in cols], [c[1] for c in cols], d)
    return A_new, b
