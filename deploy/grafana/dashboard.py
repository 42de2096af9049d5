"""Build the flywheel Grafana dashboard with Grafana's own SDK, grafana-foundation-sdk.

The SDK's builders and models are generated from Grafana's dashboard schema (schemaVersion
41, Grafana 11.6), so a panel or option that the schema does not have does not type-check.
`dashboards/flywheel.json` is this script's output, committed so that provisioning needs no
Python; tests/test_dashboard.py fails when the two differ.

    .venv/bin/python deploy/grafana/dashboard.py            # rewrite dashboards/flywheel.json
    .venv/bin/python deploy/grafana/dashboard.py --check    # exit 1 if it is out of date

Nothing names a datasource uid: a `datasource` variable (any Prometheus) feeds every panel,
query and variable, so the dashboard imports into a Grafana whatever its datasource is called.
`job` and `instance` variables (from `flywheel_build_info`, several or all) pick the daemons,
and every metric selector gets `{job=~"$job", instance=~"$instance"}`: the expressions below
are written without it and `scoped` adds it, merged with their own label matchers.
`histogram_quantile` always reads `sum by (le) (rate(..._bucket[$__rate_interval]))`.

Every PromQL expression here is evaluated against a real Prometheus scraping a real daemon
by tests/test_prometheus_server.py, with the variables given values as render.py's `expand`
does (`$job`, `$instance` -> `.*`, `$__rate_interval` -> a fixed window).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

OUT = Path(__file__).resolve().parent / "dashboards" / "flywheel.json"
DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")  # the datasource variable
SCOPE = 'job=~"$job", instance=~"$instance"'
# A metric name in a selector: flywheel's own, the client's process_*, and `up`; not a
# function's name (followed by "("), with its label matchers if it has any.
SELECTOR = re.compile(r"\b((?:flywheel|process)_[a-z0-9_]+|up)\b(?!\s*\()(\{[^}]*\})?")
RATE = "$__rate_interval"


def scoped(expr: str) -> str:
    """`expr` with the job and instance variables' matcher in every metric selector."""

    def scope(m: re.Match[str]) -> str:
        own = (m.group(2) or "{}")[1:-1].strip()
        return f"{m.group(1)}{{{SCOPE}{', ' + own if own else ''}}}"

    return SELECTOR.sub(scope, expr)


def p90(bucket: str) -> str:
    """The 90th percentile of the observations of a histogram in the rate window."""
    return f"histogram_quantile(0.9, sum by (le) (rate({bucket}[{RATE}])))"


class Panels:
    """Numbers panels and their queries as they are added."""

    def __init__(self) -> None:
        self.next_id = 1

    def id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(scoped(expr)).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def queries(*pairs: tuple[str, str], instant: bool = False) -> list[prom.Dataquery]:
    return [query(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(pairs)]


def legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def thresholds(*steps: tuple[float | None, str]) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in steps])
    )


def series(
    ids: Panels, title: str, description: str, targets: list[prom.Dataquery], w: int, h: int = 8, *, unit: str
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .id(ids.id())
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(list(targets))
        .span(w)
        .height(h)
        .legend(legend())
        .line_width(2)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.AUTO)
        .span_nulls(True)
    )
    return p.unit(unit)


def big(
    ids: Panels,
    title: str,
    description: str,
    targets: list[prom.Dataquery],
    w: int = 4,
    h: int = 4,
    *,
    unit: str,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
) -> stat.Panel:
    p = (
        stat.Panel()
        .id(ids.id())
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(list(targets))
        .span(w)
        .height(h)
        .reduce_options(last_value())
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(text_mode)
        .color_mode(common.BigValueColorMode.VALUE)
    )
    return p.unit(unit)


def bars(
    ids: Panels, title: str, description: str, targets: list[prom.Dataquery], w: int, h: int = 8, *, unit: str
) -> bargauge.Panel:
    p = (
        bargauge.Panel()
        .id(ids.id())
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(list(targets))
        .span(w)
        .height(h)
        .reduce_options(last_value())
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
    )
    return p.unit(unit)


