"""Draw the Grafana dashboard as a PNG with matplotlib, from the same PromQL, on real data.

Grafana itself cannot run here, so this reads `dashboards/flywheel.json`, runs every panel's
and annotation's query against a Prometheus HTTP API over a time range, and lays the panels
out on the dashboard's own 24-column grid: time series as lines (promotions and rollbacks as
vertical lines), stats as big numbers, bar gauges as horizontal bars. The dashboard's
variables get the values Grafana would give them with "All" picked (`expand`).

    .venv/bin/python deploy/grafana/render.py --prometheus http://127.0.0.1:9090 \\
        --start 2026-11-23T10:00:00Z --end 2026-11-23T10:10:00Z --out docs/dashboard.png

tests/test_prometheus_server.py renders it from the real run it drives.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "dashboards" / "flywheel.json"
Query = Callable[[str, dict[str, str]], list[dict[str, Any]]]
RATE_INTERVAL = "1m"


def expand(expr: str, rate_interval: str = RATE_INTERVAL) -> str:
    """The PromQL Grafana sends for `expr` with every job and instance picked ("All"), and
    `$__rate_interval` as a fixed window (Grafana's is at least 4 scrape intervals)."""
    for name, value in (("job", ".*"), ("instance", ".*"), ("__rate_interval", rate_interval)):
        expr = re.sub(rf"\$(?:{name}\b|\{{{name}\}})", value, expr)
    if "$" in expr:
        raise ValueError(f"a variable render.py does not know: {expr}")
    return expr


def prometheus(base_url: str) -> Query:
    """A function running one Prometheus HTTP API call (`query` or `query_range`)."""

    def call(endpoint: str, params: dict[str, str]) -> list[dict[str, Any]]:
        url = f"{base_url.rstrip('/')}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{endpoint} {params.get('query')!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    return call


def legend(fmt: str, labels: dict[str, str], fallback: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or fallback
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def fmt_value(value: float, unit: str, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.1f} s"
    if unit == "bytes":
        for size, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


@dataclass
class Drawn:
    """What a panel showed: the number of series or values drawn, per panel title."""

    series: dict[str, int] = field(default_factory=dict)


def render(
    query: Query,
    start: float,
    end: float,
    out: Path,
    dashboard: dict[str, Any] | None = None,
    step: float = 0,
    rate_interval: str = RATE_INTERVAL,
) -> Drawn:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import dates as mdates

    board = dashboard or json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.36  # inches per grid row
    fig = plt.figure(figsize=(22, rows * unit_h + 0.8), facecolor="#111217")
    step = step or max(1.0, (end - start) / 300)
    rng = {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    marks: list[tuple[float, str]] = []
    for ann in board.get("annotations", {}).get("list", []):
        color = {"green": "#73bf69", "red": "#f2495c"}.get(ann.get("iconColor", ""), ann.get("iconColor", "white"))
        for series in query("query_range", {"query": expand(ann["expr"], rate_interval), **rng}):
            previous = -math.inf
            for t, _ in series["values"]:  # a mark where each run of points starts, as Grafana's region
                if float(t) - previous > step * 1.5:
                    marks.append((float(t), color))
                previous = float(t)
    drawn = Drawn()
    height_in = rows * unit_h + 0.8
    for p in panels:
        g = p["gridPos"]
        left = 0.01 + 0.98 * g["x"] / 24
        width = 0.98 * g["w"] / 24
        top = 1 - (0.5 + g["y"] * unit_h) / height_in
        height = g["h"] * unit_h / height_in
        if p["type"] == "row":
            fig.text(left, top - height / 2, p["title"], color="#d8d9da", fontsize=13, weight="bold", va="center")
            continue
        below = (0.35 if p["type"] == "timeseries" else 0.08) / height_in  # room for tick labels
        above = 0.3 / height_in  # room for the title
        ax = fig.add_axes((left + 0.006, top - height + below, width - 0.012, height - below - above))
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(p["title"], color="#d8d9da", fontsize=9, loc="left")
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "")
        decimals = defaults.get("decimals")
        count = 0
        if p["type"] == "timeseries":
            for target in p["targets"]:
                for series in query("query_range", {"query": expand(target["expr"], rate_interval), **rng}):
                    pts = [(float(t), float(v)) for t, v in series["values"] if not math.isnan(float(v))]
                    if not pts:
                        continue
                    xs = [_num(t) for t, _ in pts]
                    ys = [v * 100 if unit == "percentunit" else v for _, v in pts]
                    name = legend(target.get("legendFormat", ""), series["metric"], target["expr"])
                    ax.plot(xs, ys, linewidth=1.6, label=name, marker="o" if len(pts) < 3 else None, markersize=3)
                    count += 1
            for t, color in marks:
                ax.axvline(_num(t), color=color, alpha=0.8, linewidth=1.2, linestyle="--")
            ax.set_xlim(_num(start), _num(end))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
            if unit in ("percentunit", "s", "bytes"):
                ax.set_ylabel({"percentunit": "%", "s": "s", "bytes": "bytes"}[unit], color="#9fa7b3", fontsize=7)
            ax.grid(color="#2c3235", linewidth=0.5)
            if count:
                ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#d8d9da", framealpha=0.7)
        else:
            values = []
            for target in p["targets"]:
                for series in query("query", {"query": expand(target["expr"], rate_interval), "time": f"{end:.3f}"}):
                    name = legend(target.get("legendFormat", ""), series["metric"], p["title"])
                    values.append((name, float(series["value"][1])))
            count = len(values)
            ax.set_xticks([])
            ax.set_yticks([])
            if p["type"] == "stat":
                mapping = {}
                for m in p.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
                    mapping.update({k: v.get("text", k) for k, v in m.get("options", {}).items()})
                if values:
                    name, value = values[0]
                    mode = p.get("options", {}).get("textMode")
                    text = name if mode == "name" else mapping.get(f"{value:g}", fmt_value(value, unit, decimals))
                else:
                    text = "No data"
                ax.text(0.5, 0.45, text, color="#73bf69", fontsize=17, ha="center", va="center", weight="bold")
            else:  # bargauge
                if values:
                    values.sort()
                    ys = list(range(len(values)))
                    vals = [v * 100 if unit == "percentunit" else v for _, v in values]
                    ax.barh(ys, vals, color="#5794f2", height=0.6)
                    for y, (name, v) in zip(ys, values, strict=True):
                        ax.text(
                            0, y, f" {name}: {fmt_value(v, unit, decimals)}", color="#d8d9da", fontsize=6.5, va="center"
                        )
                else:
                    ax.text(0.5, 0.5, "No data", color="#9fa7b3", ha="center", va="center")
        drawn.series[p["title"]] = count
    fig.text(
        0.01,
        1 - 0.25 / height_in,
        f"flywheel — {datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} to "
        f"{datetime.fromtimestamp(end, UTC):%H:%M} UTC",
        color="#d8d9da",
        fontsize=15,
        weight="bold",
        va="center",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)
    return drawn


def _num(t: float) -> float:
    """matplotlib's date number (days since 1970) of a Unix time."""
    return t / 86400.0


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--start", required=True, help="ISO time, e.g. 2026-11-23T10:00:00Z")
    parser.add_argument("--end", required=True)
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args()
    drawn = render(prometheus(args.prometheus), _time(args.start), _time(args.end), args.out)
    empty = [title for title, n in drawn.series.items() if n == 0]
    print(f"wrote {args.out}: {len(drawn.series)} panels, {len(empty)} without data {empty}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
