"""The batch table: one row per item with its state, what differs and its headline results."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from bokeh.models import (
    ColumnDataSource,
    DataTable,
    HTMLTemplateFormatter,
    NumberFormatter,
    TableColumn,
)

from .items import DONE, FAILED, NOT_RUN, OUTDATED, STALE, CnmfData, ItemRow, McorrData

STATE_COLOURS = {DONE: "#1a7f37", FAILED: "#cf222e", NOT_RUN: "#6e7781", STALE: "#bf8700",
                 OUTDATED: "#bf8700"}
# a cell whose whole text shows on hover (long error lines and results are cut by the column)
_WITH_TOOLTIP = '<span style="{style}" title="<%- value %>"><%- value %></span>'


def mcorr_headline(data: McorrData, residual: float) -> str:
    """Shift range per axis and the motion left after registration."""
    lo, hi = np.nanmin(data.shifts, axis=0), np.nanmax(data.shifts, axis=0)
    text = f"shifts y {lo[0]:.1f}..{hi[0]:.1f}, x {lo[1]:.1f}..{hi[1]:.1f} px"
    if data.pw_shifts is not None:
        spread = np.nanmax(np.abs(data.pw_shifts - data.shifts[:, None, :]))
        text += f", patches within {spread:.1f} px of rigid"
    return text + (f"; residual {residual:.2f} px" if np.isfinite(residual) else "")


def cnmf_headline(data: CnmfData) -> str:
    """Components found and accepted, median SNR of the accepted ones."""
    k, good = data.n_components, int(data.accepted.sum())
    snr = data.snr[data.accepted]
    text = f"{k} components, {good} accepted"
    if np.isfinite(snr).any():
        text += f", median SNR {np.nanmedian(snr):.1f}"
    return text


def state_text(item: ItemRow, max_chars: int | None = None) -> str:
    """``done``, ``not run``, ``FAILED: <error line>``, ``stale: <why>``, cut to
    ``max_chars``."""
    text = f"{item.state}: {item.message}" if item.message else item.state
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars - 1] + "\u2026"
    return text


def diff_text(diff: dict[str, Any]) -> str:
    """``gSig=[4, 4], K=30`` from dotted params (``main.`` dropped)."""
    def short(key: str) -> str:
        return key[5:] if key.startswith("main.") else key
    return ", ".join(f"{short(k)}={json.dumps(v, default=str)}" for k, v in diff.items())


def batch_table(items: list[ItemRow], headlines: list[str], names: dict[str, str]
                ) -> tuple[DataTable, ColumnDataSource]:
    """The sortable batch table and its source (one row per item, in batch order).

    Parameters
    ----------
    headlines
        Results text per item ("" when none).
    names
        uuid -> item name, to show parents by name.
    """
    def parent(item: ItemRow) -> str:
        return "" if item.parent is None else f"{names.get(item.parent, '?')} ({item.parent[:8]})"

    src = ColumnDataSource({
        "uuid": [i.uuid for i in items],
        "short": [i.uuid[:8] for i in items],
        "name": [i.name for i in items],
        "algo": [i.algo for i in items],
        "state": [state_text(i, 120) for i in items],
        "state_colour": [STATE_COLOURS.get(i.state, "black") for i in items],
        "duration": [np.nan if i.duration is None else float(i.duration) for i in items],
        "diff": [diff_text(i.params_diff) for i in items],
        "results": headlines,
        "parent": [parent(i) for i in items],
    }, name="batch-table-source")
    columns = [
        TableColumn(field="name", title="item", width=110),
        TableColumn(field="algo", title="algo", width=50),
        TableColumn(field="state", title="state", width=210,
                    formatter=HTMLTemplateFormatter(template=_WITH_TOOLTIP.format(
                        style="color:<%= state_colour %>"))),
        TableColumn(field="duration", title="duration (s)", width=70,
                    formatter=NumberFormatter(format="0.0", nan_format="")),
        TableColumn(field="diff", title="params that differ", width=170),
        TableColumn(field="results", title="results", width=330,
                    formatter=HTMLTemplateFormatter(template=_WITH_TOOLTIP.format(style=""))),
        TableColumn(field="parent", title="parent", width=160),
        TableColumn(field="short", title="uuid", width=70),
    ]
    height = min(400, 28 + 26 * max(len(items), 1))
    table = DataTable(source=src, columns=columns, width=1200, height=height, sortable=True,
                      selectable=True, reorderable=False, index_position=None,
                      name="batch-table")
    return table, src
