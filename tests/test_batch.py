"""The batch TSV: create/load, editing, lineage, params diffs, locking, malformed files, paths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import CNMF, MCORR, write_movie

import mesmerize_helpers as mh
from mesmerize_helpers.batch import DATAFRAME_COLUMNS, BatchFormatError, read_table
from mesmerize_helpers.errors import DependencyError, ItemRunningError
from mesmerize_helpers.locks import RUN_LOCK, item_lock
from mesmerize_helpers.manifest import write_manifest


def test_create_and_load_round_trip(batch, movie):
    path = batch.paths.get_batch_path()
    assert list(batch.columns) == list(DATAFRAME_COLUMNS)
    with pytest.raises(FileExistsError):
        mh.create_batch(path)
    uuid = batch.caiman.add_item("mcorr", "my movie", movie, MCORR, comments="tab\there\nline two")
    loaded = mh.load_batch(path)
    assert list(loaded.columns) == list(DATAFRAME_COLUMNS)
    row = loaded.iloc[0]
    assert row["uuid"] == uuid
    assert row["params"] == MCORR
    assert row["comments"] == "tab\there\nline two"
    assert row["outputs"] is None and row["ran_time"] is None and row["algo_duration"] is None
    assert row["parent"] is None
    # the in-memory frame after add_item equals what a reload gives
    pd.testing.assert_frame_equal(batch.reset_index(drop=True), loaded)
    # attrs survive row selection
    assert loaded.iloc[0].paths.get_batch_path() == path
    assert loaded[loaded["algo"] == "mcorr"].paths.get_batch_path() == path
    # every item is one line of the file
    assert len(path.read_text().splitlines()) == 2
    empty = mh.create_batch(path, remove_existing=True)
    assert empty.empty and mh.load_batch(path).empty


def test_outputs_columns_come_from_the_manifest(batch, movie):
    uuid = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    folder = batch.caiman.uloc(uuid).caiman.get_output_dir()
    folder.mkdir()
    write_manifest(folder, {"success": True, "outputs": {"mcorr-output-path": "mcorr.npy"},
                            "ran_time": "2026-01-01T00:00:00", "algo_duration": 1.5})
    row = batch.caiman.reload_from_disk().iloc[0]
    assert row["outputs"] == {"mcorr-output-path": "mcorr.npy", "success": True, "traceback": None}
    assert row["algo_duration"] == 1.5 and row["ran_time"] == "2026-01-01T00:00:00"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"gSig": 4}, "'main' dict"),
        ([1, 2], "must be a dict"),
        ({"main": {"f": object()}}, "JSON-serialisable"),
        ({"main": {"x": float("nan")}}, "JSON-serialisable"),
    ],
)
def test_add_item_rejects_bad_params_and_writes_nothing(batch, movie, params, message):
    path = batch.paths.get_batch_path()
    before = path.read_bytes()
    with pytest.raises(TypeError, match=message):
        batch.caiman.add_item("mcorr", "m", movie, params)
    assert path.read_bytes() == before
    assert batch.empty


def test_add_item_rejects_bad_algo_and_missing_movie(batch, movie, tmp_path):
    with pytest.raises(ValueError, match="algo must be one of"):
        batch.caiman.add_item("suite2p", "m", movie, MCORR)
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        batch.caiman.add_item("mcorr", "m", tmp_path / "nope.tif", MCORR)
    assert read_table(batch.paths.get_batch_path()) == []


def test_uloc_remove_and_dependencies(batch, movie):
    m = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    c = batch.caiman.add_item("cnmf", "m", batch.caiman.uloc(m), CNMF)
    assert batch.caiman.uloc(c)["parent"] == m
    with pytest.raises(KeyError):
        batch.caiman.uloc("not-a-uuid")
    with pytest.raises(DependencyError, match=c):
        batch.caiman.remove_item(m)
    folder = batch.caiman.uloc(c).caiman.get_output_dir()
    folder.mkdir(parents=True)
    (folder / "file").write_text("x")
    batch.caiman.remove_item(c)
    assert not folder.exists()
    assert list(batch["uuid"]) == [m] and list(batch.index) == [0]
    batch.caiman.remove_item(0)
    assert batch.empty and mh.load_batch(batch.paths.get_batch_path()).empty


def test_remove_item_refuses_to_delete_a_running_item(batch, movie):
    """A job holds the item's run lock for its whole run: removing the item with its data
    then would delete files under it, so remove_item raises and removes nothing, also when
    the running item is a child inside the removed one's folder (safe_removal=False)."""
    m = batch.caiman.add_item("mcorr", "reg", movie, MCORR)
    c = batch.caiman.add_item("cnmf", "cells", batch.caiman.uloc(m), CNMF)
    parent, child = (batch.caiman.uloc(u).caiman.get_output_dir() for u in (m, c))
    child.mkdir(parents=True)  # nested in the parent's folder
    (child / "cnmf.hdf5").write_text("x")
    path = batch.paths.get_batch_path()
    with item_lock(child, RUN_LOCK):  # the child's job, running
        with pytest.raises(ItemRunningError, match=rf"cnmf item {c} \('cells'\).*running it now.*"
                                                   r"pid .*Wait for the run to finish"):
            batch.caiman.remove_item(c)
        with pytest.raises(ItemRunningError, match=rf"mcorr item {m}.*the item {c} in its folder"):
            batch.caiman.remove_item(m, safe_removal=False)
        assert (child / "cnmf.hdf5").is_file() and len(mh.load_batch(path)) == len(batch) == 2
        batch.caiman.remove_item(c, remove_data=False)  # the folder stays: allowed
        assert (child / "cnmf.hdf5").is_file() and list(batch["uuid"]) == [m]
    batch.caiman.remove_item(m)  # the run is over
    assert not parent.exists() and mh.load_batch(path).empty


