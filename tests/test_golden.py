"""The golden set: content hash, class mapping by name, read-only copy, ledger entry on change,
error messages, and the golden set through the cycle (fake trainer; one real tiny training)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.main import app as cli
from flywheel.core import ledger
from flywheel.core.errors import ConfigError, GoldenSetError
from flywheel.core.events import Evaluated
from flywheel.core.gate import GateOutcome, Rule
from flywheel.core.ledger import Action
from flywheel.core.spec import TrainSpec
from flywheel.flow.golden import GOLDEN, golden_eval_sets, read
from tests.conftest import TINY_CONFIG, free_port
from tests.fakes import Event, FakeTrainer

IGNORE = [".DS_Store", "._*"]


def golden(folder: Path, count: int = 6, seed: int = 99) -> Path:
    """A golden set in YOLO form: images/, labels/, classes.txt (red, blue)."""
    return synthetic_batch(folder, count, seed=seed)


def content_sha(folder: Path) -> str:
    return read(folder, IGNORE, 10**8, 0.01).sha256


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def root_with_golden(tmp_path: Path, golden_dir: str = "../golden") -> Path:
    config = TINY_CONFIG.format(port=free_port()) + f'\n[gate]\ngolden_dir = "{golden_dir}"\n'
    # class_bootstrap re-scores production on every gated set: off here, where the cache is the subject
    config += "class_bootstrap = false\n"
    return init_data_root(tmp_path / "root", config)


def ingest(app: App, tmp_path: Path, seed: int, count: int = 12) -> int:
    result = app.ingest(synthetic_batch(tmp_path / f"batch{seed}", count, seed=seed), move=False)
    assert result.version is not None and result.version.id is not None
    return result.version.id


# --- the content hash ----------------------------------------------------------------------


def test_hash_is_content_only_touching_renaming_or_moving_keeps_it(tmp_path):
    folder = golden(tmp_path / "g")
    sha = content_sha(folder)
    assert len(sha) == 64 and content_sha(folder) == sha  # re-read: the same
    for p in folder.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    assert content_sha(folder) == sha
    (folder / "images" / "s99_0000.png").rename(folder / "images" / "renamed.png")
    (folder / "labels" / "s99_0000.txt").rename(folder / "labels" / "renamed.txt")
    assert content_sha(folder) == sha
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    assert content_sha(moved) == sha


def _repaint(folder: Path) -> None:
    from PIL import Image

    path = folder / "images" / "s99_0001.png"
    with Image.open(path) as im:
        im = im.copy()
    im.putpixel((0, 0), (255, 255, 255))
    im.save(path)


def _remove(folder: Path) -> None:
    (folder / "images" / "s99_0003.png").unlink()
    (folder / "labels" / "s99_0003.txt").unlink()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: (f / "labels" / "s99_0001.txt").write_text("0 0.5 0.5 0.2 0.2\n"), id="label edited"),
        pytest.param(lambda f: (f / "classes.txt").write_text("blue\nred\n"), id="classes swapped"),
        pytest.param(_repaint, id="one pixel of an image"),
        pytest.param(_remove, id="an image removed"),
    ],
)
def test_hash_changes_with_content(tmp_path, change: Callable[[Path], object]):
    folder = golden(tmp_path / "g")
    before = content_sha(folder)
    change(folder)
    assert content_sha(folder) != before


# --- classes by name, the read-only copy ---------------------------------------------------


def test_classes_are_mapped_by_name_and_an_unknown_one_is_reported(tmp_path, caplog):
    from flywheel.flow.golden import eval_set

    folder = golden(tmp_path / "g", count=4)
    (folder / "classes.txt").write_text("blue\nred\nyellow\n")  # golden ids: 0 blue, 1 red, 2 yellow
    (folder / "labels" / "s99_0000.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n2 0.7 0.7 0.1 0.1\n")
    before = snapshot(folder)
    with caplog.at_level(logging.WARNING, "flywheel.flow.golden"):
        found = eval_set(read(folder, IGNORE, 10**8, 0.01), ["red", "blue"], tmp_path / "eval", {})
    assert found is not None and found.name == GOLDEN and found.images == 4
    assert found.golden is not None and found.golden.unknown_classes == {"yellow": 1}
    assert "yellow" in caplog.text and "left out" in caplog.text
    spec = yaml.safe_load(found.data_yaml.read_text())
    assert spec["names"] == {0: "red", 1: "blue"}  # the model's class map, not the golden one
    image_sha = read(folder, IGNORE, 10**8, 0.01).images[0].sha256
    label = found.data_yaml.parent / "labels" / f"{image_sha}.txt"
    assert label.read_text() == "1 0.500000 0.500000 0.200000 0.200000\n0 0.300000 0.300000 0.100000 0.100000\n"
    copies = [p for p in found.data_yaml.parent.rglob("*") if p.is_file() and p.name != "data.yaml"]
    assert len(copies) == 8 and all(p.stat().st_mode & 0o777 == 0o444 for p in copies)  # read-only
    assert all(p.stat().st_nlink == 1 for p in copies)  # copies, not links to the user's files
    assert snapshot(folder) == before  # nothing written into the golden folder
    # the eval-set hash covers the class map: another map is another eval set (another cache key)
    other = eval_set(read(folder, IGNORE, 10**8, 0.01), ["red", "blue", "yellow"], tmp_path / "eval", {})
    assert (
        other is not None
        and other.sha256 != found.sha256
        and other.golden is not None
        and other.golden.unknown_classes == {}
    )


def test_no_box_of_a_known_class_is_not_scored(tmp_path, caplog):
    from flywheel.flow.golden import eval_set

    folder = golden(tmp_path / "g", count=2)
    (folder / "classes.txt").write_text("cat\ndog\n")
    with caplog.at_level(logging.WARNING, "flywheel.flow.golden"):
        assert eval_set(read(folder, IGNORE, 10**8, 0.01), ["red", "blue"], tmp_path / "eval", {}) is None
    assert "not scored" in caplog.text


# --- the ledger ------------------------------------------------------------------------------


def test_a_content_change_is_a_ledger_entry_with_old_and_new_hash(tmp_path, caplog):
    folder = golden(tmp_path / "golden")
    app = App(root_with_golden(tmp_path))
    version = ingest(app, tmp_path, 1)
    names, manifest = app.store.version(version).class_names, app.store.manifest(version)

    def entries() -> list[str]:
        return [e.reason for e in app.store.ledger() if e.action == Action.GOLDEN_CHANGED]

    first = golden_eval_sets(app.store, app.config, app.paths.root, names, manifest)[0]
    sha = content_sha(folder)
    assert entries() == [f"golden set content sha256 none (first use) -> {sha} (6 images, 12 boxes in {folder})"]
    os.utime(folder / "classes.txt")  # touched, not changed: no entry, the same eval set
    assert golden_eval_sets(app.store, app.config, app.paths.root, names, manifest)[0] == first
    assert len(entries()) == 1
    (folder / "labels" / "s99_0001.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    with caplog.at_level(logging.WARNING, "flywheel.flow.golden"):
        second = golden_eval_sets(app.store, app.config, app.paths.root, names, manifest)[0]
    new = content_sha(folder)
    assert entries()[1] == f"golden set content sha256 {sha} -> {new} (6 images, 11 boxes in {folder})"
    assert "the golden set changed" in caplog.text
    assert second.sha256 != first.sha256 and second.data_yaml != first.data_yaml
    assert ledger.verify(app.store.ledger()) == []  # chained like every other entry


# --- errors ----------------------------------------------------------------------------------


def _symlink(f: Path) -> None:
    (f / "images" / "link.png").symlink_to(f / "images" / "s99_0000.png")


@pytest.mark.parametrize(
    ("spoil", "names"),
    [
        (lambda f: (f / "labels" / "s99_0002.txt").unlink(), ["images/s99_0002.png", "empty .txt"]),
        (lambda f: (f / "labels" / "s99_0001.txt").write_text("0 0.5 0.5\n"), ["labels/s99_0001.txt", "line 1"]),
        (lambda f: (f / "labels" / "s99_0001.txt").write_text("7 0.5 0.5 0.1 0.1\n"), ["class id 7"]),
        (lambda f: (f / "classes.txt").unlink(), ["no class names", "classes.txt"]),
        (lambda f: (f / "images" / "s99_0003.png").write_bytes(b"not a png"), ["images/s99_0003.png", "not an image"]),
        (lambda f: shutil.copy(f / "images" / "s99_0000.png", f / "images" / "s99_0001.png"), ["same image"]),
        (lambda f: (f / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n"), ["labels/orphan.txt"]),
        (_symlink, ["images/link.png", "link"]),
        (lambda f: [p.unlink() for p in (f / "images").iterdir()], ["no images"]),
    ],
)
def test_an_invalid_golden_set_is_an_error_naming_the_file_the_key_and_the_fix(tmp_path, spoil, names):
    folder = golden(tmp_path / "g", count=4)
    if "no images" in names:
        shutil.rmtree(folder / "labels")
    spoil(folder)
    with pytest.raises(GoldenSetError) as caught:
        read(folder, IGNORE, 10**8, 0.01)
    message = str(caught.value)
    assert f"gate.golden_dir = {folder}" in message and 'golden_dir = ""' in message
    for name in names:
        assert name in message, message
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2


def test_a_missing_golden_dir_stops_the_cycle_before_any_training(tmp_path):
    trainer = FakeTrainer([0.3])
    app = App(root_with_golden(tmp_path, "no-such-folder"), trainer=trainer)
    version = ingest(app, tmp_path, 1)
    with pytest.raises(GoldenSetError, match="no such folder") as caught:
        app.train(version)
    assert f"gate.golden_dir = {app.paths.root / 'no-such-folder'}" in str(caught.value)
    assert trainer.specs == [] and app.store.runs() == []


def test_a_golden_dir_inside_the_inbox_is_refused(tmp_path):
    app = App(root_with_golden(tmp_path, "inbox/golden"), trainer=FakeTrainer([0.3]))
    golden(app.paths.inbox / "golden")
    with pytest.raises(GoldenSetError, match="inside the inbox"):
        golden_eval_sets(app.store, app.config, app.paths.root, ["red", "blue"], {})


# --- through the cycle -----------------------------------------------------------------------


class GoldenScores(FakeTrainer):
    """FakeTrainer with its own mAPs on the golden set, by role (the rest as FakeTrainer)."""

    def __init__(self, candidate_maps: list[float], production_map: float, golden: dict[str, float]):
        super().__init__(candidate_maps, production_map)
        self.golden = golden

    def run(self, spec: TrainSpec, on_event: Callable[[Event], None]) -> list[Event]:
        events = super().run(spec, lambda _e: None)
        for i, e in enumerate(events):
            if isinstance(e, Evaluated) and e.eval_set == GOLDEN:
                value = self.golden[e.role]
                score = replace(e.score, map50_95=value, map50=value + 0.1, per_class={"red": value})
                events[i] = replace(e, score=score)
            on_event(events[i])
        return events


def _targets(spec: TrainSpec) -> set[tuple[str, str]]:
    return {(t.role, t.eval_set) for t in spec.evaluate}


def test_golden_set_is_gated_and_its_production_score_cached_through_the_cycle(tmp_path):
    folder = golden(tmp_path / "golden")
    root = root_with_golden(tmp_path)
    first = GoldenScores([0.4], 0.0, {"candidate": 0.4})
    app = App(root, trainer=first)
    m1 = app.train(ingest(app, tmp_path, 1))
    assert _targets(first.specs[0]) == {("candidate", "val"), ("candidate", GOLDEN)}
    assert m1.decision.rule is Rule.FIRST_MODEL and [v.eval_set for v in m1.decision.verdicts] == ["val", GOLDEN]
    row = app.store.gate_decisions()[-1]
    noted = row.details.eval_sets[GOLDEN]
    assert noted.golden is not None and noted.golden.content_sha256 == content_sha(folder)
    golden_sha = noted.sha256
    assert app.store.evaluation(m1.model.sha256, golden_sha).score.map50_95 == pytest.approx(0.4)

    # better on val, worse on golden: refused by the golden set; production's golden score is
    # the cached one (same model, same golden content and class map), not computed again
    second = GoldenScores([0.5], 0.4, {"candidate": 0.2})
    app = App(root, trainer=second)
    m2 = app.train(ingest(app, tmp_path, 2))
    targets = _targets(second.specs[0])
    assert {("candidate", GOLDEN), ("production", "val")} <= targets and ("production", GOLDEN) not in targets
    assert (m2.decision.outcome, m2.decision.rule) == (GateOutcome.REJECT, Rule.MAP_REGRESSED)
    assert m2.decision.margin == pytest.approx(0.1) and "on golden" in m2.decision.explain()
    golden_verdict = m2.decision.verdicts[1]
    assert golden_verdict.production.map50_95 == pytest.approx(0.4) and golden_verdict.margin == pytest.approx(-0.2)
    assert app.store.production().id == m1.model.id
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["models", "show", "m0002", "--root", str(root)])
    assert shown.exit_code == 0, shown.output
    assert f"golden set {folder}: 6 images, content {content_sha(folder)[:12]}" in shown.output
    assert "golden: map_regressed" in shown.output

    # the golden content changes: a ledger entry, and production is scored on the new content
    (folder / "labels" / "s99_0000.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    third = GoldenScores([0.5], 0.4, {"candidate": 0.45, "production": 0.4})
    app = App(root, trainer=third)
    m3 = app.train(ingest(app, tmp_path, 3))
    assert ("production", GOLDEN) in _targets(third.specs[0])
    assert m3.decision.outcome is GateOutcome.PROMOTE
    changes = [e for e in app.store.ledger() if e.action == Action.GOLDEN_CHANGED]
    assert len(changes) == 2 and content_sha(folder) in changes[1].reason


def test_a_real_tiny_training_is_scored_on_the_golden_set(tmp_path):
    folder = golden(tmp_path / "golden", count=6)
    before = snapshot(folder)
    app = App(root_with_golden(tmp_path))
    result = app.train(ingest(app, tmp_path, 1, count=16))
    assert result.decision is not None and result.decision.rule is Rule.FIRST_MODEL
    verdict = next(v for v in result.decision.verdicts if v.eval_set == GOLDEN)
    assert 0.0 <= verdict.candidate.map50_95 <= 1.0
    lines = [ln.split()[0] for p in (folder / "labels").glob("*.txt") for ln in p.read_text().splitlines()]
    expected = {name: lines.count(str(i)) for i, name in enumerate(["red", "blue"]) if str(i) in lines}
    assert verdict.candidate.instances == expected  # Ultralytics counted the copied labels
    golden_sha = app.store.gate_decisions()[-1].details.eval_sets[GOLDEN].sha256
    cached = app.store.evaluation(result.model.sha256, golden_sha)
    assert cached is not None and cached.score == verdict.candidate  # the whole score, as scored
    assert (app.paths.runs / "r0001" / "eval-candidate-golden").is_dir()
    assert snapshot(folder) == before


def test_an_exif_rotated_image_is_copied_upright_so_its_boxes_fit(tmp_path):
    from PIL import Image

    from flywheel.flow.golden import eval_set
    from tests.ingest_kit import gradient_jpeg

    folder = golden(tmp_path / "g", count=2)
    (folder / "images" / "phone.jpg").write_bytes(gradient_jpeg((40, 20), orientation=6))  # shown 20 x 40
    (folder / "labels" / "phone.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    found = eval_set(read(folder, IGNORE, 10**8, 0.01), ["red", "blue"], tmp_path / "eval", {})
    assert found is not None
    sha = next(i.sha256 for i in read(folder, IGNORE, 10**8, 0.01).images if i.path.name == "phone.jpg")
    with Image.open(found.data_yaml.parent / "images" / f"{sha}.jpg") as copy:
        assert copy.size == (20, 40) and copy.getexif().get(0x0112, 1) == 1
