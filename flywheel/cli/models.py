"""CLI commands for the registry and the gate: models, promote, rollback, pin, history, audit,
compare. Registered on the main CLI by `register(app)`.
Over 300 lines: seven small commands of one group, each with its table and --json shape;
splitting them apart would scatter the group `flywheel --help` shows together."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.app import App
from flywheel.cli.common import Root, call, err, out, styled
from flywheel.cli.jsonout import Json, JsonFlag, emit, iso, ledger_json, model_json, ref, run_json
from flywheel.core import ledger
from flywheel.core.domain import model_name, parse_id, run_name, version_name
from flywheel.core.errors import ExitCode
from flywheel.core.events import placement_text
from flywheel.core.gate import GatePolicy, SetVerdict
from flywheel.core.gate_details import GateDetails
from flywheel.core.ports import StorePort
from flywheel.core.records import Evaluation, Model, as_utc
from flywheel.flow.compare import compare as compare_models
from flywheel.flow.compare import resolve
from flywheel.flow.registry import current_actor

models_app = typer.Typer(help="Models: list them, or `show ID` for one model's record and gate decision.")
audit_app = typer.Typer(help="Check the production ledger.", no_args_is_help=True)
Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the production ledger).")]


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Models: status, version, parent, mAP on their version's val split."""
    if ctx.invoked_subcommand is not None:
        return
    application = call(lambda: App(root))
    store = application.store
    if as_json:
        production = store.production()
        emit(
            "models",
            {
                "production": ref(model_name, production.id if production else None),
                "models": [model_json(m, _val_score(store, m)) for m in store.models()],
            },
        )
        return
    table = Table("model", "status", "version", "run", "parent", "mAP50-95", "mAP50", "sha256")
    for m in store.models():
        score = _val_score(store, m)
        table.add_row(
            model_name(m.id),
            m.status,
            version_name(m.version_id),
            run_name(m.run_id),
            model_name(m.parent_model_id) if m.parent_model_id else "-",
            _f(score.score.map50_95 if score else None),
            _f(score.score.map50 if score else None),
            m.sha256[:12],
        )
    out.print(table)


def _val_score(store: StorePort, m: Model) -> Evaluation | None:
    return store.evaluation(m.sha256, store.version(m.version_id).val_sha256)


@models_app.command()
def show(
    model_id: Annotated[str, typer.Argument(help="e.g. m0003")], root: Root = Path("."), as_json: JsonFlag = False
) -> None:
    """One model: its record, the gate decision on it (scores overall and per class, margins,
    the deciding rule, the eval-set hash), and its ledger entries."""
    application = call(lambda: App(root))
    store = application.store
    model = call(lambda: store.model(call(lambda: parse_id(model_id, "m"))))
    if as_json:
        emit("models.show", {**show_data(store, model), "artifacts": _artifacts(application, model)})
        return
    name = model_name(model.id)
    run = store.run(model.run_id)
    out.print(styled((name, "bold"), f"  {model.status}  sha256 {model.sha256}"))
    out.print(
        f"  version {version_name(model.version_id)}, run {run_name(model.run_id)} ({run.start_kind}, "
        f"{run.epochs_done}/{run.epochs} epochs), parent "
        f"{model_name(model.parent_model_id) if model.parent_model_id else '-'}, classes {model.class_names}"
    )
    where = placement_text(run.environment or {})
    if where:
        out.print(f"  trained: {where}")
    out.print(f"  strategy {run.params.get('strategy', '?')}; budget: {run.params.get('budget', {}).get('why', '-')}")
    plateau = run.params.get("plateau")
    if plateau:
        out.print(
            f"  plateau: val fitness flat since epoch {plateau['best_epoch']}; final LR decay, ended at epoch "
            f"{plateau['epochs']}"
        )
    if run.guard:
        out.print(f"  refresh/guard: {run.guard.get('reason', '')}; {run.guard.get('winner', '?')} won")
    decision = next((g for g in store.gate_decisions() if g.candidate_model_id == model.id), None)
    if decision is None:
        out.print("  no gate decision recorded for this model")
    else:
        against = model_name(decision.production_model_id) if decision.production_model_id else "nothing"
        out.print(
            f"  gate: {decision.outcome} by rule {decision.rule}{_held(decision.details) if decision.held else ''}"
            f" against {against}; eval set {decision.eval_sha256[:12]}"
        )
        details = decision.details
        golden_set = details.eval_sets.get("golden")
        golden = golden_set.golden if golden_set else None
        if golden_set and golden:
            parts = [f"{golden_set.images} images, content {golden.content_sha256[:12]}"]
            if golden.unknown_classes:
                parts.append(f"classes the model does not know, left out: {golden.unknown_classes}")
            if golden.in_training:
                parts.append(f"{golden.in_training} images are also training images")
            out.print(f"  golden set {golden.folder}: {'; '.join(parts)}", highlight=False)
        for verdict in details.verdicts:
            _print_verdict(verdict, details.policy)
        for subset, f in details.forgetting.items():
            out.print(
                f"  forgetting on {subset}: production {_f(f.production)} -> candidate "
                f"{_f(f.candidate)} (drop {f.drop:+.4f})"
            )
    _print_artifacts(_artifacts(application, model))
    for entry in store.ledger():
        if model.id in (entry.model_id, entry.previous_model_id):
            out.print(
                f"  ledger #{entry.id} {as_utc(entry.at):%Y-%m-%d %H:%M:%S} {entry.action} by {entry.actor}: "
                f"{entry.reason}",
                highlight=False,
            )


