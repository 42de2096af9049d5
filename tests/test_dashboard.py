"""The Grafana dashboard and its provisioning, and the alert rules' shape, without servers.

The dashboard is checked against Grafana's schema through Grafana's own SDK
(grafana-foundation-sdk, models generated from the schema): decoding the JSON into the
schema's models and encoding it back must give the same JSON, so a field the schema does not
know (a typo, an option in the wrong place) is caught. That every query returns data from a
real Prometheus is tests/test_prometheus_server.py's job.
"""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from flywheel.service.metrics import build_registry
from flywheel.store import ObjectStore, Store, make_engine, upgrade_schema
from tests.prometheus_server import DASHBOARD, GRAFANA_DIR, PROMETHEUS_DIR, alert_rules, conditions, panel_queries

REPO = GRAFANA_DIR.parents[1]


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def roundtrip(data: dict[str, Any]) -> dict[str, Any]:
    register_default_plugins()
    back: dict[str, Any] = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    return back


def test_the_dashboard_matches_grafanas_schema(board):
    assert roundtrip(board) == board
    assert board["schemaVersion"] >= 39 and board["uid"] == "flywheel"


def test_the_schema_check_catches_an_unknown_field(board):
    broken = json.loads(json.dumps(board))
    broken["panels"][2]["fieldConfig"]["defaults"]["unitt"] = "s"  # a typo
    assert roundtrip(broken) != broken
    broken = json.loads(json.dumps(board))
    broken["panels"][2]["options"]["textMod"] = "name"
    assert roundtrip(broken) != broken


