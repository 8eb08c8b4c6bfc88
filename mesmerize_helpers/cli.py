"""``mesmerize-helpers``: create and fill batches, run them, see their status, run the demo."""

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
    from .batch import load_batch

    df = load_batch(args.batch)
    rows = []
    for _, s in df.iterrows():
        outputs = s["outputs"]
        state = "not run" if outputs is None else ("done" if outputs["success"] else "FAILED")
        duration = "" if s["algo_duration"] is None else f"{s['algo_duration']:.1f} s"
        rows.append((s["uuid"], s["algo"], s["item_name"], state, duration))
    widths = [max(len(str(r[i])) for r in rows + [("uuid", "algo", "name", "state", "time")])
              for i in range(5)]
    for row in [("uuid", "algo", "name", "state", "time"), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .batch import load_batch, results_dir_of
    from .plots import report_files
    from .runner import snakemake_command
    from .workflow_support import item_folders, manifest_path

    batch = Path(args.batch).resolve()
    df = load_batch(batch)
    folders = item_folders(df[["uuid", "parent"]].to_dict("records"), results_dir_of(batch))
    uuids = args.uuids or list(df["uuid"])
    unknown = [u for u in uuids if u not in folders]
    if unknown:
        raise SystemExit(f"No item(s) {', '.join(unknown)} in {batch}.")
    targets = [manifest_path(folders[u]) for u in uuids]
    targets += [str(p) for u in uuids for p in report_files(folders[u])]  # figure, viewer page
    extra = ["--dry-run"] if args.dry_run else []
    cmd = snakemake_command(batch, targets, profile=args.profile, cores=args.cores, extra=extra)
    return subprocess.call(cmd, cwd=batch.parent)


def cmd_view(args: argparse.Namespace) -> int:
    from .viewer import write_viewer

    path = write_viewer(args.batch, args.output, uuids=args.uuids or None, max_mb=args.max_mb)
    print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a web browser.")
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

    p = sub.add_parser("status", help="one line per item: done, FAILED or not run")
    p.add_argument("batch")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run items (default: all) with snakemake")
    p.add_argument("batch")
    p.add_argument("uuids", nargs="*")
    p.add_argument("--cores", type=int, default=None)
    p.add_argument("--profile", default=None, help="Snakemake profile name (e.g. slurm) or path")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("view", help="write the batch viewer: one self-contained HTML page")
    p.add_argument("batch")
    p.add_argument("uuids", nargs="*", help="only these items (default: all)")
    p.add_argument("-o", "--output", default=None, help="HTML file (default: <batch>.html)")
    p.add_argument("--max-mb", type=float, default=50.0,
                   help="size to stay under; long traces are reduced to fit (default 50)")
    p.set_defaults(func=cmd_view)

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
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, KeyError, ImportError) as err:
        print(f"mesmerize-helpers {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

