"""Exceptions raised by the batch, the accessors and the runner (mesmerize-core's names)."""

from __future__ import annotations


class BatchFormatError(ValueError):
    """The batch TSV is malformed; the message names the file and the line."""


class DependencyError(Exception):
    """An item cannot be removed because other items use its output."""


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
