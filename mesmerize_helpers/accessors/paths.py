"""``df.paths`` and ``s.paths``: where a batch lives and how its stored paths resolve."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .. import batch as batch_lib

__all__ = ["PathsDataFrameExtension", "PathsSeriesExtension", "batch_path_of"]


def batch_path_of(obj: pd.DataFrame | pd.Series) -> Path:
    """The batch file a DataFrame or row came from (``attrs["batch_path"]``)."""
    path = obj.attrs.get("batch_path")
    if path is None:
        raise ValueError(
            "This DataFrame/row has no batch path: load it with load_batch() or create_batch(), "
            "and keep attrs when building new frames from it."
        )
    return Path(path)


# --- paths ---------------------------------------------------------------------------

class _PathsAccessor:
    def __init__(self, obj: pd.DataFrame | pd.Series):
        self._obj = obj

    def get_batch_path(self) -> Path:
        """The batch TSV this DataFrame or row belongs to."""
        return batch_path_of(self._obj)

    def set_batch_path(self, path: str | os.PathLike) -> None:
        """Attach this DataFrame or row to the batch file ``path`` (``attrs["batch_path"]``)."""
        self._obj.attrs["batch_path"] = Path(path).expanduser().resolve()

    def resolve(self, path: str | os.PathLike) -> Path:
        """A stored path made absolute: batch dir first, then the raw data dir."""
        return batch_lib.resolve_path(path, self.get_batch_path().parent)

    def split(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Split an absolute path into (batch or raw data dir, path relative to it)."""
        path = Path(path).resolve()
        for root in (self.get_batch_path().parent, batch_lib.get_parent_raw_data_path()):
            if root is not None and path.is_relative_to(Path(root).resolve()):
                root = Path(root).resolve()
                return root, path.relative_to(root)
        raise NotADirectoryError(  # mesmerize-core's error type
            f"{path} is under neither the batch dir {self.get_batch_path().parent} nor the raw "
            f"data dir {batch_lib.get_parent_raw_data_path()}."
        )


@pd.api.extensions.register_dataframe_accessor("paths")
class PathsDataFrameExtension(_PathsAccessor):
    """``df.paths``: where the batch lives and how its stored paths resolve."""


@pd.api.extensions.register_series_accessor("paths")
class PathsSeriesExtension(_PathsAccessor):
    """``s.paths``: the same for one row."""


