"""Draw the benchmark figures of docs/benchmarks.md from the benchmarks' JSON.

    .venv/bin/python benchmarks/plots.py [--generations /tmp/flywheel-bench-generations/*/generations.json [--tag x1.5]]
        [--chains docs/bench-generations-chains.csv]
        [--overhead /tmp/flywheel-bench-overhead/overhead.json] [--docs docs]

Writes docs/bench-generations-<data>-<batches>-s<seed>-map.png (production mAP50-95 per generation, flywheel vs
scratch), ...-compute.png (compute per generation and cumulative) for each generations.json, and
docs/bench-overhead-split.png (where one cycle's time goes, flywheel vs by hand). Needs
matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

FLYWHEEL, SCRATCH = "#1f77b4", "#d62728"
# One colour per kind of step, so the daemon's and the by-hand script's bars compare at a glance.
STEP_COLOURS = (
    ("detect", "#bcbd22"),
    ("ingest", "#17becf"),
    ("version", "#9467bd"),
    ("start-up", "#8c564b"),
    ("training", "#1f77b4"),
    ("eval", "#2ca02c"),
    ("promotion", "#ff7f0e"),
    ("deploy", "#ff7f0e"),
    ("exit", "#e377c2"),
)


def step_colour(step: str) -> str:
    return next((c for key, c in STEP_COLOURS if key in step), "#7f7f7f")


def loads(value: Any) -> list[float]:
    """Every 1-minute load average the benchmark recorded (one per run or step)."""
    if isinstance(value, dict):
        found = [value["load_average"][0]] if "load_average" in value else []
        return found + [x for k, v in value.items() if k != "load_average" for x in loads(v)]
    if isinstance(value, list):
        return [x for v in value for x in loads(v)]
    return []


def subtitle(data: dict[str, Any]) -> str:
    seen = loads({k: v for k, v in data.items() if k != "machine"}) or [data["machine"]["load_average"][0]]
    cores = data["machine"]["cpus"]
    device = data.get("settings", {}).get("config", {}).get("training", {}).get("device", "cpu")
    where = "no GPU" if device == "cpu" else f"trained on GPU ({device})"
    return f"{cores} CPU cores, {where}; 1-min load average {min(seen):.1f}-{max(seen):.1f} as each run started"


def generations_map(data: dict[str, Any], path: Path) -> None:
    fly, scratch = data["flywheel"], data["scratch"]
    gens = [g["generation"] for g in fly]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(gens, [g["production_map50_95"] for g in fly], "o-", color=FLYWHEEL, label="flywheel: production model")
    ax.plot(gens, [s["map50_95"] for s in scratch], "s--", color=SCRATCH, label="retrain from scratch on everything")
    for g in fly:
        for d in g["decisions"]:
            if d["outcome"] == "reject":  # production stayed: mark the refused candidate's score
                score = data["models"][str(d["model"])]["map50_95"]
                ax.plot(g["generation"], score, "x", color=FLYWHEEL, markersize=9)
                ax.annotate("rejected", (g["generation"], score), textcoords="offset points", xytext=(6, -4))
    t = data["settings"]["training"]
    ax.set_xticks(gens, [f"{g['generation']}\n({g['train_images']})" for g in fly])
    ax.set_xlabel("generation (batch), training images in the version")
    ax.set_ylabel(f"mAP50-95 on held-out ({data['heldout_images']} images)")
    warm = "warm: " + ("epochs_warm " + str(t["epochs_warm"]) if "epochs_warm" in t else "auto budget")
    ax.set_title(
        f"{data.get('data', 'bccd')} in {len(gens)} batches, seed {data.get('seed', 0)}, yolov8n {t['imgsz']} px, "
        f"scratch {t.get('epochs_scratch', 50)} epochs, {warm}\n{subtitle(data)}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def generations_compute(data: dict[str, Any], path: Path) -> None:
    fly, scratch = data["flywheel"], data["scratch"]
    gens = [g["generation"] for g in fly]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    left.bar([g - width / 2 for g in gens], [g["image_epochs"] for g in fly], width, color=FLYWHEEL, label="flywheel")
    left.bar([g + width / 2 for g in gens], [s["image_epochs"] for s in scratch], width, color=SCRATCH, label="scratch")
    left.set_title("compute per generation")
    left.set_ylabel("training images x epochs")
    left.set_xticks(gens)
    left.set_xlabel("generation")
    left.legend()
    cum_fly = [sum(g["image_epochs"] for g in fly[: i + 1]) for i in range(len(fly))]
    cum_scratch = [sum(s["image_epochs"] for s in scratch[: i + 1]) for i in range(len(scratch))]
    wall_fly = [sum(g["wall_s"] for g in fly[: i + 1]) / 60 for i in range(len(fly))]
    wall_scratch = [sum(s["wall_s"] for s in scratch[: i + 1]) / 60 for i in range(len(scratch))]
    right.plot(gens, cum_fly, "o-", color=FLYWHEEL, label="flywheel, image-epochs")
    right.plot(gens, cum_scratch, "s--", color=SCRATCH, label="scratch, image-epochs")
    right.set_ylabel("cumulative image-epochs")
    right.set_xlabel("generation")
    right.set_xticks(gens)
    twin = right.twinx()
    twin.plot(gens, wall_fly, "o:", color=FLYWHEEL, alpha=0.5, label="flywheel, wall")
    twin.plot(gens, wall_scratch, "s:", color=SCRATCH, alpha=0.5, label="scratch, wall")
    twin.set_ylabel("cumulative wall minutes (dotted)")
    right.set_title("cumulative")
    lines = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    fig.suptitle(subtitle(data), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DATA_COLOURS = {"bccd": "#1f77b4", "aquarium": "#ff7f0e"}
FACTOR_MARKERS = {"1.0": "o", "1.5": "s"}
VARIANT_MARKERS = (("unconverged_boost", "^"), ("backbone_lr_scale", "D"))


def generations_tradeoff(rows: list[dict[str, str]], path: Path) -> None:
    """Every chain measured, as mAP ratio against compute ratio: the lowest generation's
    production / scratch (left) and the last one's (right), against cumulative compute as a
    share of retraining each generation. Filled: as measured, refresh included; hollow: the same
    chain with its refresh trainings taken out, drawn only where that is exact (the refresh lost
    at the gate or came at the last generation, so nothing after it changed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, key, floor in ((axes[0], "lowest", 0.97), (axes[1], "last", 1.0)):
        ax.fill_between([0, 0.45], floor, 1.35, color="#2ca02c", alpha=0.12, label="the targets")
        ax.axhline(floor, color="#2ca02c", lw=0.8)
        ax.axvline(0.45, color="#2ca02c", lw=0.8)
        for r in rows:
            colour = DATA_COLOURS.get(r["data"], "#7f7f7f")
            marker = next(
                (m for prefix, m in VARIANT_MARKERS if r["variant"].startswith(prefix)),
                FACTOR_MARKERS[r["warm_budget_factor"]],
            )
            x, y = float(r["compute"]), float(r[key])
            ax.plot(x, y, marker, color=colour, markersize=7)
            short = f"{r['data'][0].upper()}{r['batches']} s{r['seed']}"
            ax.annotate(short, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
            if r["no_refresh_" + key] and float(r["refresh_compute"]) > 0:
                x0, y0 = x - float(r["refresh_compute"]), float(r["no_refresh_" + key])
                ax.plot(x0, y0, marker, color=colour, markersize=7, markerfacecolor="none")
                ax.annotate("", (x0, y0), (x, y), arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.4})
        ax.set_xlim(0.3, 1.1)
        ax.set_ylim(0.7, 1.35)
        ax.set_xlabel("cumulative compute / retraining from scratch each generation")
        ax.set_ylabel(f"{key} generation: production / scratch mAP50-95")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="o", ls="", color="#555", label="warm_budget_factor 1.0"),
        Line2D([], [], marker="s", ls="", color="#555", label="warm_budget_factor 1.5 (default)"),
        Line2D([], [], marker="^", ls="", color="#555", label="1.0, unconverged_boost off"),
        Line2D([], [], marker="D", ls="", color="#555", label="1.0, backbone_lr_scale 1.0"),
        Line2D([], [], marker="o", ls="", color="#555", markerfacecolor="none", label="refresh taken out"),
        *[Line2D([], [], marker="o", ls="", color=c, label=d) for d, c in DATA_COLOURS.items()],
    ]
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=4, frameon=False)
    axes[0].set_title("the lowest generation (target >= 0.97)", fontsize=9)
    axes[1].set_title("the last generation (target >= 1.00)", fontsize=9)
    fig.suptitle("Every chain measured: B = BCCD, A = Aquarium, then batches and seed", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overhead_split(data: dict[str, Any], path: Path) -> None:
    bars: list[tuple[str, dict[str, float]]] = []
    for kind, label in (
        ("B", "flywheel daemon\n(every core)"),
        ("B1", "flywheel daemon\n(1 thread)"),
        ("A", "by hand, Ultralytics\ndefaults (1 thread)"),
        ("A2", "by hand\n(every core)"),
    ):
        run = next((r for r in data["runs"] if r["kind"] == kind), None)
        if run is not None:
            bars.append((label, run["split_s"]))
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.8 * len(bars)))
    widest = max(sum(steps.values()) for _label, steps in bars)
    for y, (_label, steps) in enumerate(bars):
        left = 0.0
        for step, seconds in steps.items():
            ax.barh(y, seconds, left=left, color=step_colour(step), edgecolor="white")
            if seconds > 0.12 * widest:  # room for the name inside the bar
                ax.text(left + seconds / 2, y, step.split(" (")[0], ha="center", va="center", fontsize=7, color="white")
            left += seconds
        ax.text(left, y, f" {left:.0f} s", va="center", fontsize=8)
    from matplotlib.patches import Patch

    kinds = dict.fromkeys(step_colour(step) for _label, steps in bars for step in steps)
    names = {c: key for key, c in reversed(STEP_COLOURS)} | {"#7f7f7f": "other"}
    handles = [Patch(color=c, label=names.get(c, "other")) for c in kinds]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=len(handles))
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("seconds, batch complete -> model promoted (first round)")
    s = data["settings"]
    ax.set_title(
        f"One cycle: BCCD {data['train_images']} train / {data['val_images']} val, yolov8n {s['imgsz']} px, "
        f"{s['epochs']} epochs\n{subtitle(data)}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--generations", type=Path, nargs="*", default=[], help="generations.json files: one pair of plots each"
    )
    parser.add_argument("--tag", default="", help="added to each generations plot's name (e.g. x1.5)")
    parser.add_argument(
        "--chains", type=Path, default=None, help="a CSV of chains (docs/bench-generations-chains.csv): the trade-off"
    )
    parser.add_argument("--overhead", type=Path, default=Path("/tmp/flywheel-bench-overhead/overhead.json"))
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    args.docs.mkdir(parents=True, exist_ok=True)
    for path in args.generations:
        data = json.loads(path.read_text())
        name = f"{data.get('data', 'bccd')}-{len(data['flywheel'])}-s{data.get('seed', 0)}"
        name += f"-{args.tag}" if args.tag else ""
        generations_map(data, args.docs / f"bench-generations-{name}-map.png")
        generations_compute(data, args.docs / f"bench-generations-{name}-compute.png")
        print(f"drawn from {path}")
    if args.chains:
        with args.chains.open() as fh:
            generations_tradeoff(list(csv.DictReader(fh)), args.docs / "bench-generations-tradeoff.png")
        print(f"drawn from {args.chains}")
    if args.overhead.is_file():
        overhead_split(json.loads(args.overhead.read_text()), args.docs / "bench-overhead-split.png")
        print(f"drawn from {args.overhead}")


if __name__ == "__main__":
    main()
