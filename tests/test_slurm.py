"""The workflow on a real SLURM cluster, through ``profiles/slurm`` (opt-in).

An mcorr -> cnmf batch runs through the snakemake command line, a failing item through
``s.caiman.run(backend="slurm", sbatch_opts=...)``; both must go through SLURM jobs (their
logs are checked).

Run with a cluster up (``bash ci/slurm/cluster.sh up`` gives a local one-node cluster)::

    MESMERIZE_TEST_SLURM=1 python -m pytest -m slurm tests/test_slurm.py

Without ``MESMERIZE_TEST_SLURM=1`` the tests are skipped. With it, a missing ``sinfo``,
an unreachable controller or a missing executor plugin is a failure, not a skip: whoever
asked for the SLURM tests wants to know that they did not run.
``MESMERIZE_SLURM_PARTITION`` picks another partition than the profile's ``debug`` (the tests
then use a copy of the profile with that partition).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILE = REPO / "profiles" / "slurm"
RUN_TIMEOUT = int(os.environ.get("MESMERIZE_TEST_SLURM_TIMEOUT", "300"))  # s per snakemake run

pytestmark = pytest.mark.slurm

MCORR_PARAMS = {
    "main": {
        "max_shifts": (4, 4),
        "strides": (32, 32),
        "overlaps": (16, 16),
        "max_deviation_rigid": 3,
        "pw_rigid": False,
        "border_nan": "copy",
    }
}
CNMF_PARAMS = {
    "main": {
        "fr": 30,
        "decay_time": 0.4,
        "p": 1,
        "nb": 1,
        "K": 6,
        "gSig": (3, 3),
        "rf": None,
        "merge_thr": 0.85,
        "method_init": "greedy_roi",
        "min_SNR": 2.0,
        "rval_thr": 0.7,
        "use_cnn": False,
    },
}


def _slurm_problem() -> str | None:
    """Why SLURM tests cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return "`sinfo` is not on PATH (start a cluster: bash ci/slurm/cluster.sh up)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out"
    if proc.returncode != 0:
        return f"`sinfo` failed (exit {proc.returncode}): {proc.stderr.strip()}"
    if not re.search(r"\b(idle|mixed|allocated|completing)\b", proc.stdout):
        return f"no usable SLURM node; sinfo says:\n{proc.stdout}"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed in this Python environment"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Path:
    """The SLURM profile to use (checked that a cluster answers)."""
    if os.environ.get("MESMERIZE_TEST_SLURM") != "1":
        pytest.skip(
            "SLURM tests are opt-in: start a cluster (bash ci/slurm/cluster.sh up) "
            "and set MESMERIZE_TEST_SLURM=1"
        )
    problem = _slurm_problem()
    if problem:
        pytest.fail(f"MESMERIZE_TEST_SLURM=1 but SLURM is not usable: {problem}", pytrace=False)
    partition = os.environ.get("MESMERIZE_SLURM_PARTITION")
    if not partition:
        return PROFILE
    import yaml

    config = yaml.safe_load((PROFILE / "config.yaml").read_text())
    config["default-resources"]["slurm_partition"] = partition
    profile = tmp_path_factory.mktemp("profile")
    (profile / "config.yaml").write_text(yaml.safe_dump(config))
    return profile


def _tiny_movie(path: Path) -> Path:
    """A 100-frame 64x64 two-photon movie with a few neurons, as TIFF."""
    try:
        from mesmerize_helpers.synthetic import save_tiff, simulate_2p
    except ImportError:  # pragma: no cover - fallback if the simulator moves
        import tifffile

        rng = np.random.default_rng(0)
        movie = rng.normal(20, 2, size=(100, 64, 64)).astype(np.float32)
        yy, xx = np.mgrid[:64, :64]
        for cy, cx in [(16, 16), (16, 46), (46, 20), (44, 44)]:
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0).astype(np.float32)
            movie += 30 * rng.random((100, 1, 1)).astype(np.float32) ** 4 * blob
        tifffile.imwrite(path, movie)
        return path
    sim = simulate_2p(n_frames=100, shape=(64, 64), n_neurons=6, gSig=3.0, seed=3)
    return save_tiff(path, sim.movie)


def _snakemake(batch: Path, workdir: Path, profile: Path) -> tuple[int, str, set[str]]:
    """Run the workflow on ``batch`` through the SLURM profile.

    Returns the exit code, the combined output and the SLURM job ids the executor submitted.
    On timeout snakemake gets SIGINT first, so that it cancels its SLURM jobs.
    """
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(SNAKEFILE),
        "--profile", str(profile),
        "--directory", str(workdir),
        "--config", f"batch={batch}", f"results={batch.parent}",
        "--jobs", "4",
    ]
    env = {**os.environ, "MESMERIZE_PROGRESS": "0"}
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # snakemake scancels its jobs on interrupt
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT} s:\n{out[-5000:]}", pytrace=False)
    job_ids = set(re.findall(r"submitted with SLURM jobid (\d+)", out))
    return proc.returncode, out, job_ids


def _squeue_states(job_ids: set[str]) -> dict[str, str]:
    """States of finished jobs as squeue still shows them (for MinJobAge seconds); no sacct."""
    proc = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", ",".join(sorted(job_ids)), "-o", "%i|%T"],
        capture_output=True, text=True, timeout=30,
    )
    states = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states


def _slurm_logs(workdir: Path) -> list[Path]:
    return sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))


