"""The view of a cnmf / cnmfe item: contours on an image, the clicked component's traces and
footprint."""

from __future__ import annotations

from typing import Any

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    CDSView,
    ColumnDataSource,
    CustomJS,
    Div,
    GroupFilter,
    HoverTool,
    Legend,
    TapTool,
)

from .arrays import dequantize, envelope, footprint_image, quantize
from .common import ImageSources, Ranges, greys, header, image_figure, image_switch, new_figure
from .items import CnmfData, ItemRow

WIDTH = 420
#: Trace name in CnmfData -> (column in the page, colour, legend label).
TRACES = {"C + YrA": ("raw", "#9a9a9a", "C + YrA (raw)"), "C": ("C", "#1f77b4", "C"),
          "S": ("S", "#d62728", "S (deconvolved)"), "dF/F": ("dff", "#2ca02c", "dF/F")}
COLOURS = {"accepted": "#40ff40", "rejected": "#ff4040"}

# Shows the tapped component's traces, footprint and metrics (the first one if several).
# Traces are flat arrays (one per kind, not one per component) to keep the page small.
_ON_TAP = """
const k = src.selected.indices[0];
if (k === undefined) return;
const d = src.data;
const traces = {t: trace.data.t};
// (an index loop: BokehJS arrays' subarray() ignores the offsets)
for (const key of keys) {  // int16 samples back to values (arrays.quantize)
  const [q, low, step, out] = [store[key], d["lo_" + key][k], d["st_" + key][k],
                               new Float32Array(n_samples)];
  for (let i = 0; i < n_samples; i++) out[i] = (q[k * n_samples + i] + 32768) * step + low;
  traces[key] = out;
}
trace.data = traces;
fp.data = {image: [d.fp[k]], x: [d.fp_x[k]], y: [d.fp_y[k]], dw: [d.fp_w[k]], dh: [d.fp_h[k]]};
info.text = `<b>component ${d.index[k]}</b> (${d.status[k]}): SNR ${d.snr[k].toFixed(2)}, ` +
            `r-value ${d.rval[k].toFixed(3)}`;
"""


def _rounded(values: np.ndarray) -> list[float]:
    # 0.1 px is finer than the screen; plain numbers cost less than one array per contour
    return np.round(values, 1).tolist()


def component_source(data: CnmfData, n_points: int
                     ) -> tuple[ColumnDataSource, dict[str, Any], np.ndarray]:
    """One row per component (contour, metrics, trace scales, footprint crop and box), the
    traces behind them (``store``: kind -> K x M int16, flat; ``n_samples``: M) and the (M,)
    frame positions of the trace samples."""
    k = data.n_components
    columns: dict[str, Any] = {
        # pixel centres are at integer (y, x); the image covers [0, n] so centres are +0.5
        "xs": [_rounded(c[:, 1] + 0.5) for c in data.contours],
        "ys": [_rounded(c[:, 0] + 0.5) for c in data.contours],
        "index": np.arange(k), "snr": data.snr, "rval": data.r_values,
        "status": np.where(data.accepted, "accepted", "rejected"),
    }
    frames, store = np.arange(0), {}
    for name, values in data.traces.items():
        frames, samples = envelope(values, n_points)
        key = TRACES[name][0]
        q, columns["lo_" + key], columns["st_" + key] = quantize(samples)
        store[key] = q.ravel()
    columns.update(
        fp=[footprint_image(crop) for crop, _, _ in data.footprints],
        fp_x=np.array([c0 for _, _, c0 in data.footprints], np.float32),
        fp_y=np.array([r0 for _, r0, _ in data.footprints], np.float32),
        fp_w=np.array([crop.shape[1] for crop, _, _ in data.footprints], np.float32),
        fp_h=np.array([crop.shape[0] for crop, _, _ in data.footprints], np.float32),
    )
    return ColumnDataSource(columns), {"store": store, "n_samples": len(frames)}, frames


def page_store(src: ColumnDataSource) -> dict[str, Any]:
    """The flat arrays behind a page's component source (its tap callback holds them)."""
    return src.selected.js_property_callbacks["change:indices"][0].args


def component_trace(src: ColumnDataSource, store: dict[str, Any], key: str, k: int
                    ) -> np.ndarray:
    """Component ``k``'s trace ``key`` (``"C"``, ``"raw"``, ...) as the page plots it."""
    m = store["n_samples"]
    q = store["store"][key][k * m:(k + 1) * m]
    return dequantize(q, src.data["lo_" + key][k], src.data["st_" + key][k])


def first_component(data: CnmfData) -> int | None:
    """The component shown first: the accepted one with the highest SNR (else component 0)."""
    if data.n_components == 0:
        return None
    snr = np.nan_to_num(data.snr, nan=-np.inf)
    candidates = np.flatnonzero(data.accepted) if data.accepted.any() else np.arange(len(snr))
    return int(candidates[np.argmax(snr[candidates])])


