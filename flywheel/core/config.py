"""Validate the content of `config.toml` (flywheel/config_file.py reads the file and runs the
checks that need the disk or a scheduler; this module takes text and values only).

The file lives in the data root; relative paths in it are relative to that folder. Every key
has a default (the commented `config.toml` at the repository root is the reference), unknown
keys are errors (a typo must not silently fall back to a default), and every error names the
key at fault and the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flywheel.core.errors import ConfigError
from flywheel.core.gate import DEFAULT_MAX_CLASS_DROP, DEFAULT_MIN_CLASS_INSTANCES, DEFAULT_TOLERANCE

CONFIG_NAME = "config.toml"


class _Section(BaseModel):
    # strict: TOML has real types, so imgsz = "640", epochs_warm = true or allow_unlabeled =
    # "yes" are mistakes to name, not values to coerce (an int is still a valid float)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InboxConfig(_Section):
    marker: str = "READY"
    settle_seconds: float = Field(10.0, ge=0)
    rescan_seconds: float = Field(30.0, gt=0)
    ignore: list[str] = [".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX", "._*"]


class IngestConfig(_Section):
    max_image_pixels: int = Field(64_000_000, ge=1, le=178_956_970)  # Pillow refuses above anyway
    coordinate_tolerance: float = Field(0.01, ge=0, le=0.5)
    allow_unlabeled: bool = False
    max_archive_bytes: int = Field(20 * 2**30, ge=1)
    keep_done: bool = True
    link_outside: Literal["file", "batch"] = "file"  # a link out of a folder batch refuses that file, or all


class DatasetConfig(_Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)


class ModelConfig(_Section):
    base: str = "yolov8n.yaml"

    @field_validator("base")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if not value.endswith((".yaml", ".yml", ".pt")):
            raise ValueError("must be a model YAML (e.g. yolov8n.yaml, trains from scratch) or a path to a .pt")
        return value


class TrainingConfig(_Section):
    epochs_scratch: int = Field(50, ge=1)
    epochs_warm: int = Field(10, ge=1)  # the budget of a warm start when warm_budget = "fixed"
    # A warm start's budget (flywheel/core/budget.py): "auto" follows the share of new
    # images and how converged the parent was; "fixed" trains epochs_warm epochs.
    warm_budget: Literal["auto", "fixed"] = "auto"
    warm_budget_factor: float = Field(1.5, gt=0, le=10)  # 1.5: x1.0 fell behind retraining (docs/benchmarks.md)
    epochs_warm_min: int = Field(5, ge=1)
    epochs_warm_max: int = Field(0, ge=0)  # 0: epochs_scratch
    unconverged_boost: float = Field(1.5, ge=1, le=10)  # x the budget under a parent still improving
    plateau_patience: int = Field(0, ge=0)  # warm starts: final LR decay once val stalls; 0: off
    plateau_decay_epochs: int = Field(3, ge=1)
    shrink: float = Field(1.0, ge=0, le=1)  # shrink and perturb (Ash & Adams 2020); 1 and 0: off
    perturb: float = Field(0.0, ge=0, le=1)
    imgsz: int = 640
    batch: int = Field(16, ge=1)
    device: str = "cpu"
    threads: int = Field(0, ge=0)
    seed: int = 0
    patience: int = Field(100, ge=1)
    timeout_seconds: float = Field(0, ge=0)
    # Transfer: how a run that starts from a registered model trains (flywheel/core/plan.py).
    optimizer: str = "auto"
    lr0: float = Field(0.01, gt=0)
    lrf: float = Field(0.01, gt=0, le=1)
    cos_lr: bool = False
    nbs: int = Field(16, ge=1)
    amp: bool = True
    warmup_epochs: float = Field(3.0, ge=0)
    warmup_epochs_warm: float = Field(0.0, ge=0)
    close_mosaic: int = Field(10, ge=0)
    close_mosaic_warm: int = Field(10, ge=0)
    freeze_epochs: int = Field(0, ge=0)
    backbone_lr_scale: float = Field(0.3, gt=0, le=10)
    scratch_challenger_every: int = Field(0, ge=0)
    refresh_growth: float = Field(4.0, ge=0)  # train from model.base too once the data grew x this; 0: off
    scratch_challenger_after_rejections: int = Field(2, ge=0)
    on_interrupt: str = "resume"
    executor: Literal["local", "ray"] = "local"  # where trainings run: a child process here, or a Ray job ([ray])

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        known = ("auto", "SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSprop", "Adamax")
        if value not in known:
            raise ValueError(f"must be one of {', '.join(known)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|mps|(cuda:)?\d+(,\d+)*", value.strip()):
            raise ValueError('must be "cpu", a GPU index such as "0", several such as "0,1" (DDP), or "mps"')
        return value.strip()

    @field_validator("on_interrupt")
    @classmethod
    def _known_on_interrupt(cls, value: str) -> str:
        if value not in ("resume", "restart", "leave"):
            raise ValueError("must be resume (from the run's last.pt), restart (from its start) or leave")
        return value

    @field_validator("imgsz")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value < 32 or value % 32:
            raise ValueError("must be a multiple of 32 and at least 32 (YOLO's largest stride)")
        return value


class RayConfig(_Section):
    """training.executor = "ray": each training is a Ray job (flywheel/training/ray_jobs.py)."""

    address: str = "http://127.0.0.1:8265"  # the cluster's job API (the head's dashboard)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resource: str = ""  # a custom resource the trainer nodes have; each job asks for 1 of it; "" = none
    python: str = ""  # the interpreter on the nodes (same path on each); "" = the daemon's own
    prefix: str = ""  # submission-id prefix: several data roots on one cluster

    @field_validator("address")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+/?", value.strip()):
            raise ValueError('must be the job API\'s URL, http://<head>:<dashboard port>, e.g. "http://127.0.0.1:8265"')
        return value.strip().rstrip("/")

    @field_validator("prefix", "resource")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("must be letters, digits, '-', '_' or '.' (it names Ray jobs or a Ray resource)")
        return value


class ScheduleConfig(_Section):
    debounce_seconds: float = Field(30.0, ge=0)
    min_new_images: int = Field(1, ge=0)
    cron: str = ""  # crontab, five fields, UTC

    @field_validator("cron")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()  # parsed where a scheduler is: flywheel/service/cron.py, when the file loads


class ReplayConfig(_Section):
    max_images: int = Field(0, ge=0)


class GateConfig(_Section):
    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0, le=1)
    max_class_drop: float = Field(DEFAULT_MAX_CLASS_DROP, ge=0, le=1)
    min_class_instances: int = Field(DEFAULT_MIN_CLASS_INSTANCES, ge=0)
    bootstrap: bool = False
    class_bootstrap: bool = True  # a class drop refuses only if its paired-bootstrap interval is below 0
    bootstrap_samples: int = Field(1000, ge=100)
    bootstrap_confidence: float = Field(0.95, gt=0.5, lt=1)
    golden_dir: str = ""  # a labeled folder scored beside val (flywheel/flow/golden.py); "" = none


EXPORT_FORMATS = ("onnx", "openvino", "torchscript", "engine")  # Ultralytics' format names
# An fp32 export scored like the .pt (same letterbox shapes, batch, NMS, fp32 kernels) differs
# from it by float rounding only: within 4e-7 mAP50-95 on BCCD and on the tests' model
# (docs/exports.md). 0.002 leaves room for other data, CPUs and runtimes, and stays under the
# margins the gate decides on (+0.004 between two candidates of one version, issue 30).
DEFAULT_EXPORT_TOLERANCE = 0.002


class ProductionConfig(_Section):
    """What a promotion publishes beside model.pt (flywheel/flow/exports.py)."""

    formats: list[str] = []
    export_tolerance: float = Field(DEFAULT_EXPORT_TOLERANCE, ge=0, le=1)
    on_export_failure: Literal["hold", "promote_pt"] = "hold"
    serving_batch: int = Field(8, ge=1)  # the batch whose latency is measured beside batch 1
    export_onnx: bool = False  # deprecated: formats = ["onnx"]

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in EXPORT_FORMATS:
                raise ValueError(f"unknown format {name!r}: each must be one of {', '.join(EXPORT_FORMATS)}")
        if "engine" in value and not tensorrt_usable():
            raise ValueError('"engine" (TensorRT) needs a CUDA GPU and the tensorrt package; neither is usable here')
        return list(dict.fromkeys(value))

    def export_formats(self) -> list[str]:
        """The formats to publish; the deprecated `export_onnx = true` means ["onnx"]."""
        return self.formats or (["onnx"] if self.export_onnx else [])


def tensorrt_usable() -> bool:
    """Without importing torch (seconds): the tensorrt package and an NVIDIA driver's device."""
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None and Path("/dev/nvidiactl").exists()


