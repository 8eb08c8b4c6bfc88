"""The batch file format: a TSV with one row per item and a header line.

``params`` is one JSON object per cell; text cells escape backslash, tab and newline as
``\\\\``, ``\\t`` and ``\\n`` so every item stays on one line and diffs stay readable. A
malformed file is an error naming the file and line, never a half-loaded batch; a file saved by
a spreadsheet (byte-order mark, CRLF, quoted cells) reads as written. Writes replace the file
atomically and keep its mode.
"""

from __future__ import annotations

import json
import os
import uuid as uuid_lib
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import BatchFormatError
from .manifest import current_umask, write_text_atomic

ALGOS = ("mcorr", "cnmf", "cnmfe")
#: Columns stored in the TSV, in file order.
TSV_COLUMNS = (
    "uuid", "item_name", "algo", "input_movie_path", "params", "comments", "added_time", "parent",
)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    out, i = [], 0
    codes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in codes:
            out.append(codes[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def params_to_json(params: Any) -> str:
    """Serialise an item's params dict to one JSON line, checking its shape.

    Raises
    ------
    TypeError
        When params is not a dict with a ``"main"`` dict, or is not JSON-serialisable.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict like {{'main': {{...}}}}, got {type(params).__name__}.")
    if not isinstance(params.get("main"), dict):
        raise TypeError(
            "params must have a 'main' dict holding CaImAn's parameters, e.g. "
            "{'main': {'max_shifts': [6, 6]}}; got keys " + repr(sorted(params))
        )
    try:
        return json.dumps(params, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as err:
        raise TypeError(f"params must be JSON-serialisable: {err}") from None


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays are common in params built in notebooks
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{value!r} of type {type(value).__name__} is not JSON-serialisable")


def _unquote_spreadsheet(cell: str) -> str:
    """A cell as a spreadsheet quotes it (wrapped in double quotes, inner quotes doubled)
    -> its text."""
    if len(cell) >= 2 and cell[0] == cell[-1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell


def _parse_row(fields: list[str], header: list[str], where: str) -> dict[str, Any]:
    row = dict(zip(header, fields))
    # a JSON object never starts with a quote: only a spreadsheet's quoting does that
    row["params"] = _unquote_spreadsheet(row["params"])
    for name in ("item_name", "comments", "input_movie_path"):
        row[name] = _unescape(row[name])
    try:
        uuid_lib.UUID(row["uuid"])
    except ValueError:
        raise BatchFormatError(f"{where}: invalid uuid {row['uuid']!r}.") from None
    if row["algo"] not in ALGOS:
        raise BatchFormatError(f"{where}: algo {row['algo']!r} is not one of {', '.join(ALGOS)}.")
    try:
        params = json.loads(row["params"])
    except json.JSONDecodeError as err:
        raise BatchFormatError(f"{where}: params is not valid JSON ({err}).") from None
    if not isinstance(params, dict) or not isinstance(params.get("main"), dict):
        raise BatchFormatError(f"{where}: params must be a JSON object with a 'main' object.")
    row["params"] = params
    row["parent"] = row["parent"] or None
    return row


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate the rows of a batch TSV.

    A UTF-8 byte-order mark, Windows line ends and a ``params`` cell quoted the way
    spreadsheets quote it (in double quotes, inner quotes doubled) are accepted, so a batch
    saved by Excel loads.

    Returns
    -------
    list of dict
        One dict per item with the TSV columns; ``params`` parsed, ``parent`` None if empty.

    Raises
    ------
    BatchFormatError
        Naming the file and line of the first problem; nothing is half-loaded.
    """
    path = Path(path)
    lines = [line.removesuffix("\r")
             for line in path.read_text(encoding="utf-8-sig").split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise BatchFormatError(f"{path}: empty file, expected a header line.")
    header = lines[0].split("\t")
    missing = [c for c in TSV_COLUMNS if c not in header]
    if missing:
        raise BatchFormatError(f"{path}, line 1: header lacks column(s) {', '.join(missing)}.")
    rows, seen = [], set()
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path}, line {number}"
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise BatchFormatError(
                f"{where}: {len(fields)} tab-separated fields, expected {len(header)} "
                f"({', '.join(header)})."
            )
        row = _parse_row(fields, header, where)
        if row["uuid"] in seen:
            raise BatchFormatError(f"{where}: duplicate uuid {row['uuid']}.")
        seen.add(row["uuid"])
        rows.append(row)
    for row in rows:
        if row["parent"] is not None and row["parent"] not in seen:
            raise BatchFormatError(
                f"{path}: item {row['uuid']} has parent {row['parent']}, which is not in the batch."
            )
    _check_no_cycle(rows, path)
    return rows


def _check_no_cycle(rows: list[dict[str, Any]], path: Path) -> None:
    parents = {row["uuid"]: row["parent"] for row in rows}
    done: set[str] = set()
    for start in parents:
        chain: list[str] = []
        uuid: str | None = start
        while uuid is not None and uuid not in done:
            if uuid in chain:
                loop = chain[chain.index(uuid):] + [uuid]
                raise BatchFormatError(
                    f"{path}: the parent column makes a cycle: {' -> '.join(loop)}; an item "
                    "cannot descend from itself. Fix the parent of one of these items."
                )
            chain.append(uuid)
            uuid = parents[uuid]
        done.update(chain)


def _format_row(row: dict[str, Any]) -> str:
    cells = []
    for name in TSV_COLUMNS:
        value = row.get(name)
        if name == "params":
            cells.append(params_to_json(value))
        elif value is None:
            cells.append("")
        else:
            cells.append(_escape(str(value)))
    return "\t".join(cells)


def write_table(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Atomically replace the TSV at ``path`` with ``rows`` (temp file, fsync, rename).

    The caller holds the batch lock (see :func:`locked_rows`), so temp files left by a
    writer that was killed are removed here. A new batch file follows the umask, a replaced
    one keeps its mode.

    Raises
    ------
    PermissionError
        When the batch file or its folder is read-only; the message says how to proceed.
    """
    path = Path(path)
    _check_writable(path)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    text = "\t".join(TSV_COLUMNS) + "\n" + "".join(_format_row(r) + "\n" for r in rows)
    write_text_atomic(path, text, newline="")


def _check_writable(path: Path) -> None:
    """Refuse to replace a read-only batch (also for root, who could: the mode says the
    owner froze it) or to write into a folder we cannot write to."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and (not mode & 0o222 or not os.access(path, os.W_OK)):
        raise PermissionError(
            f"Batch {path} is read-only (mode {oct(mode & 0o777)}); nothing was written. Make "
            f"it writable (chmod u+w {path}) or work on a copy."
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write batch {path}: its folder {path.parent} is not writable by this "
            "user; nothing was written."
        )


def lock_for(path: str | os.PathLike) -> FileLock:
    """The file lock guarding a batch TSV (a ``.lock`` file beside it, created so that the
    users who may write the batch may also take its lock)."""
    path = Path(path)
    return FileLock(str(path.with_name(path.name + ".lock")), timeout=120,
                    mode=0o666 & ~current_umask())
