"""Transfer policy through the cycle, with a fake trainer: start points (`--from`), replay
samples recorded with the run, the negative-transfer guard, interrupted runs.

The real trainings behind each of these are in test_training_strategies.py,
test_training_replay.py and test_training_process.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import ModelStatus, RunState, StartKind
from flywheel.core.errors import NotFound, TrainingCancelled, UsageError
from flywheel.core.plan import CANDIDATE, CHALLENGER
from flywheel.core.records import Epoch
from flywheel.flow.recovery import mark_interrupted, reopen
from flywheel.training import replay
from tests.fakes import FakeTrainer
from tests.pg_server import both_backends

pytestmark = both_backends  # the store's behaviour, on SQLite and on PostgreSQL


def configure(root: Path, **sections: dict[str, object]) -> None:
    """Add keys to the data root's config.toml (sections are created when missing)."""
    text = (root / "config.toml").read_text()
    for section, keys in sections.items():
        text = "".join(line for line in text.splitlines(keepends=True) if line.split(" = ")[0] not in keys)
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
        header = f"[{section}]\n"
        text = text.replace(header, header + lines) if header in text else text + "\n" + header + lines
    (root / "config.toml").write_text(text)


def ingest(app: App, tmp_path: Path, seed: int, count: int = 12) -> int:
    result = app.ingest(synthetic_batch(tmp_path / f"batch{seed}", count, seed=seed), move=False)
    assert result.version is not None and result.version.id is not None
    return result.version.id


# --- start points ---------------------------------------------------------------------------


def test_from_base_trains_from_scratch_even_with_a_production_model(data_root, tmp_path):
    trainer = FakeTrainer([0.2, 0.3])
    app = App(data_root, trainer=trainer)
    app.train(ingest(app, tmp_path, 1))
    result = app.train(ingest(app, tmp_path, 2), start_from="base")
    spec = trainer.specs[1]
    assert spec.start_kind == StartKind.SCRATCH and spec.start == "yolov8n.yaml" and spec.epochs == 2
    assert spec.warmup_epochs == 3.0 and spec.strategy == "scratch"
    assert result.run.start_model_id is None
    # production is still scored from its own checkpoint, not from the start point
    prod = [t for t in spec.evaluate if t.role == "production"]
    assert prod and Path(prod[0].checkpoint) == app.registry.checkpoint(app.store.model(1))


def test_from_a_model_id_warm_starts_from_that_model(data_root, tmp_path):
    trainer = FakeTrainer([0.2, 0.3, 0.4], production_map=0.1)
    app = App(data_root, trainer=trainer)
    first = app.train(ingest(app, tmp_path, 1)).model
    app.train(ingest(app, tmp_path, 2))  # m2 becomes production
    assert app.store.production().id == 2
    result = app.train(ingest(app, tmp_path, 3), start_from="m0001")
    spec = trainer.specs[2]
    assert spec.start_kind == StartKind.WARM and Path(spec.start) == app.registry.checkpoint(first)
    # the auto budget: 2/3 of v0003 is new to m0001, x epochs_scratch 2 x 1.5, within [.., 2]
    assert result.run.start_model_id == first.id and spec.epochs == 2 and spec.warmup_epochs == 0.0
    with pytest.raises(NotFound):
        app.train(3, start_from="m0099")


def test_from_a_user_checkpoint_loads_it_with_scratch_settings(data_root, tmp_path):
    trainer = FakeTrainer([0.2])
    app = App(data_root, trainer=trainer)
    weights = data_root / "coco.pt"
    weights.write_bytes(b"weights someone provides")
    app.train(ingest(app, tmp_path, 1), start_from=str(weights))
    spec = trainer.specs[0]
    assert spec.start == str(weights) and spec.start_kind == StartKind.SCRATCH and spec.strategy == "pretrained"
    with pytest.raises(UsageError, match="never downloads"):
        app.train(1, start_from="yolov8n.pt")


