"""Issue 15, inputs: bad movies and params refused early with clear messages, the same
checks in the job, a full disk, shared folders' permissions, and batch files from elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import CNMF, MCORR, write_movie

import mesmerize_helpers as mh
from mesmerize_helpers.batch import read_table
from mesmerize_helpers.errors import BatchFormatError
from mesmerize_helpers.io.estimates import load_estimates
from mesmerize_helpers.jobs import run_item
from mesmerize_helpers.manifest import MANIFEST, read_manifest


def _movie(path: Path, shape: tuple[int, ...], dtype=np.float32) -> Path:
    np.save(path, np.random.default_rng(0).normal(100, 5, shape).astype(dtype))
    return path


def _text(path: Path) -> Path:
    path.write_text("hello, not a movie")
    return path


def _truncated_tiff(path: Path) -> Path:
    write_movie(path, 60, (64, 64))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


# --- 7. refused at add_item / update_params / add_grid, nothing written ----------------------

@pytest.mark.parametrize("algo, params, message", [
    ("mcorr", {"main": {"max_shiftz": [2, 2]}}, "Unknown parameter 'max_shiftz'.*Did you mean 'max_shifts'"),
    ("mcorr", {"main": {"max_shifts": -3}}, "max_shifts = -3 is invalid.*integers >= 0"),
    ("mcorr", {"main": {"strides": [-32, -32]}}, "strides = \\[-32, -32\\] is invalid"),
    ("cnmf", {"main": {"K": -2}}, "K = -2 is invalid"),
    ("cnmf", {"main": {"K": 0}}, "K = 0 is invalid"),
    ("cnmf", {"main": {"gSig": [0, 0]}}, "gSig = \\[0, 0\\] is invalid.*> 0"),
    ("cnmf", {"main": {"p": 3}}, "p = 3 is invalid"),
    ("cnmf", {"main": {}, "refitt": True}, "Unknown parameter 'refitt'.*Did you mean 'refit'"),
    ("cnmf", {"main": {}, "eval": {"min_snr": 2}}, "Did you mean 'min_SNR'"),
    ("mcorr", {"main": {"max_shifts": [40, 40]}}, "max_shifts = \\[40, 40\\] is too large for frames of 32 x 32"),
])
def test_bad_params_are_refused_before_anything_is_written(batch, movie, algo, params, message):
    path = batch.paths.get_batch_path()
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        batch.caiman.add_item(algo, "m", movie, params)
    with pytest.raises(ValueError, match=message):
        batch.caiman.add_grid(algo, "m", movie, {"main": {}},
                              {k: [v] for k, v in _dotted(params).items()})
    assert path.read_bytes() == before and batch.empty


def _dotted(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_update_params_and_add_grid_refuse_without_writing(batch, movie):
    uuid = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    path = batch.paths.get_batch_path()
    before = path.read_bytes()
    with pytest.raises(ValueError, match="max_shifts = -3"):
        batch.caiman.update_params(uuid, {"main": {"max_shifts": -3}})
    # one bad combination in a grid: none of the grid is added
    with pytest.raises(ValueError, match="niter_rig = 0"):
        batch.caiman.add_grid("mcorr", "m", movie, MCORR, {"main.niter_rig": [1, 2, 0]})
    assert path.read_bytes() == before and len(batch) == 1
    assert batch.iloc[0]["params"] == MCORR


@pytest.mark.parametrize("name", [None, "", "   "])
def test_empty_item_name_is_refused(batch, movie, name):
    with pytest.raises(ValueError, match="item_name must be a non-empty string"):
        batch.caiman.add_item("mcorr", name, movie, MCORR)
    assert read_table(batch.paths.get_batch_path()) == []


@pytest.mark.parametrize("make, message", [
    (lambda d: _movie(d / "image.npy", (64, 64)), "a single frame \\(an image, not a movie\\)"),
    (lambda d: _movie(d / "empty.npy", (0, 64, 64)), "has no frames"),
    (lambda d: _movie(d / "thin.npy", (300, 1, 1)), "frames of 1 x 1 pixels"),
    (lambda d: _truncated_tiff(d / "cut.tif"), "truncated: the file has \\d+ bytes, its header describes \\d+"),
    (lambda d: _text(d / "text.tif"), "(cannot be read|holds no image)"),
])
def test_movies_that_cannot_be_a_movie_are_refused(batch, tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=f"Movie .*{path.name}.*{message}"):
        batch.caiman.add_item("mcorr", "m", path, MCORR)
    assert read_table(batch.paths.get_batch_path()) == []


# --- 3 and 8. the same checks in the job, with messages naming item, file and parameter -------

def _job(tmp_path: Path, movie: Path, params=MCORR, algo="mcorr") -> str:
    manifest = run_item(tmp_path / "item", uuid="u1", algo=algo, params=params,
                        input_movie=movie, item_name="mouse1", progress=False)
    assert manifest["success"] is False and read_manifest(tmp_path / "item")["success"] is False
    return manifest["traceback"].splitlines()[0]


def test_a_nan_pixel_is_refused_naming_file_and_frame(tmp_path):
    movie = np.random.default_rng(0).normal(100, 5, (60, 32, 32)).astype(np.float32)
    movie[17, 3, 4] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, movie)
    first = _job(tmp_path, path)
    assert first.startswith("mcorr item u1 ('mouse1') failed on")
    assert f"{path} has 1 NaN or infinite pixel value(s), the first in frame 17 at (y=3, x=4)" in first


def test_nan_borders_of_a_parent_are_refused_by_mcorr_and_filled_by_cnmf(tmp_path):
    """mcorr with border_nan=True (CaImAn's default) leaves NaN where frames were shifted: an
    mcorr child on it used to be all NaN, marked successful (now refused, saying what to do);
    a cnmf child used to fail on an SVD (now it fits, the missing pixels filled)."""
    from mesmerize_helpers.synthetic import save_tiff, simulate_2p

    sim = simulate_2p(n_frames=100, shape=(48, 48), n_neurons=4, motion=3.0, seed=1)
    movie = save_tiff(tmp_path / "m.tif", sim.movie)
    parent = run_item(tmp_path / "p", uuid="p", algo="mcorr", progress=False, input_movie=movie,
                      params={"main": {"max_shifts": [6, 6], "border_nan": True}})
    assert parent["success"] and parent["nonfinite_pixels"] > 0
    child = run_item(tmp_path / "p" / "mcorr", uuid="c", algo="mcorr", params=MCORR,
                     input_movie="", parent_dir=tmp_path / "p", progress=False)
    assert child["success"] is False
    assert re.search(r"mcorr.npy has \d+ NaN .* re-run the parent with border_nan='copy'",
                     child["traceback"].splitlines()[0])
    with pytest.warns(UserWarning, match="missing values"):
        fit = run_item(tmp_path / "p" / "cnmf", uuid="f", algo="cnmf", params=CNMF,
                       input_movie="", parent_dir=tmp_path / "p", progress=False)
    assert fit["success"], fit["traceback"]
    est = load_estimates(tmp_path / "p" / "cnmf" / fit["outputs"]["cnmf-hdf5-path"])
    assert est.A.shape[1] >= 1 and np.isfinite(est.C).all() and np.isfinite(est.A.data).all()


@pytest.mark.parametrize("make, params, message", [
    (_truncated_tiff, MCORR, "cut.tif cannot be used: it is truncated"),
    (lambda p: _movie(p.with_suffix(".npy"), (0, 64, 64)), MCORR, "has no frames"),
    (lambda p: _movie(p.with_suffix(".npy"), (300, 1, 1)), MCORR, "frames of 1 x 1 pixels"),
    (lambda p: _movie(p.with_suffix(".npy"), (60, 64, 64)), {"main": {"strides": [-32, -32]}},
     "parameter strides = \\[-32, -32\\] is invalid"),
    (lambda p: _movie(p.with_suffix(".npy"), (60, 64, 64)), {"main": {**CNMF["main"], "K": -2}},
     "parameter K = -2 is invalid"),
    (lambda p: _movie(p.with_suffix(".npy"), (60, 64, 64)), {"main": {"gSig": [40, 40]}},
     "gSig = \\[40, 40\\] .* too large for frames of 64 x 64"),
])
def test_job_errors_name_the_item_and_the_culprit(tmp_path, make, params, message):
    """A TSV edited by hand, or a movie changed after add_item: the job says what is wrong
    (these used to end with "failed to read 1638400 bytes", "min() arg is an empty
    sequence", "index 6 is out of bounds", "negative dimensions are not allowed")."""
    algo = "cnmf" if "K" in params["main"] or "gSig" in params["main"] else "mcorr"
    first = _job(tmp_path, make(tmp_path / "cut.tif"), params, algo)
    assert first.startswith(f"{algo} item u1 ('mouse1') failed")
    assert re.search(message, first), first


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root and mount; skipped otherwise)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_the_item_with_no_space_left(small_disk, tmp_path):
    """A registered movie bigger than the disk: SIGBUS and an empty log before; now the
    item is FAILED and says so."""
    movie = write_movie(tmp_path / "m.tif", 300, (64, 64))  # 4.9 MB as float32
    df = mh.create_batch(small_disk / "batch.tsv")
    df.caiman.add_item("mcorr", "m", movie, MCORR)
    manifest = df.iloc[0].caiman.run(cores=1).wait()
    assert manifest["success"] is False
    first = manifest["traceback"].splitlines()[0]
    assert f"no space left on {small_disk}" in first and "Free disk space" in first
    row = df.caiman.reload_from_disk().iloc[0]
    assert row["outputs"]["success"] is False  # FAILED, not "not run"
    assert not list(df.iloc[0].caiman.get_output_dir().glob(".run-*"))  # room given back


# --- 9. shared lab folders ----------------------------------------------------------------------

def test_files_follow_the_umask_and_keep_their_mode(tmp_path, movie):
    old = os.umask(0o002)
    try:
        df = mh.create_batch(tmp_path / "b" / "batch.tsv")
        path = df.paths.get_batch_path()
        assert path.stat().st_mode & 0o777 == 0o664  # a colleague in the group may edit it
        uuid = df.caiman.add_item("mcorr", "m", movie, MCORR)
        run_item(tmp_path / "b" / uuid, uuid=uuid, algo="mcorr", params=MCORR,
                 input_movie=movie, progress=False)
        assert (tmp_path / "b" / uuid / MANIFEST).stat().st_mode & 0o777 == 0o664
        os.chmod(path, 0o640)
        df.caiman.update_item(uuid, {"comments": "kept"})
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_read_only_batch_refuses_writes(batch, movie):
    path = batch.paths.get_batch_path()
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(PermissionError, match="read-only \\(mode 0o444\\).*nothing was written"):
        batch.caiman.add_item("mcorr", "m", movie, MCORR)
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o444
    assert mh.load_batch(path).empty  # reading it still works


# --- 10. batch files from elsewhere -----------------------------------------------------------

def test_excel_bom_and_crlf_load(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, MCORR)
    path = batch.paths.get_batch_path()
    lines = path.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[4] = '"' + cells[4].replace('"', '""') + '"'  # how a spreadsheet quotes JSON
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([lines[0], "\t".join(cells)]).encode() + b"\r\n")
    df = mh.load_batch(path)
    assert df.iloc[0]["params"] == MCORR and df.iloc[0]["item_name"] == "m"


