"""The CLI's contract: help that teaches, documented exit codes, errors that name the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flywheel.cli.main import app

runner = CliRunner()


def test_help_lists_every_command_and_the_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "run", "ingest", "train", "rollback", "status", "versions", "models", "demo"):
        assert command in result.output
    assert "Exit codes" in result.output


def test_help_and_readme_list_the_exit_codes_of_exit_code():
    import re

    from flywheel.core.errors import EXIT_CODE_MEANINGS, ExitCode

    text = " ".join(runner.invoke(app, ["--help"]).output.split())  # rich wraps at the terminal width
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {meaning}" in text
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    every = " ".join(readme.split("Exit codes: ", 1)[1].split("\n\n", 1)[0].split())
    of_run = " ".join(readme.split("### Exit codes of `flywheel run`", 1)[1].split("\n\n", 1)[0].split())
    assert {int(n) for n in re.findall(r"(?:^|[,;] )(\d+) ", every)} == set(map(int, EXIT_CODE_MEANINGS))
    run_codes = {ExitCode.OK, ExitCode.FAILED, ExitCode.BAD_SETUP, ExitCode.BUSY, ExitCode.SHUTDOWN_TIMEOUT}
    assert {int(n) for n in re.findall(r"(?:^|[;] )(\d+) ", of_run)} == set(map(int, run_codes))
    assert f"{int(ExitCode.SIGNALLED)}+N" in of_run


def test_init_creates_a_data_root(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "root")])
    assert result.exit_code == 0, result.output
    for name in ("config.toml", "inbox", "flywheel.db", "quarantine"):
        assert (tmp_path / "root" / name).exists()


def test_a_folder_that_is_not_a_data_root_exits_2_and_says_how_to_make_one(tmp_path):
    result = runner.invoke(app, ["status", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "flywheel init" in result.output


def test_messages_keep_a_long_path_on_one_line_in_a_narrow_terminal(tmp_path):
    """The message is pasted back into a shell or grepped for: Rich must not break the path.

    CI caught this: `flywheel predict` named its predict.log, wrapped at 80 columns mid-name."""
    # "[bold]" in the name: Rich markup would eat it from the message, were it read as markup
    deep = tmp_path / ("a-folder-name-long-enough-to-wrap-" * 3) / "not-a-[bold]-data-root"
    deep.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "flywheel", "status", "--root", str(deep)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert done.returncode == 2
    assert str(deep) in done.stderr, done.stderr
    made = subprocess.run(
        [sys.executable, "-m", "flywheel", "init", str(deep / "root")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert made.returncode == 0 and f"flywheel run --root {deep / 'root'}" in made.stdout, made.stdout
    status = subprocess.run(
        [sys.executable, "-m", "flywheel", "status", "--root", str(deep / "root")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert status.returncode == 0 and f"data root: {deep / 'root'}\n" in status.stdout, status.stdout


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


# --- every documented exit code, through the real command in its own process --------------


def flywheel(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "flywheel", *args], capture_output=True, text=True, timeout=120, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_every_documented_exit_code_through_the_real_command(data_root: Path, tmp_path: Path):
    from flywheel.cli.demo import synthetic_batch
    from flywheel.store.data_root import DataRootLock

    root = str(data_root)
    batch = synthetic_batch(tmp_path / "batch", 4, seed=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        0: ["ingest", str(batch), "--root", root],
        1: ["ingest", str(empty), "--root", root],  # refused: nothing in it
        2: ["status", "--root", str(tmp_path)],  # not a data root
        3: ["models", "show", "m0042", "--root", root],
        4: ["rollback", "--reason", "test", "--root", root],  # nothing in production
    }
    for code, args in cases.items():
        got, output = flywheel(*args)
        assert got == code, (args, output)
        assert "Traceback" not in output, output
    with DataRootLock(data_root):  # as the running daemon holds it
        got, output = flywheel("ingest", str(batch), "--root", root)
    assert got == 5, output
    text = " ".join(output.split())  # rich wraps at the terminal width
    assert "in use by pid" in text and "Drop the batch in its inbox" in text
    assert "Traceback" not in output  # it was: the right message, then a traceback and exit 1
