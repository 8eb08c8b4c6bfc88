"""The batch viewer: its array reductions, item states, the page's data against the
accessors, its size budget, the CLI, the notebook object, `snakemake --report`; and the page
in headless chromium: it loads without JavaScript errors, lists every item, opens items from
the table, and a click on a contour plots that component's traces as ``get_temporal`` gives
them."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import CNMF
from matplotlib.path import Path as Polygon
from scipy import ndimage
from viewer_batch import make_batch

import mesmerize_helpers.viewer as viewer_package
from mesmerize_helpers.cli import main
from mesmerize_helpers.engine.cnmf import Estimates
from mesmerize_helpers.io.estimates import save_estimates
from mesmerize_helpers.manifest import write_manifest
from mesmerize_helpers.plots import report_files, write_item_report
from mesmerize_helpers.runner import report_targets, snakemake_command
from mesmerize_helpers.viewer import BatchView, batch_html, write_viewer
from mesmerize_helpers.viewer.arrays import (
    dequantize,
    envelope,
    points_per_trace,
    quantize,
    residual_motion,
    to_uint8,
)
from mesmerize_helpers.viewer.browser import (
    FIND,
    chromium,
    chromium_paths,
    click_at,
    click_row,
    errors,
    open_page,
    source_data,
    table_rows,
    visible_items,
    wait_for,
)
from mesmerize_helpers.viewer.cnmf_view import component_trace, page_store
from mesmerize_helpers.viewer.data import error_line
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


def test_quantize_round_trip_is_exact_to_half_a_step():
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1, (3, 500)) * np.array([[1e-3], [1.0], [1e5]])
    values[1] = 7.0  # a flat trace
    q, low, step = quantize(values)
    assert q.dtype == np.int16
    for k in range(3):
        back = dequantize(q[k], low[k], step[k])
        assert np.all(np.abs(back - values[k]) <= step[k] / 2 + 1e-6 * np.abs(values[k]))
    assert dequantize(q[1], low[1], step[1])[0] == 7.0


def test_points_per_trace_follows_the_budget_within_bounds():
    # 1 MB for 100 int16 traces, base64 (8/3 bytes per sample): 3750 samples each
    assert points_per_trace(1e6, 100, 50_000) == 3750
    assert points_per_trace(1e6, 100, 1000) == 1000  # never more than the frames
    assert points_per_trace(0, 100, 50_000) == 100  # a floor, so a trace stays readable


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
    qualified = "Traceback:\n  File x\nmesmerize_helpers.errors.DependencyError: has children: a.b\n"
    assert error_line(qualified) == "DependencyError: has children: a.b"


# --- the page's data ------------------------------------------------------------------------

def assert_page_traces(src, key: str, truth: np.ndarray) -> None:
    """The page's traces ``key`` of every component equal ``truth`` (K, T) to the int16
    quantization step of each trace (its range / 65535) and float32 rounding."""
    store = page_store(src)
    page = np.stack([component_trace(src, store, key, k) for k in range(len(truth))])
    span = truth.max(axis=1, keepdims=True) - truth.min(axis=1, keepdims=True)
    tolerance = span / 65535 / 2 + 1e-6 * np.abs(truth) + 1e-12
    assert np.all(np.abs(page - truth) <= tolerance)


def test_table_lists_every_item_with_its_state(viewer_batch, document):
    data = document.get_model_by_name("batch-table-source").data
    assert list(data["uuid"]) == list(viewer_batch["uuid"])
    states = [s.split(":")[0] for s in data["state"]]
    assert states == ["done", "done", "done", "FAILED", "not run"]
    assert "InvalidItemError" in data["state"][3] and "broken.tif" in data["state"][3]
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
        assert_page_traces(src, "C", row.cnmf.get_temporal())
        assert_page_traces(src, "raw", row.cnmf.get_temporal(add_residuals=True))
        # get_contours' outlines (swap_dim=True: (row, column)) in image coordinates (to
        # 0.1 px, NaN separating pieces): the centre of each pixel at +0.5
        contours, _ = row.cnmf.get_contours("all", swap_dim=True)
        for j in (0, k - 1):
            np.testing.assert_allclose(src.data["xs"][j], contours[j][:, 1] + 0.5, atol=0.05)
            np.testing.assert_allclose(src.data["ys"][j], contours[j][:, 0] + 0.5, atol=0.05)
    dff_item = viewer_batch.iloc[1]
    src = document.get_model_by_name(f"accepted-{dff_item['uuid']}").data_source
    assert_page_traces(src, "dff", dff_item.cnmf.get_detrend_dfof())
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
    # 10 components x 3 traces x 20000 frames ~ 1.6 MB in the page besides Bokeh's ~2 MB
    assert full > 3.5e6
    small = len(batch_html(batch, progress=False, max_mb=3.0))
    assert small < 3.0e6
    doc = build_document(batch, progress=False, max_mb=3.0)
    src = doc.get_model_by_name(f"accepted-{row['uuid']}").data_source
    kept = np.stack([component_trace(src, page_store(src), "C", k) for k in range(10)])
    assert 100 <= kept.shape[1] < 20_000
    C = row.cnmf.get_temporal()
    np.testing.assert_allclose(kept.max(axis=1), C.max(axis=1), atol=1e-3)  # peaks survive
    np.testing.assert_allclose(kept.min(axis=1), C.min(axis=1), atol=1e-3)


def test_an_item_without_components_still_has_a_view(batch, tmp_path):
    row = _long_item(batch, tmp_path, n_frames=50, k=0)
    doc = build_document(batch, progress=False)
    data = doc.get_model_by_name("batch-table-source").data
    assert data["results"][0] == "0 components, 0 accepted"
    assert doc.get_model_by_name(f"contours-{row['uuid']}") is not None


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


def test_without_bokeh_the_cli_says_how_to_install_it(viewer_batch, monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m == "bokeh" or m.startswith("bokeh.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if Bokeh were not installed
    monkeypatch.delitem(sys.modules, "mesmerize_helpers.viewer.page", raising=False)
    monkeypatch.delattr(viewer_package, "page", raising=False)
    assert main(["view", str(viewer_batch.paths.get_batch_path())]) == 2
    assert 'pip install "mesmerize-helpers[viewer]"' in capsys.readouterr().err


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


def test_mesmerize_helpers_run_makes_the_report_files_too(viewer_batch, capfd):
    later = viewer_batch.iloc[4]  # not run
    batch = str(viewer_batch.paths.get_batch_path())
    assert main(["run", batch, later["uuid"], "--dry-run", "--cores", "1"]) == 0
    out = capfd.readouterr()
    plan = out.out + out.err
    folder = later.caiman.get_output_dir()
    assert "rule mcorr" in plan and "rule summary_unreported" in plan
    assert str(folder / "viewer.html") in plan and str(folder / "summary.png") in plan


def test_a_run_makes_the_report_files_of_its_item_and_ancestors(tmp_path):
    results = tmp_path / "results"
    child = results / "parent-uuid" / "child-uuid"
    assert report_targets(child, results) == [
        str(child / "summary.png"), str(child / "viewer.html"),
        str(child.parent / "summary.png"), str(child.parent / "viewer.html")]

# --- in a real headless browser -------------------------------------------------------------
# Debian's chromium via Selenium; skipped only when chromium or its driver is not installed
# (apt-get install chromium chromium-driver; .ci/run installs them).

needs_chromium = pytest.mark.skipif(
    None in chromium_paths(),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def page(viewer_batch, tmp_path_factory):
    return viewer_batch, write_viewer(viewer_batch, tmp_path_factory.mktemp("page") / "page.html",
                                      progress=False)


@needs_chromium
def test_page_loads_without_errors_and_lists_every_item(browser, page):
    df, path = page
    log = open_page(browser, path)
    assert not errors(log), errors(log)
    texts = [row.text for row in table_rows(browser)]
    assert len(texts) == len(df)
    for text, (_, s) in zip(texts, df.iterrows()):
        assert s["uuid"][:8] in text and s["item_name"] in text and s["algo"] in text
    assert texts[3].split("\n")[2].startswith("FAILED: ")
    assert "not run" in texts[4]
    assert visible_items(browser) == [df.iloc[0]["uuid"]]  # the first finished item


@needs_chromium
def test_table_rows_open_items_and_two_show_side_by_side(browser, page):
    df, path = page
    open_page(browser, path)
    click_row(browser, 2)
    assert visible_items(browser) == [df.iloc[2]["uuid"]]
    click_row(browser, 1, add=True)
    assert sorted(visible_items(browser)) == sorted(df.iloc[[1, 2]]["uuid"])
    # side by side, with the same axes objects: zooming one zooms the other
    same = browser.execute_script("""
        const doc = Bokeh.documents[0];
        const [a, b] = arguments[0].map((u) => doc.get_model_by_name("contours-" + u));
        const [va, vb] = [a, b].map((m) => Bokeh.index.find_one(m).el.getBoundingClientRect());
        return a.x_range === b.x_range && a.y_range === b.y_range && vb.left > va.right - 1;
    """, list(df.iloc[[1, 2]]["uuid"]))
    assert same
    # the failed item shows its traceback
    click_row(browser, 3)
    uuid = df.iloc[3]["uuid"]
    assert visible_items(browser) == [uuid]
    text, height = browser.execute_script(FIND + """
        return [model.text, Bokeh.index.find_one(model).el.getBoundingClientRect().height];
    """, f"traceback-{uuid}")
    assert "Traceback" in text and "broken.tif" in text and height > 50
    assert not errors(browser.get_log("browser"))


def _inside_one(contours: list[np.ndarray], k: int) -> bool:
    """Whether component k's centre lies in its own contour and no other."""
    centre = contours[k].mean(axis=0)
    hits = [i for i, c in enumerate(contours) if len(c) > 2 and Polygon(c).contains_point(centre)]
    return hits == [k]


