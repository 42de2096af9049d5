"""The trade-off figure of docs/benchmarks.md (every generations chain measured, as mAP ratio
against compute ratio) is drawn from docs/bench-generations-chains.csv by benchmarks/plots.py:
the table must stay consistent with what each column means, and the figure must draw from it."""

from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHAINS = REPO / "docs" / "bench-generations-chains.csv"


def rows() -> list[dict[str, str]]:
    with CHAINS.open() as fh:
        return list(csv.DictReader(fh))


def test_every_chain_row_is_consistent() -> None:
    table = rows()
    assert {r["data"] for r in table} == {"bccd", "aquarium"}  # the two data sets
    for r in table:
        where = f"{CHAINS.name}: {r['data']} {r['batches']} batches seed {r['seed']} x{r['warm_budget_factor']}"
        compute, refresh = float(r["compute"]), float(r["refresh_compute"])
        assert 0.0 < compute <= 1.1 and 0.0 <= refresh < compute, where
        # the lowest generation's ratio is a minimum over the chain, the last one included
        assert float(r["lowest"]) <= float(r["last"]), where
        # a chain without its refresh is only given where that is exact, and then in full
        assert bool(r["no_refresh_lowest"]) == bool(r["no_refresh_last"]), where
        if r["no_refresh_lowest"]:
            assert float(r["no_refresh_lowest"]) <= float(r["no_refresh_last"]), where
    # the default shipped in config.toml is measured on both data sets, at two seeds each
    factor = tomllib.loads((REPO / "config.toml").read_text())["training"]["warm_budget_factor"]
    shipped = {
        (r["data"], r["seed"]) for r in table if r["variant"] == "defaults" and float(r["warm_budget_factor"]) == factor
    }
    assert shipped >= {("bccd", "0"), ("bccd", "1"), ("aquarium", "0"), ("aquarium", "1")}, factor


def test_the_tradeoff_figure_draws_from_the_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "plots.py"),
            "--chains",
            str(CHAINS),
            "--docs",
            str(tmp_path),
            "--overhead",
            str(tmp_path / "none.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figure = tmp_path / "bench-generations-tradeoff.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000
