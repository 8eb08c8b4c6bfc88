"""``s.caiman.run()``: build the snakemake command for one item and wait for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .accessors.common import batch_path_of, item_folder
from .batch import get_parent_raw_data_path, results_dir_of
from .errors import BatchItemUnsuccessfulError
from .manifest import MANIFEST, read_manifest


def project_dir() -> Path:
    """The folder holding ``workflow/``, ``config/`` and ``profiles/``.

    ``MESMERIZE_WORKFLOW_DIR`` wins; else the installed package's bundled copy, else the
    source checkout the package was installed from (editable installs).
    """
    env = os.environ.get("MESMERIZE_WORKFLOW_DIR")
    here = Path(__file__).resolve().parent
    candidates = ([Path(env)] if env else []) + [here / "_workflow", here.parent]
    for candidate in candidates:
        if (candidate / "workflow" / "Snakefile").is_file():
            return candidate
    raise FileNotFoundError(
        "Cannot find the workflow (workflow/Snakefile): tried "
        + ", ".join(str(c) for c in candidates)
        + ". Install mesmerize-helpers from its source folder, or set MESMERIZE_WORKFLOW_DIR."
    )


def default_cores() -> int:
    """``MESMERIZE_N_PROCESSES``, else all cores but one."""
    from .jobs import n_processes

    return n_processes()


def profile_path(profile: str | os.PathLike) -> str:
    """A profile given by name (one of ``profiles/``) or by path."""
    bundled = project_dir() / "profiles" / str(profile)
    return str(bundled) if bundled.is_dir() else str(profile)


def snakemake_command(
    batch_path: Path,
    targets: list[str],
    *,
    profile: str | os.PathLike | None = None,
    cores: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The command line that runs ``targets`` of a batch (manifest paths) with Snakemake."""
    raw = get_parent_raw_data_path()
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(project_dir() / "workflow" / "Snakefile"),
        "--directory", str(batch_path.parent),
        "--config", f"batch={batch_path}", f"raw_data={raw or ''}",
    ]
    if profile is not None:
        cmd += ["--profile", profile_path(profile)]
    else:
        cmd += ["--cores", str(cores or default_cores())]
    return cmd + list(extra or []) + targets


def report_targets(folder: Path, results: Path) -> list[str]:
    """The report files (summary figure, viewer page) of the item in ``folder`` and of the
    items it depends on (its enclosing folders), so a run leaves `snakemake --report` ready."""
    from .plots import report_files

    folders = [folder, *(results / p for p in folder.relative_to(results).parents
                         if p != Path("."))]
    return [str(path) for f in folders for path in report_files(f)]


class Run:
    """A snakemake run of one item; ``wait()`` blocks and raises if the item failed."""

    def __init__(
        self, process: subprocess.Popen, folder: Path, results: Path, log_path: Path, uuid: str
    ):
        self.process = process
        self.folder = folder
        self.results = results
        self.log_path = log_path
        self.uuid = uuid

    def poll(self) -> int | None:
        """The exit code of snakemake, or None while it runs."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the run; return the item's manifest.

        Raises
        ------
        BatchItemUnsuccessfulError
            When the item (or an item it depends on) failed; carries the traceback, or the
            end of snakemake's log when no manifest says why.
        """
        code = self.process.wait(timeout=timeout)
        manifest = read_manifest(self.folder)
        if code == 0 and manifest is not None and manifest.get("success"):
            return manifest
        if manifest is not None and not manifest.get("success"):
            raise BatchItemUnsuccessfulError(f"Item {self.uuid} failed:\n{manifest['traceback']}")
        # an item it depends on (an enclosing folder) may have failed instead
        for ancestor in self.folder.relative_to(self.results).parents:
            upstream = read_manifest(self.results / ancestor)
            if ancestor != Path(".") and upstream is not None and not upstream.get("success"):
                raise BatchItemUnsuccessfulError(
                    f"Item {self.uuid} did not run: the item it depends on, {ancestor.name}, "
                    f"failed:\n{upstream['traceback']}"
                )
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail = "\n".join(log.splitlines()[-40:])
        raise BatchItemUnsuccessfulError(
            f"snakemake exited with code {code} for item {self.uuid} (log: {self.log_path}):\n{tail}"
        )


def run_item(
    s: pd.Series,
    backend: str | None = None,
    wait: bool = True,
    profile: str | os.PathLike | None = None,
    cores: int | None = None,
) -> Run:
    """Run one batch item and what it depends on; see ``s.caiman.run``."""
    batch_path = batch_path_of(s)
    folder = item_folder(s)
    if profile is None and backend not in (None, "local"):
        profile = backend
    results = results_dir_of(batch_path)
    targets = [str(folder / MANIFEST)] + report_targets(folder, results)
    cmd = snakemake_command(batch_path, targets, profile=profile, cores=cores)
    logs = batch_path.parent / ".mesmerize_logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{s['uuid']}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=batch_path.parent)
    run = Run(process, folder, results, log_path, s["uuid"])
    if wait:
        run.wait()
    return run