def _contour_figure(item: ItemRow, data: CnmfData, src: ColumnDataSource, ranges: Ranges,
                    images: ImageSources) -> tuple[Any, Any]:
    dims = data.dims
    fig = image_figure("contours", dims, ranges.image(item.group, dims), WIDTH,
                       name=f"contours-{item.uuid}")
    buttons = image_switch(fig, {t: images.source(im) for t, im in data.images.items()})
    renderers, items = [], []
    for status, colour in COLOURS.items():
        if not (src.data["status"] == status).any():
            continue
        r = fig.patches("xs", "ys", source=src, line_color=colour, line_width=1.5,
                        fill_color=colour, fill_alpha=0.0, selection_fill_alpha=0.35,
                        selection_line_color="yellow", selection_line_width=2.5,
                        nonselection_fill_alpha=0.0, nonselection_line_alpha=0.8,
                        view=CDSView(filter=GroupFilter(column_name="status", group=status)),
                        name=f"{status}-{item.uuid}")
        renderers.append(r)
        items.append((f"{status} ({int((src.data['status'] == status).sum())})", [r]))
    if renderers:
        fig.add_tools(HoverTool(renderers=renderers, tooltips=[
            ("component", "@index"), ("SNR", "@snr{0.00}"), ("r-value", "@rval{0.000}"),
            ("", "@status")]))
        tap = TapTool(renderers=renderers)
        fig.add_tools(tap)
        fig.toolbar.active_tap = tap
        legend = Legend(items=items, click_policy="hide", orientation="horizontal")
        fig.add_layout(legend, "below")
    return fig, buttons


def _trace_figures(item: ItemRow, data: CnmfData, src: ColumnDataSource, store: dict[str, Any],
                   frames: np.ndarray, shown: int | None, ranges: Ranges
                   ) -> tuple[ColumnDataSource, list[Any]]:
    """The traces of component ``shown`` (C, raw, S; dF/F below) against time (s)."""
    t = frames / data.fr
    n_frames = next(iter(data.traces.values())).shape[1]
    x_range = ranges.time(item.group, max(n_frames - 1, 1) / data.fr)
    columns = {"t": t}
    for name in data.traces:
        key = TRACES[name][0]
        columns[key] = (component_trace(src, store, key, shown) if shown is not None
                        else np.zeros(len(t), np.float32))
    trace = ColumnDataSource(columns, name=f"traces-{item.uuid}")
    figs = []
    main = new_figure(title="traces", x_range=x_range, frame_width=WIDTH + 80,
                      frame_height=170, x_axis_label="time (s)", name=f"traces-fig-{item.uuid}")
    for name in ("C + YrA", "C", "S"):
        key, colour, label = TRACES[name]
        main.line("t", key, source=trace, color=colour, legend_label=label, line_width=1)
    main.legend.click_policy = "hide"
    main.legend.location = "top_left"
    main.legend.label_text_font_size = "8pt"
    figs.append(main)
    if "dF/F" in data.traces:
        dff = new_figure(title="dF/F", x_range=x_range, frame_width=WIDTH + 80,
                         frame_height=110, x_axis_label="time (s)")
        dff.line("t", "dff", source=trace, color=TRACES["dF/F"][1])
        figs.append(dff)
    return trace, figs


def _footprint_figure(item: ItemRow, src: ColumnDataSource, shown: int | None
                      ) -> tuple[ColumnDataSource, Any]:
    """The footprint crop of component ``shown``, in frame pixels."""
    columns: dict[str, list] = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
    if shown is not None:
        columns = {"image": [src.data["fp"][shown]],
                   "x": [src.data["fp_x"][shown]], "y": [src.data["fp_y"][shown]],
                   "dw": [src.data["fp_w"][shown]], "dh": [src.data["fp_h"][shown]]}
    fp = ColumnDataSource(columns, name=f"footprint-{item.uuid}")
    fig = new_figure(title="footprint", frame_width=150, frame_height=150,
                     tools="pan,wheel_zoom,reset", match_aspect=True,
                     name=f"footprint-fig-{item.uuid}")
    fig.y_range.flipped = True
    fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=fp, color_mapper=greys())
    fig.grid.visible = False
    return fp, fig


def cnmf_layout(item: ItemRow, data: CnmfData, lines: list[str], n_points: int,
                ranges: Ranges, images: ImageSources) -> Any:
    """The layout of one cnmf / cnmfe item.

    Parameters
    ----------
    lines
        Text under the title (state, params that differ, results).
    n_points
        Samples per trace kept in the page (:func:`.arrays.envelope`).
    """
    src, store, frames = component_source(data, n_points)
    shown = first_component(data)
    if shown is not None:
        src.selected.indices = [shown]
    fig, buttons = _contour_figure(item, data, src, ranges, images)
    trace, trace_figs = _trace_figures(item, data, src, store, frames, shown, ranges)
    fp, fp_fig = _footprint_figure(item, src, shown)
    info = Div(text="click a contour" if shown is None else "", width=220,
               name=f"info-{item.uuid}")
    keys = [TRACES[name][0] for name in data.traces]
    src.selected.js_on_change("indices", CustomJS(
        args={"src": src, "trace": trace, "fp": fp, "info": info, "keys": keys, **store},
        code=_ON_TAP))
    if shown is not None:
        info.text = (f"<b>component {shown}</b> ({src.data['status'][shown]}): "
                     f"SNR {data.snr[shown]:.2f}, r-value {data.r_values[shown]:.3f}")
    if len(frames) < next(iter(data.traces.values())).shape[1]:
        lines = lines + [f"traces: min/max envelope of {len(frames)} samples per trace"]
    top = [header(item_title(item), lines, WIDTH + 200)]
    if buttons is not None:
        top.append(buttons)
    return column(*top, row(fig, column(fp_fig, info)), *trace_figs,
                  name=f"item-{item.uuid}")


def item_title(item: ItemRow) -> str:
    """``name (algo, uuid prefix)``."""
    return f"{item.name} ({item.algo}, {item.uuid[:8]})"
