"""Running items through Snakemake: manifests, failures, accessor errors, re-runs, lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CNMF, MCORR, write_movie

import mesmerize_helpers as mh
from mesmerize_helpers import workflow_support as ws
from mesmerize_helpers.batch import read_table
from mesmerize_helpers.errors import (
    BatchItemNotRunError,
    BatchItemUnsuccessfulError,
    WrongAlgorithmExtensionError,
)
from mesmerize_helpers.manifest import DONE, FAILED_MANIFEST, MANIFEST
from mesmerize_helpers.runner import project_dir, snakemake_command


def corrupt_movie(folder: Path) -> Path:
    path = folder / "corrupt.tif"
    path.write_bytes(b"II*\x00 this is not a tiff")
    return path


def add_then_corrupt(batch, folder: Path, algo: str = "mcorr", params=MCORR) -> str:
    """An item whose movie was fine when added (add_item checks it) and broke since."""
    good = write_movie(folder / "corrupt.tif")
    uuid = batch.caiman.add_item(algo, "bad", good, params)
    corrupt_movie(folder)
    return uuid


def test_not_run_and_wrong_accessor_errors(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, MCORR)
    batch.caiman.add_item("cnmf", "m", batch.iloc[0], CNMF)
    with pytest.raises(BatchItemNotRunError, match="has not been run"):
        batch.iloc[0].mcorr.get_output()
    with pytest.raises(BatchItemNotRunError):
        batch.iloc[0].caiman.get_corr_image()
    with pytest.raises(WrongAlgorithmExtensionError, match="'cnmf' item"):
        batch.iloc[1].mcorr.get_output_path()


def test_failed_item_is_recorded_not_raised(batch, tmp_path):
    """As mesmerize-core: run() and wait() do not raise for a failing item; the failure is in
    its outputs and the getters raise BatchItemUnsuccessfulError."""
    add_then_corrupt(batch, tmp_path)
    bad = tmp_path / "corrupt.tif"
    manifest = batch.iloc[0].caiman.run().wait()
    assert manifest["success"] is False and "cannot" in manifest["traceback"]
    folder = batch.iloc[0].caiman.get_output_dir()
    assert (folder / FAILED_MANIFEST).is_file() and not (folder / MANIFEST).exists()
    row = batch.caiman.reload_from_disk().iloc[0]
    assert row["outputs"]["success"] is False
    assert "Traceback" in row["outputs"]["traceback"]
    assert str(bad) in row["outputs"]["traceback"].splitlines()[0]  # names the file first
    with pytest.raises(BatchItemUnsuccessfulError, match="corrupt.tif"):
        row.mcorr.get_output()


def test_child_of_failed_item_records_the_parents_failure(batch, tmp_path):
    add_then_corrupt(batch, tmp_path)
    batch.caiman.add_item("cnmf", "bad", batch.iloc[0], CNMF)
    manifest = batch.iloc[1].caiman.run().wait()
    assert manifest["success"] is False
    assert re.search(f"depends on, {batch.iloc[0]['uuid']}, failed: .*corrupt.tif",
                     manifest["traceback"])
    with pytest.raises(BatchItemUnsuccessfulError, match="depends on"):
        batch.caiman.reload_from_disk().iloc[1].cnmf.get_output()


def test_run_through_snakemake_writes_manifest_and_outputs(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, MCORR)
    manifest = batch.iloc[0].caiman.run(wait=False).wait()
    assert manifest["success"] is True
    row = batch.caiman.reload_from_disk().iloc[0]
    assert row["outputs"]["success"] and row["algo_duration"] > 0
    registered = row.mcorr.get_output()
    assert isinstance(registered, np.memmap) and registered.shape == (60, 32, 32)
    assert registered.dtype == np.float32 and registered.flags.c_contiguous
    x_shifts, y_shifts = row.mcorr.get_shifts()
    assert x_shifts.shape == y_shifts.shape == (60,)
    assert row.caiman.get_projection("mean").shape == (32, 32)
    assert row.caiman.get_corr_image().shape == (32, 32)
    pnr = row.caiman.get_pnr_image()
    assert pnr.shape == (32, 32) and np.isfinite(pnr).all() and pnr.max() > 0
    assert not np.array_equal(row.caiman.get_corr_image(filtered=True), row.caiman.get_corr_image())
    files = row.caiman.get_manifest()["files"]
    assert files["mcorr-output-path"] == {"path": "mcorr.npy", "shape": [60, 32, 32], "dtype": "float32"}


def _dry_run_items(batch_path: Path) -> set[str]:
    """uuids of the items a dry run would (re-)run: the folders of the manifests it makes."""
    cmd = snakemake_command(batch_path, [], cores=1, extra=["--dry-run"])
    out = subprocess.run(cmd, cwd=batch_path.parent, capture_output=True, text=True, check=True)
    markers = re.findall(r"output: (\S+/\.done)", out.stdout + out.stderr)
    return {Path(m).parent.name for m in markers}


def test_changed_params_rerun_item_and_children_only(batch, movie, tmp_path):
    """Snakemake's params trigger: editing one item's params re-runs it and its descendants."""
    a = batch.caiman.add_item("mcorr", "a", movie, MCORR)
    b = batch.caiman.add_item("mcorr", "b", movie, {"main": {**MCORR["main"], "niter_rig": 2}})
    c = batch.caiman.add_item("mcorr", "a2", batch.caiman.uloc(a), MCORR)
    path = batch.paths.get_batch_path()
    cmd = snakemake_command(path, [], cores=1)
    subprocess.run(cmd, cwd=path.parent, check=True, capture_output=True)
    assert _dry_run_items(path) == set()
    batch.caiman.update_params(a, {"main": {**MCORR["main"], "max_shifts": [3, 3]}})
    assert _dry_run_items(path) == {a, c}  # b, an unrelated item, stays done
    assert b not in _dry_run_items(path)
    batch.caiman.update_params(c, {"main": {**MCORR["main"], "max_shifts": [2, 2]}})
    assert _dry_run_items(path) == {a, c}
    subprocess.run(cmd, cwd=path.parent, check=True, capture_output=True)
    batch.caiman.update_params(c, {"main": {**MCORR["main"], "max_shifts": [1, 1]}})
    assert _dry_run_items(path) == {c}


def test_workflow_support_patterns_and_resources(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, MCORR)
    batch.caiman.add_item("cnmf", "m", batch.iloc[0], {**CNMF, "resources": {"mem_mb": 1234}})
    path = batch.paths.get_batch_path()
    items = read_table(path)
    folders = ws.item_folders(items, path.parent)
    mcorr, cnmf = items
    assert ws.folder_pattern(items, folders, path.parent, "mcorr") == mcorr["uuid"].replace("-", r"\-")
    assert ws.folder_pattern(items, folders, path.parent, "cnmfe") == "(?!x)x"
    assert ws.item_input(cnmf, folders, path, None) == str(folders[mcorr["uuid"]] / DONE)
    assert ws.item_input(mcorr, folders, path, None) == str(movie.resolve())
    config = {"resources": {"mem_mb_min": 1000, "runtime_min": 30}}
    assert ws.resources(cnmf, "x", "mem_mb", config) == 1234
    assert ws.resources(mcorr, str(movie), "mem_mb", config) == 1000
    assert ws.resources(mcorr, str(movie), "mem_mb", config, attempt=2) == 2000
    # cnmf reads the movie in blocks: memory follows the size of a small movie, then stays at
    # the default budget (a (sparse) 1 GB 16-bit movie, 2 GB as float32)...
    from mesmerize_helpers.step_support import DEFAULT_MEM_MB

    small, huge = movie.parent / "small.tif", movie.parent / "huge.tif"
    for path, size in ((small, 10**8), (huge, 10**9)):
        with open(path, "wb") as f:
            f.truncate(size)
    plain = {**cnmf, "params": {"main": {**CNMF["main"], "rf": 15}}, "parent": None}
    assert ws.resources(plain, str(small), "mem_mb", config) == 500 + 3 * 200
    assert ws.resources(plain, str(huge), "mem_mb", config) == DEFAULT_MEM_MB
    # ...unless it initializes on the whole field: the job's own minimum (a few copies of
    # the downsampled movie)
    whole = {**plain, "algo": "cnmfe", "params": {"main": {"gSig": [3, 3]}}}
    assert ws.resources(whole, str(huge), "mem_mb", config) == 400 + 2 * 3 * 2000 + 100
    assert ws.resources({**mcorr}, str(huge), "mem_mb", config) < 3000  # mcorr streams chunks


def test_snakemake_lint_is_clean(tmp_path):
    mh.create_batch(tmp_path / "batch.tsv")
    cmd = [sys.executable, "-m", "snakemake", "--lint", "--snakefile",
           str(project_dir() / "workflow" / "Snakefile"), "--config", f"batch={tmp_path / 'batch.tsv'}"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_invalid_config_is_rejected(tmp_path):
    mh.create_batch(tmp_path / "batch.tsv")
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", "--snakefile",
           str(project_dir() / "workflow" / "Snakefile"),
           "--config", f"batch={tmp_path / 'batch.tsv'}", "engine=matlab"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "matlab" in result.stdout + result.stderr


def test_caiman_engine_without_caiman_fails_with_install_hint(tmp_path, movie):
    import importlib.util

    from mesmerize_helpers.jobs import run_item

    if importlib.util.find_spec("caiman") is not None:
        pytest.skip("CaImAn is installed here: tests/test_caiman_engine.py covers the engine")
    manifest = run_item(tmp_path / "item", uuid="u", algo="mcorr", params=MCORR,
                        input_movie=movie, engine="caiman", progress=False)
    assert manifest["success"] is False
    assert "conda install -c conda-forge caiman" in manifest["traceback"]
    manifest = run_item(tmp_path / "item2", uuid="u", algo="mcorr", params=MCORR,
                        input_movie=movie, engine="matlab", progress=False)
    assert "Unknown engine 'matlab'" in manifest["traceback"]
