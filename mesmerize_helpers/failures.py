"""What a failed job says first: which item, which file, what went wrong, what to do.

The traceback follows in the manifest; this line is what ``status`` and the getters show,
so it must name the culprit without the reader having to decode a numpy stack.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .engine.data import MemoryBudgetError
from .engine.params import UnknownParameterError
from .validation import InvalidItemError

#: Below this much free space a failure is taken to be a full disk, whatever it says.
_FULL_DISK_BYTES = 4 * 2**20


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the filesystem holding ``path``."""
    path = Path(path).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether ``err`` (or the state of ``folder``'s disk) says there is no space left."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "no space left" in str(err).lower() or "disk quota" in str(err).lower():
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_DISK_BYTES
    except OSError:
        return False


def explain_failure(err: BaseException, label: str, movie: Path | None, folder: Path) -> str:
    """One paragraph: ``<label> failed [on <movie>]: <what>`` and what to do about it."""
    head = f"{label} failed" + (f" on {movie}" if movie is not None else "") + ": "
    if disk_full(err, folder):
        return (head + f"no space left on {mount_point(folder)} (writing into {folder}). Free "
                f"disk space there, or move the batch to a bigger disk, and re-run the item. "
                f"({type(err).__name__}: {err})")
    if isinstance(err, (InvalidItemError, UnknownParameterError, MemoryBudgetError)):
        return head + str(err)
    if isinstance(err, MemoryError):
        return (head + "out of memory. Give the job more memory (params['resources']"
                "['mem_mb'], or a bigger machine) or make the problem smaller (patches: rf, "
                "stride; fewer frames).")
    if isinstance(err, PermissionError):
        return head + f"{err}. Check that this user may read the input and write {folder}."
    if isinstance(err, FileNotFoundError):
        return head + f"{err}. Check the item's input path (or the raw data directory)."
    return (head + f"{type(err).__name__}: {err}. If the input movie or the params are at "
            "fault, fix them (df.caiman.update_params) and re-run; the traceback below says "
            "where it happened.")