def test_lineage_over_two_hops(batch, movie):
    root = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    second = batch.caiman.add_item("mcorr", "m", batch.iloc[0], MCORR)
    # an mcorr output path given as a plain path also sets the parent
    output_path = batch.iloc[1].caiman.get_output_dir() / "mcorr.npy"
    output_path.parent.mkdir(parents=True)
    output_path.touch()
    leaf = batch.caiman.add_item("cnmf", "m", output_path, CNMF)
    assert batch.caiman.uloc(leaf)["parent"] == second
    assert batch.caiman.get_children(root) == [second, leaf]
    assert batch.caiman.get_children(second) == [leaf]
    with pytest.raises(TypeError, match="only mcorr items have children"):
        batch.caiman.get_children(leaf)  # as mesmerize-core
    assert batch.caiman.get_parent(leaf) == second
    assert batch.caiman.get_parent(leaf, root=True) == root
    assert batch.caiman.get_parent(root) is None
    results = batch.paths.get_batch_path().parent
    assert batch.caiman.uloc(leaf).caiman.get_output_dir() == results / root / second / leaf


def test_params_diffs_show_exactly_the_swept_keys(batch, movie):
    base = {"main": {"K": 4, "gSig": [4, 4], "p": 1}, "refit": True}
    uuids = batch.caiman.add_grid("cnmf", "m", movie, base, {"main.K": [4, 8], "main.gSig": [[3, 3], [5, 5]]})
    assert len(uuids) == 4
    batch.caiman.add_item("cnmf", "other", movie, {"main": {"K": 99}})
    diffs = batch.caiman.get_params_diffs("cnmf", "m")
    assert sorted(diffs.columns) == ["K", "gSig"]  # "main"'s keys by bare name, as mesmerize-core
    assert len(diffs) == 4
    assert {(str(r.K), str(r.gSig)) for r in diffs.itertuples(index=False)} == {
        ("4", "[3, 3]"), ("4", "[5, 5]"), ("8", "[3, 3]"), ("8", "[5, 5]")}
    batch.caiman.add_item("cnmf", "m", movie, {"main": {"K": 4, "gSig": [3, 3], "p": 1,
                                                        "merge_thr": 0.9}, "refit": True})
    diffs = batch.caiman.get_params_diffs("cnmf", "m")
    assert sorted(diffs.columns) == ["K", "gSig", "merge_thr"]
    assert list(diffs["merge_thr"]) == ["<default>"] * 4 + [0.9]  # unset where not given
    batch.caiman.remove_item(-1)
    repeat = {"main.K": [8], "main.gSig": [[3, 3]]}
    with pytest.raises(ValueError, match="allow_duplicates"):
        batch.caiman.add_grid("cnmf", "m", movie, base, repeat)
    assert len(batch) == 5
    assert len(batch.caiman.add_grid("cnmf", "m", movie, base, repeat, allow_duplicates=True)) == 1