def test_from_production_without_one_and_nonsense_are_usage_errors(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([0.2]))
    version = ingest(app, tmp_path, 1)
    with pytest.raises(UsageError, match="no production model"):
        app.train(version, start_from="production")
    with pytest.raises(UsageError, match="expected production, base"):
        app.train(version, start_from="yesterday's model")
    assert app.store.runs() == []  # nothing was planned


# --- replay -------------------------------------------------------------------------------------


def test_replay_budget_trains_on_new_images_and_a_recorded_sample_of_old_ones(data_root, tmp_path):
    configure(data_root, replay={"max_images": 14})
    trainer = FakeTrainer([0.2, 0.3])
    app = App(data_root, trainer=trainer)
    v1 = ingest(app, tmp_path, 1, count=24)
    app.train(v1)
    assert trainer.specs[0].data_yaml.endswith("v0001/data.yaml")  # scratch: always the whole version
    v2 = ingest(app, tmp_path, 2, count=12)
    run = app.train(v2).run
    spec = trainer.specs[1]
    listing = Path(spec.data_yaml).parent / "train.txt"
    trained = {Path(line).stem for line in listing.read_text().splitlines()}
    train2 = {k for k, i in app.store.manifest(v2).items() if i.split == "train"}
    new = train2 - {k for k, i in app.store.manifest(v1).items() if i.split == "train"}
    assert new <= trained and trained <= train2  # every new image, and only images of the version
    assert len(trained) == max(14, len(new)) < len(train2)
    assert all(Path(line).is_file() for line in listing.read_text().splitlines())
    record = run.replay
    assert record["new_images"] == len(new) and record["old_images"] == len(trained) - len(new)
    assert record["max_images"] == 14 and record["seed"] == 0 and spec.replay_sha256 == record["sample_sha256"]
    # reproducible from what the run recorded: draw again, same images
    again = replay.draw(
        app.store.manifest(v2),
        app.store.manifest(app.store.model(run.start_model_id).version_id),
        record["max_images"],
        record["seed"],
        replay.classes_from_labels(lambda sha: app.objects.path(sha).read_text()),
        app.store.version(v2).class_names,
    )
    assert again.sha256 == record["sample_sha256"] and set(again.images) == trained
    assert json.loads((data_root / "runs" / "r0002" / "replay.json").read_text())["new"] == again.new


# --- the negative-transfer guard ----------------------------------------------------------------


def test_scratch_challenger_every_n_generations_and_the_winner_is_recorded(data_root, tmp_path):
    configure(data_root, training={"scratch_challenger_every": 2})
    trainer = FakeTrainer([0.2, 0.3, 0.4, 0.6], production_map=0.25)
    app = App(data_root, trainer=trainer)
    app.train(ingest(app, tmp_path, 1))  # scratch: the first model
    second = app.train(ingest(app, tmp_path, 2))  # warm generation 1: no challenger
    assert second.challenger is None
    third = app.train(ingest(app, tmp_path, 3))  # warm generation 2: the challenger trains too
    assert third.challenger is not None
    warm_spec, scratch_spec = trainer.specs[2], trainer.specs[3]
    assert warm_spec.start_kind == StartKind.WARM and scratch_spec.start_kind == StartKind.SCRATCH
    assert scratch_spec.data_yaml == warm_spec.data_yaml and scratch_spec.epochs == 2  # epochs_scratch
    challenger = third.challenger.run
    assert challenger.purpose == CHALLENGER and challenger.challenger_for == third.run.id
    assert third.run.purpose == CANDIDATE
    # the gate picked: the scratch model (0.6) beat the warm one (0.4, promoted first)
    assert app.store.production().id == third.challenger.model.id
    assert challenger.guard["winner"] == "scratch" and "2 warm-started generations" in challenger.guard["reason"]
    assert app.store.run(third.run.id).guard == challenger.guard
    # the count starts again after a scratch training
    assert app.train(ingest(app, tmp_path, 4)).challenger is None


