"""A real Prometheus server on loopback for tests, and the PromQL helpers they share.

The binaries come from Debian's `prometheus` package (deploy/prometheus/ensure-prometheus.sh,
run by `make test-slow`). Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "flywheel.json"
ALERTS = PROMETHEUS_DIR / "alerts.yml"


def _render() -> ModuleType:
    """deploy/grafana/render.py, which is not in a package."""
    spec = importlib.util.spec_from_file_location("flywheel_render", GRAFANA_DIR / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


render = _render()


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: run deploy/prometheus/ensure-prometheus.sh (make test-slow does)")
    return path


def scrape_config(target: str, interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, pointed at `target`, scraping and evaluating every `interval`."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    # the daemon's rules only: serve-alerts.yml has its own promtool tests (tests/test_serve_units.py)
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"] if name == "alerts.yml"]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != "flywheel-serve"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "flywheel"]
    job["static_configs"] = [{"targets": [target]}]
    return config


class Prometheus:
    """`prometheus` as a child process with its own config, data folder and loopback port."""

    def __init__(self, config: dict[str, Any], folder: Path, port: int):
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready after {timeout}s: {self.log_path.read_text()[-2000:]}")

    def api(self, endpoint: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{endpoint}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: a PromQL error, with its message
            body = json.load(exc)
        assert body["status"] == "success", f"{endpoint} {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# --- PromQL: the conditions inside an alert expression ------------------------------------

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPERATORS = ("and", "or", "unless")


def _top_level(expr: str) -> list[tuple[int, str]]:
    """(index, token) of every operator outside (), {}, [] and quotes."""
    depth = 0
    quote = ""
    found = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            two = expr[i : i + 2]
            if two in _COMPARISONS:
                found.append((i, two))
                i += 2
                continue
            if c in "<>":
                found.append((i, c))
            else:
                for word in _SET_OPERATORS:
                    end = i + len(word)
                    before = expr[i - 1] if i else " "
                    after = expr[end] if end < len(expr) else " "
                    if expr[i:end] == word and not _word_char(before) and not _word_char(after):
                        found.append((i, word))
                        i = end
                        break
                else:
                    i += 1
                    continue
                continue
        i += 1
    return found


def _word_char(c: str) -> bool:
    return c.isalnum() or c in "_:"


def _strip_matching(part: str) -> str:
    """Drop a leading `on (...)` / `ignoring (...)` / `group_left` / `bool` modifier."""
    part = part.strip()
    for word in ("on", "ignoring"):
        if part.startswith(word) and part[len(word) :].lstrip().startswith("("):
            part = part[part.index(")") + 1 :].strip()
    return part


def conditions(expr: str) -> list[str]:
    """Each condition of an alert expression, made to return a sample whatever its truth.

    `a > 1 and on (job) b == 0` gives `a > bool 1` and `b == bool 0`: the comparisons keep
    their operands but return 0 or 1 instead of filtering, so each must return data whenever
    the series it reads exist, firing or not."""
    expr = " ".join(expr.split())
    tokens = _top_level(expr)
    cuts = [(i, t) for i, t in tokens if t in _SET_OPERATORS]
    parts, start = [], 0
    for i, t in cuts:
        parts.append(expr[start:i])
        start = i + len(t)
    parts.append(expr[start:])
    out = []
    for raw in parts:
        part = _strip_matching(raw)
        comparisons = [(i, t) for i, t in _top_level(part) if t in _COMPARISONS]
        if comparisons:
            i, t = comparisons[-1]
            part = f"{part[:i].rstrip()} {t} bool {part[i + len(t) :].lstrip()}"
        out.append(part)
    return out


def panel_queries(dashboard: dict[str, Any], rate_interval: str | None = None) -> list[tuple[str, str, str]]:
    """(panel title, panel type, expr) of every query of every panel; with `rate_interval`, the
    expr as Grafana sends it to Prometheus, variables given values (render.expand)."""
    return [
        (p["title"], p["type"], t["expr"] if rate_interval is None else render.expand(t["expr"], rate_interval))
        for p in dashboard["panels"]
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]
