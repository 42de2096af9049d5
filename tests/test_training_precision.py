"""training/precision.py: mixed precision only where the hardware runs it natively.

The decision is pure and tested on every branch here; the probe is checked against PyTorch's
own answers on this machine, and tests/test_training_strategies.py checks on a real training
that what was decided is what Ultralytics trained with.
"""

from __future__ import annotations

import pytest
import torch

from flywheel.training import precision


def test_a_cpu_with_bfloat16_instructions_trains_in_bfloat16():
    decided = precision.decide(True, "cpu", cpu_bf16=True, capability="AVX512")
    assert decided.amp is True and "bfloat16 autocast" in decided.why and "AVX512" in decided.why


def test_a_cpu_without_them_trains_in_fp32_and_says_why():
    decided = precision.decide(True, "cpu", cpu_bf16=False, capability="AVX2")
    assert decided.amp is False
    assert decided.why.startswith("fp32: this CPU (AVX2) has no bfloat16 instructions")
    assert "benchmarks/precision.py" in decided.why


@pytest.mark.parametrize("device", ["0", "0,1", "cuda:0", "mps"])
def test_an_accelerator_keeps_mixed_precision_whatever_the_cpu(device: str):
    assert precision.decide(True, device, cpu_bf16=False, capability="AVX2").amp is True


@pytest.mark.parametrize("device", ["cpu", "0"])
def test_amp_false_is_fp32_everywhere(device: str):
    decided = precision.decide(False, device, cpu_bf16=True, capability="AMX")
    assert decided == precision.Precision(False, "fp32: training.amp = false")


def test_the_probe_gives_pytorchs_own_answers_on_this_machine():
    native, capability = precision.probe()
    assert capability == torch.backends.cpu.get_cpu_capability()
    assert native == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert precision.for_this_machine(True, "cpu").amp is native
