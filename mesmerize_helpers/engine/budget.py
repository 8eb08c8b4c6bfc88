"""A job's memory budget: how much a step may hold at once, and the early failure when even
its smallest block does not fit (``params["resources"]["mem_mb"]``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Budget", "MemoryBudgetError", "require", "MB", "BASE_BYTES", "MAX_BLOCK_BYTES",
           "MIN_BLOCK_BYTES"]

MB = 1 << 20

#: Memory a job's interpreter, libraries and small arrays take before any data (bytes).
BASE_BYTES = 400 * MB
#: Largest block read at once: bigger blocks do not make a pass over the file faster.
MAX_BLOCK_BYTES = 256 * MB
#: Smallest useful block (a few hundred pixel traces of a long movie).
MIN_BLOCK_BYTES = 4 * MB


@dataclass(frozen=True)
class Budget:
    """How much memory a job may use, and how it is shared out.

    ``total`` is the job's limit in bytes (None: unlimited, every step reads the whole
    matrix at once: the in-RAM path). Of what is left after :data:`BASE_BYTES`, an eighth
    goes to one block of data (a step holds a block and a few temporaries of its size), the
    rest to the model (traces, footprints) and to patches in flight.
    """

    total: int | None = None
    #: Bytes of one block when set (otherwise derived from ``total``): small blocks make
    #: a test read a small movie in many pieces.
    block: int | None = None

    @classmethod
    def from_mb(cls, mem_mb: float | None) -> Budget:
        """A budget of ``mem_mb`` megabytes (None: unlimited)."""
        return cls(None if mem_mb is None else int(float(mem_mb) * MB))

    @property
    def unlimited(self) -> bool:
        return self.total is None

    @property
    def free(self) -> int | None:
        """Bytes above the fixed part (None: unlimited)."""
        return None if self.total is None else max(self.total - BASE_BYTES, 0)

    def block_bytes(self) -> int | None:
        """Bytes of one block of data (None: unlimited)."""
        if self.block is not None:
            return int(self.block)
        if self.total is None:
            return None
        return int(min(max(self.free // 8, MIN_BLOCK_BYTES), MAX_BLOCK_BYTES))

    def work_bytes(self) -> int | None:
        """Bytes for the working arrays of one step beyond its blocks (a patch's data, the
        initialization's copy of the movie, ...; None: unlimited)."""
        if self.total is None:
            return None
        return int(self.free // 2)

    def mb(self) -> float | None:
        return None if self.total is None else self.total / MB


class MemoryBudgetError(MemoryError):
    """A step cannot run within the job's memory budget, even with its smallest blocks."""


def require(budget: Budget, need: int, what: str, hint: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``need`` bytes of working memory (``what``)
    exceed the budget's :meth:`~Budget.work_bytes`; the message names the smallest
    ``mem_mb`` that would do and ``hint``, another way out."""
    work = budget.work_bytes()
    if work is None or need <= work:
        return
    minimum = int(np.ceil((BASE_BYTES + 2 * need) / MB / 100) * 100)
    raise MemoryBudgetError(
        f"{what} needs {need / MB:.0f} MB of working memory, more than the "
        f"{work / MB:.0f} MB that params['resources']['mem_mb'] = {budget.mb():.0f} leaves "
        f"it: set params['resources']['mem_mb'] to at least {minimum}, or {hint}.")