class NotifyConfig(_Section):
    command: str = ""
    webhook: str = ""
    retries: int = Field(3, ge=1)
    retry_seconds: float = Field(2.0, ge=0)


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    render_seconds: float = Field(1.0, ge=0)


class HealthConfig(_Section):
    stall_seconds: float = Field(1800.0, ge=0)


class DaemonConfig(_Section):
    shutdown_timeout: float = Field(60.0, gt=0)


class RetentionConfig(_Section):
    keep_rejected: int = Field(5, ge=0)
    keep_retired: int = Field(0, ge=0)
    run_logs_days: float = Field(30.0, ge=0)
    quarantine_days: float = Field(90.0, ge=0)
    done_days: float = Field(30.0, ge=0)
    captured_days: float = Field(0.0, ge=0)
    gc_interval_hours: float = Field(24.0, ge=0)


LABEL_STUDIO_HOOK = "/hooks/labelstudio"  # the daemon's HTTP path Label Studio's webhook posts to


class LabelStudioConfig(_Section):
    """`flywheel label push/pull` and the daemon's pull (flywheel/labeling/). Images are uploaded
    through Label Studio's API, so any Label Studio that can be reached works (no shared disk)."""

    url: str = ""  # "" = no Label Studio
    token_env: str = "LABEL_STUDIO_API_KEY"  # the environment variable holding the API token
    token_file: str = ""  # or a file holding it (relative to the data root); wins over token_env
    project: str = ""  # an id (7) or a title; a title that names no project makes one
    poll_seconds: float = Field(0.0, ge=0)  # the daemon pulls finished annotations this often; 0 = off
    # where Label Studio reaches the daemon's /hooks/labelstudio (metrics.host:port): the daemon
    # registers it as the project's webhook and pulls as soon as an annotation is made or changed
    webhook_url: str = ""
    timeout_seconds: float = Field(30.0, gt=0)  # per HTTP request

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s]+", value.strip()):
            raise ValueError('must be Label Studio\'s URL, e.g. "http://127.0.0.1:8080", or "" for none')
        return value.strip().rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _hook(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(rf"https?://[^\s/]+(/[^\s]*)?{LABEL_STUDIO_HOOK}", value):
            raise ValueError(
                f"must be the URL Label Studio reaches the daemon's {LABEL_STUDIO_HOOK} at, e.g. "
                f'"http://flywheel-host:9108{LABEL_STUDIO_HOOK}", or "" for none'
            )
        return value


class MlflowConfig(_Section):
    """Mirror runs and the registry into MLflow (flywheel/flow/mirroring.py; pip install 'flywheel[mlflow]')."""

    tracking_uri: str = ""  # "" = off; an MLflow server's URL, or sqlite:///PATH / file:///PATH
    experiment: str = "flywheel"  # each training is a run of this experiment
    registered_model: str = "flywheel"  # each promoted model is a version of this registered model
    timeout_seconds: float = Field(10.0, gt=0)  # per request: a hung server must not hold a step
    retry_seconds: float = Field(5.0, gt=0)  # pause after a failed sync, doubling...
    retry_max_seconds: float = Field(300.0, gt=0)  # ...up to this

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"(https?://[^/\s]+|sqlite:///.+|file:///.+|databricks)", value):
            raise ValueError(
                'must be an MLflow tracking URI: "http://HOST:PORT" (a server), "sqlite:///PATH" or '
                '"file:///PATH" (local stores), or "" to mirror nothing'
            )
        return value.rstrip("/")

    @field_validator("experiment", "registered_model")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (it names the MLflow experiment or registered model)")
        return value.strip()


