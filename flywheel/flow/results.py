"""What one cycle leaves: the run, the model it made, the gate's decision."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.core.gate import GateDecision
from flywheel.core.records import Model, Run


@dataclass(frozen=True)
class CycleResult:
    run: Run
    model: Model | None
    decision: GateDecision | None
    challenger: CycleResult | None = None  # the negative-transfer guard's scratch run, when it ran
