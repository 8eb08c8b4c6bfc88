"""A small size-limited LRU cache for the costly getters of the cnmf accessor.

Entries are keyed by the item's uuid and its manifest's modification time, so re-running or
re-evaluating an item (which rewrites its manifest) makes the old entries unreachable; they
are also dropped explicitly by :meth:`Cache.invalidate`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import scipy.sparse as sp

_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_size(size: int | str) -> int:
    """``"1G"``, ``"500M"``, ``"2.5 GB"`` or a number of bytes -> bytes."""
    if isinstance(size, (int, float)):
        return int(size)
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(size).upper())
    if match is None:
        raise ValueError(f"Cache size must be bytes or like '1G', '500M'; got {size!r}.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def nbytes(value: Any) -> int:
    """Approximate memory held by a cached value (arrays, sparse matrices, containers)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if sp.issparse(value):
        return value.data.nbytes + getattr(value, "indices", np.empty(0)).nbytes
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if hasattr(value, "__dict__"):
        return sum(nbytes(v) for v in vars(value).values())
    return 64


class Cache:
    """Least-recently-used cache bounded by the total size of its values.

    Parameters
    ----------
    maxsize
        Bytes, or a string such as ``"1G"``. A value larger than this is not cached.
    """

    def __init__(self, maxsize: int | str = "1G"):
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.set_maxsize(maxsize)

    def set_maxsize(self, maxsize: int | str) -> None:
        """Change the size limit, evicting entries as needed."""
        self.maxsize = parse_size(maxsize)
        self._evict()

    @property
    def size(self) -> int:
        """Bytes held now."""
        return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, computing and storing it on a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        size = nbytes(value)
        if size <= self.maxsize:
            self._entries[key] = (value, size)
            self._evict()
        return value

    def invalidate(self, uuid: str) -> None:
        """Drop every entry of one item (keys start with its uuid)."""
        for key in [k for k in self._entries if isinstance(k, tuple) and k[0] == uuid]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        while self._entries and self.size > self.maxsize:
            self._entries.popitem(last=False)


#: The cache the cnmf accessor uses; ``cnmf_cache.set_maxsize("2G")`` to change its limit.
cnmf_cache = Cache("1G")
