"""Issue 15, runs: stale children, params edits after a move, kills, concurrent notebooks,
one bad item among good ones, the raw-data directory; and mesmerize-core's run() backends.

Every test drives real snakemake processes (kills are real ``kill -9`` of the process tree).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CNMF, MCORR, write_movie
from test_legacy_batch import old_batch  # noqa: F401 (a mesmerize-core batch fixture)

import mesmerize_helpers as mh
from mesmerize_helpers import batch as batch_lib
from mesmerize_helpers.cli import main
from mesmerize_helpers.errors import (
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    ItemNotCurrentError,
)
from mesmerize_helpers.manifest import DONE, MANIFEST, read_manifest
from mesmerize_helpers.runner import project_dir, snakemake_command

MCORR_PW = {"main": {"max_shifts": [4, 4], "strides": [32, 32], "overlaps": [16, 16],
                     "pw_rigid": True, "border_nan": "copy"}}


def _states(batch) -> dict[str, str]:
    return {u: s.state for u, s in batch_lib.batch_states(batch.paths.get_batch_path()).items()}


def _descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _kill_tree(pid: int) -> None:
    for p in _descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- 1. stale children -------------------------------------------------------------------

def test_rerun_parent_is_switched_atomically_and_marks_children_stale(batch, tmp_path):
    movie = write_movie(tmp_path / "m.tif", 60, (64, 64))
    p = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    c = batch.caiman.add_item("cnmf", "m", batch.caiman.uloc(p), CNMF)
    assert batch.caiman.uloc(c).caiman.run().wait()["success"]  # runs the parent first
    df = batch.caiman.reload_from_disk()
    old_movie = df.caiman.uloc(p).mcorr.get_output()  # a notebook's open memmap
    old_first = np.array(old_movie[0])
    old_memmap = np.array(df.caiman.uloc(c).cnmf.get_cnmf_memmap()[5])
    old_run = read_manifest(df.caiman.uloc(p).caiman.get_output_dir())["run_id"]

    batch.caiman.update_params(p, {"main": {**MCORR["main"], "max_shifts": [2, 2]}})
    assert _states(batch) == {p: "outdated", c: "stale"}
    assert batch.caiman.uloc(p).caiman.run().wait()["success"]

    # the old file was replaced, not rewritten: the open memmap still shows the old run
    np.testing.assert_array_equal(old_movie[0], old_first)
    df = batch.caiman.reload_from_disk()
    parent, child = df.caiman.uloc(p), df.caiman.uloc(c)
    assert read_manifest(parent.caiman.get_output_dir())["run_id"] != old_run
    assert parent["outputs"]["success"] is True
    assert child["outputs"]["success"] is False
    assert child["outputs"]["traceback"].startswith("stale: its parent")
    for getter in (child.cnmf.get_output, child.cnmf.get_cnmf_memmap, child.cnmf.get_residuals):
        with pytest.raises(ItemNotCurrentError, match="stale: its parent .* re-run") as err:
            getter()
        assert isinstance(err.value, BatchItemUnsuccessfulError)  # old except clauses work
        assert isinstance(err.value, BatchItemNotRunError)

    assert child.caiman.run().wait()["success"]  # the next run redoes the child only
    child = batch.caiman.reload_from_disk().caiman.uloc(c)
    assert child["outputs"]["success"] is True
    manifest = child.caiman.get_manifest()
    assert manifest["identity"]["parent_run"] == read_manifest(parent.caiman.get_output_dir())["run_id"]
    assert not np.array_equal(child.cnmf.get_cnmf_memmap()[5], old_memmap)


# --- 2. params edits after a move or copy, without .snakemake ------------------------------

def test_params_edit_reruns_after_copying_the_batch_and_losing_snakemake_metadata(batch, tmp_path):
    movie = write_movie(tmp_path / "m.tif", 60, (64, 64))
    a = batch.caiman.add_item("mcorr", "a", movie, MCORR)
    b = batch.caiman.add_item("mcorr", "b", movie, {"main": {**MCORR["main"], "niter_rig": 2}})
    path = batch.paths.get_batch_path()
    subprocess.run(snakemake_command(path, [], cores=1), cwd=path.parent, check=True,
                   capture_output=True)
    # a copy that does not keep file times (cp -r), and no .snakemake/ in it
    copy = tmp_path / "copied"
    shutil.copytree(path.parent, copy, copy_function=shutil.copy,
                    ignore=shutil.ignore_patterns(".snakemake"))
    shutil.rmtree(path.parent)
    df = mh.load_batch(copy / "batch.tsv")
    assert _states(df) == {a: "done", b: "done"}
    df.caiman.update_params(a, {"main": {**MCORR["main"], "max_shifts": [2, 2]}})
    assert df.caiman.uloc(a)["params"]["main"]["max_shifts"] == [2, 2]
    with pytest.raises(ItemNotCurrentError, match="outdated: its params changed .*max_shifts"):
        df.caiman.reload_from_disk().caiman.uloc(a).mcorr.get_output()
    assert df.caiman.uloc(a).caiman.run().wait()["success"]
    df = df.caiman.reload_from_disk()
    assert df.caiman.uloc(a).caiman.get_manifest()["params"]["main"]["max_shifts"] == [2, 2]
    assert _states(df) == {a: "done", b: "done"}


# --- 4. kill -9, then run again; two notebooks at once -------------------------------------

def _start_and_kill(row, folder: Path):
    """Start ``row``'s run, kill -9 the snakemake process tree while the item's job (in
    ``folder``) is writing its registered movie, and wait for the processes to end."""
    run = row.caiman.run(wait=False, cores=1)
    _wait_for(lambda: any((s / "mcorr.npy").exists() for s in folder.glob(".run-*")),
              what="the job to write its registered movie")
    _kill_tree(run.process.pid)
    run.process.wait()
    assert any(folder.glob(".run-*")), "killed too late to test anything"


def test_kill_9_during_a_job_then_the_next_run_completes(batch, tmp_path):
    movie = write_movie(tmp_path / "m.tif", 400, (96, 96))
    p = batch.caiman.add_item("mcorr", "m", movie, MCORR_PW)
    c = batch.caiman.add_item("mcorr", "m2", batch.caiman.uloc(p), MCORR)
    folder = batch.caiman.uloc(p).caiman.get_output_dir()

    # a first run killed: no manifest, "not run", and no lock left behind
    _start_and_kill(batch.caiman.uloc(p), folder)
    assert read_manifest(folder) is None and not (folder / DONE).exists()
    with pytest.raises(BatchItemNotRunError):
        batch.caiman.uloc(p).mcorr.get_output()
    # plain snakemake as a user types it completes: no lock to remove by hand (the
    # workflow's own profile runs it with --nolock, items lock themselves)
    path = batch.paths.get_batch_path()
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                          str(project_dir() / "workflow" / "Snakefile"), "--cores", "1",
                          "--config", f"batch={path}"], cwd=path.parent,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _states(batch) == {p: "done", c: "done"}
    before = {f: (folder / f).read_bytes() for f in ("mcorr.npy", MANIFEST)}

    # a re-run killed while it writes: nothing rewritten in place, no manifest of its own
    batch.caiman.update_params(p, {"main": {**MCORR_PW["main"], "max_shifts": [3, 3]}})
    _start_and_kill(batch.caiman.uloc(c), folder)
    assert {f: (folder / f).read_bytes() for f in before} == before
    assert _states(batch) == {p: "outdated", c: "stale"}
    # the next run completes without any manual step, and cleans up the dead run
    assert batch.caiman.uloc(c).caiman.run(cores=1).wait()["success"]
    assert _states(batch) == {p: "done", c: "done"}
    assert not any(folder.glob(".run-*"))


NOTEBOOK = textwrap.dedent("""
    import sys
    import mesmerize_helpers as mh
    df = mh.load_batch(sys.argv[1])
    manifest = df.caiman.uloc(sys.argv[2]).caiman.run(cores=1).wait()
    sys.exit(0 if manifest and manifest["success"] else 1)