def test_two_rejected_warm_candidates_in_a_row_bring_a_challenger(data_root, tmp_path):
    trainer = FakeTrainer([0.5, 0.1, 0.2, 0.3], production_map=0.5)
    app = App(data_root, trainer=trainer)
    first = app.train(ingest(app, tmp_path, 1)).model
    assert app.train(ingest(app, tmp_path, 2)).challenger is None  # one rejection
    result = app.train(ingest(app, tmp_path, 3))  # two in a row
    assert result.model.status == ModelStatus.REJECTED
    assert result.challenger is not None and "rejected in a row" in result.challenger.run.guard["reason"]
    assert result.challenger.model.status == ModelStatus.REJECTED  # 0.3 < 0.5 as well
    assert result.challenger.run.guard["winner"] == "production" and app.store.production().id == first.id


def test_warm_winner_is_recorded_when_the_challenger_loses(data_root, tmp_path):
    configure(data_root, training={"scratch_challenger_every": 1})
    trainer = FakeTrainer([0.2, 0.5, 0.1], production_map=0.2)
    app = App(data_root, trainer=trainer)
    app.train(ingest(app, tmp_path, 1))
    result = app.train(ingest(app, tmp_path, 2))
    assert result.challenger.run.guard["winner"] == "warm"
    assert app.store.production().id == result.model.id


