"""Footprints shaped like cells: the shaping step on its own, and CNMF / CNMF-E on generated
movies that resemble real two-photon data (dim, crowded, neuropil as bright as the cells),
scored against the true footprints.

Before the shaping (e6331c8), on the movie of ``dense``: accepted footprints at 0.2 x peak
had a median of 8-11 separate pieces and solidity 0.39-0.42, matched ones an IoU of 0.62-0.70
with the truth, F1 (IoU >= 0.5) 0.55-0.67; seeded from disks, 3 pieces, solidity 0.65-0.73,
IoU 0.74-0.79 (four seeds of the generator). The thresholds below sit between those and what
the shaping gives (1 piece, solidity 0.93-0.95, IoU 0.85-0.89, F1 0.87-0.92).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mesmerize_helpers.engine.anatomy import disk_masks
from mesmerize_helpers.engine.cnmf import cnmf_params, evaluate_components, fit_cnmf
from mesmerize_helpers.engine.shaping import Shaping, shape_footprint, shaping_params
from mesmerize_helpers.scoring import (
    centroids,
    footprint_masks,
    footprint_shapes,
    match_by_iou,
    row_correlation,
)
from mesmerize_helpers.synthetic import simulate_1p, simulate_2p_dense

DIMS = (40, 40)


def _fortran(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (Fortran order) and values of an image's non-zero pixels."""
    flat = img.ravel(order="F")
    idx = np.flatnonzero(flat)
    return idx, flat[idx]


def _image(idx: np.ndarray, val: np.ndarray, dims=DIMS) -> np.ndarray:
    out = np.zeros(dims[0] * dims[1])
    out[idx] = val
    return out.reshape(dims, order="F")


def _soma(cy: float, cx: float, r: float = 4.0, amp: float = 10.0, dims=DIMS) -> np.ndarray:
    yy, xx = np.mgrid[: dims[0], : dims[1]]
    return np.clip(r + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1) * amp


# ------------------------------------------------------------------------------ the step


def test_noise_cloud_around_a_soma_is_cut_to_the_soma():
    rng = np.random.default_rng(0)
    soma = _soma(20, 20, amp=2.5)  # a dim cell: 2.5 noise levels at each of its pixels
    sn, norm = np.ones(DIMS[0] * DIMS[1]), 1.0  # the estimate's noise: 1 at every pixel
    yy, xx = np.mgrid[: DIMS[0], : DIMS[1]]
    region = np.hypot(yy - 20, xx - 20) <= 12  # what the footprint may occupy
    est = (soma + rng.standard_normal(DIMS)) * region  # least-squares values, +- noise
    # the non-negative estimate alone: rectified noise all over the region
    assert footprint_shapes(np.maximum(est, 0)[None]).pieces[0] > 10
    shaping = shaping_params(cnmf_params({}))
    out = _image(*shape_footprint(*_fortran(est), DIMS, shaping, sn, norm))
    shape = footprint_shapes(out[None])
    assert shape.pieces[0] == 1 and shape.solidity[0] > 0.9
    # all of it on the cell; the cell's rim, within a pixel of the edge, is too faint to
    # pass the noise test at 2.5 noise levels
    truth = soma > 0
    assert not (out > 0)[~truth].any() and (out > 0).sum() > 0.6 * truth.sum()
    # twice as bright: the whole cell
    out = _image(*shape_footprint(*_fortran(2 * soma * region + est - soma), DIMS, shaping,
                                  sn, norm))
    assert ((out > 0) & truth).sum() / ((out > 0) | truth).sum() > 0.85
    # a footprint of pure noise (no cell) leaves nothing
    noise = rng.standard_normal(DIMS) * region
    assert shape_footprint(*_fortran(noise), DIMS, Shaping(), sn, norm)[0].size == 0
    # ... and the test scales with the trace: the same values from a 20x stronger trace
    # (noise 20x smaller relative to them) keep the whole region
    idx, _ = shape_footprint(*_fortran(noise + 3.0 * region), DIMS, Shaping(), sn, 20.0)
    assert idx.size > 0.8 * region.sum()


