"""Issue 4: the ledger's hash chain and audit, pin/unpin, forced promotion, notifications,
and the CLI and other processes racing on production."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.main import app as cli
from flywheel.core import ledger
from flywheel.core.domain import ModelStatus
from flywheel.core.errors import InvalidTransition, RegistryError
from flywheel.core.ledger import Action
from tests.fakes import FakeTrainer
from tests.pg_server import both_backends

pytestmark = both_backends  # the store's behaviour, on SQLite and on PostgreSQL
runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that rich does not wrap table cells


def _generations(data_root: Path, tmp_path: Path, maps: list[float], production_map: float = 0.0) -> App:
    app = App(data_root, trainer=FakeTrainer(maps, production_map=production_map))
    for seed in range(1, len(maps) + 1):
        result = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False)
        app.train(result.version.id)
    return app


def test_every_change_is_chained_and_audit_verify_passes(data_root, tmp_path):
    app = _generations(data_root, tmp_path, [0.3, 0.1, 0.4], production_map=0.3)  # promote, reject, promote
    app.registry.pin("investigating", actor="ops")
    app.registry.unpin("done", actor="ops")
    app.registry.rollback("regression on site B", actor="ops")
    entries = app.store.ledger()
    assert [e.action for e in entries] == ["promote", "reject", "promote", "pin", "unpin", "rollback"]
    assert entries[0].prev_hash == ledger.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    assert ledger.verify(entries) == []
    result = runner.invoke(cli, ["audit", "verify", "--root", str(data_root)])
    assert result.exit_code == 0 and "ledger intact: 6 entries" in result.output
    history = runner.invoke(cli, ["history", "--root", str(data_root)])
    assert history.exit_code == 0 and "regression on site B" in history.output


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE production_ledger SET reason = 'nothing to see' WHERE id = 2", "entry 2 (reject)"),
        ("DELETE FROM production_ledger WHERE id = 2", "entry 3: its link"),
        ("UPDATE production_ledger SET actor = 'mallory' WHERE id = 3", "entry 3 (promote)"),
    ],
)
def test_audit_verify_detects_an_edit(data_root, tmp_path, sql, expected):
    app = _generations(data_root, tmp_path, [0.3, 0.1, 0.4], production_map=0.3)
    with app.engine.begin() as db:  # behind flywheel's back, on whichever database it uses
        db.exec_driver_sql(sql)
    result = runner.invoke(cli, ["audit", "verify", "--root", str(data_root)])
    assert result.exit_code == 1
    assert expected in result.output


def test_pin_holds_promotions_until_a_person_promotes(data_root, tmp_path):
    app = _generations(data_root, tmp_path, [0.3], production_map=0.3)
    app.registry.pin("checking site B", actor="ops")
    with pytest.raises(RegistryError, match="already pinned"):
        app.registry.pin("twice", actor="ops")
    app.trainer.candidate_maps = [0.5]
    result = app.train(app.ingest(synthetic_batch(tmp_path / "b9", 12, seed=9), move=False).version.id)
    gate = app.store.gate_decisions()[-1]
    assert gate.outcome == "promote" and gate.held
    assert result.model.status == ModelStatus.CANDIDATE and app.store.production().id == 1
    promoted = runner.invoke(cli, ["promote", "m0002", "--reason", "looked fine", "--root", str(data_root)])
    assert promoted.exit_code == 0, promoted.output
    assert app.store.production().id == 2
    assert json.loads((data_root / "production" / "model.json").read_text())["id"] == "m0002"


def test_a_rejected_model_needs_force(data_root, tmp_path):
    app = _generations(data_root, tmp_path, [0.3, 0.1], production_map=0.3)
    assert app.store.model(2).status == ModelStatus.REJECTED
    with pytest.raises(InvalidTransition, match="--force"):
        app.registry.promote(2, "try", actor="ops")
    refused = runner.invoke(cli, ["promote", "m0002", "--reason", "try", "--root", str(data_root)])
    assert refused.exit_code == 1 and "--force" in refused.output
    forced = runner.invoke(cli, ["promote", "m0002", "--force", "--reason", "override", "--root", str(data_root)])
    assert forced.exit_code == 0, forced.output
    assert app.store.production().id == 2 and app.store.ledger()[-1].reason == "override"


def test_models_show_prints_the_decision_per_class(data_root, tmp_path):
    trainer = FakeTrainer([0.3, 0.45], production_map=0.4, per_class={"red": (0.8, 0.4), "blue": (0.1, 0.4)})
    app = App(data_root, trainer=trainer)
    for seed in (1, 2):
        app.train(app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False).version.id)
    assert app.store.model(2).status == ModelStatus.REJECTED
    shown = runner.invoke(cli, ["models", "show", "m0002", "--root", str(data_root)])
    assert shown.exit_code == 0, shown.output
    for text in ("reject by rule class_regressed", "blue", "0.3000", "m0001", "gate"):
        assert text in shown.output
    listing = runner.invoke(cli, ["models", "--root", str(data_root)])
    assert "m0002" in listing.output and "rejected" in listing.output


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(500)
        else:
            _Hook.bodies.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_and_command_hear_every_production_change(data_root, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.bodies, _Hook.fail_first = [], 1  # the first delivery fails and is retried
    seen = tmp_path / "seen.jsonl"
    with (data_root / "config.toml").open("a") as fh:
        fh.write(
            f'\n[notify]\nwebhook = "http://127.0.0.1:{server.server_port}/hook"\n'
            f'command = "cat >> {seen}; echo >> {seen}"\nretry_seconds = 0.05\n'
        )
    app = _generations(data_root, tmp_path, [0.3, 0.4], production_map=0.3)
    app.registry.rollback("back", actor="ops")
    app.registry.notifier.wait(10)
    server.shutdown()
    assert [(b["action"], b["model"]) for b in _Hook.bodies] == [
        ("promote", "m0001"),
        ("promote", "m0002"),
        ("rollback", "m0001"),
    ]
    assert _Hook.bodies[-1]["production"]["id"] == "m0001" and _Hook.bodies[-1]["reason"] == "back"
    last = _Hook.bodies[-1]  # the body's keys, in order, as every release has sent them
    assert list(last) == ["action", "model", "previous", "actor", "reason", "at", "production"]
    assert (last["previous"], last["actor"]) == ("m0002", "ops") and last["at"].endswith("+00:00")
    lines = [json.loads(line) for line in seen.read_text().splitlines() if line.strip()]
    assert sorted(e["model"] for e in lines) == ["m0001", "m0001", "m0002"]


def test_an_unreachable_webhook_never_blocks_the_change(data_root, tmp_path, caplog):
    with (data_root / "config.toml").open("a") as fh:
        fh.write('\n[notify]\nwebhook = "http://127.0.0.1:9/nobody-listens"\nretries = 2\nretry_seconds = 0.01\n')
    app = _generations(data_root, tmp_path, [0.3], production_map=0.3)
    app.registry.notifier.wait(10)
    assert app.store.production().id == 1
    assert "gave up" in caplog.text or "giving up" in caplog.text


def test_cli_processes_racing_on_production_end_consistent(data_root, tmp_path):
    """Eight real processes promote and roll back at the same time: one production, the
    folder agrees with the database, and the ledger chain is intact."""
    app = _generations(data_root, tmp_path, [0.1, 0.2, 0.3, 0.4], production_map=0.0)
    assert app.store.production().id == 4
    flywheel = [sys.executable, "-m", "flywheel"]
    commands = [
        [*flywheel, "rollback", "--reason", f"race {i}", "--root", str(data_root)]
        if i % 2
        else [*flywheel, "promote", f"m000{1 + i % 4}", "--reason", f"race {i}", "--root", str(data_root)]
        for i in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: subprocess.run(c, capture_output=True, text=True), commands))
    assert all(r.returncode in (0, 4) for r in results), [r.stderr for r in results]  # 4: e.g. already production
    ok = sum(r.returncode == 0 for r in results)
    assert ok >= 1
    models = app.store.models()
    assert sum(m.status == ModelStatus.PRODUCTION for m in models) == 1
    production = app.store.production()
    assert json.loads((data_root / "production" / "model.json").read_text())["id"] == f"m{production.id:04d}"
    entries = app.store.ledger()
    assert ledger.verify(entries) == []
    assert len([e for e in entries if e.reason.startswith("race")]) == ok
    assert entries[-1].model_id == production.id and entries[-1].action in (Action.PROMOTE, Action.ROLLBACK)


def test_compare_scores_two_models_once_and_then_from_the_cache(data_root, tmp_path):
    from flywheel.core.errors import UsageError
    from flywheel.flow.compare import compare, resolve

    app = _generations(data_root, tmp_path, [0.3, 0.4], production_map=0.3)
    app.trainer.candidate_maps = [0.0]  # the fake trainer scores every compared model 0.7 below
    app.trainer.production_map = 0.7
    contenders = [resolve(app.store, app.registry, ref, trust=False) for ref in ("m0001", "m0002")]
    sets, results = compare(app.deps(), contenders, 2)
    assert sets[0].name == "val"
    assert set(results) == {"m0001", "m0002"} and all("val" in r for r in results.values())
    specs_before = len(app.trainer.specs)
    compare(app.deps(), contenders, 2)  # everything cached now: no child process
    assert len(app.trainer.specs) == specs_before
    loose = tmp_path / "other.pt"
    loose.write_bytes(b"a pickle from elsewhere")
    with pytest.raises(UsageError, match="--trust"):
        resolve(app.store, app.registry, str(loose), trust=False)
