"""The viewer page in a real headless browser (Debian's chromium via Selenium): it loads
without JavaScript errors, lists every item, opens items from the table, and a click on a
contour plots that component's traces as ``get_temporal`` gives them.

Skipped only when chromium or its driver is not installed (``apt-get install chromium
chromium-driver``; .ci/run installs them).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as Polygon
from viewer_batch import make_batch

from mesmerize_helpers.viewer import write_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")

# the model of the item view / figure / source called `name`, and its view in the page
_FIND = """
const doc = Bokeh.documents[0];
const model = doc.get_model_by_name(arguments[0]);
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    df = make_batch(tmp_path_factory.mktemp("viewer-browser"))
    return df, write_viewer(df, progress=False)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-viewer-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1400,1400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path, anchor: str = "") -> list[dict]:
    """Load the page, wait until Bokeh has drawn it; return the console log."""
    driver.get("about:blank")  # a new load even when only the #anchor differs
    driver.get(path.as_uri() + (f"#{anchor}" if anchor else ""))
    wait_for(driver, "return window.Bokeh !== undefined && Bokeh.documents.length > 0 "
                     "&& Bokeh.documents[0].is_idle")
    return driver.get_log("browser")


def wait_for(driver, script: str, *args, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def visible_items(driver) -> list[str]:
    """uuids of the item views shown."""
    return driver.execute_script("""
        const doc = Bokeh.documents[0];
        return [...doc._all_models.values()]
            .filter((m) => m.name && m.name.startsWith("item-") && m.visible)
            .map((m) => m.name.slice(5));""")


def table_rows(driver):
    """The rendered rows of the batch table (inside Bokeh's shadow DOM)."""
    from selenium.webdriver.common.by import By

    host = driver.execute_script(_FIND + "return Bokeh.index.find_one(model).el;", "batch-table")
    return host.shadow_root.find_elements(By.CSS_SELECTOR, ".slick-row")


def click_at(driver, x: float, y: float) -> None:
    """A real mouse click at viewport pixel (x, y)."""
    for kind in ("mousePressed", "mouseReleased"):
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {
            "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})


def test_page_loads_without_errors_and_lists_every_item(browser, page):
    df, path = page
    log = open_page(browser, path)
    errors = [e for e in log if e["level"] == "SEVERE"]
    assert not errors, errors
    texts = [row.text for row in table_rows(browser)]
    assert len(texts) == len(df)
    for text, (_, s) in zip(texts, df.iterrows()):
        assert s["uuid"][:8] in text and s["item_name"] in text and s["algo"] in text
    assert texts[3].split("\n")[2].startswith("FAILED: ")
    assert "not run" in texts[4]
    assert visible_items(browser) == [df.iloc[0]["uuid"]]  # the first finished item


def test_table_rows_open_items_and_two_show_side_by_side(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    df, path = page
    open_page(browser, path)
    rows = table_rows(browser)
    rows[2].find_elements("css selector", ".slick-cell")[0].click()
    assert visible_items(browser) == [df.iloc[2]["uuid"]]
    cell = table_rows(browser)[1].find_elements("css selector", ".slick-cell")[0]
    ActionChains(browser).key_down(Keys.CONTROL).click(cell).key_up(Keys.CONTROL).perform()
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
    table_rows(browser)[3].find_elements("css selector", ".slick-cell")[0].click()
    uuid = df.iloc[3]["uuid"]
    assert visible_items(browser) == [uuid]
    text, height = browser.execute_script(_FIND + """
        return [model.text, Bokeh.index.find_one(model).el.getBoundingClientRect().height];
    """, f"traceback-{uuid}")
    assert "Traceback" in text and "not_a_param" in text and height > 50


def _inside_one(contours: list[np.ndarray], k: int) -> bool:
    """Whether component k's centre lies in its own contour and no other."""
    centre = contours[k].mean(axis=0)
    hits = [i for i, c in enumerate(contours) if len(c) > 2 and Polygon(c).contains_point(centre)]
    return hits == [k]


def test_clicking_a_contour_plots_that_components_traces(browser, page):
    df, path = page
    row = df.iloc[1]
    uuid = row["uuid"]
    open_page(browser, path, anchor=uuid[:8])  # the address opens the item
    assert visible_items(browser) == [uuid]
    contours, _ = row.cnmf.get_contours("all", swap_dim=True)  # (x, y) per component
    shown = browser.execute_script(
        _FIND + "return model.data.C === undefined ? null : Array.from(model.data.C);",
        f"traces-{uuid}")
    candidates = [k for k in range(len(contours)) if _inside_one(contours, k)
                  and not np.allclose(shown, row.cnmf.get_temporal([k])[0])]
    assert candidates, "no component to click whose trace is not shown already"
    k = candidates[0]
    x, y = contours[k].mean(axis=0) + 0.5  # pixel centres sit at +0.5 in the image
    px, py = browser.execute_script(_FIND + """
        const view = Bokeh.index.find_one(model);
        const box = view.canvas_view.el.getBoundingClientRect();
        return [box.left + view.frame.x_scale.compute(arguments[1]),
                box.top + view.frame.y_scale.compute(arguments[2])];
    """, f"contours-{uuid}", float(x), float(y))
    click_at(browser, px, py)
    wait_for(browser, _FIND + "return model.data_source.selected.indices[0] == arguments[1];",
             f"accepted-{uuid}", k, timeout=5)
    data = browser.execute_script(_FIND + """
        const out = {};
        for (const key of Object.keys(model.data)) out[key] = Array.from(model.data[key]);
        return out;""", f"traces-{uuid}")
    np.testing.assert_allclose(data["C"], row.cnmf.get_temporal([k])[0], rtol=1e-6)
    np.testing.assert_allclose(data["raw"], row.cnmf.get_temporal([k], add_residuals=True)[0],
                               rtol=1e-6)
    np.testing.assert_allclose(data["dff"], row.cnmf.get_detrend_dfof([k])[0], rtol=1e-6)
    fr = row["params"]["main"]["fr"]
    np.testing.assert_allclose(data["t"], np.arange(len(data["C"])) / fr)
    info = browser.execute_script(_FIND + "return model.text;", f"info-{uuid}")
    assert f"component {k}" in info
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