""")


def test_two_notebooks_run_two_children_of_one_parent_at_once(batch, tmp_path):
    movie = write_movie(tmp_path / "m.tif", 200, (64, 64))
    p = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    c1 = batch.caiman.add_item("mcorr", "c1", batch.caiman.uloc(p), MCORR)
    c2 = batch.caiman.add_item("mcorr", "c2", batch.caiman.uloc(p),
                               {"main": {**MCORR["main"], "max_shifts": [2, 2]}})
    path = str(batch.paths.get_batch_path())
    procs = [subprocess.Popen([sys.executable, "-c", NOTEBOOK, path, c], stderr=subprocess.PIPE)
             for c in (c1, c2)]
    codes = [proc.wait(timeout=300) for proc in procs]
    assert codes == [0, 0], [proc.stderr.read().decode()[-2000:] for proc in procs]
    df = batch.caiman.reload_from_disk()
    parent_run = df.caiman.uloc(p).caiman.get_manifest()["run_id"]
    # both children used the one run of the parent: the second parent job reused the first's
    for child in (c1, c2):
        assert df.caiman.uloc(child).caiman.get_manifest()["identity"]["parent_run"] == parent_run
    assert _states(df) == {p: "done", c1: "done", c2: "done"}


# --- 5. one bad item among good ones ---------------------------------------------------------

def test_bad_items_fail_alone_and_the_exit_status_counts_them(batch, tmp_path, capsys):
    good = [batch.caiman.add_item("mcorr", f"g{i}", write_movie(tmp_path / f"g{i}.tif", 60, seed=i),
                                  MCORR) for i in range(3)]
    corrupt, deleted = tmp_path / "corrupt.tif", tmp_path / "deleted.tif"
    bad = [batch.caiman.add_item("mcorr", "c", write_movie(corrupt), MCORR),
           batch.caiman.add_item("mcorr", "d", write_movie(deleted), MCORR)]
    corrupt.write_bytes(corrupt.read_bytes()[:3000])  # truncated after it was added
    deleted.unlink()  # a missing input used to fail the whole DAG
    child = batch.caiman.add_item("mcorr", "child", batch.caiman.uloc(bad[0]), MCORR)

    code = main(["run", str(batch.paths.get_batch_path()), "--cores", "2"])
    err = capsys.readouterr().err
    assert code == 3, err  # the corrupt, the deleted, and the child of the corrupt one
    assert "3 of 6 item(s) done, 3 not done" in err
    df = batch.caiman.reload_from_disk()
    assert all(df.caiman.uloc(u)["outputs"]["success"] for u in good)
    first_lines = {u: df.caiman.uloc(u)["outputs"]["traceback"].splitlines()[0] for u in bad + [child]}
    assert str(corrupt) in first_lines[bad[0]] and "truncated" in first_lines[bad[0]]
    assert str(deleted) in first_lines[bad[1]] and "does not exist" in first_lines[bad[1]]
    assert f"the item it depends on, {bad[0]}, failed" in first_lines[child]

    assert main(["status", str(batch.paths.get_batch_path())]) == 0
    status = capsys.readouterr().out
    assert status.count(" done ") == 3 and status.count("FAILED") == 3


# --- 6. the raw-data directory, remembered beside the batch -----------------------------------

def test_raw_data_dir_is_remembered_for_the_cli_snakemake_and_accessors(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_movie(raw / "m.tif")
    mh.set_parent_raw_data_path(raw)
    df = mh.create_batch(tmp_path / "analysis" / "batch.tsv")
    uuid = df.caiman.add_item("mcorr", "m", raw / "m.tif", MCORR)
    assert df.iloc[0]["input_movie_path"] == "m.tif"  # stored relative to the raw-data dir
    sidecar = json.loads((tmp_path / "analysis" / "mesmerize-settings.json").read_text())
    assert sidecar == {"raw_data": str(raw.resolve())}

    batch_lib._PARENT_RAW_DATA_PATH = None  # a new session, a shell, a cluster login node
    path = tmp_path / "analysis" / "batch.tsv"
    assert main(["run", str(path), "--cores", "1"]) == 0  # no --raw-data needed
    df = mh.load_batch(path)
    assert df.iloc[0]["outputs"]["success"]
    assert df.iloc[0].caiman.get_input_movie_path() == (raw / "m.tif").resolve()
    # and the CLI option sets (and remembers) another directory
    other = tmp_path / "moved_raw"
    shutil.move(raw, other)
    df.caiman.update_params(uuid, {"main": {**MCORR["main"], "max_shifts": [2, 2]}})
    assert main(["run", str(path), "--cores", "1", "--raw-data", str(other)]) == 0
    assert json.loads((path.parent / "mesmerize-settings.json").read_text())["raw_data"] == str(other)


# --- issue 13.7: mesmerize-core's backends ------------------------------------------------------

def test_backends_as_in_mesmerize_core(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, MCORR)
    row = batch.iloc[0]
    with pytest.raises(KeyError, match="subprocess.*slurm.*local.*local_async"):
        row.caiman.run(backend="dask")
    run = row.caiman.run(backend="local_async", cores=1)  # returns at once
    assert run.wait()["success"] and run.poll() == 0
    assert mh.COMPUTE_BACKENDS == ["subprocess", "slurm", "local", "local_async"]
    run = row.caiman.run(backend="local", wait=False, cores=1, dview=None)  # local always waits
    assert run.poll() == 0


def test_sbatch_opts_become_snakemake_slurm_resources():
    from mesmerize_helpers.sbatch_options import snakemake_args

    with pytest.warns(UserWarning, match="--job-name, --wait"):
        args = snakemake_args("--mem=16G -p debug --time 1-02:00 --qos high --exclusive "
                              "--job-name x --wait -c 4")
    pairs = [a.split(":", 1)[1] for a in args if a.startswith("mcorr:")]
    assert pairs == ["mem_mb=16384", "slurm_partition='debug'", "runtime=1560",
                     "cpus_per_task=4", "slurm_extra='--exclusive'"]
    assert args[:2] == ["--slurm-qos", "high"]
    assert all(f"{rule}:mem_mb=16384" in args for rule in ("cnmf", "cnmfe", "cnmf_patch"))


def test_results_made_before_run_identities_are_kept_not_recomputed(batch, tmp_path):
    """An older version's results (a manifest without run id or identity, no done-marker)
    count as done and stay done: a run does not recompute them."""
    from mesmerize_helpers.jobs import run_item
    from mesmerize_helpers.manifest import write_manifest

    movie = write_movie(tmp_path / "m.tif")
    p = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    c = batch.caiman.add_item("mcorr", "m2", batch.caiman.uloc(p), MCORR)
    folders = {u: batch.caiman.uloc(u).caiman.get_output_dir() for u in (p, c)}
    run_item(folders[p], uuid=p, algo="mcorr", params=MCORR, input_movie=movie, progress=False)
    run_item(folders[c], uuid=c, algo="mcorr", params=MCORR, input_movie="",
             parent_dir=folders[p], progress=False)
    for folder in folders.values():
        old = {k: v for k, v in read_manifest(folder).items()
               if k not in ("run_id", "identity", "committed_at")}
        write_manifest(folder, old)
        (folder / DONE).unlink()
    assert _states(batch) == {p: "done", c: "done"}
    path = batch.paths.get_batch_path()
    targets = [str(folder / DONE) for folder in folders.values()]
    out = subprocess.run(snakemake_command(path, targets, cores=1, extra=["--dry-run"]),
                         cwd=path.parent, capture_output=True, text=True, check=True)
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout + out.stderr


def test_status_reads_and_run_refuses_a_mesmerize_core_pickle(old_batch, capsys):  # noqa: F811
    assert main(["status", str(old_batch["pickle"])]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 3 and "FAILED" in out and "not run" in out
    assert main(["run", str(old_batch["pickle"])]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "mesmerize-helpers import" in err
