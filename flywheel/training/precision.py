"""Whether a training runs in mixed precision, decided on the machine that trains.

`training.amp = true` asks for mixed precision where the hardware runs it natively: float16 on
a GPU (Ultralytics' autocast), bfloat16 autocast on a CPU with bfloat16 instructions
(AVX512-BF16 or AMX). On a CPU without them PyTorch emulates bfloat16, and a yolov8n step at
320 px, batch 16, took 13.2 s against fp32's 1.4-1.7 s on a 2-core AVX2 EPYC
(benchmarks/precision.py): there the run trains in fp32, at the same mAP (docs/benchmarks.md,
Transfer: 0.5666 fp32 against 0.5694 bfloat16). The decision is taken in the training child
(a Ray trainer node may differ from the daemon's machine) and written to the run's log.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    amp: bool
    why: str


def decide(requested: bool, device: str, cpu_bf16: bool, capability: str) -> Precision:
    """Mixed precision or fp32, and why (pure: the probe's answers come in as arguments)."""
    if not requested:
        return Precision(False, "fp32: training.amp = false")
    if device != "cpu":  # training.device is validated: "cpu", GPU indices or "mps"
        return Precision(True, f"mixed precision on device {device!r} (float16 autocast)")
    if cpu_bf16:
        return Precision(True, f"bfloat16 autocast: this CPU ({capability}) has bfloat16 instructions")
    return Precision(
        False,
        f"fp32: this CPU ({capability}) has no bfloat16 instructions (AVX512-BF16 or AMX), and "
        "emulated bfloat16 is several times slower than fp32 (benchmarks/precision.py)",
    )


def probe() -> tuple[bool, str]:
    """(native bfloat16 on this CPU, PyTorch's name for its vector capability)."""
    import torch

    capability = str(torch.backends.cpu.get_cpu_capability())
    # torch.cpu's ISA checks are private (underscored) but public in effect since 2.1; an older
    # or different build without them counts as "no native bfloat16": fp32 is the safe side
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    native = any(bool(check()) for check in checks if check is not None)
    return native, capability


def for_this_machine(requested: bool, device: str) -> Precision:
    native, capability = probe()
    return decide(requested, device, native, capability)