def test_a_warm_start_gets_the_budget_its_new_images_need_and_records_why(data_root, tmp_path):
    configure(data_root, training={"epochs_scratch": 40, "epochs_warm_min": 3, "plateau_patience": 4})
    trainer = FakeTrainer([0.2, 0.3, 0.4], production_map=0.2)
    app = App(data_root, trainer=trainer)
    first = app.train(ingest(app, tmp_path, 1, count=12))
    second = app.train(ingest(app, tmp_path, 2, count=36))
    v1, v2 = (app.store.version(r.run.version_id) for r in (first, second))
    new = v2.train_images - v1.train_images
    expected = min(-(-60 * new // v2.train_images), 40)  # ceil(epochs_scratch x share new x 1.5), <= 40
    assert trainer.specs[1].epochs == second.run.epochs == expected > 3
    budget = second.run.params["budget"]
    assert budget["epochs"] == expected
    assert (
        budget["why"].startswith(f"{new}/{v2.train_images} train images new") and "epochs_scratch 40" in budget["why"]
    )
    assert first.run.params["budget"] == {"epochs": 40, "why": "epochs_scratch 40"}
    assert (first.run.params["plateau_patience"], second.run.params["plateau_patience"]) == (0, 4)  # warm, auto
    # fixed: epochs_warm, whatever is new
    configure(data_root, training={"warm_budget": "fixed", "epochs_warm": 7})
    app = App(data_root, trainer=trainer)
    third = app.train(ingest(app, tmp_path, 3, count=12))
    assert (
        third.run.epochs == 7
        and third.run.params["plateau_patience"] == 0
        and 'warm_budget = "fixed"' in third.run.params["budget"]["why"]
    )


def test_a_refresh_from_base_trains_once_the_data_grew_by_refresh_growth(data_root, tmp_path):
    trainer = FakeTrainer([0.2, 0.3, 0.4, 0.6, 0.7], production_map=0.25)
    app = App(data_root, trainer=trainer)
    app.train(ingest(app, tmp_path, 1))  # scratch
    v2, v3 = ingest(app, tmp_path, 2), ingest(app, tmp_path, 3)
    images = [app.store.version(v).train_images for v in (1, v2, v3)]
    growth = (images[1] + images[2]) / 2 / images[0]  # v2 has not grown that much since v1, v3 has
    configure(data_root, training={"refresh_growth": round(growth, 3), "scratch_challenger_after_rejections": 0})
    app = App(data_root, trainer=trainer)
    assert app.train(v2).challenger is None
    third = app.train(v3)  # the warm candidate, then a refresh
    assert [s.start_kind for s in trainer.specs[2:]] == [StartKind.WARM, StartKind.SCRATCH]
    refresh = third.challenger.run
    reason = f"({images[0]} -> {images[2]} images) since the newest training from scratch"
    assert refresh.purpose == CHALLENGER and reason in refresh.guard["reason"]
    assert refresh.guard["winner"] == "scratch" and app.store.production().id == third.challenger.model.id
    assert app.train(ingest(app, tmp_path, 4)).challenger is None  # measured from the refresh now


# --- interrupted and cancelled runs -------------------------------------------------------------


class StopTrainer(FakeTrainer):
    """A trainer whose run is stopped (as `flywheel train --cancel` or SIGTERM would)."""

    def run(self, spec, on_event):  # type: ignore[no-untyped-def]
        self.specs.append(spec)
        raise TrainingCancelled(f"training run r{spec.run_id:04d} was stopped before it finished")


def test_cancelled_run_is_recorded_cancelled(data_root, tmp_path):
    app = App(data_root, trainer=StopTrainer([]))
    with pytest.raises(TrainingCancelled):
        app.train(ingest(app, tmp_path, 1))
    run = app.store.runs()[-1]
    assert run.state == RunState.CANCELLED and "stopped" in run.error and app.store.models() == []


def _left_running(app: App, tmp_path: Path, last_pt: bool) -> int:
    """A run as a daemon that died mid-training leaves it: RUNNING, maybe with a last.pt."""
    version = ingest(app, tmp_path, 1)
    run = app.store.create_run(
        version_id=version,
        start_kind=StartKind.SCRATCH,
        start_checkpoint="yolov8n.yaml",
        epochs=2,
        params={"epochs": 2},
    )
    app.store.update_run(run.id, RunState.RUNNING)
    weights = app.paths.runs / f"r{run.id:04d}" / "train" / "weights"
    weights.mkdir(parents=True)
    if last_pt:
        (weights / "last.pt").write_bytes(b"an unfinished checkpoint")
    return run.id


@pytest.mark.parametrize(("mode", "resumes"), [("resume", True), ("restart", False)])
def test_interrupted_run_is_resumed_or_restarted_per_config(data_root, tmp_path, mode, resumes):
    configure(data_root, training={"on_interrupt": mode})
    trainer = FakeTrainer([0.3])
    app = App(data_root, trainer=trainer)
    run_id = _left_running(app, tmp_path, last_pt=True)
    assert [r.id for r in mark_interrupted(app.store)] == [run_id]
    assert app.store.run(run_id).state == RunState.INTERRUPTED
    (result,) = app.resume_interrupted()
    spec = trainer.specs[0]
    last = app.paths.runs / f"r{run_id:04d}" / "train" / "weights" / "last.pt"
    assert spec.run_id == run_id and result.run.id == run_id  # the same run continues
    assert spec.resume == (str(last) if resumes else "")
    assert last.exists() == resumes  # a restart starts from a clean folder
    assert result.run.state == RunState.SUCCEEDED and result.run.resumed == 1
    assert app.store.production().id == result.model.id
    assert app.resume_interrupted() == []  # nothing left to do


def test_interrupted_runs_are_left_when_configured_and_given_up_after_three_tries(data_root, tmp_path):
    configure(data_root, training={"on_interrupt": "leave"})
    app = App(data_root, trainer=FakeTrainer([0.3]))
    run_id = _left_running(app, tmp_path, last_pt=False)
    mark_interrupted(app.store)
    assert app.resume_interrupted() == [] and app.store.run(run_id).state == RunState.INTERRUPTED
    app.store.update_run(run_id, resumed=3)
    training = app.config.training.model_copy(update={"on_interrupt": "resume"})
    app.config = app.config.model_copy(update={"training": training})
    assert app.resume_interrupted() == []
    run = app.store.run(run_id)
    assert run.state == RunState.CANCELLED and "interrupted 4 times" in run.error


RESULTS_CSV = (  # as Ultralytics 8.4 writes it
    "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
    "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2\n"
    "1,13.27,5.51,4.08,4.24,0,0,0,0,5.36,4.17,4.15,0.00044,0.00044,0.00044\n"
    "2,25.5,4.9,3.9,4.0,0.1,0.2,0.05,0.02,5.1,4.0,4.0,0.0004,0.0004,0.0004\n"
    "3,37.\n"
)


def record_first_epoch(app: App, run_id: int) -> None:
    """Epoch 1 as the daemon recorded it from the child's event (results.csv's first row)."""
    fields = dict(box_loss=5.51, cls_loss=4.08, dfl_loss=4.24, precision=0, recall=0, map50=0, map50_95=0)
    app.store.add_epoch(Epoch(run_id=run_id, epoch=1, seconds=13.27, **fields))
    app.store.update_run(run_id, epochs_done=1)


def test_resuming_records_the_epochs_the_orphaned_child_trained_after_its_parent_died(data_root, tmp_path):
    """The daemon was SIGKILLed after epoch 1 was recorded; its child trained epoch 2 (in
    results.csv and last.pt) before noticing, and was killed mid-way through writing epoch 3."""
    app = App(data_root, trainer=FakeTrainer([0.3]))
    run_id = _left_running(app, tmp_path, last_pt=True)
    record_first_epoch(app, run_id)
    (app.paths.runs / f"r{run_id:04d}" / "train" / "results.csv").write_text(RESULTS_CSV)
    (run,) = mark_interrupted(app.store)
    reopened, resume_from = reopen(app.store, app.paths.runs, run, "resume")
    assert resume_from.endswith("last.pt") and reopened.state == RunState.QUEUED
    epochs = app.store.epochs(run_id)
    assert [e.epoch for e in epochs] == [1, 2] and reopened.epochs_done == 2  # the cut-short row 3 is skipped
    assert (epochs[1].map50_95, epochs[1].box_loss) == (0.02, 4.9)
    assert abs(epochs[1].seconds - (25.5 - 13.27)) < 1e-9  # per epoch, not results.csv's running total


def test_restarting_forgets_the_epochs_of_the_attempt_before(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([0.3]))
    run_id = _left_running(app, tmp_path, last_pt=True)
    record_first_epoch(app, run_id)
    (run,) = mark_interrupted(app.store)
    _, resume_from = reopen(app.store, app.paths.runs, run, "restart")
    assert resume_from == "" and app.store.epochs(run_id) == []


class Crash(BaseException):
    """Stands in for a SIGKILL at a crash point (the fault-injection test does the real one)."""


def test_a_gate_decision_recorded_before_a_crash_is_carried_out_at_the_next_start(data_root, tmp_path, monkeypatch):
    app = App(data_root, trainer=FakeTrainer([0.3]))
    version = ingest(app, tmp_path, 1)

    def crash(name: str) -> None:
        if name == "gate.decided":
            raise Crash

    monkeypatch.setattr("flywheel.flow.promotion.crash_point", crash)
    with pytest.raises(Crash):
        app.train(version)
    monkeypatch.undo()
    (run,), (model,) = app.store.runs(), app.store.models()
    assert run.state == RunState.RUNNING and model.status == ModelStatus.CANDIDATE
    assert app.store.gate_decisions()[-1].outcome == "promote" and app.store.production() is None

    assert mark_interrupted(app.store, app.registry) == []  # finished, not interrupted
    assert app.store.run(run.id).state == RunState.SUCCEEDED and app.store.run(run.id).model_id == model.id
    assert app.store.production().id == model.id
    assert json.loads((data_root / "production" / "model.json").read_text())["sha256"] == model.sha256
    assert app.resume_interrupted() == [] and len(app.store.runs()) == 1  # nothing trained again


def test_registering_the_same_checkpoint_of_a_run_twice_gives_one_model(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([0.3]))
    version = ingest(app, tmp_path, 1)
    best = tmp_path / "best.pt"
    best.write_bytes(b"a checkpoint")
    first = app.registry.add_candidate(best, 7, version, None, ["red", "blue"])
    again = app.registry.add_candidate(best, 7, version, None, ["red", "blue"])  # a resumed run scored it again
    assert again.id == first.id and len(app.store.models()) == 1
