"""The batch viewer: its array reductions, item states, the page's data against the
accessors, its size budget, the CLI and the notebook object. The browser tests are in
test_viewer_browser.py."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CNMF
from scipy import ndimage
from viewer_batch import make_batch

from mesmerize_helpers.cli import main
from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.io.estimates import save_estimates
from mesmerize_helpers.manifest import write_manifest
from mesmerize_helpers.plots import report_files, write_item_report
from mesmerize_helpers.runner import report_targets, snakemake_command
from mesmerize_helpers.viewer import BatchView, batch_html, write_viewer
from mesmerize_helpers.viewer.arrays import envelope, points_per_trace, residual_motion, to_uint8
from mesmerize_helpers.viewer.data import error_line, item_state
from mesmerize_helpers.viewer.page import build_document


@pytest.fixture(scope="module")
def viewer_batch(tmp_path_factory):
    return make_batch(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def document(viewer_batch):
    return build_document(viewer_batch, progress=False)


# --- arrays -------------------------------------------------------------------------------

def test_envelope_keeps_short_traces_and_every_extreme_of_long_ones():
    rng = np.random.default_rng(0)
    short = rng.normal(size=(3, 150)).astype(np.float32)
    frames, values = envelope(short, 200)
    np.testing.assert_array_equal(frames, np.arange(150))
    np.testing.assert_array_equal(values, short)

    long = rng.normal(size=(4, 10_007)).astype(np.float32)
    long[2, 4321] = 50.0  # a single-frame spike must survive
    frames, values = envelope(long, 300)
    assert values.shape[1] == len(frames) <= 300
    assert np.all(np.diff(frames) > 0) and frames[-1] <= 10_006
    np.testing.assert_array_equal(values.max(axis=1), long.max(axis=1))
    np.testing.assert_array_equal(values.min(axis=1), long.min(axis=1))
    # each bin's pair is its min and max in the order they occur
    width = int(frames[2] - frames[0])
    first_bin = long[0, :width]
    pair = [first_bin.min(), first_bin.max()]
    if first_bin.argmax() < first_bin.argmin():
        pair = pair[::-1]
    np.testing.assert_array_equal(values[0, :2], pair)


def test_points_per_trace_follows_the_budget_within_bounds():
    # 1 MB for 100 float32 traces, base64 (16/3 bytes per sample): 1875 samples each
    assert points_per_trace(1e6, 100, 50_000) == 1875
    assert points_per_trace(1e6, 100, 1000) == 1000  # never more than the frames
    assert points_per_trace(0, 100, 50_000) == 200  # a floor, so a trace stays readable


def test_to_uint8_spans_the_percentiles_and_zeroes_nan():
    image = np.linspace(0, 1, 10_000, dtype=np.float32).reshape(100, 100)
    image[0, 0] = np.nan
    out = to_uint8(image, 1, 99)
    assert out.dtype == np.uint8 and out[0, 0] == 0
    # the 1st and 99th percentiles of 0..1 are about 0.01 and 0.99
    assert abs(int(out[50, 50]) - 255 * (image[50, 50] - 0.01) / 0.98) <= 1
    assert out[-1, -1] == 255 and out[0, 5] == 0


def test_residual_motion_measures_known_shifts():
    rng = np.random.default_rng(1)
    scene = ndimage.gaussian_filter(rng.normal(size=(80, 80)), 3).astype(np.float32)
    still = np.stack([scene + rng.normal(0, 0.002, scene.shape) for _ in range(20)])
    assert residual_motion(still) < 0.1
    # samples moved by known random shifts: each is off their mean by its shift
    shifts = rng.normal(0, 0.7, (30, 2))
    shifts -= shifts.mean(axis=0)
    moved = np.stack([ndimage.shift(scene, s, mode="wrap") + rng.normal(0, 0.01, scene.shape)
                      for s in shifts])
    truth = np.sqrt(np.mean(np.sum(shifts ** 2, axis=1)))
    assert residual_motion(moved) == pytest.approx(truth, abs=0.1)


# --- states ---------------------------------------------------------------------------

def test_error_line_is_the_exception_line():
    tb = ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n"
          "    f()\nValueError: bad gSig\nsecond line of the message\n")
    assert error_line(tb) == "ValueError: bad gSig"
    chained = ("Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'\n\n"
               "During handling of the above exception, another exception occurred:\n\n"
               "Traceback (most recent call last):\n  File \"b.py\", line 2\n"
               "    g()\nRuntimeError: cannot read movie\n")
    assert error_line(chained) == "RuntimeError: cannot read movie"


def test_item_state_from_manifests():
    params = {"main": {"K": 5}}
    done = {"success": True, "params": params, "ran_time": "2024-01-02T00:00:00"}
    assert item_state(params, None, None) == ("not run", "")
    failed = {"success": False, "traceback": "Traceback ...\n  File x\nOSError: disk full\n"}
    assert item_state(params, failed, None) == ("FAILED", "OSError: disk full")
    assert item_state(params, done, None) == ("done", "")
    assert item_state({"main": {"K": 6}}, done, None)[0] == "stale"
    parent_later = {"success": True, "ran_time": "2024-01-03T00:00:00"}
    assert item_state(params, done, parent_later) == ("stale", "its parent ran again since")
    parent_earlier = {"success": True, "ran_time": "2024-01-01T00:00:00"}
    assert item_state(params, done, parent_earlier) == ("done", "")


# --- the page's data ------------------------------------------------------------------------

def test_table_lists_every_item_with_its_state(viewer_batch, document):
    data = document.get_model_by_name("batch-table-source").data
    assert list(data["uuid"]) == list(viewer_batch["uuid"])
    states = [s.split(":")[0] for s in data["state"]]
    assert states == ["done", "done", "done", "FAILED", "not run"]
    assert "UnknownParameterError" in data["state"][3] and "not_a_param" in data["state"][3]
    assert data["diff"][1] == "min_SNR=2.0" and data["diff"][2] == "min_SNR=12.0"
    good = len(viewer_batch.iloc[2].cnmf.get_good_components())
    assert data["results"][2].startswith(f"10 components, {good} accepted")
    assert "residual" in data["results"][0] and "patches within" in data["results"][0]


def test_component_data_match_the_accessors(viewer_batch, document):
    for i in (1, 2):
        row = viewer_batch.iloc[i]
        renderers = [document.get_model_by_name(f"{s}-{row['uuid']}")
                     for s in ("accepted", "rejected")]
        src = next(r for r in renderers if r is not None).data_source
        k = row.cnmf.get_n_components()
        assert len(src.data["index"]) == k
        accepted = np.flatnonzero(np.asarray(src.data["status"]) == "accepted")
        np.testing.assert_array_equal(accepted, row.cnmf.get_good_components())
        np.testing.assert_allclose(np.stack(src.data["tr_C"]), row.cnmf.get_temporal())
        np.testing.assert_allclose(np.stack(src.data["tr_raw"]),
                                   row.cnmf.get_temporal(add_residuals=True))
        # contours in (x, y) image coordinates: centre of each pixel at +0.5
        contours, _ = row.cnmf.get_contours("all", swap_dim=True)
        np.testing.assert_allclose(src.data["xs"][0], contours[0][:, 0] + 0.5, atol=1e-4)
    dff_item = viewer_batch.iloc[1]
    src = document.get_model_by_name(f"accepted-{dff_item['uuid']}").data_source
    np.testing.assert_allclose(np.stack(src.data["tr_dff"]), dff_item.cnmf.get_detrend_dfof(),
                               rtol=1e-6)
    assert "tr_dff" not in document.get_model_by_name(
        f"accepted-{viewer_batch.iloc[2]['uuid']}").data_source.data


def test_items_of_one_movie_share_axes(viewer_batch, document):
    figs = [document.get_model_by_name(f"contours-{viewer_batch.iloc[i]['uuid']}")
            for i in (1, 2)]
    assert figs[0].x_range is figs[1].x_range and figs[0].y_range is figs[1].y_range
    mcorr = document.get_model_by_name(f"correlation-{viewer_batch.iloc[0]['uuid']}")
    assert mcorr.x_range is figs[0].x_range  # the mcorr output is the same field of view
    shifts = document.get_model_by_name(f"shifts-{viewer_batch.iloc[0]['uuid']}")
    band = shifts.renderers[0].data_source.data
    assert {"y", "x", "y_lo", "y_hi", "x_lo", "x_hi"} <= set(band)  # pw-rigid band
    assert np.all(band["y_lo"] <= band["y_hi"])


def _long_item(batch, tmp_path, n_frames=20_000, k=10):
    """A cnmf item with long traces, saved directly (as test_cnmf_accessor's truth item)."""
    rng = np.random.default_rng(2)
    movie = tmp_path / "m.npy"
    np.save(movie, np.zeros((4, 32, 32), np.float32))
    uuid = batch.caiman.add_item("cnmf", "long", movie, CNMF)
    folder = batch.caiman.uloc(uuid).caiman.get_output_dir()
    folder.mkdir(parents=True)
    A = sp.random(32 * 32, k, density=0.02, format="csc", random_state=3)
    C = np.cumsum(rng.normal(size=(k, n_frames)), axis=1).astype(np.float32)
    est = Estimates(A=A, b=np.zeros((1024, 0)), C=C, f=np.zeros((0, n_frames)),
                    S=np.abs(rng.normal(size=C.shape)).astype(np.float32),
                    YrA=rng.normal(size=C.shape).astype(np.float32), sn=np.ones(1024),
                    g=np.zeros((k, 1)), bl=np.zeros(k), c1=np.zeros(k), neurons_sn=np.ones(k),
                    dims=(32, 32))
    save_estimates(folder / "cnmf.hdf5", est, CNMF["main"])
    write_manifest(folder, {"success": True, "params": CNMF, "algo_duration": 1.0,
                            "outputs": {"cnmf-hdf5-path": "cnmf.hdf5"}})
    return batch.caiman.reload_from_disk().caiman.uloc(uuid)


def test_long_traces_are_reduced_to_the_size_budget(batch, tmp_path):
    row = _long_item(batch, tmp_path)
    full = len(batch_html(batch, progress=False, max_mb=50))
    # 10 components x 3 traces x 20000 frames ~ 3.2 MB in the page besides Bokeh's ~2 MB
    assert full > 5.0e6
    small = len(batch_html(batch, progress=False, max_mb=3.0))
    assert small < 3.0e6
    doc = build_document(batch, progress=False, max_mb=3.0)
    src = doc.get_model_by_name(f"accepted-{row['uuid']}").data_source
    kept = np.stack(src.data["tr_C"])
    assert 200 <= kept.shape[1] < 20_000
    C = row.cnmf.get_temporal()
    np.testing.assert_array_equal(kept.max(axis=1), C.max(axis=1))  # peaks survive


# --- entry points ---------------------------------------------------------------------

def test_cli_view_writes_the_page(viewer_batch, tmp_path, capsys):
    path = viewer_batch.paths.get_batch_path()
    out = tmp_path / "page.html"
    assert main(["view", str(path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "Wrote" in capsys.readouterr().out
    assert "<script" in text and "cdn.bokeh.org" not in text  # JavaScript inline: no internet
    for uuid in viewer_batch["uuid"]:
        assert uuid in text
    assert main(["view", str(path), "no-such-uuid", "-o", str(out)]) == 2
    assert "no-such-uuid" in capsys.readouterr().err
    default = write_viewer(path, uuids=[viewer_batch.iloc[0]["uuid"]], progress=False)
    assert default == path.with_suffix(".html") and default.is_file()


def test_notebook_view_shows_the_page_in_an_iframe(viewer_batch, tmp_path):
    shown = viewer_batch.caiman.view(uuids=[viewer_batch.iloc[0]["uuid"]])
    assert isinstance(shown, BatchView)
    cell = shown._repr_html_()
    assert cell.startswith("<iframe srcdoc=") and "&lt;script" in cell
    assert shown.save(tmp_path / "v.html").read_text() == shown.html


# --- snakemake --report -----------------------------------------------------------------

def test_snakemake_report_works_before_and_after_the_item_figures(viewer_batch, tmp_path):
    batch = viewer_batch.paths.get_batch_path()
    mcorr, cnmf, failed = (viewer_batch.iloc[i] for i in (0, 1, 3))

    def report(name: str) -> str:
        out = tmp_path / name
        cmd = snakemake_command(batch, [], cores=1, extra=["--report", str(out)])
        result = subprocess.run(cmd, cwd=batch.parent, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return out.read_text()

    # right after runs that made no figures (the items ran in-process): no error
    assert "viewer.html" not in report("before.html")
    for row in (mcorr, cnmf):
        write_item_report(batch, row["uuid"], *report_files(row.caiman.get_output_dir()))
    text = report("after.html")
    for row in (mcorr, cnmf):
        page = row.caiman.get_output_dir() / "viewer.html"
        assert f"file://{page}" in text  # the caption links the item's viewer page
        assert row["uuid"] in page.read_text()
    assert "summary.png" in text
    # a figure that cannot be drawn (a failed item) is a figure saying why, not an error
    folder = tmp_path / "failed"
    folder.mkdir()
    write_item_report(batch, failed["uuid"], folder / "f.png", folder / "f.html")
    assert (folder / "f.png").stat().st_size > 0 and "FAILED" in (folder / "f.html").read_text()


def test_a_run_makes_the_report_files_of_its_item_and_ancestors(tmp_path):
    results = tmp_path / "results"
    child = results / "parent-uuid" / "child-uuid"
    assert report_targets(child, results) == [
        str(child / "summary.png"), str(child / "viewer.html"),
        str(child.parent / "summary.png"), str(child.parent / "viewer.html")]
