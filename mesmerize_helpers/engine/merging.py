"""Merging of components that are one source: overlapping in space and correlated in time,
or with near-identical footprints."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .footprints import as_footprints, from_columns
from .linalg import pair_dots

__all__ = ["DUPLICATE_THR", "find_merges", "merge_components"]

#: Footprint cosine similarity above which two components are one source whatever their
#: traces say. Two somata whose footprints are this similar lie closer than about half a
#: soma width and cannot be told apart, while two copies of one cell can share its activity
#: in any proportion, which makes their traces poorly correlated.
DUPLICATE_THR = 0.7


def _zscore_rows(C: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (a constant row stays 0)."""
    Cc = np.array(C, np.float64)  # one copy, worked on in place (K x T: long movies)
    Cc -= Cc.mean(axis=1, keepdims=True)
    nrm = np.sqrt(np.einsum("kt,kt->k", Cc, Cc))  # no squared copy
    nrm[nrm == 0] = np.inf
    Cc /= nrm[:, None]
    return Cc


def find_merges(
    A: Any, C: np.ndarray, merge_thr: float, dup_thr: float = DUPLICATE_THR
) -> list[np.ndarray]:
    """Groups (of size >= 2) of components to merge.

    Two components are linked when their footprints share pixels and the correlation of
    their traces exceeds ``merge_thr``, or when their footprints are near copies (cosine
    similarity above ``dup_thr``). Linked pairs are taken best first (highest correlation or
    similarity), each component in one pair at most: bigger groups form over repeated passes.
    Only pairs that share pixels are compared, so the cost grows with K, not K^2.

    Parameters
    ----------
    A
        (pixels, K) non-negative footprints (scipy.sparse or dense).
    C
        (K, T) traces.
    merge_thr, dup_thr
        Thresholds on trace correlation and footprint cosine similarity.

    Returns
    -------
    list of np.ndarray
        Component indices of each pair to merge.
    """
    K = A.shape[1]
    if K < 2:
        return []
    As = as_footprints(A, np.float64)
    gram = (As.T @ As).tocsr()
    nrm = np.sqrt(np.maximum(gram.diagonal(), 1e-30))
    pairs = sp.triu(gram, k=1).tocoo()  # non-negative footprints: > 0 where they overlap
    order = np.lexsort((pairs.col, pairs.row))
    i, j = pairs.row[order].astype(np.int64), pairs.col[order].astype(np.int64)
    if not i.size:
        return []
    cos = pairs.data[order] / (nrm[i] * nrm[j])
    corr = pair_dots(_zscore_rows(C), i, j)
    # near copies, or clearly overlapping and fairly correlated (a cell split in two parts)
    link = (corr > merge_thr) | (cos > dup_thr) | ((cos > 0.5) & (corr > 0.5))
    i, j, score = i[link], j[link], np.maximum(corr, cos)[link]
    # merge pairs, best first, each component at most once per pass: taking connected
    # pieces of the graph instead would chain neighbours into one giant component
    used = np.zeros(K, bool)
    groups = []
    for a, b in zip(*(x[np.argsort(-score, kind="stable")] for x in (i, j))):
        if not (used[a] or used[b]):
            used[a] = used[b] = True
            groups.append(np.array([a, b]))
    return groups


def _rank1_of_sum(
    Ag: np.ndarray, Cg: np.ndarray, c0: np.ndarray, n_iter: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-1 non-negative factorization of ``Ag @ Cg`` without forming the product.

    Parameters
    ----------
    Ag
        (pixels, g) footprints of a group (restricted to their support).
    Cg
        (g, T) traces.
    c0
        (T,) initial trace.

    Returns
    -------
    a, c
        (pixels,) and (T,) non-negative factors.
    """
    c = np.maximum(c0, 0).astype(np.float64)
    a = np.zeros(Ag.shape[0])
    for _ in range(n_iter):
        cc = c @ c
        if cc <= 0:
            break
        a = np.maximum(Ag @ (Cg @ c) / cc, 0)
        aa = a @ a
        if aa <= 0:
            break
        c = np.maximum(Cg.T @ (Ag.T @ a) / aa, 0)
    return a, c


def merge_components(
    A: Any, C: np.ndarray, merge_thr: float, max_rounds: int = 10,
    return_origins: bool = False,
) -> (tuple[sp.csc_matrix, np.ndarray, int]
      | tuple[sp.csc_matrix, np.ndarray, int, list[np.ndarray]]):
    """Replace each group of components that are one source by a single component.

    The merged component is the rank-1 non-negative factorization of the group's summed
    contribution ``sum_i a_i c_i`` on the union of their supports. Merging repeats until no
    group is left (or ``max_rounds``).

    Parameters
    ----------
    A
        (pixels, K) non-negative footprints (scipy.sparse or dense).
    C
        (K, T) traces.
    merge_thr
        Trace correlation above which overlapping components are merged.
    max_rounds
        Maximum number of merge passes.
    return_origins
        Also return, for each output component, the input components it was made of.

    Returns
    -------
    A, C, n_removed
        The new footprints (``scipy.sparse.csc_matrix`` float32) and traces (merged
        components appended at the end) and the number of components removed.
    origins
        Only with ``return_origins``: list of (n_members,) arrays of input indices, one per
        output component, so that per-component state can follow a merge.
    """
    A = as_footprints(A)
    C = np.asarray(C)
    K0 = A.shape[1]
    origins = [np.array([k]) for k in range(K0)]
    for _ in range(max_rounds):
        groups = find_merges(A, C, merge_thr)
        if not groups:
            break
        drop = np.concatenate(groups)
        new_idx, new_val, new_C, new_origins = [], [], [], []
        for grp in groups:
            Ag = A[:, grp]
            sup = np.unique(Ag.indices)
            Ag = Ag[sup].toarray().astype(np.float64)
            Cg = C[grp].astype(np.float64)
            # start from the trace of the strongest member
            strongest = int(np.argmax(np.linalg.norm(Ag, axis=0) * Cg.max(axis=1)))
            a, c = _rank1_of_sum(Ag, Cg, Cg[strongest])
            nrm = np.linalg.norm(a)
            if nrm == 0:
                continue
            new_idx.append(sup)
            new_val.append(a / nrm)
            new_C.append(c * nrm)
            new_origins.append(np.concatenate([origins[g] for g in grp]))
        keep = np.setdiff1d(np.arange(A.shape[1]), drop)
        A = sp.hstack([A[:, keep], from_columns(new_idx, new_val, A.shape[0])], format="csc")
        A = as_footprints(A)
        C = np.vstack([C[keep]] + ([np.stack(new_C)] if new_C else []))
        origins = [origins[k] for k in keep] + new_origins
    out = A, C.astype(np.float32), K0 - A.shape[1]
    return (*out, origins) if return_origins else out
