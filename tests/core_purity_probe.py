"""Run flywheel's core functions under a guard that records every I/O they do (tests/test_layout.py).

Run as a script in a fresh interpreter: it imports all of flywheel.core and the plain libraries
the scenarios need first (importing reads files), then arms two guards and runs each scenario:
- an audit hook (`sys.addaudithook`) that records file, directory, socket, process and
  environment-changing events (`open`, `os.listdir`, `socket.connect`, `subprocess.Popen`, ...);
- `os.stat`/`os.lstat` wrapped, because `Path.exists`/`is_file` raise no audit event;
- a meta-path finder that records any import of an I/O library (and refuses it).
A guard raises as well as records, so code that swallows the error is still reported. It prints
one JSON object: scenario name -> the I/O it did (empty: none).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import flywheel.core
from flywheel.core import budget, config, domain, events, gate, hashing, ledger, manifests, plan, schedule, spec

IO_LIBRARIES = frozenset(
    {
        "apscheduler",
        "sqlalchemy",
        "sqlmodel",
        "watchdog",
        "prometheus_client",
        "torch",
        "ultralytics",
        "requests",
        "httpx",
        "subprocess",
        "socket",
        "urllib",
        "http",
        "sqlite3",
        "shutil",
        "tempfile",
    }
)
IO_EVENTS = ("open", "os.", "socket.", "subprocess.", "shutil.", "glob.", "tempfile.", "sqlite3.", "urllib.", "ctypes.")
IO_EVENTS += ("http.client.", "pathlib.Path.glob", "pathlib.Path.rglob", "pty.", "fcntl.", "mmap.")

armed = False
seen: list[str] = []


class GuardTripped(RuntimeError):
    pass


def trip(what: str) -> None:
    seen.append(what)
    raise GuardTripped(what)


def audit(event: str, args: tuple[Any, ...]) -> None:
    if armed and event.startswith(IO_EVENTS):
        shown = ", ".join(repr(a)[:80] for a in args[:2])
        trip(f"{event}({shown})")


class ImportGuard(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if armed and fullname.split(".")[0] in IO_LIBRARIES:
            trip(f"import {fullname}")
        return None


def stat_guard(real: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
        if armed:
            trip(f"{real.__name__}({str(path)[:80]!r})")
        return real(path, *args, **kwargs)

    return guarded


# --- the scenarios: the core's policies as the flows call them, on plain values ----------------

DEFAULT_TOML = (Path(flywheel.core.__file__).parents[1] / "default_config.toml").read_text()
ROOT = Path("/nonexistent-data-root")


def config_from_text() -> None:
    scheduled = DEFAULT_TOML.replace('cron = ""', 'cron = "30 2 * * 1-5"', 1)  # a crontab to check
    assert config.parse_toml(scheduled).schedule.cron == "30 2 * * 1-5"
    assert config.parse(tomllib.loads(DEFAULT_TOML)) == config.Config()
    try:
        config.parse({"training": {"imgsz": "640", "nope": 1}})
    except flywheel.core.errors.ConfigError as exc:
        assert "training.imgsz" in str(exc)
    else:
        raise AssertionError("a bad config parsed")
    assert config.resolve(ROOT, "w/coco.pt") == ROOT / "w" / "coco.pt"


def plan_a_run() -> None:
    cfg = config.parse({"model": {"base": "weights/coco.pt"}})
    plan.parse_start("m0003")
    on_disk = {ROOT / "weights" / "coco.pt"}.__contains__
    warm = plan.choose_start(cfg, ROOT, (3, ROOT / "models" / "3.pt"), is_file=on_disk)
    scratch = plan.choose_start(cfg, ROOT, None, "yolov8n.yaml", is_file=on_disk)
    user = plan.choose_start(cfg, ROOT, None, is_file=on_disk)  # model.base, a .pt the user put there
    for start in (warm, scratch, user):
        b = plan.plan_budget(cfg, 100, 20, [0.1, 0.2, 0.3, 0.31])
        params = plan.resolve_params(cfg, start, b)
        target = spec.EvalTarget(plan.CANDIDATE, "")
        plan.build_spec(1, ROOT / "d.yaml", ROOT / "runs" / "r0001", start, params, ["a"], [target])
    history = [plan.Generation(domain.StartKind.SCRATCH, plan.CANDIDATE, False, 10)]
    history.append(plan.Generation(domain.StartKind.WARM, plan.CANDIDATE, True, 50))
    plan.challenger_due(history, 1, 1), plan.refresh_due(history, 4.0), plan.refresh_outlook(history, 4.0, 2)


def spec_round_trip() -> None:
    cfg = config.parse({})
    start = plan.Start(domain.StartKind.SCRATCH, "yolov8n.yaml", None)
    made = plan.build_spec(1, ROOT / "d.yaml", ROOT / "r", start, plan.resolve_params(cfg, start), ["a"], [])
    assert spec.TrainSpec.from_json(made.to_json()) == made


def gate_decides() -> None:
    prod = gate.Score(0.5, 0.7, 0.6, 0.6, {"a": 0.5, "b": 0.4}, {"a": 20, "b": 20})
    cand = gate.Score(0.52, 0.71, 0.6, 0.6, {"a": 0.55, "b": 0.2}, {"a": 20, "b": 20})
    decision = gate.decide_gate({"val": (cand, prod), "golden": (cand, None)}, gate.GatePolicy())
    assert decision.outcome == gate.GateOutcome.REJECT and decision.explain()


def ledger_verifies() -> None:
    first = SimpleNamespace(id=1, at=datetime(2024, 1, 1, tzinfo=UTC), action="promote", model_id=1)
    first.__dict__.update(previous_model_id=None, actor="gate", reason="first", prev_hash=ledger.GENESIS)
    first.entry_hash = ledger.digest(first, ledger.GENESIS)
    assert ledger.verify([first]) == []


def budget_and_schedule() -> None:
    budget.warm_budget(
        epochs_scratch=50, train_images=100, new_train_images=10, factor=1.5, floor=5, ceiling=0, parent_gain=0.1
    )
    plateau = budget.Plateau(2, 1, 3)
    for epoch, fitness in enumerate([0.1, 0.2, 0.2, 0.2, 0.2], 1):
        plateau.update(epoch, fitness, 20)
    budget.decayed(1.0, 0.01, 5, 3, 6.5)
    policy = schedule.SchedulePolicy(30, 10, "0 2 * * *")
    schedule.decide_schedule(schedule.Waiting(3, 50, 60), policy, cron_due=True)
    schedule.decide_schedule(schedule.Waiting(3, 5, 60), policy, cron_due=False)


def events_and_records() -> None:
    line = events.encode(events.Trained("best.pt", 1.0, False))
    got: list[object] = []
    assert events.read_stream([line + "\n"], events.parse_event, got.append, "probe") is None and got
    items = [domain.ManifestItem("a" * 64, "b" * 64, ".jpg", domain.split_of("a" * 64, 0.2), 2)]
    manifests.additive_hash(items), manifests.changes({}, items)
    manifests.Totals.of({i.image_sha256: i for i in items})
    domain.merge_class_map(["a"], ["b", "a"]), domain.parse_id("m0003", "m"), hashing.sha256_bytes(b"x")
    domain.check_transition("run", domain.RunState.QUEUED, domain.RunState.RUNNING)


SCENARIOS: dict[str, Callable[[], None]] = {
    "config parsing from text": config_from_text,
    "planning a run": plan_a_run,
    "a train spec to text and back": spec_round_trip,
    "the gate deciding": gate_decides,
    "the ledger verifying": ledger_verifies,
    "budget and schedule policy": budget_and_schedule,
    "events, manifests and names": events_and_records,
}


def main() -> None:
    global armed
    already = sorted(m for m in sys.modules if m.split(".")[0] in IO_LIBRARIES - {"shutil", "tempfile", "urllib"})
    sys.addaudithook(audit)
    sys.meta_path.insert(0, ImportGuard())
    os.stat, os.lstat = stat_guard(os.stat), stat_guard(os.lstat)  # type: ignore[assignment]
    report: dict[str, list[str]] = {}
    for name, scenario in SCENARIOS.items():
        seen.clear()
        armed = True
        try:
            scenario()
        except GuardTripped:
            pass
        except Exception as exc:  # a scenario that breaks is reported, not mistaken for I/O
            seen.append(f"the scenario failed: {type(exc).__name__}: {exc}")
        finally:
            armed = False
        report[name] = sorted(set(seen))
    print(json.dumps({"loaded_before": already, "scenarios": report}))


if __name__ == "__main__":
    main()
