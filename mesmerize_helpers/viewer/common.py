"""Pieces every item view uses: linked axes, shared image sources, image figures."""

from __future__ import annotations

import hashlib
import html
from typing import Any

import numpy as np
from bokeh.models import ColumnDataSource, CustomJS, Div, LinearColorMapper, Range1d
from bokeh.palettes import Greys256
from bokeh.plotting import figure

from .arrays import shrink, to_uint8

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


def greys() -> LinearColorMapper:
    """The grey colour map of uint8 images (a new one per page: models belong to one)."""
    return LinearColorMapper(palette=Greys256, low=0, high=255)


class Ranges:
    """Axis ranges shared by the views of items that show the same thing (one field of view,
    one time axis), so items side by side pan and zoom together."""

    def __init__(self) -> None:
        self._ranges: dict[tuple, Any] = {}

    def image(self, group: str, dims: tuple[int, int]) -> tuple[Range1d, Range1d]:
        """(x, y) ranges of images of ``dims`` (y, x) in ``group``; y runs downwards."""
        key = ("image", group, tuple(dims))
        if key not in self._ranges:
            self._ranges[key] = (Range1d(0, dims[1], bounds=(0, dims[1])),
                                 Range1d(dims[0], 0, bounds=(0, dims[0])))
        return self._ranges[key]

    def time(self, group: str, end: float) -> Range1d:
        """The time range of traces ``0 .. end`` in ``group``."""
        key = ("time", group, round(float(end), 6))
        if key not in self._ranges:
            self._ranges[key] = Range1d(0, end, bounds=(0, end))
        return self._ranges[key]


class ImageSources:
    """One data source per distinct image: the items of a grid on one movie share their
    summary images, which the page then holds once."""

    def __init__(self) -> None:
        self._sources: dict[str, ColumnDataSource] = {}

    @staticmethod
    def _key(image: np.ndarray) -> tuple[str, np.ndarray]:
        pixels = to_uint8(shrink(image))
        return hashlib.sha1(pixels.tobytes() + repr(image.shape).encode()).hexdigest(), pixels

    def new_bytes(self, images: list[np.ndarray]) -> float:
        """Page bytes (uint8, base64) that ``images`` add: those not held already."""
        new = {key: pixels.nbytes for key, pixels in map(self._key, images)
               if key not in self._sources}
        return sum(new.values()) * 4 / 3

    def source(self, image: np.ndarray) -> ColumnDataSource:
        """A source holding ``image`` (y, x) shrunk and as uint8, with its frame size."""
        dims = image.shape
        key, pixels = self._key(image)
        if key not in self._sources:
            self._sources[key] = ColumnDataSource(
                {"image": [pixels], "dw": [dims[1]], "dh": [dims[0]]})
        return self._sources[key]


def new_figure(**kwargs: Any) -> Any:
    """A Bokeh figure with the viewer's tools (wheel zoom active) and no logo."""
    kwargs.setdefault("tools", TOOLS)
    fig = figure(active_scroll="wheel_zoom", **kwargs)
    fig.toolbar.logo = None
    return fig


def image_figure(title: str, dims: tuple[int, int], ranges: tuple[Range1d, Range1d],
                 width: int, name: str | None = None) -> Any:
    """An empty figure in frame pixels (x right, y down) for images of ``dims``."""
    height = max(80, min(int(round(width * dims[0] / dims[1])), 2 * width))
    fig = new_figure(title=title, x_range=ranges[0], y_range=ranges[1], frame_width=width,
                     frame_height=height, name=name)
    fig.grid.visible = False
    return fig


def add_image(fig: Any, source: ColumnDataSource, name: str | None = None) -> Any:
    """Draw the image of ``source`` (see :class:`ImageSources`) over the frame."""
    return fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=source,
                     color_mapper=greys(), name=name)


def image_switch(fig: Any, sources: dict[str, ColumnDataSource]) -> Any:
    """Draw each image on ``fig``, one visible at a time, and return the buttons that
    choose which (None for a single image)."""
    from bokeh.models import RadioButtonGroup

    renderers = [add_image(fig, src) for src in sources.values()]
    for r in renderers[1:]:
        r.visible = False
    if len(renderers) < 2:
        return None
    buttons = RadioButtonGroup(labels=list(sources), active=0)
    buttons.js_on_change("active", CustomJS(args={"renderers": renderers}, code="""
        renderers.forEach((r, i) => { r.visible = (i == cb_obj.active) })
    """))
    return buttons


def header(title: str, lines: list[str], width: int) -> Div:
    """An item's title and a few lines of text (escaped)."""
    body = "".join(f"<div>{html.escape(line)}</div>" for line in lines if line)
    return Div(text=f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>{body}", width=width)


def time_axis(fr: float | None) -> tuple[float, str]:
    """(seconds per frame, axis label): seconds when the frame rate is known, else frames."""
    if fr:
        return 1.0 / fr, "time (s)"
    return 1.0, "frame"
