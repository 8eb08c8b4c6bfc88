"""Source extraction in bounded memory (issue 14): the pixel-major copy of the movie, read in
blocks sized to a budget, gives the fit the whole movie in memory gives; the copy is written
once per input, shared, replaced by a re-run and named so that CaImAn reads it; a budget too
small for the smallest block is an early, clear failure."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mesmerize_helpers.engine import cnmf, cnmfe
from mesmerize_helpers.engine.data import MB, Budget, DataMatrix, MemoryBudgetError
from mesmerize_helpers.engine.model import movie_to_Y
from mesmerize_helpers.io.estimates import load_estimates
from mesmerize_helpers.io.movies import read_caiman_mmap
from mesmerize_helpers.jobs import run_item
from mesmerize_helpers.outputs import FrameReader, MovieWriter
from mesmerize_helpers.pixel_major import FileWorkspace, write_pixel_major, yr_name
from mesmerize_helpers.synthetic import save_tiff, simulate_1p, simulate_2p


def _on_disk(movie: np.ndarray, folder, budget: Budget) -> DataMatrix:
    """``movie`` written as its pixel-major file (as a job does: from a file of frames, in
    small bands) and opened for the engine."""
    T, h, w = movie.shape
    with MovieWriter(folder / "frames.npy", movie.shape) as out:
        out[0:T] = movie
    path = folder / yr_name("test", (h, w), T)
    write_pixel_major(FrameReader(np.load(folder / "frames.npy", mmap_mode="r")), path,
                      band_bytes=max(T * w * 4, MB))
    (folder / "frames.npy").unlink()
    yr = np.memmap(path, np.float32, "r", shape=(h * w, T))
    return DataMatrix(yr, (h, w), budget)


def _same_fit(a, b, rtol: float = 1e-3) -> None:
    """Same components (footprints and their order), traces equal to float tolerance."""
    assert a.A.shape == b.A.shape
    np.testing.assert_array_equal(a.idx_components, b.idx_components)
    scale_a = np.abs(a.A.toarray()).max()
    np.testing.assert_allclose(a.A.toarray(), b.A.toarray(), atol=rtol * scale_a)
    for name in ("C", "YrA"):
        x, y = getattr(a, name), getattr(b, name)
        span = np.ptp(x, axis=1, keepdims=True) + 1e-6
        assert (np.abs(x - y) / span).max() < rtol, name


def test_the_yr_file_is_the_movie_pixel_major(tmp_path):
    """CaImAn's C-order layout (pixels in Fortran order, each trace contiguous), NaN filled
    with the pixel's mean, and read as CaImAn's (frames, y, x) view of ``Yr``."""
    rng = np.random.default_rng(0)
    movie = rng.normal(10, 1, (150, 12, 9)).astype(np.float32)
    movie[3:7, 0, :2] = np.nan
    with pytest.warns(UserWarning, match="missing values"):
        data = _on_disk(movie, tmp_path, Budget())
    with pytest.warns(UserWarning, match="missing values"):
        Y, _ = movie_to_Y(movie)
    np.testing.assert_array_equal(data.rows(0, data.n_pixels), Y)
    view = read_caiman_mmap(tmp_path / yr_name("test", (12, 9), 150))
    assert view.shape == movie.shape
    np.testing.assert_array_equal(np.asarray(view)[10], movie[10])
    # the reads the engine makes: rows, gathered rows, frames, rows at frames
    np.testing.assert_array_equal(data.take_rows(np.array([1, 2, 3, 50, 51])), Y[[1, 2, 3, 50, 51]])
    np.testing.assert_array_equal(data.frames(20, 30), Y[:, 20:30])
    np.testing.assert_array_equal(data.take(np.array([4, 90]), np.array([0, 7, 149])),
                                  Y[np.ix_([4, 90], [0, 7, 149])])


@pytest.mark.parametrize("band_rows", [0.5, 1, 3, 12])
def test_the_copy_transposed_band_by_band_is_the_data_matrix(tmp_path, band_rows):
    """A movie file transposed in bands of image rows (or parts of a row: ``band_rows`` <
    1) gives the in-memory data matrix, byte for byte, NaN filled the same way;
    each byte written once (the file's size, whatever the band)."""
    rng = np.random.default_rng(1)
    movie = rng.normal(10, 1, (150, 12, 9)).astype(np.float32)
    movie[3:7, 0, :2] = np.nan
    movie[:, 5, 4] = np.nan  # a pixel missing in every frame
    with MovieWriter(tmp_path / "m.npy", movie.shape) as out:
        out[0:150] = movie
    reader = FrameReader(np.load(tmp_path / "m.npy", mmap_mode="r"))
    band = int(band_rows * 9 * 150 * 4)
    with pytest.warns(UserWarning, match="3 pixel"):
        seen = write_pixel_major(reader, tmp_path / "band.mmap", band)
    assert seen.missing_pixels == 3 and seen.nonfinite_values == 4 * 2 + 150
    with pytest.warns(UserWarning, match="missing values"):
        Y, _ = movie_to_Y(movie)  # the in-memory data matrix
    assert (tmp_path / "band.mmap").read_bytes() == Y.tobytes()
    assert (tmp_path / "band.mmap").stat().st_size == 12 * 9 * 150 * 4


def test_a_uint16_movie_is_transposed_to_float32(tmp_path):
    movie = np.random.default_rng(2).integers(0, 60000, (40, 7, 5)).astype(np.uint16)
    np.save(tmp_path / "m.npy", movie)
    write_pixel_major(FrameReader(np.load(tmp_path / "m.npy", mmap_mode="r")),
                      tmp_path / "yr.mmap", band_bytes=3 * 40 * 4)
    yr = np.fromfile(tmp_path / "yr.mmap", np.float32).reshape(35, 40)
    np.testing.assert_array_equal(yr, movie.reshape(40, -1, order="F").T.astype(np.float32))


def test_products_in_blocks_equal_the_whole(tmp_path):
    movie = np.random.default_rng(1).normal(5, 2, (300, 20, 16)).astype(np.float32)
    whole = DataMatrix(movie_to_Y(movie)[0], (20, 16))
    blocks = _on_disk(movie, tmp_path, Budget(total=400 * MB, block=64 * 300 * 4))
    assert blocks.rows_per_block() == 64  # five blocks for 320 pixels
    U = np.random.default_rng(2).random((320, 3)).astype(np.float32)
    V = np.random.default_rng(3).random((300, 2)).astype(np.float32)
    np.testing.assert_allclose(blocks.project(U), whole.project(U), rtol=1e-5)
    np.testing.assert_allclose(blocks.dot(V), whole.dot(V), rtol=1e-6)
    supports = [np.array([0, 1, 2, 100]), np.array([60, 61, 62, 63, 64, 65, 300])]
    C = np.random.default_rng(4).random((2, 300)).astype(np.float32)
    np.testing.assert_allclose(blocks.support_dots(supports, C),
                               whole.support_dots(supports, C), rtol=1e-6)


def test_cnmf_with_a_tiny_budget_gives_the_in_memory_fit(tmp_path):
    """64 x 64 x 2000 frames read in blocks of 1 MB (about 40 blocks per pass), patches
    from their own pixels: the same components as with the movie in memory."""
    sim = simulate_2p(n_frames=2000, shape=(64, 64), n_neurons=10, seed=3)
    params = {"fr": 30, "decay_time": 0.4, "p": 1, "nb": 1, "rf": 16, "stride": 6, "K": 4,
              "gSig": [4, 4], "merge_thr": 0.8}
    ram = cnmf.evaluate_components(cnmf.fit_cnmf(sim.movie, params, progress=False),
                                   sim.movie, params)
    data = _on_disk(sim.movie, tmp_path, Budget(total=500 * MB, block=1 * MB))
    assert data.rows_per_block() < data.n_pixels / 30
    chunked = cnmf.evaluate_components(cnmf.fit_cnmf(data, params, progress=False), data,
                                       params)
    assert chunked.n_components >= 8
    _same_fit(ram, chunked)


def test_cnmfe_with_a_tiny_budget_gives_the_in_memory_fit(tmp_path):
    """The ring model solved in strips of the frame over blocks of frames, ``Y - B`` written
    to an (unlinked) file, the evaluation reading only around each component."""
    sim = simulate_1p(n_frames=500, shape=(64, 64), n_neurons=8, seed=2)
    params = {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5,
              "rf": 16, "stride": 8}
    ram = cnmfe.evaluate_components(cnmfe.fit_cnmfe(sim.movie, params, progress=False),
                                    sim.movie, params)
    # 15 MB of working memory: a patch fits, Y - B (8 MB) goes to a file
    budget = Budget(total=430 * MB, block=1 * MB)
    assert budget.work_bytes() // 2 < 64 * 64 * 500 * 4  # FileWorkspace: Y - B to a file
    data = _on_disk(sim.movie, tmp_path, budget)
    workspace = FileWorkspace(tmp_path, budget)
    chunked = cnmfe.fit_cnmfe(data, params, progress=False, workspace=workspace)
    chunked = cnmfe.evaluate_components(chunked, data, params)
    assert chunked.n_components >= 6
    assert not list(tmp_path.glob(".work-*"))  # Y - B files are gone once mapped
    _same_fit(ram, chunked)


def test_a_budget_too_small_fails_early_naming_mem_mb(tmp_path):
    sim = simulate_1p(n_frames=400, shape=(64, 64), n_neurons=4, seed=1)
    data = DataMatrix(movie_to_Y(sim.movie)[0], (64, 64), Budget.from_mb(420))
    with pytest.raises(MemoryBudgetError, match=r"params\['resources'\]\['mem_mb'\] to at "
                                                r"least \d+, or use patches \(rf"):
        cnmfe.fit_cnmfe(data, {"gSig": [3, 3], "min_pnr": 5}, progress=False)
    # the same through a job: a failed item that says so on its first line
    movie = save_tiff(tmp_path / "m.tif", sim.movie)
    manifest = run_item(tmp_path / "item", uuid="u", algo="cnmfe", input_movie=movie,
                        params={"main": {"gSig": [3, 3]}, "resources": {"mem_mb": 420}},
                        progress=False)
    assert not manifest["success"]
    first = manifest["traceback"].splitlines()[0]
    minimum = int(re.search(r"at least (\d+)", first).group(1))
    manifest = run_item(tmp_path / "item", uuid="u", algo="cnmfe", input_movie=movie,
                        params={"main": {"gSig": [3, 3], "min_pnr": 5},
                                "resources": {"mem_mb": minimum}}, progress=False)
    assert manifest["success"], manifest["traceback"]


def test_the_copy_is_written_once_by_the_mcorr_item_and_replaced_by_its_rerun(tmp_path):
    sim = simulate_2p(n_frames=120, shape=(48, 48), n_neurons=5, motion=2.0, seed=4)
    movie = save_tiff(tmp_path / "m.tif", sim.movie)
    parent = tmp_path / "p"
    mcorr = {"main": {"max_shifts": [4, 4], "border_nan": "copy"}}
    first = run_item(parent, uuid="p", algo="mcorr", params=mcorr, input_movie=movie,
                     progress=False)
    yr = parent / first["outputs"]["yr-path"]
    assert re.fullmatch(r"Yr-.+_d1_48_d2_48_d3_1_order_C_frames_120\.mmap", yr.name)
    assert first["run_id"] in yr.name
    registered = np.load(parent / "mcorr.npy")
    np.testing.assert_array_equal(read_caiman_mmap(yr), registered)
    params = {"main": {"gSig": [3, 3], "K": 5}}
    children = [run_item(parent / c, uuid=c, algo="cnmf", params=params, input_movie="",
                         parent_dir=parent, progress=False) for c in ("c1", "c2")]
    for c, child in zip(("c1", "c2"), children):
        assert child["success"], child["traceback"]
        assert (parent / c / child["outputs"]["cnmf-memmap-path"]).resolve() == yr.resolve()
        assert not list((parent / c).glob("*.mmap"))  # no copy of its own
    est = load_estimates(parent / "c1" / "cnmf.hdf5")
    assert est.A.shape[0] == 48 * 48
    # a re-run writes its own copy and removes the previous run's
    second = run_item(parent, uuid="p", algo="mcorr", params=mcorr, input_movie=movie,
                      progress=False)
    assert second["outputs"]["yr-path"] != first["outputs"]["yr-path"]
    assert not yr.exists() and (parent / second["outputs"]["yr-path"]).is_file()
    assert len(list(parent.glob("Yr-*.mmap"))) == 1


def test_a_raw_movie_item_writes_its_copy_and_its_images_in_one_pass(tmp_path):
    sim = simulate_2p(n_frames=100, shape=(40, 40), n_neurons=4, seed=5)
    movie = save_tiff(tmp_path / "m.tif", sim.movie)
    manifest = run_item(tmp_path / "i", uuid="i", algo="cnmf", input_movie=movie,
                        params={"main": {"gSig": [3, 3], "K": 4}}, progress=False)
    assert manifest["success"], manifest["traceback"]
    out = manifest["outputs"]
    assert out["cnmf-memmap-path"].startswith("Yr-") and manifest["run_id"] in out["cnmf-memmap-path"]
    np.testing.assert_array_equal(read_caiman_mmap(tmp_path / "i" / out["cnmf-memmap-path"]),
                                  sim.movie)
    mean = np.load(tmp_path / "i" / out["mean-projection-path"])
    np.testing.assert_allclose(mean, sim.movie.mean(axis=0), rtol=1e-5)


def test_a_movie_that_is_not_a_file_of_frames_is_decoded_once_then_transposed(tmp_path,
                                                                            monkeypatch):
    """An HDF5 movie (or a compressed TIFF) cannot be read by bands of rows: its frames are
    decoded once, into a temporary file of frames (gone afterwards), and the copy is
    transposed from that, as from a plain movie: the same file, every byte written once."""
    import h5py

    from mesmerize_helpers import pixel_major
    from mesmerize_helpers.step_support import cnmf_input

    sim = simulate_2p(n_frames=90, shape=(24, 20), n_neurons=3, seed=6)
    movie = np.round(sim.movie).astype(np.uint16)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f.create_dataset("mov", data=movie, chunks=(10, 24, 20), compression="gzip")
    reads, sources = [], []
    monkeypatch.setattr(pixel_major, "write_pixel_major", lambda frames, *a, _f=(
        pixel_major.write_pixel_major), **k: (sources.append(frames), _f(frames, *a, **k))[1])

    class Counted:  # the HDF5 movie, counting the frames read from it
        def __init__(self, mov):
            self.mov, self.shape, self.dtype = mov, mov.shape, mov.dtype

        def __getitem__(self, key):
            out = self.mov[key]
            reads.append(len(out))
            return out

    folder = tmp_path / "i"
    folder.mkdir()
    with h5py.File(tmp_path / "m.h5", "r") as f:
        data, outputs, images = cnmf_input(Counted(f["mov"]), folder, Budget(total=500 * MB,
                                           block=24 * 20 * 4 * 3 * 7), progress=False,
                                           run_id="r")
    assert sum(reads) == 90  # decoded once
    assert len(sources) == 1 and sources[0].dtype == np.uint16  # transposed from a copy
    assert not list(folder.glob(".frames-*"))
    np.testing.assert_array_equal(read_caiman_mmap(folder / outputs["cnmf-memmap-path"]),
                                  movie.astype(np.float32))
    np.testing.assert_allclose(images["mean"], movie.mean(axis=0), rtol=1e-5)
    # a reader whose frames end before its shape says is an error, not a copy ending in 0s

    class Short(Counted):
        def __getitem__(self, key):
            return self.mov[key][: max(0, 80 - key.start)]

    with h5py.File(tmp_path / "m.h5", "r") as f, pytest.raises(ValueError, match="90 frames"):
        cnmf_input(Short(f["mov"]), folder, Budget(total=500 * MB, block=24 * 20 * 4 * 3 * 7),
                   progress=False, run_id="s")
    assert not list(folder.glob(".frames-*"))


def test_cnmfe_accepts_no_component_in_the_dark_border_of_a_lens():
    """A GRIN lens's field in a dark frame with the sensor's line noise (what a miniscope
    records): CNMF-E finds components on the dark border (line-noise bursts look like
    transients there) and must reject every one of them, keeping the cells."""
    from mesmerize_helpers.scoring import match_by_iou
    from mesmerize_helpers.synthetic import simulate_1p_vignette

    sim = simulate_1p_vignette(n_frames=500, shape=(80, 80), n_neurons=10, seed=0)
    params = {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5}
    est = cnmfe.evaluate_components(cnmfe.fit_cnmfe(sim.movie, params, progress=False),
                                    sim.movie, params)
    peaks = np.asarray(est.A.argmax(axis=0)).ravel()
    border = sim.background["lens"].ravel(order="F")[peaks] < 0.5
    assert border.sum() >= 3  # there is something to reject
    assert not border[est.idx_components].any()
    assert set(est.extra["artefact"][border]) <= {"unlit", "line noise"}
    found = est.footprints(est.idx_components)
    assert match_by_iou(sim.footprints, found).recall >= 0.9


def test_mcorr_job_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    """The mcorr job streams chunks of frames: its memory resource follows the frame size,
    not the movie's length (a 32 x 32 movie of 200,000 frames: a sparse .npy)."""
    from mesmerize_helpers import workflow_support as ws

    config = {"resources": {"mem_mb_min": 100}}
    item = {"algo": "mcorr", "params": {"main": {}}}
    sizes = {}
    for n_frames in (1000, 200_000):
        path = tmp_path / f"m{n_frames}.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (n_frames, 32, 32)).flush()
        sizes[n_frames] = ws.resources(item, str(path), "mem_mb", config)
    assert sizes[200_000] == sizes[1000] < 600


def test_jobs_scan_movies_for_nan_without_mapping_them(tmp_path, monkeypatch):
    """Checking a raw float movie reads frames with pread: a scan through the mapping leaves
    the whole movie in the job's resident memory (7.3 GB for 20,000 frames of 512 x 512).
    The registered movie's NaN (``border_nan=True``) are counted while its pixel-major copy
    is written, not by another read."""
    from mesmerize_helpers import validation
    from mesmerize_helpers.manifest import read_manifest

    scanned = []
    original = validation.nonfinite_pixels

    def spy(movie, *args, **kwargs):
        scanned.append(movie)
        return original(movie, *args, **kwargs)

    monkeypatch.setattr(validation, "nonfinite_pixels", spy)
    sim = simulate_2p(n_frames=60, shape=(32, 32), n_neurons=3, motion=2.0, seed=6)
    raw = tmp_path / "m.npy"
    np.save(raw, sim.movie.astype(np.float32))
    manifest = run_item(tmp_path / "p", uuid="p", algo="mcorr", input_movie=raw,
                        params={"main": {"max_shifts": [4, 4], "border_nan": True}},
                        progress=False)
    assert manifest["success"], manifest["traceback"]
    registered = np.load(tmp_path / "p" / manifest["outputs"]["mcorr-output-path"])
    assert manifest["nonfinite_pixels"] == np.count_nonzero(~np.isfinite(registered)) > 0
    assert "_nonfinite-values" not in manifest["outputs"]
    assert read_manifest(tmp_path / "p")["nonfinite_pixels"] == manifest["nonfinite_pixels"]
    assert len(scanned) == 1  # the raw input only
    assert not any(isinstance(m, np.memmap) for m in scanned)


def test_a_slice_of_frames_is_copied_from_the_file_a_block_of_rows_at_a_time(tmp_path):
    """A slice of frames touches a page of every row: copied whole, a wide range of rows
    left GBs of the file mapped in the job (the ring model of a long 480 x 480 movie)."""
    movie = np.random.default_rng(0).random((300, 64, 64), dtype=np.float32)
    data = _on_disk(movie, tmp_path, Budget(total=500 * MB, block=MB // 4))
    spans = []
    release = data._file.release
    data._file.release = lambda lo, hi: (spans.append(hi - lo), release(lo, hi))
    Y = movie_to_Y(movie)[0]
    np.testing.assert_array_equal(data.block(0, 4096, slice(100, 140)), Y[:, 100:140])
    rows = np.arange(5, 4096, 3)
    np.testing.assert_array_equal(data.take(rows, slice(7, 9)), Y[rows, 7:9])
    np.testing.assert_array_equal(data.frames(10, 20), Y[:, 10:20])
    per = (MB // 4) // (300 * 4)
    assert len(spans) > 3 * (4096 // per) and max(spans) <= per


def test_summary_and_pnr_images_read_a_memmapped_movie_with_pread(tmp_path, monkeypatch):
    """The images a cnmfe item makes of its movie (plain and PNR) read frames with pread:
    through the mapping, two passes over a raw 10,000-frame 480 x 480 movie left it all in
    the job's resident memory (5.2 GB at the job's end)."""
    from mesmerize_helpers.engine import images, pnr_images
    from mesmerize_helpers.outputs import summary_images_for

    given = []
    for module, name in ((images, "summary_images"), (pnr_images, "correlation_pnr")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda movie, *a, _f=original, **k: (
            given.append(movie), _f(movie, *a, **k))[1])
    movie = np.random.default_rng(3).random((128, 24, 20), dtype=np.float32)
    np.save(tmp_path / "m.npy", movie)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    outputs = summary_images_for(mapped, tmp_path, pnr_gsig=3, progress=False)
    assert len(given) == 2 and not any(isinstance(m, np.memmap) for m in given)
    np.testing.assert_allclose(np.load(tmp_path / outputs["mean-projection-path"]),
                               movie.mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / outputs["pnr-image-path"]),
                                  pnr_images.correlation_pnr(movie, 3)[1])


def test_cnmfe_patches_too_long_for_the_budget_are_fitted_from_their_file(tmp_path,
                                                                         monkeypatch):
    """A patch whose data and working copies do not fit the budget (a long movie) is fitted
    from the pixel-major file a block of frames at a time, its seeding movies and ``Y - B``
    in unlinked files: the in-memory fit, with memory that does not grow with frames."""
    from mesmerize_helpers import pixel_major
    from mesmerize_helpers.engine.cnmfe import streamed_patch_bytes
    from mesmerize_helpers.engine.cnmfe_steps import cnmfe_params, patch_bytes

    sim = simulate_1p(n_frames=500, shape=(64, 64), n_neurons=8, seed=2)
    params = {"gSig": [3, 3], "fr": 10, "decay_time": 0.6, "min_corr": 0.8, "min_pnr": 5,
              "rf": 16, "stride": 8}
    ram = cnmfe.evaluate_components(cnmfe.fit_cnmfe(sim.movie, params, progress=False),
                                    sim.movie, params)
    budget = Budget(total=410 * MB, block=MB // 4)  # 5 MB of work, blocks of 64 frames
    assert patch_bytes(32 * 32, 500, cnmfe_params(params)) > budget.work_bytes()
    assert streamed_patch_bytes(budget) <= budget.work_bytes()
    stores, materialized = [], []
    init = pixel_major.FileFrames.__init__
    monkeypatch.setattr(pixel_major.FileFrames, "__init__",
                        lambda self, *a, **k: (stores.append(a[1]), init(self, *a, **k))[1])
    monkeypatch.setattr(DataMatrix, "materialize",
                        lambda self: materialized.append(self.shape) or self)
    data = _on_disk(sim.movie, tmp_path, budget)
    fit = cnmfe.fit_cnmfe(data, params, progress=False,
                          workspace=FileWorkspace(tmp_path, budget))
    streamed = cnmfe.evaluate_components(fit, data, params)
    # every patch's seeding movies went to files (raw and filtered, at least twice per
    # patch: the first search and the search in the residual), and no patch was read whole
    assert len(stores) >= 2 * 2 * 9 and all(s[0] == 500 for s in stores)
    assert not materialized
    assert not list(tmp_path.glob(".work-*")) and not list(tmp_path.glob(".frames-*"))
    assert streamed.n_components >= 6
    _same_fit(ram, streamed)


def test_long_movies_patches_get_the_memory_cnmf_needs_from_the_scheduler(tmp_path):
    """CNMF fits each patch in memory (its pixels x frames several times): the job's
    resource follows that, so a long movie's cnmf job runs instead of stopping with a
    MemoryBudgetError; CNMF-E fits a patch too long for the budget from its file, so its
    request stays the default (a sparse 64 x 64 .npy of 100,000 frames; 48 x 48 px
    patches)."""
    from mesmerize_helpers import workflow_support as ws
    from mesmerize_helpers.engine.cnmf_field import cnmf_params
    from mesmerize_helpers.engine.cnmfe import streamed_patch_bytes
    from mesmerize_helpers.engine.data import BASE_BYTES, Budget, require
    from mesmerize_helpers.engine.patches import patch_bytes

    path = tmp_path / "long.npy"
    np.lib.format.open_memmap(path, "w+", np.float32, (100_000, 64, 64)).flush()
    main = {"rf": 24, "stride": 12, "gSig": [3, 3], "ssub": 1, "tsub": 1}
    mem = {algo: ws.resources({"algo": algo, "params": {"main": main}}, str(path), "mem_mb", {})
           for algo in ("cnmf", "cnmfe")}
    need = patch_bytes(48 * 48, 100_000, cnmf_params(main))
    assert mem["cnmf"] * MB >= BASE_BYTES + 2 * need > 3000 * MB
    require(Budget.from_mb(mem["cnmf"]), need, "a patch", "")  # the job's own check passes
    with pytest.raises(MemoryBudgetError):
        require(Budget.from_mb(3000), need, "a patch", "")
    assert mem["cnmfe"] <= 3000
    require(Budget.from_mb(mem["cnmfe"]), streamed_patch_bytes(Budget.from_mb(mem["cnmfe"])),
            "a patch", "")
    short = tmp_path / "short.npy"
    np.lib.format.open_memmap(short, "w+", np.float32, (1000, 64, 64)).flush()
    assert ws.resources({"algo": "cnmf", "params": {"main": main}}, str(short), "mem_mb",
                        {}) <= 3000
