"""Read a data root's `config.toml`: the file itself, and the checks that need the disk or a
library, around the core's pure `parse_toml` (flywheel/core/config.py). The daemon, the CLI and
the probes all load their config here; every error names the file and the key."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from flywheel.core.config import CONFIG_NAME, Config, parse_toml, resolve
from flywheel.core.errors import ConfigError
from flywheel.service.cron import cron_problem


def load(data_root: Path) -> Config:
    path = data_root / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run `flywheel init {data_root}` to create a data root") from None
    config = parse_toml(text, str(path))
    problem = cron_problem(config.schedule.cron)
    if problem:
        raise ConfigError(f"{path}: key `schedule.cron`: {problem} (got {config.schedule.cron!r})")
    base = config.model.base
    if base.endswith(".pt") and not resolve(data_root, base).is_file():
        raise ConfigError(
            f"{path}: key `model.base`: checkpoint {resolve(data_root, base)} does not exist. "
            "flywheel never downloads weights: put the .pt there, or use a YAML such as "
            "yolov8n.yaml to train from scratch"
        )
    if base.endswith((".yaml", ".yml")) and not resolve(data_root, base).is_file() and not shipped_model_yaml(base):
        raise ConfigError(
            f"{path}: key `model.base`: {base!r} is neither a file under the data root nor a model YAML that "
            "Ultralytics ships (e.g. yolov8n.yaml, yolo11s.yaml); fix the name or put the YAML there"
        )
    return config


def shipped_model_yaml(name: str) -> bool:
    """Whether Ultralytics ships a model YAML by this name, found the way it looks one up
    (`yolov8n.yaml` is `yolov8.yaml` at scale n), without importing it (seconds, and torch)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return True  # cannot tell here; the training child will say
    models = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"
    stem = Path(name).name
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(stem).stem) + Path(stem).suffix
    return any(models.rglob(stem)) or any(models.rglob(unified))
