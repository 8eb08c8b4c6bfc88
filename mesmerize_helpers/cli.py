"""``mesmerize-helpers``: create and fill batches, run them, see their status, import a
mesmerize-core batch, run the demo."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def _read_mapping(path: str, what: str) -> dict:
    """A YAML or JSON file holding a mapping (params or grid)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"Cannot read {what} file {path}: {err}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{what} file {path} must hold a mapping, got {type(data).__name__}.")
    return data


def _input_for(df: Any, value: str) -> Any:
    """An input given as an mcorr item's uuid becomes that row (the parent); else a path."""
    if value in set(df["uuid"]):
        return df.caiman.uloc(value)
    return value


def cmd_create(args: argparse.Namespace) -> int:
    from .batch import create_batch

    create_batch(args.batch, remove_existing=args.force)
    print(f"Created empty batch {args.batch}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from .batch import load_batch

    df = load_batch(args.batch)
    params = _read_mapping(args.params, "params")
    uuid = df.caiman.add_item(args.algo, args.name, _input_for(df, args.input), params)
    print(uuid)
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from .batch import load_batch

    df = load_batch(args.batch)
    params = _read_mapping(args.params, "params")
    grid = _read_mapping(args.grid, "grid")
    uuids = df.caiman.add_grid(
        args.algo, args.name, _input_for(df, args.input), params, grid,
        allow_duplicates=args.allow_duplicates,
    )
    print("\n".join(uuids))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .batch import batch_states, item_dir, load_batch, results_dir_of
    from .legacy import is_legacy
    from .locks import is_running

    df = load_batch(args.batch)
    path = df.paths.get_batch_path()
    legacy = is_legacy(path)  # a mesmerize-core pickle: its outputs say it all
    states = {} if legacy else batch_states(path)
    parents = dict(zip(df["uuid"], df["parent"]))
    header = ("uuid", "algo", "name", "state", "time", "why")
    rows = []
    for _, s in df.iterrows():
        state = states.get(s["uuid"]) or _state_of_outputs(s["outputs"])
        label = state.state
        if not legacy and is_running(item_dir(results_dir_of(path), s["uuid"], parents)):
            label += " (running)"
        seconds = s["algo_duration"]  # a number, or mesmerize-core's text
        duration = "" if seconds is None else (
            f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else str(seconds))
        why = "" if state.done or not state.reason else state.reason.strip().splitlines()[0][:100]
        rows.append((s["uuid"], s["algo"], s["item_name"], label, duration, why))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _state_of_outputs(outputs: dict | None) -> Any:
    from .runstate import DONE, FAILED, NOT_RUN, ItemState

    if outputs is None:
        return ItemState(NOT_RUN)
    return ItemState(DONE) if outputs["success"] else ItemState(FAILED, outputs.get("traceback"))


def cmd_run(args: argparse.Namespace) -> int:
    import time

    from .batch import load_batch, results_dir_of
    from .legacy import writable_batch
    from .plots import report_files
    from .runner import (
        RUN_STARTED_ENV,
        raw_data_for_run,
        run_environment,
        settle,
        snakemake_command,
    )
    from .workflow_support import done_path, item_folders

    batch = writable_batch(Path(args.batch).resolve())  # a mesmerize-core pickle: import it
    if args.raw_data and not Path(args.raw_data).is_dir():
        raise SystemExit(f"--raw-data {args.raw_data} is not a directory.")
    df = load_batch(batch)
    folders = item_folders(df[["uuid", "parent"]].to_dict("records"), results_dir_of(batch))
    uuids = args.uuids or list(df["uuid"])
    unknown = [u for u in uuids if u not in folders]
    if unknown:
        raise SystemExit(f"No item(s) {', '.join(unknown)} in {batch}.")
    targets = [done_path(folders[u]) for u in uuids]
    targets += [str(p) for u in uuids for p in report_files(folders[u])]  # figure, viewer page
    extra = ["--dry-run"] if args.dry_run else []
    raw = raw_data_for_run(batch, args.raw_data)
    cmd = snakemake_command(batch, targets, profile=args.profile, cores=args.cores,
                            extra=extra, raw_data=raw)
    env = run_environment()
    code = subprocess.call(cmd, cwd=batch.parent, env=env)
    if args.dry_run:
        return code
    states = settle(batch, uuids, code, float(env[RUN_STARTED_ENV]))
    return _summary([states[u] for u in uuids], uuids, time.time() - float(env[RUN_STARTED_ENV]))


def _summary(states: list[Any], uuids: list[str], seconds: float) -> int:
    """Print what the run left undone; the exit status is how many items did not finish
    (at most 100; 0: all done)."""
    undone = [(u, s) for u, s in zip(uuids, states) if not s.done]
    print(f"mesmerize-helpers run: {len(states) - len(undone)} of {len(states)} item(s) done, "
          f"{len(undone)} not done ({seconds:.0f} s).", file=sys.stderr)
    for uuid, state in undone:
        first = (state.reason or "").strip().splitlines()[:1]
        print(f"  {state.state:8s} {uuid}: {first[0] if first else ''}", file=sys.stderr)
    return min(len(undone), 100)


def cmd_import(args: argparse.Namespace) -> int:
    from .legacy_import import import_batch

    df = import_batch(args.pickle, args.batch, keep_results=not args.no_results, force=args.force)
    done = sum(1 for o in df["outputs"] if o is not None and o["success"])
    print(f"Imported {len(df)} item(s) from {args.pickle} into {args.batch} "
          f"({done} with results readable in place).")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .viewer import write_viewer

    path = write_viewer(args.batch, args.output, uuids=args.uuids or None, max_mb=args.max_mb)
    print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a web browser.")
    return 0


def cmd_export_nwb(args: argparse.Namespace) -> int:
    from .batch import load_batch
    from .nwb import export_batch_nwb, export_nwb

    df = load_batch(args.batch)
    *uuids, output = args.targets
    options = _read_mapping(args.metadata, "metadata") if args.metadata else {}
    options.update(masks=args.masks, movie=args.movie, overwrite=args.overwrite)
    if len(uuids) == 1:
        paths = [export_nwb(df.caiman.uloc(uuids[0]), output, **options)]
    else:
        if uuids:
            df = df[df["uuid"].isin(uuids)]
            missing = sorted(set(uuids) - set(df["uuid"]))
            if missing:
                raise KeyError(f"No item with uuid {', '.join(missing)} in {args.batch}.")
        paths = export_batch_nwb(df, output, **options)
    for path in paths:
        print(path)
    skipped = len(uuids) if len(uuids) == 1 else int(df["algo"].isin(["cnmf", "cnmfe"]).sum())
    skipped -= len(paths)
    print(f"Wrote {len(paths)} NWB file(s)" + (f"; skipped {skipped} cnmf/cnmfe item(s) that "
          "are not done" if skipped else "") + ".", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.folder), n_frames=args.frames, cores=args.cores)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesmerize-helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create", help="create an empty batch TSV")
    p.add_argument("batch")
    p.add_argument("--force", action="store_true", help="replace an existing batch")
    p.set_defaults(func=cmd_create)

    for name, func, helptext in (("add", cmd_add, "add one item"),
                                 ("grid", cmd_grid, "add one item per parameter combination")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("batch")
        p.add_argument("--algo", required=True, choices=["mcorr", "cnmf", "cnmfe"])
        p.add_argument("--name", required=True, help="item_name")
        p.add_argument("--input", required=True, help="movie path, or an mcorr item's uuid")
        p.add_argument("--params", required=True, help="YAML/JSON file: {main: {...}}")
        if name == "grid":
            p.add_argument("--grid", required=True,
                           help="YAML/JSON file mapping dotted names (main.gSig) to value lists")
            p.add_argument("--allow-duplicates", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("status", help="one line per item: done, FAILED, not run, outdated "
                                      "(params/input changed) or stale (parent re-run)")
    p.add_argument("batch")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run items (default: all) with snakemake; the exit status "
                                   "is the number of items not done after the run (max. 100)")
    p.add_argument("batch")
    p.add_argument("uuids", nargs="*")
    p.add_argument("--raw-data", default=None,
                   help="top directory of movies stored relative to it (remembered beside the batch)")
    p.add_argument("--cores", type=int, default=None)
    p.add_argument("--profile", default=None, help="Snakemake profile name (e.g. slurm) or path")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import", help="convert a mesmerize-core batch (pickle) to a TSV batch")
    p.add_argument("pickle", help="the mesmerize-core batch.pickle")
    p.add_argument("batch", help="the new batch TSV (item folders go beside it)")
    p.add_argument("--no-results", action="store_true",
                   help="start every item as not run (default: results readable in place)")
    p.add_argument("--force", action="store_true", help="replace an existing batch TSV")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("view", help="write the batch viewer: one self-contained HTML page")
    p.add_argument("batch")
    p.add_argument("uuids", nargs="*", help="only these items (default: all)")
    p.add_argument("-o", "--output", default=None, help="HTML file (default: <batch>.html)")
    p.add_argument("--max-mb", type=float, default=50.0,
                   help="size to stay under; long traces are reduced to fit (default 50)")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("export-nwb", help="write cnmf/cnmfe items as NWB files: "
                                          "'BATCH UUID OUT.nwb', or 'BATCH [UUID ...] OUTDIR' "
                                          "(no uuid: every finished item, one <uuid>.nwb each)")
    p.add_argument("batch")
    p.add_argument("targets", nargs="+", metavar="UUID... OUTPUT",
                   help="item uuid(s), then the .nwb file (one uuid) or a folder")
    p.add_argument("--metadata", default=None,
                   help="YAML/JSON file of export_nwb's metadata: session_description, "
                        "session_start_time, experimenter, lab, institution, subject: {...}, "
                        "device: {...}, optical_channel: {...}, imaging_plane: {...}, "
                        "nwbfile: {keywords: [...], ...}")
    p.add_argument("--masks", choices=["image", "pixel", "both"], default="image",
                   help="footprints as image masks (default), sparse pixel masks, or both")
    p.add_argument("--movie", action="store_true",
                   help="also write the movie the item was fitted on (big)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export_nwb)

    p = sub.add_parser("demo", help="simulate a small movie, add mcorr + cnmf items, run them")
    p.add_argument("folder", nargs="?", default="demo")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--cores", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import BatchItemUnsuccessfulError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BatchItemUnsuccessfulError as err:
        print(f"mesmerize-helpers {args.command}: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, KeyError, ImportError) as err:
        print(f"mesmerize-helpers {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

