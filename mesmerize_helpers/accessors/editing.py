"""Writing edits of a batch DataFrame back to its TSV (``update_item``, ``save_to_disk``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import batch as batch_lib
from ..errors import PreventOverwriteError, UnknownColumnError
from ..param_types import encode_types

__all__ = ["save_frame", "split_updates"]


def split_updates(columns: Iterable[str], updates: Mapping[str, Any]
                  ) -> tuple[Any, dict[str, Any]]:
    """``update_item``'s updates as (new params or None, the other editable columns).

    Raises
    ------
    UnknownColumnError
        (an AttributeError, as mesmerize-core) for a key that is not a column.
    ValueError
        For a column that defines the item (``algo``, ``input_movie_path``, ``uuid``, ...)
        or holds run results (read from the item's manifest).
    """
    updates = dict(updates)
    unknown = [k for k in updates if k not in set(columns)]
    if unknown:
        raise UnknownColumnError(
            f"Cannot update item; unknown column name(s) {', '.join(map(repr, unknown))}.")
    params = updates.pop("params", None)
    bad = [k for k in updates if k not in batch_lib.USER_COLUMNS]
    if bad:
        raise ValueError(
            f"Cannot update column(s) {', '.join(bad)}: only "
            f"{', '.join((*batch_lib.USER_COLUMNS, 'params'))} are editable (results come from "
            "the item's run; add a new item for another input or algorithm)."
        )
    return params, updates


def save_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write the user columns (``item_name``, ``comments``, ``params``) of ``frame`` to the
    batch TSV at ``path``, whose items must be the frame's, in its order.

    Raises
    ------
    PreventOverwriteError
        (an IndexError, as mesmerize-core) when the file holds other items, or another
        order, than ``frame``: reload it first.
    ValueError
        When ``algo`` or ``input_movie_path`` of an item was changed in ``frame``.
    """

    def write(rows: list[dict]) -> None:
        if [r["uuid"] for r in rows] != list(frame["uuid"]):
            raise PreventOverwriteError(
                f"The items in {path} differ from this DataFrame's; reload it with "
                "df.caiman.reload_from_disk() and edit again.")
        for row, (_, edited) in zip(rows, frame.iterrows()):
            for column in ("algo", "input_movie_path"):
                if edited[column] != row[column]:
                    raise ValueError(f"Item {row['uuid']}: {column} cannot change (add a new "
                                     "item instead).")
            row["item_name"], row["comments"] = edited["item_name"], edited["comments"]
            row["params"] = encode_types(edited["params"])

    batch_lib.update_rows(path, write)