def _held(details: GateDetails) -> str:
    failed = details.export_failed
    return f" (held: export_failed: {failed.message})" if failed else " (held: production pinned)"


def _artifacts(application: App, model: Model) -> Json:
    """format -> its verified export's record (flywheel/flow/exports.py); {} when none."""
    shelf = application.registry.exports
    return shelf.published(model.sha256) if shelf is not None else {}


def _print_artifacts(artifacts: Json) -> None:
    if not artifacts:
        return
    table = Table("format", "mAP50-95", ".pt", "b1 ms p50/p95", "bN ms p50/p95", "sha256")
    table.title = "verified exports (latency per image, forward + NMS; bN: the serving batch)"
    table.columns[0].no_wrap = True
    for fmt, a in artifacts.items():
        lat = a.get("latency_ms", {})
        served = next((k.removesuffix("_p50") for k in sorted(lat) if k.endswith("_p50") and k != "batch1_p50"), "")
        table.add_row(
            fmt,
            _f(a.get("map50_95")),
            _f(a.get("pt_map50_95")),
            f"{_ms(lat.get('batch1_p50'))}/{_ms(lat.get('batch1_p95'))}",
            f"{_ms(lat.get(served + '_p50'))}/{_ms(lat.get(served + '_p95'))}",
            a["sha256"][:8],
        )
    out.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def show_data(store: StorePort, model: Model) -> Json:
    """`flywheel models show ID --json` (flywheel.models.show/1 in docs/cli-json.md)."""
    run = store.run(model.run_id)
    decision = next((g for g in store.gate_decisions() if g.candidate_model_id == model.id), None)
    gate: Json | None = None
    if decision is not None:
        details = decision.details.to_json()
        gate = {
            "id": decision.id,
            "outcome": decision.outcome,
            "rule": decision.rule,
            "held": decision.held,
            "against": ref(model_name, decision.production_model_id),
            "eval_sha256": decision.eval_sha256,
            "candidate_map50_95": decision.candidate_map,
            "production_map50_95": decision.production_map,
            "margin": decision.margin,
            "tolerance": decision.tolerance,
            "decided_at": iso(decision.created_at),
            "policy": details.get("policy", {}),
            "eval_sets": details.get("eval_sets", {}),
            "verdicts": details.get("verdicts", []),
            "forgetting": details.get("forgetting", {}),
            "export_failed": details.get("export_failed"),
        }
    return {
        "model": model_json(model, _val_score(store, model)),
        "run": {
            **run_json(run),
            "strategy": run.params.get("strategy"),
            "budget": run.params.get("budget"),
            "plateau": run.params.get("plateau"),
            "guard": run.guard or None,
        },
        "gate": gate,
        "ledger": [ledger_json(e) for e in store.ledger() if model.id in (e.model_id, e.previous_model_id)],
    }


def _print_verdict(verdict: SetVerdict, policy: GatePolicy | None) -> None:
    cand, prod = verdict.candidate, verdict.production
    table = Table(
        "",
        "candidate",
        "production",
        "drop",
        "instances",
        "gated",
        "interval (cand - prod)",
        title=f"{verdict.eval_set}: {verdict.rule} (margin {_f(verdict.margin)}, "
        f"tolerance {_f(policy.tolerance if policy else None)}, "
        f"max class drop {_f(policy.max_class_drop if policy else None)})",
    )
    table.add_row(
        "mAP50-95 (all)",
        _f(cand.map50_95),
        _f(prod.map50_95 if prod else None),
        _f(prod.map50_95 - cand.map50_95) if prod else "-",
        "",
        "yes",
        _interval(verdict.interval),
    )
    for c in verdict.classes:
        table.add_row(
            c.name,
            _f(c.candidate),
            _f(c.production),
            _f(c.drop),
            str(c.instances),
            "yes" if c.gated else "no (few)",
            _interval(c.interval),
        )
    out.print(table)


def _interval(interval: tuple[float, float] | None) -> str:
    return f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "-"