def test_parent_cycle_names_the_file(batch, movie):
    a = batch.caiman.add_item("mcorr", "a", movie, MCORR)
    b = batch.caiman.add_item("mcorr", "b", batch.caiman.uloc(a), MCORR)
    path = batch.paths.get_batch_path()
    text = path.read_text()
    row_a = next(line for line in text.splitlines() if line.startswith(a))
    path.write_text(text.replace(row_a, row_a.rstrip("\t") + "\t" + b if row_a.endswith("\t")
                                 else row_a[: row_a.rfind("\t") + 1] + b))
    with pytest.raises(BatchFormatError, match=f"{path}: the parent column makes a cycle"):
        mh.load_batch(path)


def test_remove_item_out_of_range_says_how_many_items(batch, movie):
    batch.caiman.add_item("mcorr", "a", movie, MCORR)
    with pytest.raises(KeyError, match="No item at index 999: the batch has 1 item"):
        batch.caiman.remove_item(999)


def test_leftover_temp_files_of_killed_writers_are_cleaned(batch, movie):
    path = batch.paths.get_batch_path()
    leftover = path.with_name(f".{path.name}.abc123.tmp")
    leftover.write_text("half a batch")
    batch.caiman.add_item("mcorr", "a", movie, MCORR)
    assert not leftover.exists() and len(read_table(path)) == 1


def test_a_damaged_manifest_shows_as_a_failed_item(batch, movie):
    uuid = batch.caiman.add_item("mcorr", "a", movie, MCORR)
    folder = batch.iloc[0].caiman.get_output_dir()
    folder.mkdir()
    (folder / MANIFEST).write_text('{"success": tr')
    row = mh.load_batch(batch.paths.get_batch_path()).caiman.uloc(uuid)
    assert row["outputs"]["success"] is False and "unreadable" in row["outputs"]["traceback"]
    assert json.loads(json.dumps(row["outputs"]))  # still a plain dict
