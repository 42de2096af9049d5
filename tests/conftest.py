"""Shared fixtures. Ultralytics' settings go to a temp folder and nothing may touch the network."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

# Small enough for a 2-core CPU: a real YOLOv8n training at 64 px takes seconds.
TINY_CONFIG = """\
[inbox]
settle_seconds = 0.5
rescan_seconds = 2.0

[dataset]
val_fraction = 0.25

[training]
epochs_scratch = 2
epochs_warm = 1
imgsz = 64
batch = 8

[metrics]
port = {port}
"""


@pytest.fixture(autouse=True, scope="session")
def _ultralytics_config_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("yolo-config")
    os.environ["YOLO_CONFIG_DIR"] = str(folder)
    os.environ["MPLCONFIGDIR"] = str(folder / "mpl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An initialised data root with the tiny test config."""
    from flywheel.app import init_data_root

    return init_data_root(tmp_path / "root", TINY_CONFIG.format(port=free_port()))
