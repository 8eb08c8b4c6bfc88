"""Driving a viewer page in headless chromium (Selenium): for the tests, the benchmark and
the README screenshot. Needs Debian's ``chromium`` and ``chromium-driver`` (or any chromium
and chromedriver on the PATH) and the ``selenium`` package (test extra)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run")

#: Seconds a page may take to load before the load is abandoned (and retried once).
PAGE_LOAD_TIMEOUT = 60

# the model named arguments[0] in the page
FIND = """
const doc = Bokeh.documents[0];
const model = doc.get_model_by_name(arguments[0]);
"""


def chromium_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) executables, None where absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if driver is None and Path("/usr/bin/chromedriver").exists():
        driver = "/usr/bin/chromedriver"
    return chromium, driver


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1400) -> Iterator[Any]:
    """A headless chromium (Selenium WebDriver) with a fresh profile, logging the console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths()
    if binary is None or driver_path is None:
        raise FileNotFoundError("chromium and chromedriver are needed "
                                "(apt-get install chromium chromium-driver).")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="chromium-viewer-")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # a load that stalls (a starved renderer on a loaded machine) ends in a TimeoutException
    # that open_page retries, not in the WebDriver connection's 120 s read timeout
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, script: str, *args: Any, timeout: float = 10.0) -> Any:
    """Run ``script`` until it returns something true; raise after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def open_page(driver: Any, path: Path, anchor: str = "") -> list[dict]:
    """Load a page from disk and wait until Bokeh has drawn it (a load that times out is
    tried once more); return the console log."""
    from selenium.common.exceptions import TimeoutException

    url = Path(path).resolve().as_uri() + (f"#{anchor}" if anchor else "")
    for attempt in range(2):
        try:
            driver.get("about:blank")  # a new load even when only the #anchor differs
            driver.get(url)
            break
        except TimeoutException:
            if attempt:
                raise
    wait_for(driver, "return window.Bokeh !== undefined && Bokeh.documents.length > 0 "
                     "&& Bokeh.documents[0].is_idle")
    return driver.get_log("browser")


def errors(log: list[dict]) -> list[dict]:
    """The errors of a console log."""
    return [entry for entry in log if entry["level"] == "SEVERE"]


def visible_items(driver: Any) -> list[str]:
    """uuids of the item views shown, in page order."""
    return driver.execute_script(FIND + """
        return model.children.map((m) => m.name.slice(5));""", "items")


def table_rows(driver: Any) -> list[Any]:
    """The rendered rows of the batch table (in Bokeh's shadow DOM), top to bottom."""
    from selenium.webdriver.common.by import By

    host = driver.execute_script(FIND + "return Bokeh.index.find_one(model).el;", "batch-table")
    return host.shadow_root.find_elements(By.CSS_SELECTOR, ".slick-row")


def click_row(driver: Any, index: int, add: bool = False) -> None:
    """Click row ``index`` of the batch table (``add``: Ctrl-click, adding it)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cell = table_rows(driver)[index].find_elements(By.CSS_SELECTOR, ".slick-cell")[0]
    if add:
        ActionChains(driver).key_down(Keys.CONTROL).click(cell).key_up(Keys.CONTROL).perform()
    else:
        cell.click()


def click_at(driver: Any, figure: str, x: float, y: float) -> None:
    """A real mouse click on figure ``figure`` (its model name) at data point (x, y)."""
    px, py = driver.execute_script(FIND + """
        const view = Bokeh.index.find_one(model);
        const box = view.canvas_view.el.getBoundingClientRect();
        return [box.left + view.frame.x_scale.compute(arguments[1]),
                box.top + view.frame.y_scale.compute(arguments[2])];
    """, figure, float(x), float(y))
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {
            "type": kind, "x": px, "y": py, "button": "left" if kind != "mouseMoved" else "none",
            "clickCount": 1 if kind != "mouseMoved" else 0})


def source_data(driver: Any, name: str) -> dict[str, list]:
    """The columns of the data source named ``name``, as the page holds them now."""
    return driver.execute_script(FIND + """
        const out = {};
        for (const key of Object.keys(model.data)) out[key] = Array.from(model.data[key]);
        return out;""", name)