class ScreenConfig(_Section):
    """The data engine (flywheel/flow/screening.py): each batch screened with production first."""

    enabled: bool = True
    label_errors: Literal["report", "hold", "quarantine"] = "report"
    leakage: Literal["report", "hold", "quarantine"] = "report"
    class_shift: Literal["report", "hold"] = "report"  # a mix is the batch's, no image to set aside
    false_positive_rate: float = Field(0.01, gt=0, lt=1)  # per kind, of clean boxes (calibrated on val)
    match_iou: float = Field(0.5, gt=0, le=1)
    overlap_iou: float = Field(0.25, ge=0, le=1)
    leakage_bits: int = Field(10, ge=0, le=32)  # dHash bits apart at most for a near copy
    shift_p: float = Field(0.001, gt=0, lt=1)  # chi-square p-value under which the mix shifted...
    shift_distance: float = Field(0.15, ge=0, le=1)  # ...and by at least this total variation
    hold_timeout_hours: float = Field(72.0, ge=0)  # a held batch trains after this (0 = never)


class DatabaseConfig(_Section):
    url: str = ""  # empty: sqlite file flywheel.db in the data root; or postgresql+psycopg://... (store/db.py)


class ServeCaptureConfig(_Section):
    """`flywheel serve` keeps what production doubts (flywheel/serve/capture.py)."""

    enabled: bool = False
    threshold: float = Field(0.5, ge=0, le=1)  # uncertainty score (flywheel/prelabel/uncertainty.py) to keep
    control_share: float = Field(0.02, ge=0, le=1)  # random share kept whatever its score
    quota_mb: float = Field(1024.0, gt=0)
    dir: str = "captured"


