"""Every gate rule decided on real models.

The candidates are real checkpoints of one tiny YOLOv8n training (tests/gate_models.py): an
early epoch ("weak"), the last ("strong"), and the last with one class silenced in its head
("collapsed"). Each cycle goes through `run_cycle` as in the daemon (eval sets, score cache,
evaluation in flywheel's training child process, the gate, the registry and its ledger), with
only the training replaced by handing over the checkpoint. One data root, one production
history, in this order:

  1. weak                                  -> promoted, first_model
  2. collapsed vs weak                     -> rejected, class_regressed (overall mAP is higher)
  3. collapsed vs weak, min_class_instances above the class's boxes -> promoted (reported only)
  4. strong vs collapsed                   -> promoted, map_not_worse
  5. weak vs strong                        -> rejected, map_regressed
  6. weak vs strong, bootstrap, tolerance just past the observed drop -> rejected, interval_below
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.main import app as cli
from flywheel.core.gate import GateDecision, GateOutcome, Rule
from flywheel.flow.cycle import CycleResult
from tests.gate_models import Checkpoints, HandedCheckpoint, shapes_batch, train

pytestmark = pytest.mark.slow  # one training of about a minute, then six evaluations in a child process

COLLAPSE = "red"
BASE = """\
[dataset]
val_fraction = 0.5