def test_caiman_thresholds_and_pieces():
    two = _soma(12, 12) + 0.5 * _soma(28, 28)  # two separate blobs, the second dimmer
    idx_val = _fortran(two)
    # extract_cc: the piece with most energy only; without it, both
    one = _image(*shape_footprint(*idx_val, DIMS, Shaping()))
    assert one[12, 12] > 0 and one[28, 28] == 0
    both = _image(*shape_footprint(*idx_val, DIMS, Shaping(extract_cc=False)))
    assert both[12, 12] > 0 and both[28, 28] > 0
    # thr_method 'max': pixels above maxthr x peak (the dim blob is 0.5 x peak)
    s = Shaping(thr_method="max", maxthr=0.6, extract_cc=False)
    assert _image(*shape_footprint(*idx_val, DIMS, s))[28, 28] == 0
    # 'nrg': the largest pixels holding nrgthr of the energy (the bright blob holds 80 %)
    s = Shaping(nrgthr=0.75, extract_cc=False)
    kept = _image(*shape_footprint(*idx_val, DIMS, s))
    assert kept[12, 12] > 0 and kept[28, 28] == 0
    # the 3 x 3 median removes isolated specks, a soma keeps its body
    specks = two.copy()
    specks[2, 30] = specks[30, 3] = 50.0
    out = _image(*shape_footprint(*_fortran(specks), DIMS, Shaping(extract_cc=False)))
    assert out[2, 30] == 0 and out[30, 3] == 0 and (out[8:17, 8:17] > 0).sum() > 50


def test_opening_removes_narrow_processes_and_keeps_cells_at_the_border():
    cell = _soma(20, 20)
    cell[20, 25:38] = 10.0  # a one-pixel-wide process leaving the soma
    s = shaping_params(cnmf_params({"gSig": 4}))
    assert s.open_radius == 2
    out = _image(*shape_footprint(*_fortran(cell), DIMS, s))
    assert out[20, 20] > 0 and out[20, 30:].sum() == 0
    # a soma cut by the frame's border keeps the pixels along it
    edge = _soma(20, 1)
    out = _image(*shape_footprint(*_fortran(edge), DIMS, s))
    assert (out[17:24, 0] > 0).all()


@pytest.mark.parametrize("key, value", [
    ("medw", (3,)), ("medw", 0), ("medw", "3x3"), ("thr_method", "mean"), ("maxthr", 1.5),
    ("maxthr", "0.1"), ("nrgthr", 0), ("extract_cc", "yes"), ("se", np.ones((2, 2))),
    ("ss", [[0, 2, 0]]),
])
def test_bad_thresholding_params_are_clear_errors(key, value):
    with pytest.raises(ValueError, match=key):
        cnmf_params({key: value})


def test_thresholding_params_accept_caimans_forms():
    P = cnmf_params({"medw": (5, 5), "thr_method": "max", "maxthr": 0.2, "nrgthr": 0.99,
                     "extract_cc": False, "se": np.ones((5, 5), int), "ss": np.eye(3, dtype=int)})
    s = shaping_params(P)
    assert s.medw == (5, 5) and s.thr_method == "max" and s.maxthr == 0.2
    assert s.se.shape == (5, 5) and not s.extract_cc and s.ss[0, 1] == 0
    assert shaping_params(cnmf_params({})).medw == (3, 3)  # CaImAn's None: 3 x 3


# ------------------------------------------------------------------------------ CNMF


PARAMS = {"fr": 10, "decay_time": 1.0, "p": 1, "nb": 1, "K": 40, "gSig": [4, 4], "ssub": 1,
          "tsub": 1, "min_SNR": 2.0, "rval_thr": 0.8}


@pytest.fixture(scope="module")
def dense():
    """96 x 96, 400 frames, 25 touching somata, ~2 photons per pixel and frame."""
    return simulate_2p_dense(n_frames=400, shape=(96, 96), n_neurons=25, seed=1)


def _score(sim, est):
    """Shapes of the accepted footprints, and their match to the firing neurons."""
    good = est.idx_components
    fp = est.footprints(good)
    firing = sim.spikes.any(axis=1)
    truth = sim.footprints[firing]
    m = match_by_iou(truth, fp, 0.3)  # pairs to compare, then IoU >= 0.5 for the F1
    t, f = footprint_masks(truth[m.true_idx]), footprint_masks(fp[m.found_idx])
    iou = (t & f).sum(1) / (t | f).sum(1)
    corr = row_correlation(sim.calcium[firing][m.true_idx], est.C[good[m.found_idx]])
    return footprint_shapes(fp), iou, match_by_iou(truth, fp).f1, corr


