"""Starting a flywheel child process (training, prediction): the one environment every child
runs in, and its start with the event pipe it reports on. Shared by the local trainer, the
local predictor and (for the environment) the Ray job submitter, so the children agree on
where Ultralytics keeps its settings, that nothing is downloaded, and how many threads they use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO


def child_environment(event_fd: int, config_dir: Path, threads: int) -> dict[str, str]:
    """What a child needs in its environment, whichever executor starts it: its event pipe's
    descriptor, Ultralytics' settings in the data root, offline, and its threads."""
    return {
        "FLYWHEEL_EVENT_FD": str(event_fd),
        "YOLO_CONFIG_DIR": str(config_dir),
        "MPLCONFIGDIR": str(config_dir / "matplotlib"),
        "YOLO_OFFLINE": "true",
        "YOLO_AUTOINSTALL": "false",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    }


def start_child(
    python: str, module: str, argument: Path, log_file: IO[bytes], config_dir: Path, threads: int
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """Start `python -m module argument`, its output going to `log_file`; returns the process
    and the read end of its event pipe, which reaches EOF when the child exits (the child
    holds the only writer)."""
    read_fd, write_fd = os.pipe()
    env = {**os.environ, **child_environment(write_fd, config_dir, threads)}
    try:
        proc = subprocess.Popen(
            [python, "-m", module, str(argument)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            env=env,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return proc, os.fdopen(read_fd, "r")
