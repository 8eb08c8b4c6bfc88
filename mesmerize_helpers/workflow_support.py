"""What the Snakefile needs from a batch: item folders, inputs, wildcard patterns, resources.

Kept here (not in the ``.smk`` files) so the rules stay thin and this logic is tested.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from . import runstate
from .batch import SOMATA_SEEDS, TSV_COLUMNS, item_dir, read_table, resolve_path
from .commit import RERUN_DIR, read_done
from .manifest import DONE, MANIFEST, write_text_atomic
from .runstate import ItemState, run_params
from .settings import remembered_raw_data
from .step_support import DEFAULT_MEM_MB

__all__ = [
    "TSV_COLUMNS", "adopt_finished", "all_folders_pattern", "done_path", "folder_pattern", "item_ain",
    "item_by_folder", "item_folders", "item_input", "item_patch_files", "item_rerun",
    "item_states", "load_items", "scatter_pattern", "fit_patch_from_snakemake",
    "manifest_path", "raw_data_dir", "report_labels", "resources",
    "results_root", "run_from_snakemake", "run_params",
]

#: Bytes per pixel-frame of a float32 movie, and how many movie copies a step holds at once.
_MEMORY_FACTOR = {"mcorr": 0.0, "cnmf": 3.0, "cnmfe": 4.0}  # small movies: a few copies
_MCORR_CHUNK_FRAMES = 200


def results_root(batch: Path, results: str | None) -> Path:
    """Item folders' root: ``results`` from the config, else the batch file's directory."""
    return Path(results).resolve() if results else Path(batch).resolve().parent


def load_items(batch: Path) -> list[dict[str, Any]]:
    """The batch rows, parsed and checked (see :func:`mesmerize_helpers.batch.read_table`)."""
    return read_table(batch)


def item_folders(items: list[dict[str, Any]], results: Path) -> dict[str, Path]:
    """Map each uuid to its output folder, ``<results>/[<ancestors>/]<uuid>``."""
    parents = {item["uuid"]: item["parent"] for item in items}
    return {uuid: item_dir(results, uuid, parents) for uuid in parents}


def manifest_path(folder: Path) -> str:
    """The manifest file that marks a finished item (the rule's output)."""
    return str(folder / MANIFEST)


def folder_pattern(items: list[dict[str, Any]], folders: dict[str, Path], results: Path, algo: str) -> str:
    """Regex for the ``item`` wildcard matching exactly the folders of ``algo`` items."""
    names = [
        re.escape(folders[item["uuid"]].relative_to(results).as_posix())
        for item in items if item["algo"] == algo
    ]
    # a pattern that matches nothing keeps a rule with no items from claiming any target
    return "|".join(names) if names else "(?!x)x"


def all_folders_pattern(folders: dict[str, Path], results: Path) -> str:
    """Regex for the ``item`` wildcard matching the folder of any item."""
    names = [re.escape(folder.relative_to(results).as_posix()) for folder in folders.values()]
    return "|".join(names) if names else "(?!x)x"


def report_labels(item: dict[str, Any]) -> dict[str, str]:
    """Labels of an item's figure in the Snakemake report."""
    return {"algo": item["algo"], "name": item["item_name"], "uuid": item["uuid"]}


def item_by_folder(
    items: list[dict[str, Any]], folders: dict[str, Path], results: Path, folder: str
) -> dict[str, Any]:
    """The item whose folder (relative to ``results``) is ``folder``."""
    uuid = Path(folder).name
    for item in items:
        if item["uuid"] == uuid:
            return item
    raise KeyError(f"No item with folder {folder} in the batch.")


def item_input(
    item: dict[str, Any], folders: dict[str, Path], batch: Path, raw_data: str | None
) -> str | list[str]:
    """The job's input: the parent's :data:`~.manifest.DONE` marker (so the parent runs
    first), or the raw movie resolved from the batch; ``[]`` when the raw movie is missing,
    so that one missing movie fails its own item (the job names the path) instead of the
    whole run (Snakemake's MissingInputException while building the DAG)."""
    if item["parent"] is not None:
        return done_path(folders[item["parent"]])
    return _existing(item["input_movie_path"], batch, raw_data)


def _existing(stored: str, batch: Path, raw_data: str | None) -> str | list[str]:
    """A stored path resolved, as a one-file input; ``[]`` when there is no such file."""
    try:
        path = resolve_path(stored, batch.parent, _raw(raw_data))
    except FileNotFoundError:
        return []
    return str(path) if path.exists() else []


def expected_movie(item: dict[str, Any], batch: Path, raw_data: str | None) -> str:
    """The raw movie path of an item as the job should report it when it is missing."""
    raw = _raw(raw_data)
    try:
        return str(resolve_path(item["input_movie_path"], batch.parent, raw))
    except FileNotFoundError:  # relative paths are looked up in the raw-data dir last
        return str(Path(raw if raw is not None else batch.parent, item["input_movie_path"]))


def _raw(raw_data: str | os.PathLike | None) -> Path | None:
    return Path(raw_data) if raw_data else None


def raw_data_dir(config_value: str | None, batch: Path) -> str:
    """The raw-data directory of a run: the config's ``raw_data``, else the one remembered
    beside the batch (:mod:`.settings`), else ``""``."""
    remembered = remembered_raw_data(batch.parent)
    return config_value or (str(remembered) if remembered else "")


def done_path(folder: Path) -> str:
    """The marker that a job of the item finished (the rule's output)."""
    return str(folder / DONE)


def item_states(items: list[dict[str, Any]], folders: dict[str, Path], batch: Path,
                raw_data: str | None) -> dict[str, ItemState]:
    """Every item's :class:`~.runstate.ItemState`, from the manifests and the batch rows."""
    raw = _raw(raw_data)
    return runstate.item_states(items, folders,
                                lambda stored: resolve_path(stored, batch.parent, raw))


def adopt_finished(items: list[dict[str, Any]], folders: dict[str, Path],
                   states: dict[str, ItemState]) -> None:
    """Give a done-marker to every item whose results are current but that has none: results
    made before the marker existed (an older version), or a run killed between its manifest
    and its marker. Parents first, so no marker is newer than its children's."""
    depth = {item["uuid"]: len(folders[item["uuid"]].parts) for item in items}
    for uuid in sorted(depth, key=depth.get):
        folder = folders[uuid]
        if states[uuid].done and read_done(folder) is None:
            try:
                write_text_atomic(folder / DONE, f"{states[uuid].manifest.get('run_id') or 'adopted'}\n")
            except OSError:
                pass  # a read-only copy: snakemake would re-run it, nobody can anyway


def item_rerun(item: dict[str, Any], folders: dict[str, Path],
               states: dict[str, ItemState]) -> list[str]:
    """A re-run trigger for an item whose Snakemake output (the done-marker) exists but whose
    results our files say are not current (outdated or stale); else nothing.

    The trigger ``<item>/.rerun/<run id in the marker>`` is created here if missing, so it is
    newer than the marker, and Snakemake re-runs the item whatever else the files' times or
    its metadata say. (A missing trigger with a rule making it would not do: Snakemake does
    not re-make a missing input of a job whose output is present.) Named after the run that
    needs redoing, it is new for each such run. In a folder this user cannot write to, no
    trigger is made (nor could the item run).
    """
    folder = folders[item["uuid"]]
    marked = read_done(folder)
    if marked is None or states[item["uuid"]].done:
        return []
    trigger = folder / RERUN_DIR / marked
    try:
        trigger.parent.mkdir(exist_ok=True)
        if not trigger.exists():
            write_text_atomic(trigger, f"{states[item['uuid']].reason}\n")
    except OSError:
        return []
    return [str(trigger)]


def _scatters(item: dict[str, Any]) -> bool:
    main = item["params"]["main"]
    # a seeded fit has no patches
    return (item["algo"] == "cnmf" and bool(item["params"].get("scatter_patches"))
            and main.get("rf") is not None and item["params"].get("Ain") is None
            and item["params"].get("Ain_path") is None)


def scatter_pattern(items: list[dict[str, Any]], folders: dict[str, Path], results: Path) -> str:
    """Regex for the ``item`` wildcard matching the folders of items that scatter patches."""
    names = [re.escape(folders[i["uuid"]].relative_to(results).as_posix())
             for i in items if _scatters(i)]
    return "|".join(names) if names else "(?!x)x"


def item_patch_files(
    item: dict[str, Any], items: list[dict[str, Any]], folders: dict[str, Path], batch: Path,
    raw_data: str | None,
) -> list[str]:
    """The patch-fit files an item gathers (one per rf/stride patch), or [] if it does not
    scatter. The patch grid comes from the frame size of the item's raw ancestor movie."""
    if not _scatters(item):
        return []
    from .engine.patches import n_patches
    from .io.movies import open_movie

    by_uuid = {i["uuid"]: i for i in items}
    root = by_uuid[_root_uuid(item["uuid"], by_uuid)]
    try:
        dims = open_movie(item_input(root, folders, batch, raw_data)).shape[1:]
    except (OSError, ValueError):
        return []  # the raw movie is missing or unreadable: its own job reports that
    folder = folders[item["uuid"]]
    return [str(folder / "patches" / f"{i}.npz") for i in range(n_patches(dims, item["params"]["main"]))]


def _root_uuid(uuid: str, by_uuid: dict[str, dict[str, Any]]) -> str:
    while by_uuid[uuid]["parent"] is not None:
        uuid = by_uuid[uuid]["parent"]
    return uuid


def item_ain(item: dict[str, Any], batch: Path, raw_data: str | None) -> list[str]:
    """The seed-mask file of a seeded CNMF item (``params["Ain"]``, or mesmerize-core's
    ``params["Ain_path"]``), or an empty list (also for ``"somata"``: the job finds its
    seeds in the input movie; and for a missing file: the job reports it, see
    :func:`expected_ain`). A relative ``Ain_path`` is looked up first in
    ``<batch dir>/<uuid>/`` (mesmerize-core's item folder), then as ``Ain``."""
    ain = item["params"].get("Ain")
    if ain is None:
        ain = item["params"].get("Ain_path")
        if ain is not None and (batch.parent / item["uuid"] / ain).is_file():
            return [str(batch.parent / item["uuid"] / ain)]
    if ain is None or ain == SOMATA_SEEDS:
        return []
    found = _existing(ain, batch, raw_data)
    return [found] if found else []


def expected_ain(item_params: dict[str, Any], batch: Path, raw_data: str | None) -> str | None:
    """Where a seeded item's seed-mask file should be (for the job's message), or None."""
    ain = item_params.get("Ain")
    if ain is None:
        ain = item_params.get("Ain_path")
    if ain is None or ain == SOMATA_SEEDS:
        return None
    return expected_movie({"input_movie_path": ain}, batch, raw_data)


def _movie_megabytes(path: str | list) -> float:
    """Size of the job's input movie as float32, in MB (from a manifest: the parent's movie)."""
    if not path:  # a missing raw movie: its job fails at once
        return 0.0
    path = Path(path)
    if path.name == DONE:
        registered = path.parent / "mcorr.npy"
        return registered.stat().st_size / 1e6 if registered.exists() else 0.0
    if not path.exists():
        return 0.0
    return path.stat().st_size / 1e6 * 2  # raw movies are mostly 16-bit; float32 doubles them


def _whole_field_mb(item: dict[str, Any], movie_mb: float) -> float:
    """The budget (MB) a cnmf/cnmfe job needs for a whole-field initialization (no
    ``rf``, no seeds): its copy of the movie downsampled by ``ssub``/``tsub``, a few times
    (what the job checks before it starts, :func:`~.engine.data.require`); 0 otherwise."""
    from .engine.data import BASE_BYTES, MB
    from .engine.params import flatten_main

    main = flatten_main(item["params"].get("main") or {})
    seeded = item["params"].get("Ain") or item["params"].get("Ain_path") or main.get("Ain")
    if main.get("rf") is not None or seeded:
        return 0.0
    cnmfe = item["algo"] == "cnmfe"
    ssub = max(int(main.get("ssub", 1 if cnmfe else 2) or 1), 1)
    tsub = max(int(main.get("tsub", 1 if cnmfe else 2) or 1), 1)
    copies = 3 if cnmfe else 4  # engine.cnmfe.init_bytes, engine.patches.greedy_bytes
    return BASE_BYTES / MB + 2 * copies * movie_mb / (ssub * ssub * tsub) + 100


def _patch_mb(item: dict[str, Any], path: str | list) -> float:
    """The budget (MB) a cnmf job needs to fit one patch in memory (the engine's own
    estimate, which the job checks before it starts): it grows with the number of frames,
    so a long movie's patches get what they need instead of a job that stops; 0 without
    patches, for cnmfe (a patch too long for the budget is fitted from its file, see
    ``engine.cnmfe.fit_patches``), or when the movie or the params cannot be read (the job
    then says why)."""
    from .engine.data import BASE_BYTES, MB
    from .engine.params import flatten_main

    main = flatten_main(item["params"].get("main") or {})
    seeded = item["params"].get("Ain") or item["params"].get("Ain_path") or main.get("Ain")
    if main.get("rf") is None or seeded or item["algo"] == "cnmfe":
        return 0.0
    try:
        from .engine.params import as_pair
        from .io.movies import open_movie

        p = Path(path)
        T, h, w = open_movie(p.parent / "mcorr.npy" if p.name == DONE else p).shape
        rf_y, rf_x = (int(v) for v in as_pair(main["rf"], "rf"))
        pixels = min(2 * rf_y, int(h)) * min(2 * rf_x, int(w))
        with warnings.catch_warnings():  # the params' warnings are the job's to give
            warnings.simplefilter("ignore")
            from .engine.cnmf_field import cnmf_params
            from .engine.patches import patch_bytes

            need = patch_bytes(pixels, int(T), cnmf_params(main))
    except Exception:  # noqa: BLE001 (an unreadable movie or bad params fail in the job)
        return 0.0
    return (BASE_BYTES + 2 * need) / MB + 100


def _frame_megabytes(path: str | list, movie_mb: float) -> float:
    """One float32 frame of the job's input movie, in MB (read from the movie's header;
    a thousandth of the movie when it cannot be opened)."""
    try:
        from .io.movies import open_movie

        p = Path(path)
        shape = open_movie(p.parent / "mcorr.npy" if p.name == DONE else p).shape
        return float(shape[1]) * float(shape[2]) * 4 / 1e6
    except Exception:  # noqa: BLE001 (an unreadable movie fails in its job, with its message)
        return movie_mb / 1000


def resources(item: dict[str, Any], input_path: str | list, name: str, config: dict,
              attempt: int = 1) -> int:
    """A job resource (``mem_mb``, ``runtime`` minutes, ``cpus_per_task``) for one item.

    ``params["resources"]`` of the item wins; otherwise memory follows the movie size and the
    algorithm (mcorr streams frame chunks; cnmf/cnmfe jobs read the movie in blocks within
    this budget: at most :data:`~.step_support.DEFAULT_MEM_MB`, unless a whole-field
    initialization or one patch needs more), and retries (``attempt``) get more memory and time.
    """
    override = item["params"].get("resources", {})
    if name in override:
        return int(override[name])
    defaults = config.get("resources", {})
    movie_mb = _movie_megabytes(input_path)
    if name == "mem_mb":
        base = int(defaults.get("mem_mb_min", 1000))
        if item["algo"] == "mcorr":
            # mcorr streams: a few chunks of frames, whatever the length of the movie
            frames_mb = _frame_megabytes(input_path, movie_mb) * _MCORR_CHUNK_FRAMES
            need = 500 + 4 * frames_mb
        else:
            # source extraction reads the movie in blocks within its budget (this value):
            # small movies get what holding them took, large ones a fixed budget, unless
            # a whole-field initialization needs more
            need = max(min(DEFAULT_MEM_MB, 500 + _MEMORY_FACTOR[item["algo"]] * movie_mb),
                       _whole_field_mb(item, movie_mb), _patch_mb(item, input_path))
        return int(max(base, need) * attempt)
    if name == "runtime":
        base = int(defaults.get("runtime_min", 30))
        return int(max(base, movie_mb / 100) * attempt)
    if name == "cpus_per_task":
        return int(defaults.get("cpus_per_task", 1))
    raise KeyError(f"Unknown resource {name!r}.")


#: Set by the Snakefile when snakemake starts (unless already set, e.g. by the runner) and
#: inherited by its jobs, also on SLURM: a job reuses an identical run committed after it.
RUN_STARTED_ENV = "MESMERIZE_RUN_STARTED"


def run_from_snakemake(smk: Any) -> int:
    """Body of ``scripts/run_item.py``: run the item, log the traceback, return an exit code."""
    from .jobs import run_item

    folder = Path(smk.output[0]).parent
    batch = Path(smk.config["batch"]).resolve()
    raw_data = raw_data_dir(smk.config.get("raw_data"), batch)
    params = json.loads(smk.params.params)
    row = {"input_movie_path": smk.params.input}
    movie = smk.input.movie
    input_path = Path(movie) if movie else Path(expected_movie(row, batch, raw_data))
    parent_dir = input_path.parent if input_path.name == DONE else None
    ain_path = smk.input.ain[0] if smk.input.ain else expected_ain(params, batch, raw_data)
    started = os.environ.get(RUN_STARTED_ENV)
    manifest = run_item(
        folder,
        uuid=smk.params.item,
        algo=smk.params.algo,
        params=params,
        input_movie=input_path,
        parent_dir=parent_dir,
        engine=smk.params.engine,
        progress=os.environ.get("MESMERIZE_PROGRESS", "1") != "0",
        ain_path=ain_path,
        patch_files=list(smk.input.patches) or None,
        stored_input=smk.params.input,
        item_name=_item_name(batch, smk.params.item),
        reuse_since=float(started) if started else None,
        mem_mb=_resource(smk, "mem_mb"),
    )
    with open(smk.log[0], "w", encoding="utf-8") as log:
        if manifest["success"]:
            log.write(f"{smk.params.algo} item {smk.params.item} finished "
                      f"in {manifest['algo_duration']} s (run {manifest['run_id']})\n")
            return 0
        log.write(manifest["traceback"])
    sys.stderr.write(
        f"{smk.params.algo} item {smk.params.item} failed; traceback in {folder}:\n"
        f"{manifest['traceback']}"
    )
    return 1


def _resource(smk: Any, name: str) -> float | None:
    """A resource Snakemake gave the job (None when it has none)."""
    value = getattr(getattr(smk, "resources", None), name, None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _item_name(batch: Path, uuid: str) -> str | None:
    # for messages only: the name is a user column, not part of what the job runs
    try:
        return next((row["item_name"] for row in read_table(batch) if row["uuid"] == uuid), None)
    except (OSError, ValueError):
        return None


def fit_patch_from_snakemake(smk: Any) -> None:
    """Body of ``scripts/fit_patch.py``: fit one patch of a scattered CNMF item."""
    from .jobs import run_patch

    input_path = Path(smk.input.movie)
    parent_dir = input_path.parent if input_path.name == DONE else None
    run_patch(input_path, parent_dir, json.loads(smk.params.params),
              int(smk.wildcards.patch), Path(smk.output[0]))
