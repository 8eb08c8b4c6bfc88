"""Per-item locks: ``flock`` on small files in the item folder, released by the kernel when
their process dies, so a dead run never blocks the next one and no lock is ever removed
under a live run (unlike Snakemake's own lock files, which cannot tell dead from alive).

- ``.run.lock``, exclusive, held by a job for its whole run: a second job of the same item
  (another notebook, another ``snakemake``) waits for the first, then reuses its result;
- ``.commit.lock``, exclusive while a run switches its files in or a manifest is updated,
  shared while a child job reads the manifest and opens the files it names.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOCK = ".run.lock"
COMMIT_LOCK = ".commit.lock"


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """An fd on a lock file (created if missing) and whether it is writable."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:  # a colleague's lock file: a read-only fd locks just as well
        return os.open(path, os.O_RDONLY), False


@contextmanager
def item_lock(folder: str | os.PathLike, name: str, shared: bool = False,
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold lock ``name`` (:data:`RUN_LOCK` or :data:`COMMIT_LOCK`) of the item in
    ``folder``, waiting for its holder if needed; ``on_wait(holder)`` is told who that is.

    In a folder where the lock file cannot even be created (a read-only copy of someone
    else's results), nobody can write either, and the block runs unlocked.
    """
    path = Path(folder) / name
    try:
        fd, writable = _open_lock_file(path)
    except OSError:
        yield
        return
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process")
            fcntl.flock(fd, mode)
        if writable and not shared:  # say who holds it, for whoever waits next
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_running(folder: str | os.PathLike) -> bool:
    """Whether a job holds the item's run lock now."""
    try:
        fd = os.open(Path(folder) / RUN_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def hold_idle(folder: str | os.PathLike) -> Iterator[None]:
    """Hold, without waiting, the run lock of the item in ``folder`` and of every item folder
    inside it (its descendants' folders nest in it), so that none of them is running while
    the block runs (e.g. removes the folder) and none starts meanwhile.

    Raises
    ------
    ItemRunningError
        When a job holds one of them now; the message names that folder and the holder.
    """
    from .errors import ItemRunningError

    folder = Path(folder)
    paths = [folder / RUN_LOCK, *(p for p in sorted(folder.rglob(RUN_LOCK))
                                  if p != folder / RUN_LOCK)]
    fds: list[int] = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:  # no lock file: never run, or a read-only copy
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                holder = holder or "another process"
                raise ItemRunningError(f"A job is running the item in {path.parent} now "
                                       f"({holder}).", path.parent, holder) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)  # releases the locks


def log_waiting(what: str) -> Callable[[str], None]:
    """An ``on_wait`` that tells the job's log whom it waits for."""
    return lambda holder: print(f"Waiting for {what}: held by {holder}.", file=sys.stderr, flush=True)
