"""The view of an mcorr item: shifts over time, mean image before and after, correlation
image."""

from __future__ import annotations

from typing import Any

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource

from .arrays import envelope
from .cnmf_view import item_title
from .common import ImageSources, Ranges, add_image, header, image_figure, new_figure, time_axis
from .items import ItemRow, McorrData

IMAGE_WIDTH = 240
#: Samples kept of the shift traces (min/max envelope beyond).
SHIFT_POINTS = 4000
COLOURS = {"y": "#1f77b4", "x": "#ff7f0e"}


def shift_source(data: McorrData, n_points: int = SHIFT_POINTS) -> tuple[ColumnDataSource, str]:
    """Rigid shifts (``y``, ``x``) and, for a piecewise-rigid run, the band the patches span
    (``y_lo``/``y_hi``, ``x_lo``/``x_hi``) over time; and the time axis label."""
    step, label = time_axis(data.fr)
    series = [data.shifts[:, 0], data.shifts[:, 1]]
    if data.pw_shifts is not None:
        series += [data.pw_shifts[..., 0].min(axis=1), data.pw_shifts[..., 0].max(axis=1),
                   data.pw_shifts[..., 1].min(axis=1), data.pw_shifts[..., 1].max(axis=1)]
    frames, values = envelope(np.stack(series), n_points)
    names = ["y", "x", "y_lo", "y_hi", "x_lo", "x_hi"][:len(series)]
    return ColumnDataSource({"t": frames * step, **dict(zip(names, values))}), label


def shifts_figure(item: ItemRow, data: McorrData, ranges: Ranges) -> Any:
    """Rigid shifts as lines, piecewise-rigid patches as a band around them."""
    src, label = shift_source(data)
    end = float(src.data["t"][-1]) if len(src.data["t"]) else 1.0
    fig = new_figure(title="shifts (px)", x_range=ranges.time(item.group, max(end, 1e-9)),
                     frame_width=3 * IMAGE_WIDTH + 60, frame_height=170, x_axis_label=label,
                     name=f"shifts-{item.uuid}")
    for axis, colour in COLOURS.items():
        if f"{axis}_lo" in src.data:
            fig.varea("t", f"{axis}_lo", f"{axis}_hi", source=src, fill_color=colour,
                      fill_alpha=0.25, legend_label=f"{axis} patches (pw-rigid)")
        fig.line("t", axis, source=src, color=colour, legend_label=f"{axis} rigid")
    fig.legend.click_policy = "hide"
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"
    return fig


def mcorr_layout(item: ItemRow, data: McorrData, lines: list[str], ranges: Ranges,
                 images: ImageSources) -> Any:
    """The layout of one mcorr item; ``lines`` go under its title."""
    figs = []
    for title, image in data.images.items():
        dims = image.shape
        fig = image_figure(title, dims, ranges.image(item.group, dims), IMAGE_WIDTH,
                           name=f"{title}-{item.uuid}")
        add_image(fig, images.source(image))
        figs.append(fig)
    return column(header(item_title(item), lines, 3 * IMAGE_WIDTH + 100),
                  shifts_figure(item, data, ranges), row(*figs), name=f"item-{item.uuid}")
