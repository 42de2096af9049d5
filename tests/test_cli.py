"""The CLI's contract: help that teaches, documented exit codes, errors that name the fix."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flywheel.cli import app

runner = CliRunner()


def test_help_lists_every_command_and_the_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "run", "ingest", "train", "rollback", "status", "versions", "models", "demo"):
        assert command in result.output
    assert "Exit codes" in result.output


def test_init_creates_a_data_root(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "root")])
    assert result.exit_code == 0, result.output
    for name in ("config.toml", "inbox", "flywheel.db", "quarantine"):
        assert (tmp_path / "root" / name).exists()


def test_a_folder_that_is_not_a_data_root_exits_2_and_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["status", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "flywheel init" in result.output


def test_a_bad_config_key_stops_start_up_naming_the_key(data_root: Path):
    (data_root / "config.toml").write_text("[gate]\ntolerence = 0.1\n")
    result = runner.invoke(app, ["run", "--root", str(data_root)])
    assert result.exit_code == 2
    assert "gate.tolerence" in result.output and "unknown key" in result.output


def test_rollback_with_nothing_in_production_exits_4(data_root: Path):
    result = runner.invoke(app, ["rollback", "--root", str(data_root), "--reason", "x"])
    assert result.exit_code == 4
    assert "nothing to roll back" in result.output


def test_an_unknown_id_exits_3_and_a_malformed_one_exits_2(data_root: Path):
    result = runner.invoke(app, ["train", "--root", str(data_root), "--version", "v0042"])
    assert result.exit_code == 3 and "v0042 does not exist" in result.output
    result = runner.invoke(app, ["rollback", "--root", str(data_root), "--reason", "x", "--to", "banana"])
    assert result.exit_code == 2 and "m0003" in result.output


def test_status_versions_models_on_an_empty_root(data_root: Path):
    for command in ("status", "versions", "models"):
        result = runner.invoke(app, [command, "--root", str(data_root)])
        assert result.exit_code == 0, (command, result.output)
    assert "production: none" in runner.invoke(app, ["status", "--root", str(data_root)]).output
