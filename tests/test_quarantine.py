"""`flywheel quarantine` lists what is quarantined and why; `flywheel quarantine retry BATCH`
sends a batch back in after its files were fixed in quarantine/BATCH/. Through the app, with
its config, a real SQLite database and the CLI runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flywheel.app import App
from flywheel.cli import data as commands
from tests.ingest_kit import image_bytes, write, yolo_batch, zip_folder
from tests.test_ingest import mixed_batch

runner = CliRunner()


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    commands.register(app)
    return app


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        self.batches.append(quarantined_reasons)

    def training_started(self, *args: object) -> None: ...
    def training_event(self, *args: object) -> None: ...
    def training_finished(self, *args: object) -> None: ...


def test_list_shows_every_quarantined_file_with_code_and_reason(data_root: Path):
    app = App(data_root)
    mixed_batch(data_root / "inbox" / "mixed")
    app.ingest(data_root / "inbox" / "mixed", move=True)

    shown = runner.invoke(cli(), ["quarantine", "--root", str(data_root)], terminal_width=200)

    assert shown.exit_code == 0, shown.output
    for path, code in [
        ("labels/badlabel.txt", "label_out_of_range"),
        ("images/empty.png", "image_empty"),
        ("images/nolabel.png", "image_unlabeled"),
        ("labels/orphan.txt", "label_orphan"),
    ]:
        line = next(ln for ln in shown.output.splitlines() if path in ln)
        assert code in line, line
    assert "b0001-mixed" in shown.output


def test_retry_after_a_fix_ingests_the_fixed_file_and_retires_the_old_folder(data_root: Path):
    app = App(data_root)
    mixed_batch(data_root / "inbox" / "mixed")
    first = app.ingest(data_root / "inbox" / "mixed", move=True)
    assert first.accepted == 3
    folder = data_root / "quarantine" / "b0001-mixed"
    (folder / "labels" / "badlabel.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.7 0.2\n")  # fixed

    done = runner.invoke(cli(), ["quarantine", "retry", "b0001", "--root", str(data_root)])

    assert done.exit_code == 0, done.output
    batches = app.store.batches()
    assert [b.name for b in batches] == ["mixed", "mixed-retry"]
    retry = batches[-1]
    assert retry.images_ok == 4 and retry.images_new == 1 and retry.version_id == 2  # badlabel.png, now good
    assert not folder.exists() and (data_root / "quarantine" / ".retried" / "b0001-mixed" / "report.json").is_file()
    report = json.loads((data_root / "quarantine" / "b0002-mixed-retry" / "report.json").read_text())
    assert "labels/badlabel.txt" not in {f["path"] for f in report["files"]}  # the rest are still bad
    assert {f["path"] for f in report["files"]} >= {"images/corrupt.png", "labels/orphan.txt"}

    listed = runner.invoke(cli(), ["quarantine", "--root", str(data_root)], terminal_width=200)
    assert "b0001-mixed" not in listed.output and "b0002-mixed-retry" in listed.output


def test_retry_without_a_fix_says_so_and_changes_nothing(data_root: Path):
    app = App(data_root)
    mixed_batch(data_root / "inbox" / "mixed")
    app.ingest(data_root / "inbox" / "mixed", move=True)

    again = runner.invoke(cli(), ["quarantine", "retry", "1", "--root", str(data_root)])

    assert again.exit_code == 2 and "fix the files" in again.output
    assert len(app.store.batches()) == 1 and (data_root / "quarantine" / "b0001-mixed").is_dir()
    assert [p.name for p in (data_root / "inbox").iterdir()] == [".done"]  # no stray staging


def test_retry_of_an_unknown_batch_exits_3(data_root: Path):
    result = runner.invoke(cli(), ["quarantine", "retry", "b0042", "--root", str(data_root)])
    assert result.exit_code == 3 and "no quarantined files" in result.output


def test_retry_of_a_refused_archive_after_adding_the_class_names(data_root: Path, tmp_path: Path):
    app = App(data_root)
    source = yolo_batch(tmp_path / "src", count=2)
    (source / "classes.txt").unlink()
    app.ingest(zip_folder(source, data_root / "inbox" / "export.zip"), move=True)
    folder = data_root / "quarantine" / "b0001-export.zip"
    report = json.loads((folder / "report.json").read_text())
    assert report["code"] == "no_class_names"
    assert str(data_root / "inbox" / "export.zip") in report["reason"] and ".staging" not in report["reason"]
    write(folder / "classes.txt", "cat\ndog\n")

    done = runner.invoke(cli(), ["quarantine", "retry", "b0001", "--root", str(data_root)])

    assert done.exit_code == 0, done.output
    assert app.store.batches()[-1].images_ok == 2 and app.store.latest_version() is not None


def test_app_ingest_uses_the_config_and_tells_the_observer_codes(data_root: Path):
    config = data_root / "config.toml"
    config.write_text(config.read_text() + "\n[ingest]\nmax_image_pixels = 1000\nkeep_done = false\n")
    recorder = Recorder()
    app = App(data_root, observer=recorder)
    batch = yolo_batch(data_root / "inbox" / "b", count=2)
    write(batch / "images" / "big.png", image_bytes(1, (40, 40)))  # 1600 pixels > 1000 > 32 x 24
    write(batch / "labels" / "big.txt", "0 0.5 0.5 0.1 0.1\n")

    result = app.ingest(batch, move=True)

    assert result.accepted == 2 and result.batch.quarantine_reasons == {"image_too_large": 1, "partner_refused": 1}
    assert recorder.batches == [["image_too_large", "partner_refused"]]
    assert not batch.exists() and not (data_root / "inbox" / ".done" / "b0001-b").exists()  # keep_done = false
    assert (data_root / "quarantine" / "b0001-b" / "images" / "big.png").is_file()  # the copy is what is left


@pytest.mark.parametrize("with_marker", [True, False])
def test_a_zip_dropped_in_the_inbox_is_picked_up_by_the_daemon_loop(data_root: Path, tmp_path: Path, with_marker):
    # the daemon hands archives to App.ingest like folders; the watcher sees them as top-level entries
    from flywheel.ingest.watcher import SettleTracker

    source = yolo_batch(tmp_path / "src", count=2)
    if with_marker:
        write(source / "READY", "")
    archive = zip_folder(source, tmp_path / "x.zip")
    shutil.move(archive, data_root / "inbox" / "x.zip")
    tracker = SettleTracker(data_root / "inbox", "READY", settle_seconds=0.0)

    ready = tracker.complete()

    assert ready == [data_root / "inbox" / "x.zip"]
    result = App(data_root).ingest(ready[0], move=True)
    assert result.accepted == 2 and result.format == "yolo"


def test_retry_of_a_batch_holding_a_pipe_does_not_block_on_it(data_root: Path):
    import os

    app = App(data_root)
    batch = yolo_batch(data_root / "inbox" / "b", count=1)
    os.mkfifo(batch / "pipe")
    write(batch / "images" / "x.png", image_bytes(5))
    write(batch / "labels" / "x.txt", "0 0.5 0.5 0.2\n")
    first = app.ingest(batch, move=True)
    assert first.batch.quarantine_reasons == {"special_file": 1, "label_bad_fields": 1, "partner_refused": 1}
    write(data_root / "quarantine" / "b0001-b" / "labels" / "x.txt", "0 0.5 0.5 0.2 0.2\n")

    done = runner.invoke(cli(), ["quarantine", "retry", "b0001", "--root", str(data_root)])

    assert done.exit_code == 0, done.output
    assert app.store.batches()[-1].images_ok == 2


def test_a_report_that_holds_only_notes_is_listed_too(data_root: Path):
    app = App(data_root)
    batch = yolo_batch(data_root / "inbox" / "noted", count=2)
    (batch / "labels" / "g0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")  # the same box twice
    result = app.ingest(batch, move=True)
    assert result.quarantined == [] and result.notes  # nothing quarantined, one note

    shown = runner.invoke(cli(), ["quarantine", "--root", str(data_root)], terminal_width=200)

    assert shown.exit_code == 0, shown.output
    line = next(ln for ln in shown.output.splitlines() if "labels/g0.txt" in ln)
    assert "box_duplicate" in line and "kept:" in line  # was: "nothing in quarantine"


def test_an_image_above_pillow_s_own_cap_names_flywheel_s_cap(tmp_path: Path):
    from PIL import Image

    from flywheel.ingest.images import check_image
    from flywheel.ingest.reasons import Problem

    path = tmp_path / "bomb.png"
    Image.new("1", (14000, 13000)).save(path)  # 182 M pixels: above Pillow's 2 x 89.5 M
    with pytest.raises(Problem) as err:
        check_image(path, 64_000_000)
    assert str(err.value) == (
        "182000000 pixels, above ingest.max_image_pixels = 64000000 (decompression-bomb guard); "
        "downscale it or raise the cap"
    )  # was: Pillow's limit, 178956970, which the user never set