def test_update_item_user_columns_only(batch, movie):
    uuid = batch.caiman.add_item("mcorr", "m", movie, MCORR)
    batch.caiman.update_item(uuid, {"comments": "good one", "item_name": "renamed"})
    row = mh.load_batch(batch.paths.get_batch_path()).iloc[0]
    assert (row["comments"], row["item_name"]) == ("good one", "renamed")
    assert batch.iloc[0]["comments"] == "good one"
    with pytest.raises(TypeError, match="'main' dict"):
        batch.caiman.update_item(0, {"params": {}})
    with pytest.raises(ValueError, match="cannot update column.*algo|Cannot update column"):
        batch.caiman.update_item(0, {"algo": "cnmf"})
    with pytest.raises(AttributeError, match="unknown column"):  # mesmerize-core's error type
        batch.caiman.update_item(0, {"not_a_column": 1})


ADDER = """
import sys
import mesmerize_helpers as mh
df = mh.load_batch(sys.argv[1])
for i in range(100):
    df.caiman.add_item("mcorr", f"{sys.argv[3]}-{i}", sys.argv[2], {"main": {"niter_rig": i + 1}})
"""


def test_two_concurrent_writers_lose_nothing(batch, movie):
    path = batch.paths.get_batch_path()
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, str(path), str(movie), name])
             for name in ("a", "b")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    rows = read_table(path)
    assert len(rows) == 200
    assert len({r["uuid"] for r in rows}) == 200
    assert {r["item_name"] for r in rows} == {f"{n}-{i}" for n in "ab" for i in range(100)}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda line: line + "\textra", "line 3: 9 tab-separated fields"),
        (lambda line: line.replace('{"main"', '{main'), "line 3: params is not valid JSON"),
        (lambda line: line.replace("\tmcorr\t", "\tfoo\t"), "line 3: algo 'foo'"),
        (lambda line: "xyz" + line[3:], "line 3: invalid uuid"),
    ],
)
def test_malformed_tsv_names_the_line(batch, movie, mutate, message):
    batch.caiman.add_item("mcorr", "a", movie, MCORR)
    batch.caiman.add_item("mcorr", "b", movie, MCORR)
    path = batch.paths.get_batch_path()
    lines = path.read_text().splitlines()
    lines[2] = mutate(lines[2])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BatchFormatError, match=message) as info:
        mh.load_batch(path)
    assert str(path) in str(info.value)


def test_duplicate_uuid_and_missing_header(batch, movie):
    batch.caiman.add_item("mcorr", "a", movie, MCORR)
    path = batch.paths.get_batch_path()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(BatchFormatError, match="line 3: duplicate uuid"):
        mh.load_batch(path)
    path.write_text("uuid\talgo\n")
    with pytest.raises(BatchFormatError, match="line 1: header lacks"):
        mh.load_batch(path)


def test_paths_relative_to_batch_and_raw_dir_survive_a_move(tmp_path):
    raw = tmp_path / "lab" / "raw"
    raw.mkdir(parents=True)
    movie_a = write_movie(raw / "a.tif")
    project = tmp_path / "lab" / "project"
    df = mh.create_batch(project / "batch.tsv")
    movie_b = write_movie(project / "b.tif")
    mh.set_parent_raw_data_path(raw)
    df.caiman.add_item("mcorr", "a", movie_a, MCORR)
    df.caiman.add_item("mcorr", "b", movie_b, MCORR)
    assert [r["input_movie_path"] for r in read_table(project / "batch.tsv")] == ["a.tif", "b.tif"]
    assert df.paths.split(movie_a) == (raw.resolve(), Path("a.tif"))
    # move everything to another machine/folder
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "lab", moved)
    mh.set_parent_raw_data_path(moved / "raw")
    df = mh.load_batch(moved / "project" / "batch.tsv")
    assert df.iloc[0].caiman.get_input_movie_path() == (moved / "raw" / "a.tif").resolve()
    assert df.iloc[1].caiman.get_input_movie_path() == (moved / "project" / "b.tif").resolve()
    assert df.iloc[0].caiman.get_input_movie().shape == (60, 32, 32)
    with pytest.raises(FileNotFoundError, match="c.tif"):
        df.paths.resolve("c.tif")


def test_tsv_is_readable_json_per_line(batch, movie):
    batch.caiman.add_item("mcorr", "m", movie, {"main": {"max_shifts": (6, 6)}})
    line = batch.paths.get_batch_path().read_text().splitlines()[1]
    assert json.loads(line.split("\t")[4]) == {"main": {"max_shifts": [6, 6]},
                                                "__types__": {"main.max_shifts": "tuple"}}
    assert mh.load_batch(batch.paths.get_batch_path()).iloc[0]["params"] == {
        "main": {"max_shifts": (6, 6)}}  # the tuple comes back
