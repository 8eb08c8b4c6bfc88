"""The batch viewer: one self-contained HTML file (Bokeh, JavaScript inline, data embedded)
with the batch table and an interactive view of each item.

``mesmerize-helpers view batch.tsv`` writes it; ``df.caiman.view()`` shows it in a notebook.
Needs the ``viewer`` extra (``pip install "mesmerize-helpers[viewer]"``, i.e. Bokeh).
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["BatchView", "batch_html", "default_path", "view", "write_viewer"]

#: Size (MB) a page aims to stay under; long traces are reduced (min/max envelopes) to fit.
MAX_MB = 50.0


def _page() -> Any:
    try:
        from . import page
    except ImportError as err:
        if "bokeh" not in str(err):
            raise
        raise ImportError(
            "The batch viewer needs Bokeh: pip install \"mesmerize-helpers[viewer]\" "
            f"(or pip install bokeh). ({err})"
        ) from err
    return page


def batch_html(batch: Any, uuids: list[str] | None = None, max_mb: float = MAX_MB,
               progress: bool = True) -> str:
    """The viewer page of a batch as one HTML string.

    Parameters
    ----------
    batch
        A batch TSV path or a loaded batch DataFrame (read again from disk).
    uuids
        Only these items (default: every item).
    max_mb
        Size the page aims to stay under.
    progress
        Show a progress bar while the items are read.
    """
    page = _page()
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    doc = page.build_document(batch, uuids=uuids, max_mb=max_mb, progress=progress)
    return file_html(doc, INLINE, doc.title)


def default_path(batch_path: str | os.PathLike) -> Path:
    """Where ``mesmerize-helpers view`` writes a batch's page: ``batch.tsv`` -> ``batch.html``."""
    return Path(batch_path).with_suffix(".html")


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_viewer(batch: Any, path: str | os.PathLike | None = None,
                 uuids: list[str] | None = None, max_mb: float = MAX_MB,
                 progress: bool = True) -> Path:
    """Write the viewer page of a batch (see :func:`batch_html`) and return its path
    (default: beside the batch TSV, ``<batch>.html``). The file replaces an older one
    atomically."""
    if path is None:
        from .data import batch_path

        path = default_path(batch if isinstance(batch, (str, os.PathLike)) else batch_path(batch))
    text = batch_html(batch, uuids=uuids, max_mb=max_mb, progress=progress)
    return _write_atomic(Path(path), text)


class BatchView:
    """A viewer page; shows itself in a notebook cell (an iframe holding the page, which the
    notebook file then stores too: keep ``max_mb`` small there)."""

    def __init__(self, page_html: str, height: int = 950):
        self.html = page_html
        self.height = height

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (it opens from disk, without a server)."""
        return _write_atomic(Path(path), self.html)

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
                f'style="width:100%;height:{self.height}px;border:none"></iframe>')

    def __repr__(self) -> str:
        return f"<BatchView: {len(self.html) / 1e6:.1f} MB page; save(path) to write it>"


#: Size (MB) of a page shown in a notebook, whose file keeps a copy of it.
NOTEBOOK_MB = 20.0


def view(batch: Any, uuids: list[str] | None = None, max_mb: float = NOTEBOOK_MB,
         progress: bool = True) -> BatchView:
    """The viewer page of a batch, for a notebook (``df.caiman.view()``); see
    :func:`batch_html`."""
    return BatchView(batch_html(batch, uuids=uuids, max_mb=max_mb, progress=progress))
