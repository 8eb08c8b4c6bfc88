"""``s.caiman.run()``: run one item (and what it depends on) with Snakemake and wait for it.

As in mesmerize-core, a failing item does not raise: its failure is recorded (the item's
``outputs["success"]`` is False and ``outputs["traceback"]`` says why), so a loop over the
batch goes on, and the getters raise ``BatchItemUnsuccessfulError``. When snakemake ends
without the item having run (its parent failed, snakemake itself failed or was killed), that
is recorded in the item the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from . import batch as batch_lib
from .batch import (  # noqa: F401 (mesmerize-core's names, also importable from here)
    COMPUTE_BACKEND_ASYNC,
    COMPUTE_BACKEND_LOCAL,
    COMPUTE_BACKEND_SLURM,
    COMPUTE_BACKEND_SUBPROCESS,
    COMPUTE_BACKENDS,
)
from .commit import publish_failure
from .locks import RUN_LOCK, is_running, item_lock
from .manifest import DONE, FAILED_MANIFEST, read_manifest
from .runstate import DONE as STATE_DONE
from .runstate import FAILED, ItemState
from .workflow_support import RUN_STARTED_ENV

#: Options of every run: one failing item never stops the others; items lock themselves
#: (a dead run never leaves a lock); what re-runs is decided from the manifests.
SAFE_OPTIONS = ["--keep-going", "--rerun-incomplete", "--nolock", "--rerun-triggers", "mtime"]
#: mesmerize-core's in-process options, meaningless for a snakemake run.
_IGNORED_KWARGS = ("dview", "log_level")


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
    from .step_support import n_processes

    return n_processes()


def profile_path(profile: str | os.PathLike) -> str:
    """A profile given by name (one of ``profiles/``) or by path."""
    bundled = project_dir() / "profiles" / str(profile)
    return str(bundled) if bundled.is_dir() else str(profile)


def raw_data_for_run(batch_path: Path, raw_data: str | os.PathLike | None = None) -> str:
    """The raw-data directory a run of the batch uses (given, else set in this process, else
    remembered beside the batch), remembered beside the batch for snakemake and the CLI."""
    raw = Path(raw_data) if raw_data else batch_lib.raw_data_dir_for(batch_path.parent)
    if raw is None:
        return ""
    from .settings import remember_raw_data

    remember_raw_data(batch_path.parent, raw)
    return str(raw)


def snakemake_command(
    batch_path: Path,
    targets: list[str],
    *,
    profile: str | os.PathLike | None = None,
    cores: int | None = None,
    extra: list[str] | None = None,
    raw_data: str | os.PathLike | None = None,
) -> list[str]:
    """The command line that runs ``targets`` of a batch (done-marker paths) with Snakemake."""
    raw = raw_data if raw_data is not None else batch_lib.raw_data_dir_for(batch_path.parent)
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
    return cmd + SAFE_OPTIONS + list(extra or []) + ["--", *targets]


def report_targets(folder: Path, results: Path) -> list[str]:
    """The report files (summary figure, viewer page) of the item in ``folder`` and of the
    items it depends on (its enclosing folders), so a run leaves `snakemake --report` ready."""
    from .plots import report_files

    folders = [folder, *(results / p for p in folder.relative_to(results).parents
                         if p != Path("."))]
    return [str(path) for f in folders for path in report_files(f)]


def run_environment() -> dict[str, str]:
    """The environment of a snakemake run: this one, plus when the run started."""
    return {**os.environ, RUN_STARTED_ENV: repr(time.time())}


# --- after a run: record why requested items did not finish --------------------------------

def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _why_not_run(uuid: str, states: dict[str, ItemState], parents: dict[str, str | None],
                 code: int, log_path: Path | None) -> str:
    chain = batch_lib.lineage(uuid, parents)[:-1]
    for ancestor in reversed(chain):
        if states[ancestor].state == FAILED:
            first = (states[ancestor].reason or "").strip().splitlines()[:1]
            return (f"Item {uuid} did not run: the item it depends on, {ancestor}, failed"
                    f"{': ' + first[0] if first else ''}. Fix that item and re-run this one.")
    how = f"was killed (signal {-code})" if code < 0 else f"exited with code {code}"
    return (f"Item {uuid} did not run: snakemake {how} before the item finished (log: "
            f"{log_path}). Its end:\n{_tail(log_path)}\nRe-run the item; see the README, "
            "'Troubleshooting', if this repeats.")


def settle(batch_path: Path, uuids: list[str], code: int, started: float,
           log_path: Path | None = None) -> dict[str, ItemState]:
    """After a snakemake run of ``uuids`` that exited with ``code``: record a failure in
    each requested item that did not finish and whose failure is not recorded yet, and
    return the states of all items.

    An item another process is running now is left alone.
    """
    rows = batch_lib.read_table(batch_path)
    parents = {row["uuid"]: row["parent"] for row in rows}
    results = batch_lib.results_dir_of(batch_path)
    states = batch_lib.batch_states(batch_path, rows)
    by_uuid = {row["uuid"]: row for row in rows}
    for uuid in uuids:
        folder = batch_lib.item_dir(results, uuid, parents)
        failed_now = (folder / FAILED_MANIFEST).is_file() and (
            (folder / FAILED_MANIFEST).stat().st_mtime >= started - 1)
        if states[uuid].state == STATE_DONE or failed_now or is_running(folder):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with item_lock(folder, RUN_LOCK):
            row = by_uuid[uuid]
            publish_failure(folder, {
                "uuid": uuid, "algo": row["algo"], "params": row["params"], "success": False,
                "outputs": {}, "parent": row["parent"], "algo_duration": None,
                "ran_time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "traceback": _why_not_run(uuid, states, parents, code, log_path),
            })
    return batch_lib.batch_states(batch_path, rows)


# --- s.caiman.run() -----------------------------------------------------------------------

class Run:
    """A snakemake run of one item; ``wait()`` blocks until it ends."""

    def __init__(self, process: subprocess.Popen, batch_path: Path, folder: Path, uuid: str,
                 log_path: Path, started: float):
        self.process = process
        self.batch_path = batch_path
        self.folder = folder
        self.uuid = uuid
        self.log_path = log_path
        self.started = started
        self._settled = False

    def poll(self) -> int | None:
        """The exit code of snakemake, or None while it runs."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Wait for the run and return the item's manifest (``success`` False and the
        ``traceback`` when it failed or could not run). Does not raise for a failed item, as
        mesmerize-core: check ``manifest["success"]`` or the row's ``outputs``."""
        code = self.process.wait(timeout=timeout)
        if not self._settled:
            settle(self.batch_path, [self.uuid], code, self.started, self.log_path)
            self._settled = True
        return read_manifest(self.folder)