@needs_chromium
def test_clicking_a_contour_plots_that_components_traces(browser, page):
    df, path = page
    row = df.iloc[1]
    uuid = row["uuid"]
    open_page(browser, path, anchor=uuid[:8])  # the address opens the item
    assert visible_items(browser) == [uuid]
    selected = f"accepted-{uuid}"
    shown = browser.execute_script(
        FIND + "return Array.from(model.data_source.selected.indices);", selected)
    outlines, _ = row.cnmf.get_contours("all", swap_dim=False)  # (x, y) per component
    contours = [c[~np.isnan(c).any(axis=1)] for c in outlines]  # NaN rows separate pieces
    k = next(k for k in range(len(contours)) if _inside_one(contours, k) and k not in shown)
    x, y = contours[k].mean(axis=0) + 0.5  # pixel centres sit at +0.5 in the image
    click_at(browser, f"contours-{uuid}", x, y)
    wait_for(browser, FIND + "return model.data_source.selected.indices[0] == arguments[1];",
             selected, k, timeout=5)
    data = source_data(browser, f"traces-{uuid}")
    for key, truth in (("C", row.cnmf.get_temporal([k])[0]),
                       ("raw", row.cnmf.get_temporal([k], add_residuals=True)[0]),
                       ("dff", row.cnmf.get_detrend_dfof([k])[0])):
        # the page holds traces as int16 over each trace's range (viewer.arrays.quantize)
        step = (truth.max() - truth.min()) / 65535
        np.testing.assert_allclose(data[key], truth, rtol=1e-6, atol=step / 2)
    fr = row["params"]["main"]["fr"]
    np.testing.assert_allclose(data["t"], np.arange(len(data["C"])) / fr)
    info = browser.execute_script(FIND + "return model.text;", f"info-{uuid}")
    assert f"component {k}" in info
    # the footprint panel shows the box around component k's pixels
    footprint = source_data(browser, f"footprint-{uuid}")
    ys, xs = np.nonzero(row.cnmf.get_spatial([k])[..., 0])
    assert footprint["x"][0] <= xs.min() and footprint["x"][0] + footprint["dw"][0] > xs.max()
    assert footprint["y"][0] <= ys.min() and footprint["y"][0] + footprint["dh"][0] > ys.max()
    assert not errors(browser.get_log("browser"))