def variables() -> list[Any]:
    """The datasource (any Prometheus), then the jobs and instances that run flywheel."""
    every = models.VariableOption(selected=True, text="All", value="$__all")
    datasource = builders.DatasourceVariable("datasource").label("Data source").type("prometheus")
    job = (
        builders.QueryVariable("job")
        .label("Job")
        .datasource(DS)
        .query("label_values(flywheel_build_info, job)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(every)
    )
    instance = (
        builders.QueryVariable("instance")
        .label("Instance")
        .datasource(DS)
        .query('label_values(flywheel_build_info{job=~"$job"}, instance)')
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(every)
    )
    return [datasource, job, instance]


def annotation(name: str, expr: str, color: str) -> builders.AnnotationQuery:
    return builders.AnnotationQuery().name(name).datasource(DS).enable(True).icon_color(color).expr(scoped(expr))


def build() -> dict[str, Any]:
    ids = Panels()
    d = (
        builders.Dashboard("flywheel")
        .uid("flywheel")
        .description("A YOLO data flywheel: inbox, dataset versions, training, the gate and production")
        .tags(["flywheel", "mlops", "yolo"])
        .refresh("30s")
        .time("now-7d", "now")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
        .annotation(
            annotation("Promotions", "changes(flywheel_promotions_total[2m]) > 0", "green"),
        )
        .annotation(
            annotation("Rollbacks", "changes(flywheel_rollbacks_total[2m]) > 0", "red"),
        )
    )

    d = d.with_row(builders.Row("Now").id(ids.id()))
    d = d.with_panel(
        big(
            ids,
            "Production model",
            "The model in production and the dataset version it was trained on",
            [query("flywheel_production_model_info", "{{id}} on {{version}}", instant=True)],
            unit="short",
            text_mode=common.BigValueTextMode.NAME,
        )
    )
    d = d.with_panel(
        big(
            ids,
            "Production mAP50-95",
            "The production model's mAP50-95 on the newest val split it was scored on",
            [query('flywheel_model_score{role="production",metric="map50_95"}', instant=True)],
            unit="percentunit",
        ).decimals(1)
    )
    d = d.with_panel(
        big(
            ids,
            "Batch to decision",
            "The flywheel's headline number: the newest batch's arrival to the gate's decision on a "
            "model trained on it",
            [query("flywheel_last_batch_to_decision_seconds", instant=True)],
            unit="s",
        )
    )
    d = d.with_panel(
        big(
            ids,
            "Images waiting",
            "New images in versions no training has been tried on yet",
            [query("flywheel_images_waiting", instant=True)],
            unit="short",
        )
    )
    d = d.with_panel(
        big(
            ids,
            "Daemon",
            "Whether Prometheus can scrape the daemon",
            [query("up", "{{instance}}", instant=True)],
            unit="short",
        )
        .mappings(
            [
                models.ValueMap(
                    options={
                        "0": models.ValueMappingResult(text="DOWN", color="red"),
                        "1": models.ValueMappingResult(text="UP", color="green"),
                    }
                )
            ]
        )
        .thresholds(thresholds((None, "red"), (1, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
    )
    d = d.with_panel(
        big(
            ids,
            "Data root free",
            "Free space on the file system of the data root",
            [query("flywheel_data_root_free_bytes / flywheel_data_root_filesystem_size_bytes", instant=True)],
            unit="percentunit",
        )
        .thresholds(thresholds((None, "red"), (0.1, "orange"), (0.2, "green")))
        .decimals(1)
    )

    d = d.with_row(builders.Row("Models and the gate").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Production mAP",
            "Production's scores over time; promotions (green) and rollbacks (red) are annotations",
            queries(
                ('flywheel_model_score{role="production"}', "production {{metric}}"),
                ('flywheel_model_score{role="candidate",metric="map50_95"}', "last candidate map50_95"),
            ),
            w=12,
            unit="percentunit",
        ).min(0)
    )
    d = d.with_panel(
        series(
            ids,
            "Gate margin and forgetting",
            "Last decision: candidate - production mAP50-95 (>= -tolerance promotes), and the largest "
            "drop of a class's AP from production to candidate",
            queries(
                ("flywheel_gate_margin", "margin"),
                ("flywheel_gate_forgetting", "forgetting ({{measure}})"),
            ),
            w=12,
            unit="percentunit",
        )
    )
    d = d.with_panel(
        bars(
            ids,
            "Gate decisions",
            "Decisions by outcome and the rule that decided",
            [query("sum by (outcome, rule) (flywheel_gate_decisions_total)", "{{outcome}}: {{rule}}", instant=True)],
            w=6,
            unit="short",
        ).decimals(0)
    )
    d = d.with_panel(
        bars(
            ids,
            "Per-class AP50-95",
            "Production (on the newest set it was scored on) vs the last candidate (on its version's val split)",
            [query("flywheel_model_class_ap", "{{class}} {{role}}", instant=True)],
            w=10,
            unit="percentunit",
        )
        .min(0)
        .max(1)
    )
    d = d.with_panel(
        series(
            ids,
            "Production changes",
            "Promotions, gate rejections and rollbacks, all time",
            queries(
                ("flywheel_promotions_total", "promotions"),
                ("flywheel_rejections_total", "rejections"),
                ("flywheel_rollbacks_total", "rollbacks"),
            ),
            w=8,
            unit="short",
        ).decimals(0)
    )

    d = d.with_row(builders.Row("Training").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Training progress",
            "Epochs done and planned of the running (or last) training; running is 1 while it runs",
            queries(
                ("flywheel_training_epoch", "epoch"),
                ("flywheel_training_epochs", "epochs planned"),
                ("flywheel_training_running", "running"),
            ),
            w=8,
            unit="short",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Train losses",
            "Last epoch's mean train losses, streamed from the training process",
            [query("flywheel_training_loss", "{{kind}} loss")],
            w=8,
            unit="short",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Validation",
            "Last epoch's validation precision, recall and mAP",
            [query("flywheel_training_val", "{{metric}}")],
            w=8,
            unit="percentunit",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Epoch time and throughput",
            "Last epoch's duration (train and validation) and train images per second",
            queries(
                ("flywheel_training_epoch_seconds", "epoch seconds"),
                ("flywheel_training_images_per_second", "images/s"),
            ),
            w=8,
            unit="s",
        ).override_by_name(
            "images/s",
            [
                models.DynamicConfigValue(id_val="unit", value="ops"),
                models.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )
    d = d.with_panel(
        bars(
            ids,
            "Training runs",
            "Finished runs by outcome, and runs by start kind",
            queries(
                ("sum by (outcome) (flywheel_training_runs_total)", "{{outcome}}"),
                ("sum by (kind) (flywheel_training_starts_total)", "start: {{kind}}"),
                instant=True,
            ),
            w=8,
            unit="short",
        ).decimals(0)
    )
    d = d.with_panel(
        series(
            ids,
            "Training duration",
            "Mean wall time of the runs since the daemon started, and the 90th percentile of the runs that "
            "ended in the rate window",
            queries(
                (
                    "flywheel_training_duration_seconds_sum / (flywheel_training_duration_seconds_count > 0)",
                    "mean, {{outcome}}",
                ),
                (p90("flywheel_training_duration_seconds_bucket"), "p90, all outcomes"),
            ),
            w=8,
            unit="s",
        )
    )

    d = d.with_row(builders.Row("Flywheel latency").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Batch arrival to gate decision",
            "From a batch's arrival to the promotion or rejection of the first model trained on it: "
            "the newest, the mean over all batches and the 90th percentile of those decided in the rate window",
            queries(
                ("flywheel_last_batch_to_decision_seconds", "newest batch"),
                (
                    "sum(flywheel_batch_to_decision_seconds_sum) / sum(flywheel_batch_to_decision_seconds_count)",
                    "mean",
                ),
                (p90("flywheel_batch_to_decision_seconds_bucket"), "p90"),
            ),
            w=16,
            unit="s",
        )
    )
    d = d.with_panel(
        bars(
            ids,
            "Batches decided",
            "Batches whose first covering gate decision promoted or rejected the model",
            [query("sum by (outcome) (flywheel_batch_to_decision_seconds_count)", "{{outcome}}", instant=True)],
            w=8,
            unit="short",
        ).decimals(0)
    )

    d = d.with_row(builders.Row("Inbox").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Inbox flow",
            "Files per hour by where they went, and batches per hour",
            queries(
                ("sum by (outcome) (increase(flywheel_files_total[1h]))", "files {{outcome}}"),
                ("increase(flywheel_batches_received_total[1h])", "batches"),
            ),
            w=9,
            unit="short",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Quarantine share",
            "Share of the files received in the last hour that went to quarantine",
            [
                query(
                    'sum(increase(flywheel_files_total{outcome="quarantined"}[1h])) '
                    "/ clamp_min(sum(increase(flywheel_files_received_total[1h])), 1)",
                    "quarantined share",
                )
            ],
            w=7,
            unit="percentunit",
        )
    )
    d = d.with_panel(
        bars(
            ids,
            "Quarantine reasons",
            "Quarantined files by reason code, all time",
            [query("sum by (reason) (flywheel_quarantine_reasons_total)", "{{reason}}", instant=True)],
            w=8,
            unit="short",
        ).decimals(0)
    )
    d = d.with_panel(
        series(
            ids,
            "Batch processing time",
            "Mean time to ingest a batch since the daemon started, and the 90th percentile of the batches "
            "ingested in the rate window",
            queries(
                ("flywheel_batch_processing_seconds_sum / (flywheel_batch_processing_seconds_count > 0)", "mean"),
                (p90("flywheel_batch_processing_seconds_bucket"), "p90"),
            ),
            w=12,
            unit="s",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Images received",
            "Images accepted into the store, and those new to the dataset, all time",
            queries(
                ("flywheel_images_ingested_total", "accepted"),
                ("flywheel_images_new_total", "new"),
                ("flywheel_images_waiting", "waiting for training"),
            ),
            w=12,
            unit="short",
        )
    )

    d = d.with_row(builders.Row("Dataset").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Dataset growth",
            "Images and boxes per split in the newest version, and its id",
            queries(
                ("flywheel_dataset_images", "images {{split}}"),
                ("flywheel_dataset_boxes", "boxes {{split}}"),
                ("flywheel_dataset_version", "version"),
            ),
            w=12,
            unit="short",
        ).override_by_name("version", [models.DynamicConfigValue(id_val="custom.axisPlacement", value="right")])
    )
    d = d.with_panel(
        bars(
            ids,
            "Boxes per class",
            "Boxes of each class per split in the newest version",
            [query("flywheel_dataset_class_boxes", "{{class}} {{split}}", instant=True)],
            w=6,
            unit="short",
        ).decimals(0)
    )
    d = d.with_panel(
        bars(
            ids,
            "Images per class",
            "Images holding at least one box of the class, per split, in the newest version",
            [query("flywheel_dataset_class_images", "{{class}} {{split}}", instant=True)],
            w=6,
            unit="short",
        ).decimals(0)
    )

    d = d.with_panel(
        bars(
            ids,
            "Screening suspects",
            "Images each screening check flagged (flywheel screen BATCH): in the newest screened batch, "
            "and in all batches; a held batch waits for `flywheel approve`",
            queries(
                ("flywheel_screen_last_batch_suspects", "newest batch: {{check}}"),
                ("flywheel_screen_suspects_total", "all batches: {{check}}"),
                ('flywheel_screen_batches{state="held"}', "batches held"),
                instant=True,
            ),
            w=12,
            unit="short",
        ).decimals(0)
    )

    d = d.with_row(builders.Row("Process").id(ids.id()))
    d = d.with_panel(
        series(
            ids,
            "Daemon memory",
            "Resident memory of the daemon process (training runs in a child process, not counted here)",
            [query("process_resident_memory_bytes", "{{instance}}")],
            w=8,
            unit="bytes",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Daemon CPU",
            "CPU seconds per second used by the daemon process (100% is one core)",
            [query(f"rate(process_cpu_seconds_total[{RATE}])", "{{instance}}")],
            w=8,
            unit="percentunit",
        )
    )
    d = d.with_panel(
        series(
            ids,
            "Data root disk",
            "Bytes the data root takes, in all and per part (`flywheel gc` frees models, runs, quarantine, "
            "done, captured), and free and total bytes of its file system",
            queries(
                ("flywheel_data_root_used_bytes", "used by the data root"),
                ("flywheel_data_root_free_bytes", "free"),
                ("flywheel_data_root_filesystem_size_bytes", "file system size"),
                ("flywheel_data_root_area_bytes", "{{area}}"),
            ),
            w=8,
            unit="bytes",
        )
    )
    result: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return result


def render_json(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render_json(build())
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
