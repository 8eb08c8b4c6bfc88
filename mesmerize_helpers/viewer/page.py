"""The viewer page: the batch table above the item views, in one Bokeh document."""

from __future__ import annotations

import html
import warnings
from datetime import datetime
from typing import Any

from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.layouts import column, row
from bokeh.models import CustomJS, Div

from . import data
from .arrays import BYTES_PER_SAMPLE, points_per_trace, residual_motion
from .cnmf_view import cnmf_layout, item_title
from .common import ImageSources, Ranges, header
from .items import DONE, FAILED, CnmfData, ItemRow
from .mcorr_view import mcorr_layout
from .table import batch_table, cnmf_headline, diff_text, mcorr_headline, state_text

#: Bytes of the page that do not depend on the batch (Bokeh's JavaScript, inline), and of
#: each item's figures and widgets besides their data.
BASE_BYTES, ITEM_BYTES = 2.5e6, 50e3
HELP = ("Click a row to open its item; Ctrl- or Shift-click a second row to compare two items "
        "side by side (items of one movie share their axes). Click a contour to see that "
        "component's traces and footprint; click a legend entry to hide accepted or rejected "
        "components. Mouse wheel zooms.")

# Shows the items of the (at most two) selected rows. Only shown items are in the page's
# layout, so the browser draws two items, not the whole batch.
_ON_SELECT = """
const chosen = src.selected.indices.slice(0, 2).sort((a, b) => a - b);
box.children = chosen.map((i) => layouts[i]);
hint.visible = chosen.length == 0;
"""
# Opens the item named in the address (page.html#<uuid or its start>).
_ON_LOAD = """
const wanted = window.location.hash.slice(1);
if (wanted) {
  const i = src.data.uuid.findIndex((u) => u.startsWith(wanted));
  if (i >= 0) src.selected.indices = [i];
}
"""


class _Budget:
    """Splits the page's byte budget among the items still to draw."""

    def __init__(self, max_bytes: float, n_items: int):
        self.left = max(max_bytes - BASE_BYTES, 0.0)
        self.items = max(n_items, 1)

    def share(self) -> float:
        return self.left / max(self.items, 1) - ITEM_BYTES

    def spend(self, n_bytes: float) -> None:
        self.left = max(self.left - n_bytes - ITEM_BYTES, 0.0)
        self.items -= 1


#: Page bytes of an array's wrapper (JSON fields, gzip header), and of a contour coordinate
#: (a JSON number to 0.1 px and a comma).
ARRAY_BYTES, COORDINATE_BYTES = 150, 6


def _cnmf_fixed_bytes(d: CnmfData, images: ImageSources) -> float:
    """Page bytes of a cnmf item besides its traces (an upper bound: the page is gzipped):
    contours, footprint crops (uint8, base64) and the images the page does not hold yet."""
    contours = sum(c.size for c in d.contours) * COORDINATE_BYTES
    crops = sum(crop.size * 4 / 3 + ARRAY_BYTES for crop, _, _ in d.footprints)
    return contours + crops + images.new_bytes(list(d.images.values()))


def _cnmf_points(d: CnmfData, share: float, images: ImageSources) -> int:
    """Samples per trace that fit a cnmf item's byte share."""
    n_frames = next(iter(d.traces.values())).shape[1]
    return points_per_trace(share - _cnmf_fixed_bytes(d, images),
                            d.n_components * len(d.traces), n_frames)


def _status_layout(item: ItemRow, lines: list[str]) -> Any:
    parts = [header(item_title(item), lines, 900)]
    if item.traceback:
        parts.append(Div(text=f"<pre style='font-size:11px'>{html.escape(item.traceback)}</pre>",
                         width=900, name=f"traceback-{item.uuid}"))
    return column(*parts, name=f"item-{item.uuid}")