def promote(
    model_id: Annotated[str, typer.Argument(help="A candidate or retired model, e.g. m0004.")],
    reason: Reason,
    force: Annotated[bool, typer.Option(help="Also promote a model the gate rejected.")] = False,
    root: Root = Path("."),
) -> None:
    """Make a model production by hand (recorded with who and why). A rejected model needs --force."""
    application = call(lambda: App(root))
    target = call(lambda: parse_id(model_id, "m"))
    entry = call(lambda: application.registry.promote(target, reason, actor=current_actor(), force=force))
    application.registry.notifier.wait()
    out.print(
        f"production is now {model_name(target)} (was "
        f"{model_name(entry.previous_model_id) if entry.previous_model_id else 'nothing'})"
    )


def rollback(
    reason: Reason,
    to: Annotated[str | None, typer.Option("--to", help="A retired model id, e.g. m0003.")] = None,
    root: Root = Path("."),
) -> None:
    """Make the previous production model production again (or --to MODEL_ID). Instant: no
    training and no evaluation; recorded with who, when and why."""
    application = call(lambda: App(root))
    target = call(lambda: parse_id(to, "m")) if to else None
    entry = call(lambda: application.registry.rollback(reason, to=target, actor=current_actor()))
    out.print(
        f"production is now {model_name(entry.model_id or 0)} (was {model_name(entry.previous_model_id or 0)}); "
        f"recorded for {entry.actor}: {entry.reason}"
    )


def pin(reason: Reason, root: Root = Path(".")) -> None:
    """Hold promotions while investigating: candidates are still scored, none becomes production."""
    entry = call(lambda: App(root).registry.pin(reason))
    out.print(f"production pinned by {entry.actor}: {entry.reason}")


def unpin(reason: Reason, root: Root = Path(".")) -> None:
    """Release a pin: the next candidate that passes the gate is promoted again."""
    entry = call(lambda: App(root).registry.unpin(reason))
    out.print(f"production unpinned by {entry.actor}: {entry.reason}")


def history(root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """The production ledger: every promotion, rejection, rollback and pin, oldest first."""
    entries = call(lambda: App(root)).store.ledger()
    if as_json:
        emit("history", {"entries": [ledger_json(e) for e in entries]})
        return
    table = Table("#", "when (UTC)", "action", "model", "was", "by", "reason", "hash")
    for e in entries:
        table.add_row(
            str(e.id),
            f"{as_utc(e.at):%Y-%m-%d %H:%M:%S}",
            e.action,
            model_name(e.model_id) if e.model_id else "-",
            model_name(e.previous_model_id) if e.previous_model_id else "-",
            e.actor,
            e.reason,
            e.entry_hash[:12],
        )
    out.print(table)


@audit_app.command()
def verify(root: Root = Path(".")) -> None:
    """Recompute the ledger's hash chain; any edited, removed or inserted entry is reported (exit 1)."""
    entries = call(lambda: App(root)).store.ledger()
    problems = ledger.verify(entries)
    for p in problems:
        err.print(styled(("tampered:", "red"), f" {p}"), highlight=False)
    if problems:
        raise typer.Exit(ExitCode.FAILED)
    out.print(f"ledger intact: {len(entries)} entries, head {entries[-1].entry_hash[:12] if entries else '-'}")


def compare(
    a: Annotated[str, typer.Argument(help="A model id (m0003) or, with --trust, a .pt path.")],
    b: Annotated[str, typer.Argument(help="Another model id or .pt path.")],
    version: Annotated[str | None, typer.Option(help="Eval on this version's val split (default: newest).")] = None,
    trust: Annotated[bool, typer.Option(help="Allow loading .pt files the registry did not write.")] = False,
    root: Root = Path("."),
) -> None:
    """Score two models side by side on the same frozen eval sets (cached scores are reused)."""
    application = call(lambda: App(root))
    store = application.store
    latest = store.latest_version()
    vid = call(lambda: parse_id(version, "v")) if version else (latest.id if latest else None)
    if vid is None:
        err.print("error: no dataset version yet: ingest a batch first")
        raise typer.Exit(ExitCode.FAILED)
    contenders = [call(lambda r=r: resolve(store, application.registry, r, trust)) for r in (a, b)]  # type: ignore[misc]
    sets, results = call(lambda: compare_models(application.deps(), contenders, vid))
    for e in sets:
        table = Table(
            "",
            *[c.label for c in contenders],
            title=f"{version_name(vid)}/{e.name} ({e.images} images, {e.sha256[:12]})",
        )
        scores = [results[c.label][e.name] for c in contenders]
        for metric in ("map50_95", "map50", "precision", "recall"):
            table.add_row(metric, *[_f(getattr(s, metric)) for s in scores])
        for name in sorted({n for s in scores for n in s.per_class}):
            table.add_row(f"AP50-95 {name}", *[_f(s.per_class.get(name)) for s in scores])
        out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(audit_app, name="audit")
    for command in (rollback, promote, pin, unpin, history, compare):
        app.command()(command)
