"""bfloat16 autocast against fp32 for one yolov8n training step on this CPU.

Why it exists: `training.amp = true` used to mean bfloat16 autocast on every CPU. That was 1.5x
faster per batch on a CPU with bfloat16 instructions, and 8-9x slower on a 2-core AMD EPYC with
AVX2 only, where PyTorch emulates bfloat16 (docs/benchmarks.md, "Precision"). flywheel now
decides per machine (flywheel/training/precision.py); this prints the figures it rests on.

    .venv/bin/python benchmarks/precision.py [--imgsz 320 --batch 16 --steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="flywheel-yolo-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision, after one untimed")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch
    from ultralytics.nn.tasks import DetectionModel

    from flywheel.training.precision import for_this_machine, probe

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=7, verbose=False).train()
    images = torch.randn(args.batch, 3, args.imgsz, args.imgsz)

    def step(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images)
            parts = out.values() if isinstance(out, dict) else out
            loss = sum(p.float().sum() for p in parts if torch.is_tensor(p))
        loss.backward()  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    native, capability = probe()
    print(
        f"CPU capability {capability}, native bfloat16 {native}; {args.threads} threads; yolov8n, "
        f"batch {args.batch} at {args.imgsz} px"
    )
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        step(bf16)  # warm-up: oneDNN picks its kernels on the first call
    for _ in range(args.steps):  # interleaved, so a change of load hits both alike
        for bf16 in (False, True):
            seconds[bf16].append(step(bf16))
            print(f"  {'bf16' if bf16 else 'fp32'} {seconds[bf16][-1]:.2f} s/step; load {os.getloadavg()[0]:.2f}")
    fp32, bf16 = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"median s/step: fp32 {fp32:.2f}, bf16 {bf16:.2f}; bf16 / fp32 = {bf16 / fp32:.2f}")
    print(f"flywheel's choice here: {for_this_machine(True, 'cpu').why}")


if __name__ == "__main__":
    main()