def _backend_options(backend: str | None, kwargs: dict[str, Any]) -> tuple[Any, list[str]]:
    """The profile and extra snakemake arguments of a backend and its keyword arguments."""
    if backend is None:
        backend = COMPUTE_BACKEND_SUBPROCESS
    profile = kwargs.pop("profile", None)
    extra: list[str] = []
    if backend == COMPUTE_BACKEND_SLURM:
        from .sbatch_options import snakemake_args

        profile = profile or "slurm"
        extra = snakemake_args(kwargs.pop("sbatch_opts", ""))
    elif backend not in COMPUTE_BACKENDS:
        if profile is None and (project_dir() / "profiles" / str(backend)).is_dir():
            profile = backend  # one of our Snakemake profiles, by name
        else:
            raise KeyError(f"Invalid or unavailable backend {backend!r}; choose one of "
                           f"{COMPUTE_BACKENDS} (or a profile under {project_dir() / 'profiles'}).")
    for name in _IGNORED_KWARGS:
        kwargs.pop(name, None)
    cores = kwargs.pop("cores", None)
    if kwargs:
        warnings.warn(f"run(): ignored argument(s) {', '.join(sorted(kwargs))}.",
                      UserWarning, stacklevel=4)
    return (profile, cores), extra


def run_item(batch_path: Path, uuid: str, folder: Path, backend: str | None = None,
             wait: bool = True, **kwargs: Any) -> Run:
    """Run one batch item and what it depends on; see ``s.caiman.run``.

    Parameters
    ----------
    batch_path, uuid, folder
        The batch file, the item and its output folder.
    backend
        One of :data:`COMPUTE_BACKENDS` (default ``"subprocess"``), or the name of a
        Snakemake profile under ``profiles/``; unknown names raise KeyError.
    wait
        Wait for the run (``"local"`` always waits, ``"local_async"`` never does).
    **kwargs
        ``profile`` (a Snakemake profile, overrides the backend's), ``cores`` (local runs),
        ``sbatch_opts`` (slurm: mesmerize-core's extra sbatch options); mesmerize-core's
        ``dview`` and ``log_level`` are accepted and ignored.
    """
    (profile, cores), extra = _backend_options(backend, dict(kwargs))
    batch_path = Path(batch_path)
    raw = raw_data_for_run(batch_path)
    targets = [str(folder / DONE)] + report_targets(folder, batch_lib.results_dir_of(batch_path))
    cmd = snakemake_command(batch_path, targets, profile=profile, cores=cores,
                            extra=extra, raw_data=raw)
    logs = batch_path.parent / ".mesmerize_logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{uuid}.log"
    env = run_environment()
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=batch_path.parent, env=env)
    run = Run(process, batch_path, folder, uuid, log_path, float(env[RUN_STARTED_ENV]))
    if backend == COMPUTE_BACKEND_LOCAL or (wait and backend != COMPUTE_BACKEND_ASYNC):
        run.wait()
    return run