def test_activity_fit_footprints_are_single_compact_cells(dense):
    est = evaluate_components(fit_cnmf(dense.movie, PARAMS, progress=False), dense.movie,
                              PARAMS)
    shape, iou, f1, corr = _score(dense, est)
    assert np.median(shape.pieces) == 1 and shape.pieces.max() == 1
    assert np.nanmedian(shape.solidity) > 0.85
    assert np.median(iou) > 0.8 and f1 > 0.8
    assert np.median(corr) > 0.85


def test_seeded_fit_turns_disks_into_the_cells_shapes(dense):
    centres = centroids(dense.masks(0.2))
    disks = disk_masks(centres, dense.movie.shape[1:], PARAMS["gSig"])
    est = evaluate_components(fit_cnmf(dense.movie, PARAMS, Ain=disks, progress=False),
                              dense.movie, PARAMS)
    shape, iou, f1, corr = _score(dense, est)
    assert np.median(shape.pieces) == 1 and np.nanmedian(shape.solidity) > 0.85
    assert np.median(iou) > 0.8 and f1 > 0.9
    assert np.median(corr) > 0.85


def test_cnmfe_footprints_are_single_compact_cells():
    from mesmerize_helpers.engine.cnmfe import evaluate_components as evaluate_e
    from mesmerize_helpers.engine.cnmfe import fit_cnmfe

    # before the shaping: 2 pieces, solidity 0.84, IoU 0.84 (now 1, 0.95, 0.91)
    sim = simulate_1p(n_frames=600, shape=(96, 96), n_neurons=20, seed=4)
    params = {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5}
    est = evaluate_e(fit_cnmfe(sim.movie, params, progress=False), sim.movie, params)
    fp = est.footprints(est.idx_components)
    shape = footprint_shapes(fp)
    m = match_by_iou(sim.footprints, fp, 0.3)
    t, f = footprint_masks(sim.footprints[m.true_idx]), footprint_masks(fp[m.found_idx])
    assert np.median(shape.pieces) == 1 and np.nanmedian(shape.solidity) > 0.9
    assert np.median((t & f).sum(1) / (t | f).sum(1)) > 0.88
    assert match_by_iou(sim.footprints, fp).f1 > 0.9


# ------------------------------------------------------------------------------ real data

#: The real movies (``../shared/data`` next to the repository, or ``$MESMERIZE_BENCH_DATA``).
REAL = Path(os.environ.get("MESMERIZE_BENCH_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))
NF_MOVIE = REAL / "neurofinder00_tl256_600x256x256_uint16.tif"


@pytest.mark.realdata
@pytest.mark.skipif(not NF_MOVIE.exists(), reason=f"{NF_MOVIE} not found")
def test_neurofinder_seeded_footprints_are_compact_cells():
    """The labelled Neurofinder quarter, seeded as ``params["Ain"] = "somata"`` does. Before
    the shaping: median 4 pieces, solidity 0.48, F1 by IoU 0.11 (now 1, 0.91, 0.20)."""
    import tifffile

    from mesmerize_helpers.engine.anatomy import find_somata

    movie = tifffile.imread(NF_MOVIE)
    labels = np.load(REAL / "neurofinder00_tl256_roi_masks.npz")["masks"]
    params = {"fr": 7, "decay_time": 1.0, "p": 1, "nb": 1, "gSig": [4, 4], "ssub": 1,
              "tsub": 1, "min_SNR": 2.0, "rval_thr": 0.8}
    seeds = disk_masks(find_somata(movie.mean(axis=0), (4, 4)), movie.shape[1:], (4, 4))
    est = evaluate_components(fit_cnmf(movie, params, Ain=seeds, progress=False), movie,
                              params)
    fp = est.footprints(est.idx_components)
    shape = footprint_shapes(fp)
    assert np.median(shape.pieces) == 1 and np.nanmedian(shape.solidity) > 0.8
    assert match_by_iou(labels.astype(np.float32), fp).f1 > 0.15
