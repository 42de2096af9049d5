"""The Label Studio adapter built from `[labelstudio]`: the token read from its file or its
environment variable here, at the edge, and never written to a log or an error."""

from __future__ import annotations

import os
from pathlib import Path

from flywheel.core.config import CONFIG_NAME, LabelStudioConfig, resolve
from flywheel.core.errors import ConfigError
from flywheel.core.ports import LabelingTool


def build_label_studio(config: LabelStudioConfig, data_root: Path) -> LabelingTool:
    """A LabelStudio client (flywheel.labeling.labelstudio), or ConfigError naming the key."""
    where = data_root / CONFIG_NAME
    if not config.url:
        raise ConfigError(
            f'{where}: key `labelstudio.url` is empty: set it to Label Studio\'s URL, e.g. "http://127.0.0.1:8080"'
        )
    if not config.project:
        raise ConfigError(f"{where}: key `labelstudio.project` is empty: set it to a project id or title")
    token = read_token(config, data_root)
    try:
        from flywheel.labeling.labelstudio import LabelStudio
    except ImportError:
        raise ConfigError(
            f"{where}: key `labelstudio.url`: Label Studio's client needs httpx: pip install 'flywheel[labelstudio]'"
        ) from None
    return LabelStudio(config.url, token, config.project, config.timeout_seconds)


def read_token(config: LabelStudioConfig, data_root: Path) -> str:
    where = data_root / CONFIG_NAME
    if config.token_file:
        path = resolve(data_root, config.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: key `labelstudio.token_file`: cannot read {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"{where}: key `labelstudio.token_file`: {path} is empty; put the API token in it")
        return token
    token = os.environ.get(config.token_env, "").strip()
    if not token:
        raise ConfigError(
            f"{where}: key `labelstudio.token_env`: the environment variable {config.token_env} is not set; "
            "export Label Studio's API token in it (Account & Settings), or set labelstudio.token_file"
        )
    return token