def test_the_committed_json_is_what_the_generator_builds():
    spec = importlib.util.spec_from_file_location("flywheel_dashboard", GRAFANA_DIR / "dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render_json(module.build()) == DASHBOARD.read_text(), "run deploy/grafana/dashboard.py"


VARIABLE_DS = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = 'job=~"$job", instance=~"$instance"'


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of every panel, and of every annotation."""
    found = [(p["title"], t) for p in board["panels"] for t in p.get("targets", [])]
    return found + [(a["name"], a) for a in board["annotations"]["list"]]


def test_panels_are_laid_out_and_read_the_datasource_variable(board):
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "flywheel.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) == 31
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
    for p in panels:
        assert p["type"] in {"timeseries", "stat", "bargauge"}
        assert p["datasource"] == VARIABLE_DS, p["title"]
        assert p["targets"] and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs) and all(refs), p["title"]
    for title, t in targets(board):
        assert t["datasource"] == VARIABLE_DS and t["expr"].strip(), title
    assert {a["name"] for a in board["annotations"]["list"]} == {"Promotions", "Rollbacks"}


def test_the_datasource_job_and_instance_are_variables(board):
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"] == "label_values(flywheel_build_info, job)"
    assert variables["instance"]["query"] == 'label_values(flywheel_build_info{job=~"$job"}, instance)'
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == VARIABLE_DS, name
        assert v["multi"] and v["includeAll"] and v["current"]["value"] == "$__all", name
        assert v["refresh"] == 2, f"{name}: refreshed with the time range, so new daemons show up"


def test_no_datasource_uid_is_hard_coded(board):
    """The dashboard imports into any Grafana: the only datasource it names is the variable,
    whatever uid provisioning gives the datasource."""
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "flywheel.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["uid"] not in DASHBOARD.read_text()

    def refs(node: Any) -> list[Any]:
        if isinstance(node, dict):
            here = [node["datasource"]] if "datasource" in node else []
            return here + [r for value in node.values() for r in refs(value)]
        return [r for value in node for r in refs(value)] if isinstance(node, list) else []

    found = refs(board)
    assert len(found) > 60 and all(r == VARIABLE_DS for r in found), [r for r in found if r != VARIABLE_DS]


def test_every_selector_is_scoped_to_the_job_and_instance_variables(board):
    """Each metric selector of each query carries {job=~"$job", instance=~"$instance"}, merged
    with its own matchers: as many scopes as metric names, and none without a selector."""
    for title, t in targets(board):
        expr = t["expr"]
        names = re.findall(r"\b(?:(?:flywheel|process)_[a-z0-9_]+|up)\b(?!\s*\()", expr)
        scoped = re.findall(r"\b(?:(?:flywheel|process)_[a-z0-9_]+|up)\{" + re.escape(SCOPE) + r"[,}]", expr)
        assert names and len(scoped) == len(names), f"{title}: {expr}"


def test_every_panel_has_a_unit(board):
    units = {"s", "bytes", "percentunit", "short", "ops", "reqps"}
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["fieldConfig"]["defaults"].get("unit") in units, p["title"]
            for override in p["fieldConfig"].get("overrides", []):
                for prop in override["properties"]:
                    assert prop["id"] != "unit" or prop["value"] in units, p["title"]


def test_every_quantile_reads_a_rate_of_the_buckets(board):
    """histogram_quantile over `sum by (le) (rate(..._bucket[$__rate_interval]))`: a quantile
    of the buckets' counters themselves would be of everything since the daemon started."""
    quantiles = 0
    for title, t in targets(board):
        for m in re.finditer(r"histogram_quantile\(", t["expr"]):
            quantiles += 1
            rest = t["expr"][m.end() :]
            assert re.match(
                r"[0-9.]+, sum by \(le\) \(rate\([a-z0-9_]+_bucket\{[^}]*\}\[\$__rate_interval\]\)\)\)", rest
            ), f"{title}: {t['expr']}"
    assert quantiles == 3


def test_every_metric_a_query_names_is_exported(board, tmp_path):
    """A typo in a metric name would leave a panel empty for ever: each flywheel_ name in the
    dashboard and the alerts is one the exporter declares."""
    engine = make_engine("sqlite://")
    upgrade_schema(engine)
    # an empty data root: the disk gauges are declared all the same, and "/" would be walked (20 s)
    registry, _ = build_registry(Store(engine), ObjectStore(tmp_path / "objects"), tmp_path)
    exported = {s.name for family in registry.collect() for s in family.samples} | {
        f"{family.name}{suffix}"
        for family in registry.collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum", "_info")
    }
    texts = [expr for _, _, expr in panel_queries(board)]
    texts += [a["expr"] for a in board["annotations"]["list"]]
    texts += [r["expr"] for r in alert_rules()]
    named = {m for text in texts for m in re.findall(r"\b((?:flywheel|process)_[a-z0-9_]+)", text)}
    assert named and named <= exported, named - exported


def test_provisioning_matches_the_compose_mounts():
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "flywheel.yaml").read_text())
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["disableDeletion"]
    compose_file = REPO / "deploy" / "docker-compose.yml"
    assert compose_file.is_file(), f"{compose_file} is missing"
    compose = yaml.safe_load(compose_file.read_text())
    grafana = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]}
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["./grafana/dashboards"] == p["options"]["path"]
    prometheus = {v.split(":")[0]: v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    for name in ("prometheus.yml", *config["rule_files"]):  # rule files: relative to the config
        assert (
            prometheus.get("./prometheus") == "/etc/prometheus"
            or prometheus.get(f"./prometheus/{name}") == f"/etc/prometheus/{name}"
        ), name
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["flywheel:9108"]


def test_alert_rules_are_documented_and_split_into_conditions():
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "FlywheelDown",
        "FlywheelDatabaseUnreachable",
        "FlywheelTrainingFailing",
        "FlywheelNoPromotion",
        "FlywheelQuarantineSpike",
        "FlywheelProductionMapDroppedAfterRollback",
        "FlywheelExportFailed",
        "FlywheelDiskNearlyFull",
        "FlywheelDiskFillingUp",
    }
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        for condition in conditions(r["expr"]):
            assert " bool " in condition, f"{r['alert']}: {condition}"
    assert conditions('a{x="y and z"} > 1 and on (job) sum by (job) (b) == 0') == [
        'a{x="y and z"} > bool 1',
        "sum by (job) (b) == bool 0",
    ]
    assert conditions("x / y < 0.10") == ["x / y < bool 0.10"]
