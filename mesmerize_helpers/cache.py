"""The cache of the cnmf accessor's costly getters (mesmerize-core's ``cnmf_cache``).

Each entry is a row of a DataFrame (:meth:`Cache.get_cache`): the item's ``uuid``, the
getter's name (``function``), its arguments (``kwargs``, defaults filled in), the value
(``return_val``), when it was last used (``time_stamp``) and added (``added_time``), and its
size (``bytes``). The least recently used entries are evicted when the cache exceeds its
size: a number of entries (``set_maxsize(10)``) or of bytes (``set_maxsize("1G")``; None is
1 GiB; 0 disables caching).

Getters return a deep copy of the cached value unless called with ``return_copy=False``
(the default only for lazy arrays), so changing a returned array never changes the cache.

Unlike mesmerize-core's, an entry also records the state of the item's result files
(``stamp``): a re-run or re-evaluation, done in this process or in another one, makes the old
entries misses instead of stale hits.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import re
import sys
import time
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["Cache", "cnmf_cache", "parse_size"]

_COLUMNS = ["uuid", "function", "kwargs", "return_val", "time_stamp", "added_time", "bytes",
            "stamp"]
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def parse_size(size: str) -> int:
    """``"1G"``, ``"500M"``, ``"1.5 GB"`` -> bytes (binary units, as mesmerize-core)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)I?B?\s*", str(size).upper())
    if match is None:
        raise ValueError(f"A cache size in bytes is a string like '1G' or '500M'; got {size!r}.")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def nbytes(value: Any) -> int:
    """Approximate memory held by a value (arrays, sparse matrices, containers, objects)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if sp.issparse(value):
        return sum(getattr(value, name).nbytes for name in ("data", "indices", "indptr")
                   if hasattr(value, name))
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if hasattr(value, "cache_nbytes"):
        return int(value.cache_nbytes())
    return sys.getsizeof(value)


def _equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    try:
        return bool(a == b)
    except ValueError:  # containers of arrays
        return repr(a) == repr(b)


class Cache:
    """Least-recently-used cache of getter results, keyed by item, getter and arguments.

    Parameters
    ----------
    cache_size
        Entries (int), bytes as a string (``"1G"``, ``"500M"``), or None (1 GiB).
    """

    def __init__(self, cache_size: int | str | None = None):
        self.cache = pd.DataFrame(columns=_COLUMNS)
        self.set_maxsize(cache_size)

    # --- mesmerize-core's API ------------------------------------------------------------

    def get_cache(self) -> pd.DataFrame:
        """The cache table (the same DataFrame object for the cache's lifetime)."""
        return self.cache

    def clear_cache(self) -> None:
        """Remove every entry."""
        self._drop(self.cache.index)

    def set_maxsize(self, max_size: int | str | None) -> None:
        """Limit the cache: ``int`` entries, ``"1G"``-like bytes, or None (1 GiB).

        ``0`` disables caching. Entries are evicted (least recently used first) on the next
        insertion.
        """
        if max_size is None:
            self.storage_type, self.size = "RAM", 1024 ** 3
        elif isinstance(max_size, str):
            self.storage_type, self.size = "RAM", parse_size(max_size)
        elif isinstance(max_size, (int, np.integer)) and not isinstance(max_size, bool) \
                and max_size >= 0:
            self.storage_type, self.size = "ITEMS", int(max_size)
        else:
            raise ValueError(f"Cache size must be a number of entries (int >= 0), a size such "
                             f"as '1G' or '500M', or None; got {max_size!r}.")

    def use_cache(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator for a getter of a series accessor with a keyword-only ``return_copy``.

        The getter's own arguments (defaults filled in, however they were passed) and the
        item's uuid and result-file stamp (``instance._cache_stamp()``) are the key; the
        item's files are held still meanwhile (``instance._held_still()``, a context, when
        the instance has one).
        """
        signature = inspect.signature(func)
        params = signature.parameters
        if "return_copy" not in params or \
                params["return_copy"].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{func.__name__} needs a keyword-only return_copy argument.")
        default_copy = params["return_copy"].default

        @functools.wraps(func)
        def wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
            return_copy = kwargs.pop("return_copy", default_copy)
            if not isinstance(return_copy, bool):
                raise TypeError("return_copy must be a bool")
            bound = signature.bind(instance, *args, **kwargs)
            bound.apply_defaults()
            arguments = {k: v for k, v in list(bound.arguments.items())[1:]}
            # the item's files held still (no commit) from its stamp to the value read
            with getattr(instance, "_held_still", contextlib.nullcontext)():
                uuid, stamp = instance._series["uuid"], instance._cache_stamp()
                hit = self._find(uuid, func.__name__, arguments, stamp)
                if hit is not None:
                    self.cache.at[hit, "time_stamp"] = time.time()
                    value = self.cache.at[hit, "return_val"]
                else:
                    value = func(instance, *args, **kwargs)
                    self._add(uuid, func.__name__, arguments, value, stamp)
            return copy.deepcopy(value) if return_copy else value

        return wrapper

    def invalidate(self, pre: bool = True, post: bool = True) -> Callable:
        """Decorator dropping an item's entries before and/or after the decorated method."""

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(func)
            def wrapper(instance: Any, *args: Any, **kwargs: Any) -> Any:
                uuid = instance._series["uuid"]
                if pre:
                    self.drop_item(uuid)
                try:
                    return func(instance, *args, **kwargs)
                finally:
                    if post:
                        self.drop_item(uuid)

            return wrapper

        return decorator

    # --- the table ----------------------------------------------------------------------

    def drop_item(self, uuid: str) -> None:
        """Remove every entry of one item."""
        self._drop(self.cache.index[self.cache["uuid"] == uuid])

    def _drop(self, index: Any) -> None:
        # in place, so get_cache() keeps returning the same object (as mesmerize-core's);
        # pandas 3.1 deprecates inplace=, and pyproject pins pandas < 4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            self.cache.drop(index=index, inplace=True)
            self.cache.reset_index(drop=True, inplace=True)

    def _find(self, uuid: str, function: str, arguments: dict, stamp: Hashable) -> int | None:
        def entries() -> pd.Index:
            return self.cache.index[(self.cache["uuid"] == uuid)
                                    & (self.cache["function"] == function)]

        # entries made before the item was re-run or re-evaluated can never hit again
        stale = [i for i in entries() if self.cache.at[i, "stamp"] != stamp]
        if stale:
            self._drop(stale)
        for index in entries():
            if _args_equal(arguments, self.cache.at[index, "kwargs"]):
                return int(index)
        return None

    def _add(self, uuid: str, function: str, arguments: dict, value: Any, stamp: Hashable
             ) -> None:
        if self.size == 0:
            return
        size = nbytes(value)
        if self.storage_type == "RAM":
            if size > self.size:
                return  # would evict everything and still not fit
            while len(self.cache) and self.cache["bytes"].sum() + size > self.size:
                self._drop([self.cache["time_stamp"].astype(float).idxmin()])
        else:
            while len(self.cache) >= self.size:
                self._drop([self.cache["time_stamp"].astype(float).idxmin()])
        now = time.time()
        self.cache.loc[len(self.cache)] = [uuid, function, arguments, value, now, now, size,
                                           stamp]


def _args_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)


#: The cache the cnmf accessor uses: ``cnmf_cache.set_maxsize("2G")``, ``.clear_cache()``.
cnmf_cache = Cache()
