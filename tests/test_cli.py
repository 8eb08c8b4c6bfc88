"""The mesmerize-helpers command line: create, add, grid, status, run, and its errors."""

from __future__ import annotations

import pytest
import yaml

import mesmerize_helpers as mh
from mesmerize_helpers.cli import main


def test_create_add_grid_status(tmp_path, movie, capsys):
    batch = tmp_path / "b" / "batch.tsv"
    assert main(["create", str(batch)]) == 0
    assert main(["create", str(batch)]) == 2
    assert "already exists" in capsys.readouterr().err

    params = tmp_path / "mcorr.yaml"
    params.write_text(yaml.safe_dump({"main": {"max_shifts": [4, 4]}}))
    assert main(["add", str(batch), "--algo", "mcorr", "--name", "m", "--input", str(movie),
                 "--params", str(params)]) == 0
    mcorr_uuid = capsys.readouterr().out.strip()

    cnmf = tmp_path / "cnmf.yaml"
    cnmf.write_text(yaml.safe_dump({"main": {"K": 4, "gSig": [4, 4]}, "refit": True}))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"main.gSig": [[3, 3], [5, 5]], "main.K": [4, 8]}))
    assert main(["grid", str(batch), "--algo", "cnmf", "--name", "m", "--input", mcorr_uuid,
                 "--params", str(cnmf), "--grid", str(grid)]) == 0
    uuids = capsys.readouterr().out.split()
    assert len(uuids) == 4

    df = mh.load_batch(batch)
    assert (df.loc[df["uuid"].isin(uuids), "parent"] == mcorr_uuid).all()
    assert sorted(df.caiman.get_params_diffs("cnmf", "m").columns) == ["K", "gSig"]
    # the same grid again is refused: duplicates
    assert main(["grid", str(batch), "--algo", "cnmf", "--name", "m", "--input", mcorr_uuid,
                 "--params", str(cnmf), "--grid", str(grid)]) == 2
    assert "allow_duplicates" in capsys.readouterr().err

    assert main(["status", str(batch)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("not run" in line for line in lines[1:])


def test_bad_params_file_and_unknown_item(tmp_path, movie, capsys):
    batch = tmp_path / "batch.tsv"
    main(["create", str(batch)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SystemExit, match="must hold a mapping"):
        main(["add", str(batch), "--algo", "mcorr", "--name", "m", "--input", str(movie),
              "--params", str(bad)])
    no_main = tmp_path / "nomain.yaml"
    no_main.write_text("gSig: 4\n")
    assert main(["add", str(batch), "--algo", "mcorr", "--name", "m", "--input", str(movie),
                 "--params", str(no_main)]) == 2
    assert "'main'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="No item"):
        main(["run", str(batch), "0000"])


def test_run_dry_run_lists_jobs(tmp_path, movie, capfd):
    batch = tmp_path / "batch.tsv"
    df = mh.create_batch(batch)
    uuid = df.caiman.add_item("mcorr", "m", movie, {"main": {}})
    assert main(["run", str(batch), "--dry-run", "--cores", "1"]) == 0
    out = capfd.readouterr()
    assert uuid in out.out + out.err