class ServeConfig(_Section):
    """`flywheel serve`: production behind HTTP (flywheel/serve/)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    runtime: Literal["auto", "openvino", "onnx", "torchscript", "pt"] = "auto"
    max_batch: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    queue_size: int = Field(64, ge=1)
    timeout: float = Field(10.0, gt=0)
    threads: int = Field(0, ge=0)
    max_request_mb: float = Field(32.0, gt=0)
    max_images: int = Field(16, ge=1)
    poll_seconds: float = Field(1.0, gt=0)
    token_env: str = "FLYWHEEL_SERVE_TOKEN"
    token_file: str = ""
    capture: ServeCaptureConfig = ServeCaptureConfig()


class Config(_Section):
    inbox: InboxConfig = InboxConfig()
    ingest: IngestConfig = IngestConfig()
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    replay: ReplayConfig = ReplayConfig()
    gate: GateConfig = GateConfig()
    production: ProductionConfig = ProductionConfig()
    notify: NotifyConfig = NotifyConfig()
    metrics: MetricsConfig = MetricsConfig()
    health: HealthConfig = HealthConfig()
    daemon: DaemonConfig = DaemonConfig()
    database: DatabaseConfig = DatabaseConfig()
    retention: RetentionConfig = RetentionConfig()
    screen: ScreenConfig = ScreenConfig()
    ray: RayConfig = RayConfig()
    labelstudio: LabelStudioConfig = LabelStudioConfig()
    serve: ServeConfig = ServeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()


def parse(data: dict[str, Any], source: str = CONFIG_NAME) -> Config:
    """Validate a decoded TOML mapping; errors name the dotted key and the file."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            msg = (
                "unknown key (check its spelling against the documented config.toml)"
                if (err["type"] == "extra_forbidden")
                else err["msg"] + _got(err)
            )
            problems.append(f"{source}: key `{key}`: {msg}")
        raise ConfigError("\n".join(problems)) from None


def _got(err: Any) -> str:
    """The value given, and a hint when the mistake is TOML quotes around a number or bool."""
    value = err.get("input")
    if isinstance(value, dict | list) or "input" not in err:
        return ""
    quoted = isinstance(value, str) and err["type"] in ("int_type", "float_type", "bool_type")
    return f" (got {value!r}" + ("; TOML writes numbers and true/false without quotes)" if quoted else ")")


def parse_toml(text: str, source: str = CONFIG_NAME) -> Config:
    """`parse` for the text of a config.toml; `source` names the file in every error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc}); fix the line it names") from None
    return parse(data, source)


def resolve(data_root: Path, value: str) -> Path:
    """A path from config.toml: absolute as given, else relative to the data root."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else data_root / path
