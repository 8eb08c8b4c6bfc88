"""Tuples and paths in an item's params survive the batch TSV's JSON.

mesmerize-core keeps params in a pickle, so ``{"gSig": (10, 10), "Ain_path": Path(...)}``
comes back as written. JSON has neither tuples nor paths: they are stored as lists and
strings (what the engine reads) and their Python types are listed under one extra key,
``"__types__"`` (``{"main.gSig": "tuple", "Ain_path": "path"}``), from which the batch
DataFrame restores them. Readers of the TSV that do not know the key see plain JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["TYPES_KEY", "decode_types", "encode_types"]

#: Key of the params dict holding the Python types of values JSON cannot express.
TYPES_KEY = "__types__"


def encode_types(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` in plain JSON types, with ``TYPES_KEY`` naming what was a tuple
    or a path (dotted keys; list positions are numbers). Other values are kept as they are.
    """
    if not isinstance(params, Mapping):
        return params  # not a params dict: left for params_to_json to reject
    types: dict[str, str] = {}
    plain = _encode(dict(params), "", types)
    plain.pop(TYPES_KEY, None)
    if types:
        plain[TYPES_KEY] = types
    return plain


def _encode(value: Any, where: str, types: dict[str, str]) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _encode(v, f"{where}{k}.", types) for k, v in value.items()
                if k != TYPES_KEY}
    if isinstance(value, PurePath):
        types[where[:-1]] = "path"
        return str(value)
    if isinstance(value, tuple):
        types[where[:-1]] = "tuple"
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}{i}.", types) for i, v in enumerate(value)]
    return value


def decode_types(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as the user wrote them: the values listed under ``TYPES_KEY`` turned back
    into tuples and ``pathlib.Path``; the key itself removed. Entries naming a value that is
    no longer there (the TSV was edited by hand) are ignored."""
    import copy
    from pathlib import Path

    params = copy.deepcopy(dict(params))
    types = params.pop(TYPES_KEY, None) or {}
    # deepest first, so a tuple of tuples is rebuilt from the inside out
    for dotted in sorted(types, key=lambda d: d.count("."), reverse=True):
        *parents, last = dotted.split(".")
        node: Any = params
        try:
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            index = int(last) if isinstance(node, list) else last
            value = node[index]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if types[dotted] == "tuple" and isinstance(value, (list, tuple)):
            node[index] = tuple(value)
        elif types[dotted] == "path" and isinstance(value, str):
            node[index] = Path(value)
    return params
