"""Whether an item's results are current, decided from our own files only.

Every run of an item has a ``run_id``; its manifest records the identity of what it ran:
the params, the stored input path, the parent item and the ``run_id`` of the parent's run
it read, and the size and modification time of the raw files it read. An item is

- ``done`` when its manifest is successful, matches its batch row, and (for a child) its
  parent is done and is still the run it read;
- ``outdated`` when its params, input or a raw input file changed since it ran;
- ``stale`` when its parent was re-run since, or is itself not done;
- ``FAILED`` (failed manifest) or ``not run`` (no manifest).

Only ``done`` is done: ``load_batch`` shows the others as unsuccessful, getters raise
:class:`~.errors.ItemNotCurrentError`, and the next run redoes them. Nothing here depends on
Snakemake's metadata or on absolute paths, so moving or copying a batch folder and deleting
``.snakemake/`` change nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import read_manifest

#: ``resolve(stored_path) -> Path`` of a path as the batch stores it (raises OSError when
#: it resolves to nothing).
Resolver = Callable[[str], Path]

DONE, NOT_RUN, FAILED, OUTDATED, STALE = "done", "not run", "FAILED", "outdated", "stale"
#: Top-level params keys that do not change results: a job's memory or time limit, and the
#: note of which values were tuples or paths (``param_types.TYPES_KEY``).
NON_RESULT_KEYS = ("resources", "__types__")
#: Modification times closer than this (s) are equal: FAT and SMB keep 2 s resolution.
MTIME_TOLERANCE = 2.0


@dataclass(frozen=True)
class ItemState:
    """An item's state, why it is not done (for the user), and its manifest if any."""

    state: str
    reason: str | None = None
    manifest: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.state == DONE

    @property
    def run_id(self) -> str | None:
        return (self.manifest or {}).get("run_id") if self.done else None


def run_params(params: dict[str, Any]) -> dict[str, Any]:
    """The part of an item's params that defines its results (without job resources)."""
    return {key: value for key, value in params.items() if key not in NON_RESULT_KEYS}


def file_stat(path: str | os.PathLike) -> dict[str, Any]:
    """Size (bytes) and modification time (s) of a raw input file, as recorded in manifests."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime": round(stat.st_mtime, 3)}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the values that differ between two params dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        names: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            names += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return names
    return [] if _canonical(old) == _canonical(new) else [prefix.rstrip(".")]


def params_problem(row_params: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """Why the params a manifest ran with are not the row's, or None.

    ``params["eval"]`` also matches the quality params a later ``run_eval`` applied to the
    saved results (recorded in the manifest's ``eval``).
    """
    recorded = (manifest.get("identity") or {}).get("params") or manifest.get("params")
    if recorded is None:
        return None  # nothing recorded to compare with (not a manifest a run of ours wrote)
    ran = run_params(recorded)
    want = run_params(row_params)
    evaluated = manifest.get("eval")
    accepted_evals = [ran.get("eval")]
    if evaluated:
        accepted_evals += [evaluated, {**(ran.get("eval") or {}), **evaluated}]
    changed = _changed_keys({k: v for k, v in ran.items() if k != "eval"},
                            {k: v for k, v in want.items() if k != "eval"})
    if not any(_canonical(want.get("eval")) == _canonical(e) for e in accepted_evals):
        changed.append("eval")
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
    return f"its params changed since it ran ({shown})"


def input_problem(row: dict[str, Any], manifest: dict[str, Any], resolve: Resolver) -> str | None:
    """Why the input a manifest ran on is not the row's, or None (manifests made before
    run identities were recorded are checked on params and lineage only)."""
    identity = manifest.get("identity")
    if identity is None:
        return None
    if identity.get("input") != row["input_movie_path"]:
        return f"its input changed since it ran ({identity.get('input')} -> {row['input_movie_path']})"
    if identity.get("parent") != row["parent"]:
        return f"its parent changed since it ran ({identity.get('parent')} -> {row['parent']})"
    for role, recorded in (identity.get("files") or {}).items():
        try:
            now = file_stat(resolve(recorded["path"]))
        except OSError:
            continue  # archived or unreachable raw data: the results are still what they were
        if (now["size"] != recorded["size"]
                or abs(now["mtime"] - recorded["mtime"]) > MTIME_TOLERANCE):
            return f"its {role} file {recorded['path']} was modified since it ran"
    return None


def _state(row: dict[str, Any], manifest: dict[str, Any] | None, parent: ItemState | None,
           resolve: Resolver) -> ItemState:
    if manifest is None:
        return ItemState(NOT_RUN)
    if not manifest.get("success"):
        return ItemState(FAILED, manifest.get("traceback"), manifest)
    problem = params_problem(row["params"], manifest) or input_problem(row, manifest, resolve)
    if problem:
        return ItemState(OUTDATED, f"outdated: {problem}; re-run it.", manifest)
    if row["parent"] is None:
        return ItemState(DONE, None, manifest)
    used = (manifest.get("identity") or {}).get("parent_run")
    if parent is None or not parent.done:
        what = "not run" if parent is None else parent.state
        return ItemState(STALE, f"stale: its parent {row['parent']} is {what}; re-run it.",
                         manifest)
    if used != parent.run_id:
        return ItemState(STALE, (
            f"stale: its parent {row['parent']} was re-run since (this item used run {used}, "
            f"the parent's results are now run {parent.run_id}); re-run it."), manifest)
    return ItemState(DONE, None, manifest)


def item_states(
    rows: list[dict[str, Any]], folders: dict[str, Path], resolve: Resolver
) -> dict[str, ItemState]:
    """The state of every item of ``rows`` (a whole batch, or an item and its ancestors).

    Parameters
    ----------
    rows
        Batch rows (:func:`~.batch.read_table`).
    folders
        Each item's output folder by uuid.
    resolve
        Resolves a stored path (``batch.resolve_path`` bound to the batch's folders).
    """
    by_uuid = {row["uuid"]: row for row in rows}
    states: dict[str, ItemState] = {}

    def state_of(uuid: str) -> ItemState:
        if uuid not in states:
            row = by_uuid[uuid]
            parent = state_of(row["parent"]) if row["parent"] in by_uuid else None
            states[uuid] = _state(row, read_manifest(folders[uuid]), parent, resolve)
        return states[uuid]

    for uuid in by_uuid:
        state_of(uuid)
    return states