[training]
imgsz = 64
batch = 16
"""


@dataclass
class History:
    root: Path
    models: Checkpoints
    results: dict[str, CycleResult]


def _cycle(root: Path, version: int, checkpoint: Path, **gate: Any) -> CycleResult:
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in gate.items())
    (root / "config.toml").write_text(BASE + "\n[gate]\n" + lines)
    app = App(root, trainer=HandedCheckpoint(root / ".ultralytics", checkpoint))
    return app.train(version)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    tmp = tmp_path_factory.mktemp("gate-real")
    batch = shapes_batch(tmp / "batch", 48, seed=1)
    models = train(batch, tmp, collapse=COLLAPSE)
    root = init_data_root(tmp / "root", BASE)
    version = App(root).ingest(batch, move=False).version
    assert version is not None and version.id is not None
    results: dict[str, CycleResult] = {}
    results["first"] = _cycle(root, version.id, models.weak)
    results["collapse"] = _cycle(root, version.id, models.collapsed)
    red = results["collapse"].decision.verdicts[0].candidate.instances[COLLAPSE]  # type: ignore[union-attr]
    results["rare"] = _cycle(root, version.id, models.collapsed, min_class_instances=red + 1)
    results["better"] = _cycle(root, version.id, models.strong)
    results["worse"] = _cycle(root, version.id, models.weak)
    drop = -(results["worse"].decision.margin or 0.0)  # type: ignore[union-attr]
    results["interval"] = _cycle(
        root,
        version.id,
        models.weak,
        bootstrap=True,
        bootstrap_samples=200,
        tolerance=round(drop + 0.01, 4),
        max_class_drop=1.0,  # isolates the interval rule: the weak model loses on every class
    )
    return History(root, models, results)


def decision(history: History, step: str) -> GateDecision:
    result = history.results[step]
    assert result.decision is not None
    return result.decision


def test_first_model_is_promoted(history):
    d = decision(history, "first")
    assert (d.outcome, d.rule, d.production_map) == (GateOutcome.PROMOTE, Rule.FIRST_MODEL, None)
    assert 0.1 < d.candidate_map < 1.0  # a real model that detects something


def test_overall_map_rises_but_a_collapsed_class_is_refused(history):
    d = decision(history, "collapse")
    verdict = d.verdicts[0]
    assert verdict.production is not None
    assert d.margin is not None and d.margin > 0.02  # better overall than production...
    red = next(c for c in verdict.classes if c.name == COLLAPSE)
    assert red.candidate == 0.0 and red.gated  # ...with one class gone
    assert red.drop > d.policy.max_class_drop == 0.1
    others = [c for c in verdict.classes if c.name != COLLAPSE]
    assert all(c.drop < 0 for c in others)  # every other class got better
    assert (d.outcome, d.rule) == (GateOutcome.REJECT, Rule.CLASS_REGRESSED)
    assert f"class '{COLLAPSE}'" in d.explain() and f"drop {red.drop:.4f} > max_class_drop 0.1000" in d.explain()
    model = history.results["collapse"].model
    assert model is not None and App(history.root).store.model(model.id).status == "rejected"
    row = next(g for g in App(history.root).store.gate_decisions() if g.candidate_model_id == model.id)
    checks = {c.name: c for c in row.details.verdicts[0].classes}
    assert checks[COLLAPSE].drop == pytest.approx(red.drop) and checks[COLLAPSE].gated is True
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["models", "show", "m0002", "--root", str(history.root)])
    assert shown.exit_code == 0, shown.output
    assert "reject by rule class_regressed" in shown.output and f"class '{COLLAPSE}'" in shown.output


def test_a_class_with_fewer_boxes_than_min_class_instances_is_reported_not_gated(history):
    d = decision(history, "rare")
    red = next(c for c in d.verdicts[0].classes if c.name == COLLAPSE)
    assert red.instances < d.policy.min_class_instances and not red.gated
    assert red.drop > d.policy.max_class_drop  # the same collapse as above...
    assert (d.outcome, d.rule) == (GateOutcome.PROMOTE, Rule.MAP_NOT_WORSE)  # ...reported, not refused


def test_a_better_model_is_promoted(history):
    d = decision(history, "better")
    assert (d.outcome, d.rule) == (GateOutcome.PROMOTE, Rule.MAP_NOT_WORSE)
    assert d.margin is not None and d.margin > 0.02
    red = next(c for c in d.verdicts[0].classes if c.name == COLLAPSE)
    assert red.production == 0.0 and red.candidate > 0.1  # the class is back
    assert App(history.root).store.production().sha256 == history.results["better"].model.sha256


def test_a_worse_model_is_refused(history):
    d = decision(history, "worse")
    assert d.margin is not None and d.margin < -0.05
    assert (d.outcome, d.rule) == (GateOutcome.REJECT, Rule.MAP_REGRESSED)
    assert "rejected" in d.explain() and f"{d.margin:+.4f}" in d.explain()


def test_a_drop_within_tolerance_is_refused_when_the_interval_reaches_below_it(history):
    d = decision(history, "interval")
    verdict = d.verdicts[0]
    assert verdict.interval is not None
    low, _high = verdict.interval
    assert d.margin is not None and -d.policy.tolerance <= d.margin  # the mAP rule alone would pass it
    assert low < -d.policy.tolerance  # but the interval says the drop may well be larger
    assert (d.outcome, d.rule) == (GateOutcome.REJECT, Rule.INTERVAL_BELOW)
    run_dir = history.root / "runs" / f"r{history.results['interval'].run.id:04d}"
    assert (run_dir / "stats-candidate-val.npz").is_file() and (run_dir / "stats-production-val.npz").is_file()


def test_flywheel_compare_scores_two_checkpoints_in_the_real_child(history, tmp_path):
    """`flywheel compare` end to end: an evaluate-only spec through flywheel's training child
    (a fresh data root, so no cached score stands in for it)."""
    root = init_data_root(tmp_path / "root", BASE)
    App(root).ingest(shapes_batch(tmp_path / "batch", 48, seed=1), move=False)
    weak, strong = str(history.models.weak), str(history.models.strong)
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["compare", weak, strong, "--trust", "--root", str(root)])
    assert shown.exit_code == 0, shown.output
    (run_dir,) = (root / "runs").glob("compare-*")
    assert not (run_dir / "train").exists()  # evaluate-only: nothing trained
    (line,) = [ln for ln in shown.output.splitlines() if ln.strip(" │|").startswith("map50_95")]
    scores = [float(v) for v in re.findall(r"\d\.\d{4}", line)]
    assert len(scores) == 2 and scores[0] != scores[1] and all(0.0 < v < 1.0 for v in scores), line
    assert f"AP50-95 {COLLAPSE}" in shown.output
    again = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["compare", weak, strong, "--trust", "--root", str(root)])
    assert again.exit_code == 0 and len(list((root / "runs").glob("compare-*"))) == 1  # scored once, then cached
