"""The training child process: `python -m flywheel.training.child SPEC_JSON`.

The only process that imports torch and Ultralytics (training/fit.py, training/evaluate.py).
It trains per the spec, evaluates the candidate (and the production checkpoint, when asked) on
the version's val split, and reports each step as a JSON line (flywheel/core/events.py) on the
file descriptor named by FLYWHEEL_EVENT_FD. Its stdout/stderr are the run's log. A crash here
ends this process only, never the daemon. Recovery finds orphaned children by this module's
name on their command line (flywheel/flow/recovery.py): keep it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path

from flywheel.core.events import ChildCancelled, ChildFailed
from flywheel.core.spec import CANCELLED_EXIT, TrainSpec
from flywheel.training.evaluate import bootstrap_intervals, evaluate
from flywheel.training.fit import train
from flywheel.training.process import STOP, Cancelled, Reporter


def _offline_environment(threads: int) -> None:
    # Must happen before `import ultralytics`: it reads these at import time.
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ["OMP_NUM_THREADS"] = str(threads)


def main(argv: list[str]) -> int:
    spec = TrainSpec.from_json(Path(argv[1]).read_text())
    fd = int(os.environ.get("FLYWHEEL_EVENT_FD", "1"))
    report = Reporter(os.fdopen(fd, "w", buffering=1))
    _offline_environment(spec.threads)
    try:
        STOP.install()  # inside: a signal that comes at once is still reported as a cancel
        best = None if spec.evaluate_only else train(spec, report)
        for target in spec.evaluate:
            checkpoint = Path(target.checkpoint) if target.checkpoint else best
            if checkpoint is None:
                raise ValueError(f"eval target {target.role}/{target.eval_set} names no checkpoint")
            evaluate(spec, checkpoint, target, report)
        if spec.bootstrap_samples:
            bootstrap_intervals(spec, report)
    except Cancelled as exc:
        print(f"flywheel: run cancelled: {exc}", file=sys.stderr)
        with contextlib.suppress(Cancelled):
            report.send(ChildCancelled(reason=str(exc)))
        return CANCELLED_EXIT
    except BaseException as exc:  # report any failure, then exit non-zero
        traceback.print_exc()
        with contextlib.suppress(Cancelled):
            report.send(ChildFailed(error=f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
