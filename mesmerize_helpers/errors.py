"""Exceptions raised by the batch, the accessors and the runner (mesmerize-core's names)."""

from __future__ import annotations


class BatchFormatError(ValueError):
    """The batch TSV is malformed; the message names the file and the line."""


class DependencyError(Exception):
    """An item cannot be removed because other items use its output."""


class ItemRunningError(RuntimeError):
    """An item's folder cannot be removed: a job is running the item (or one inside its
    folder) right now. ``folder``: the running item's folder; ``holder``: who runs it."""

    def __init__(self, message: str, folder: object = None, holder: str = "") -> None:
        super().__init__(message)
        self.folder = folder
        self.holder = holder


class WrongAlgorithmExtensionError(Exception):
    """An algorithm-specific accessor (``s.mcorr``, ``s.cnmf``) was used on another algo's row."""


class BatchItemNotRunError(Exception):
    """The item has no manifest yet: it has not been run, or its run was killed."""


class BatchItemUnsuccessfulError(Exception):
    """The item ran and failed; the message carries the job's traceback."""


class ItemNotCurrentError(BatchItemUnsuccessfulError, BatchItemNotRunError):
    """The item's results no longer match the batch: its params or input changed since it
    ran ("outdated"), or its parent was re-run or is not done ("stale"). Re-run the item.

    Both a ``BatchItemUnsuccessfulError`` (its ``outputs["success"]`` reads False) and a
    ``BatchItemNotRunError`` (the run the batch asks for has not happened), so either
    ``except`` clause of a mesmerize-core notebook catches it.
    """


# mesmerize-core raises built-in exception types in these places; ours are more specific but
# stay instances of those, so ``except KeyError:`` in a notebook keeps working.

class _MessageKeyError(KeyError):
    """A KeyError whose message prints as written (KeyError quotes its argument)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ItemNotFoundError(_MessageKeyError, ValueError):
    """No item with this uuid or index in the batch (mesmerize-core: KeyError from
    ``uloc``, ValueError from methods taking an index)."""


class UnknownEvalParameterError(_MessageKeyError, ValueError):
    """``run_eval`` got a key that is not a CaImAn quality parameter (mesmerize-core:
    KeyError)."""


class UnknownColumnError(AttributeError, ValueError):
    """``update_item`` got a key that is not a batch column (mesmerize-core: AttributeError)."""


class DfofNotComputedError(AttributeError, ValueError):
    """``get_detrend_dfof`` before ``run_detrend_dfof`` (mesmerize-core: AttributeError)."""


class PreventOverwriteError(IndexError):
    """The batch on disk holds other items than this DataFrame: saving it would lose some;
    reload it (``df.caiman.reload_from_disk()``) first."""


class ReadOnlyBatchError(ValueError):
    """A mesmerize-core batch (pickle) is opened read-only: import it to change or run it."""
