"""The negative-transfer guard with real trainings: a warm candidate and a scratch challenger on
the same version, through the same cycle and gate, and the winner recorded. Slow: three
child-process trainings (the policy itself is covered fast in test_training_cycle.py)."""

from __future__ import annotations

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import ModelStatus, RunState, StartKind
from flywheel.core.plan import CANDIDATE, CHALLENGER

pytestmark = pytest.mark.slow

CONFIG = """\
[dataset]
val_fraction = 0.25

[training]
epochs_scratch = 2
epochs_warm = 1
imgsz = 32
batch = 4
nbs = 4
{policy}

[metrics]
port = 0
"""


@pytest.mark.parametrize(
    ("policy", "counts", "reason"),
    [
        ("scratch_challenger_every = 1", (12, 12), "1 warm-started generations since the last training from scratch"),
        ("refresh_growth = 2.0\nscratch_challenger_after_rejections = 0", (12, 36), "since the newest training from"),
    ],
)
def test_scratch_challenger_trains_beside_the_warm_candidate_and_the_gate_picks(tmp_path, policy, counts, reason):
    root = init_data_root(tmp_path / "root", CONFIG.format(policy=policy))
    app = App(root)
    first = None
    for n, count in zip((1, 2), counts, strict=True):
        version = app.ingest(synthetic_batch(tmp_path / f"b{n}", count, seed=n), move=False).version
        result = app.train(version.id)
        first = first or result
    assert first.challenger is None and first.run.start_kind == StartKind.SCRATCH
    warm, challenger = result.run, result.challenger.run
    assert warm.start_kind == StartKind.WARM and warm.purpose == CANDIDATE
    assert challenger.start_kind == StartKind.SCRATCH and challenger.purpose == CHALLENGER
    assert challenger.challenger_for == warm.id and challenger.version_id == warm.version_id
    assert warm.state == challenger.state == RunState.SUCCEEDED
    assert challenger.epochs_done == 2 and warm.epochs_done == 2  # the auto budget's floor, capped at epochs_scratch
    assert reason in challenger.guard["reason"] and warm.id < challenger.id  # after the warm candidate
    winner = challenger.guard["winner"]
    production = app.store.production()
    expected = {result.model.id: "warm", result.challenger.model.id: "scratch"}.get(production.id, "production")
    assert winner == expected
    # both were gated against production on the same eval set
    gates = [g for g in app.store.gate_decisions() if g.run_id in (warm.id, challenger.id)]
    assert len(gates) == 2 and gates[0].eval_sha256 == gates[1].eval_sha256
    statuses = {app.store.model(m).status for m in (result.model.id, result.challenger.model.id)}
    assert statuses <= {ModelStatus.PRODUCTION, ModelStatus.RETIRED, ModelStatus.REJECTED}
