"""Params helpers of the batch accessors: grid expansion and mesmerize-core's params diffs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["flatten_params", "params_diffs", "set_dotted"]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"main": {"gSig": [4, 4]}}`` -> ``{"main.gSig": [4, 4]}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _diff_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    """mesmerize-core's flat names: ``"main"``'s keys bare, one level of nesting dotted."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if key == "main" and isinstance(value, Mapping):
            flat.update(_diff_keys(value))
        elif isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _equal_values(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(a, b))
    except (TypeError, ValueError):
        return a == b


def params_diffs(params: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each params dict, the keys whose values are not the same in all of them
    (``"<default>"`` where a dict lacks a key another has)."""
    flat = [_diff_keys(p) for p in params]
    names = list(dict.fromkeys(k for f in flat for k in f))
    varying = [k for k in names
               if any(k not in f for f in flat)
               or any(not _equal_values(flat[0][k], f[k]) for f in flat[1:])]
    return [{k: f.get(k, "<default>") for k in varying} for f in flat]


def set_dotted(params: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """A deep copy of ``params`` with each dotted key of ``values`` set."""
    import copy

    out = copy.deepcopy(dict(params))
    for dotted, value in values.items():
        node = out
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Grid key {dotted!r}: {key!r} is not a dict in the base params.")
        node[last] = value
    return out