def _item_view(item: ItemRow, s: Any, budget: _Budget, ranges: Ranges,
               images: ImageSources) -> tuple[Any, str]:
    """(layout, headline) of one item; items without results show their state."""
    lines = [f"state: {state_text(item)}",
             f"params that differ: {diff_text(item.params_diff)}" if item.params_diff else ""]
    if item.state != DONE:
        return _status_layout(item, lines), ""
    try:
        d = data.read_item(s)
    except Exception as err:  # one unreadable item must not cost the user the whole page
        warnings.warn(f"viewer: cannot read item {item.uuid}: {err}", stacklevel=2)
        return _status_layout(item, lines + [f"cannot show results: {err}"]), "unreadable"
    if isinstance(d, CnmfData):
        n_points = _cnmf_points(d, budget.share(), images)
        spent = (_cnmf_fixed_bytes(d, images)
                 + d.n_components * len(d.traces) * n_points * BYTES_PER_SAMPLE)
        headline = cnmf_headline(d)
        layout = cnmf_layout(item, d, lines + [headline], n_points, ranges, images)
    else:
        spent = images.new_bytes(list(d.images.values()))
        headline = mcorr_headline(d, residual_motion(d.samples))
        layout = mcorr_layout(item, d, lines + [headline], ranges, images)
    budget.spend(spent)
    return layout, headline


def build_document(batch: Any, uuids: list[str] | None = None, max_mb: float = 50.0,
                   progress: bool = True) -> Document:
    """The viewer's Bokeh document for a batch (a TSV path or a loaded batch).

    Parameters
    ----------
    uuids
        Only these items (default: all).
    max_mb
        Size the page aims to stay under; long traces are reduced to fit.
    progress
        Show a progress bar (tqdm) while items are read.
    """
    from tqdm.auto import tqdm

    df = data.load(batch)
    items = data.item_rows(df)
    if uuids is not None:
        known = {i.uuid for i in items}
        unknown = [u for u in uuids if u not in known]
        if unknown:
            raise KeyError(f"No item(s) {', '.join(unknown)} in {data.batch_path(df)}.")
        items = [i for i in items if i.uuid in set(uuids)]
    series = {s["uuid"]: s for s in data.rows(df)}
    names = {s["uuid"]: str(s["item_name"]) for s in data.rows(df)}
    budget = _Budget(max_mb * 1e6, sum(i.state == DONE for i in items))
    ranges, images = Ranges(), ImageSources()
    layouts, headlines = [], []
    for item in tqdm(items, desc="viewer: reading items", unit="item", disable=not progress):
        layout, headline = _item_view(item, series[item.uuid], budget, ranges, images)
        layouts.append(layout)
        headlines.append(headline)
    return _assemble(data.batch_path(df), items, layouts, headlines, names)


def _assemble(path: Any, items: list[ItemRow], layouts: list[Any], headlines: list[str],
              names: dict[str, str]) -> Document:
    table, src = batch_table(items, headlines, names)
    first = next((i for i, item in enumerate(items) if item.state == DONE),
                 0 if items else None)
    hint = Div(text="<i>Click a row of the table to open its item.</i>", visible=first is None)
    box = row(children=[] if first is None else [layouts[first]], name="items")
    if first is not None:
        src.selected.indices = [first]
    src.selected.js_on_change("indices", CustomJS(
        args={"src": src, "layouts": layouts, "hint": hint, "box": box}, code=_ON_SELECT))
    n_failed = sum(item.state == FAILED for item in items)
    title = Div(text=(
        f"<h2 style='margin:4px 0'>{html.escape(str(path))}</h2>"
        f"<div>{len(items)} items ({n_failed} failed), page made "
        f"{datetime.now().isoformat(timespec='seconds')}. {html.escape(HELP)}</div>"),
        width=1200)
    doc = Document()
    doc.add_root(column(title, table, hint, box, name="viewer"))
    doc.js_on_event(DocumentReady, CustomJS(args={"src": src}, code=_ON_LOAD))
    doc.title = f"{path.name} - mesmerize-helpers viewer" if hasattr(path, "name") else "viewer"
    return doc