def _report(out: str, workdir: Path, results: Path) -> str:
    """Snakemake's output plus the ends of the SLURM and item logs, for assertion messages."""
    parts = [out[-6000:]]
    for log in _slurm_logs(workdir) + sorted(results.rglob("job.log")):
        text = log.read_text(errors="replace").splitlines()
        parts.append(f"----- {log} (last 30 lines)\n" + "\n".join(text[-30:]))
    return "\n".join(parts)


def _new_batch(tmp_path: Path):
    import mesmerize_helpers  # noqa: F401  registers the pandas accessors
    from mesmerize_helpers.batch import create_batch

    return create_batch(tmp_path / "batch" / "batch.tsv")


def test_mcorr_then_cnmf_on_slurm(slurm, tmp_path):
    from mesmerize_helpers.batch import load_batch

    movie = _tiny_movie(tmp_path / "movie.tif")
    df = _new_batch(tmp_path)
    df.caiman.add_item(algo="mcorr", item_name="movie", input_movie_path=movie, params=MCORR_PARAMS)
    df.caiman.add_item(algo="cnmf", item_name="movie", input_movie_path=df.iloc[0], params=CNMF_PARAMS)
    batch = Path(df.attrs["batch_path"])
    df = load_batch(batch)
    mcorr_uuid, cnmf_uuid = df.iloc[0]["uuid"], df.iloc[1]["uuid"]
    assert df.iloc[1]["parent"] == mcorr_uuid

    workdir = tmp_path / "run"
    workdir.mkdir()
    code, out, job_ids = _snakemake(batch, workdir, profile=slurm)
    results = batch.parent
    assert code == 0, _report(out, workdir, results)

    for manifest_path in (results / mcorr_uuid / "manifest.json",
                          results / mcorr_uuid / cnmf_uuid / "manifest.json"):
        assert manifest_path.is_file(), f"missing {manifest_path}\n" + _report(out, workdir, results)
        manifest = json.loads(manifest_path.read_text())
        assert manifest["success"] is True, manifest.get("traceback")

    # the jobs went through SLURM: the executor submitted an sbatch job per item (and per any
    # other non-local rule job) and kept the SLURM log of each (slurm-keep-successful-logs in
    # the profile) as .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log
    logs = _slurm_logs(workdir)
    rule_of_job = {p.stem: p.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0] for p in logs}
    assert job_ids and set(rule_of_job) >= job_ids, (logs, job_ids)
    ran = sorted(rule_of_job[j] for j in job_ids)
    assert ran.count("rule_mcorr") == 1 and ran.count("rule_cnmf") == 1, ran
    # squeue remembers finished jobs for MinJobAge seconds: those it still shows are COMPLETED
    states = _squeue_states(job_ids)
    assert all(state == "COMPLETED" for state in states.values()), states

    # the batch sees the results through the manifests
    df = load_batch(batch)
    assert all(outputs["success"] for outputs in df["outputs"]), df["outputs"].tolist()


def test_failing_item_fails_the_slurm_run(slurm, tmp_path):
    """Through the Python API this time: ``s.caiman.run(backend="slurm", sbatch_opts=...)``.
    As in mesmerize-core, the failure is recorded in the item, not raised."""
    bad_movie = _tiny_movie(tmp_path / "corrupt.tif")
    df = _new_batch(tmp_path)
    df.caiman.add_item(algo="mcorr", item_name="corrupt", input_movie_path=bad_movie, params=MCORR_PARAMS)
    # broken after add_item (which checks the header): TIFF magic, then garbage
    bad_movie.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4096))
    batch = Path(df.attrs["batch_path"])
    workdir = batch.parent  # the runner runs snakemake in the batch's directory

    # backend="slurm" is the bundled profiles/slurm; a partition override needs the copy
    how = {"backend": "slurm"} if slurm == PROFILE else {"backend": "slurm", "profile": slurm}
    run = df.iloc[0].caiman.run(wait=False, sbatch_opts="--time=7", **how)
    try:
        manifest = run.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        run.process.send_signal(signal.SIGINT)  # snakemake scancels its jobs on interrupt
        try:
            run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.process.kill()
        pytest.fail(f"the run did not finish within {RUN_TIMEOUT} s; log: {run.log_path}", pytrace=False)

    out = run.log_path.read_text(errors="replace")
    assert run.process.returncode != 0, out[-8000:]
    job_ids = set(re.findall(r"submitted with SLURM jobid (\d+)", out))
    mcorr_logs = [p for p in _slurm_logs(workdir) if p.stem in job_ids and "rule_mcorr" in p.parts]
    assert len(mcorr_logs) == 1, _report(out, workdir, batch.parent)  # the failed job's log is kept
    job_id = mcorr_logs[0].stem
    assert "Error in rule mcorr" in out, out[-8000:]
    assert re.search(rf"SLURM-job '{job_id}' failed", out), out[-8000:]
    # the failure is recorded in the item, naming the movie first
    assert manifest is not None and manifest["success"] is False, out[-8000:]
    assert "corrupt.tif" in manifest["traceback"].splitlines()[0], manifest["traceback"]
    from mesmerize_helpers.batch import load_batch

    assert load_batch(batch).iloc[0]["outputs"]["success"] is False
    # squeue (if it still lists the job) says FAILED, with sbatch_opts' time limit (7 min)
    states = _squeue_states({job_id})
    assert states.get(job_id, "FAILED") == "FAILED", states
    limit = subprocess.run(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%l"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    assert limit in ("", "7:00"), limit
