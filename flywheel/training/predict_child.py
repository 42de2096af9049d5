"""The predict child process: `python -m flywheel.training.predict_child REQUEST_JSON`.

Runs one checkpoint over a list of images, one image at a time, and reports each result as a
JSON line on the file descriptor named by FLYWHEEL_EVENT_FD (stdout when unset); its own
stdout/stderr are the log. torch and Ultralytics are imported here only, never by the CLI.

Request: {checkpoint, images: [path, ...], conf, iou, imgsz (0: the model's training imgsz),
fallback_imgsz, device, threads, max_det, embed}. Events (flywheel/core/predict_events.py), in
order: PredictStarted; ImagePredicted (and ImageEmbedded after it, with "embed": true) or
ImageFailed (this image is skipped; the others go on) per image; PredictDone. Or
PredictFailed: the whole run (the checkpoint does not load, or is not a detector).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from flywheel.core.predict_events import (
    Detection,
    ImageEmbedded,
    ImageFailed,
    ImagePredicted,
    PredictDone,
    PredictEvent,
    PredictFailed,
    PredictStarted,
    encode,
)


class _Events:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def send(self, event: PredictEvent) -> None:
        self.stream.write(encode(event) + "\n")
        self.stream.flush()


def predict(request: dict[str, Any], events: _Events) -> None:
    from ultralytics import YOLO

    started = time.monotonic()
    model = YOLO(request["checkpoint"])
    if model.task != "detect":
        raise ValueError(f"{request['checkpoint']} is a {model.task} model; pre-labels need a detection model")
    imgsz = int(request.get("imgsz") or model.overrides.get("imgsz") or request.get("fallback_imgsz") or 640)
    names = tuple(str(model.names[i]) for i in sorted(model.names))
    events.send(PredictStarted(names=names, imgsz=imgsz, task=str(model.task)))
    seen: list[tuple[float, ...]] = []
    embed = bool(request.get("embed")) and _watch_head(model.model, seen)
    for index, path in enumerate(request["images"]):
        seen.clear()  # a pass that skips the head must not send the previous image's vector
        try:
            (result,) = model.predict(
                source=path,
                conf=request["conf"],
                iou=request["iou"],
                imgsz=imgsz,
                device=request.get("device", "cpu"),
                max_det=request.get("max_det", 300),
                verbose=False,
                save=False,
            )
            height, width = result.orig_shape
            boxes = tuple(
                Detection(int(c), round(float(p), 5), *(round(float(v), 2) for v in xyxy))
                for c, p, xyxy in zip(
                    result.boxes.cls.tolist(), result.boxes.conf.tolist(), result.boxes.xyxy.tolist(), strict=True
                )
            )
        except Exception as exc:  # this image only: report it and go on
            traceback.print_exc()
            events.send(ImageFailed(index=index, error=f"{type(exc).__name__}: {exc}"))
            continue
        events.send(ImagePredicted(index=index, width=int(width), height=int(height), boxes=boxes))
        if embed and seen:  # the last pass is the image's (a GPU's first call warms up before it)
            events.send(ImageEmbedded(index=index, vector=seen[-1]))
    events.send(PredictDone(seconds=round(time.monotonic() - started, 2)))


def _watch_head(network: Any, seen: list[tuple[float, ...]]) -> bool:
    """Append, at every forward pass, what the detection head receives: each feature map
    averaged over its pixels, concatenated and L2-normalised (non-finite maps are skipped). A
    hook on the prediction's own pass, so embeddings cost no second forward (Ultralytics'
    `model.embed` would run every image again). False when the checkpoint has no PyTorch head to
    hook (an exported model): then no embedding is sent, and suggest says its pick fell back."""
    import torch

    head = getattr(getattr(network, "model", None), "__getitem__", None)
    if not isinstance(network, torch.nn.Module) or head is None:
        print(f"no embeddings: {type(network).__name__} is not a PyTorch detection model", flush=True)
        return False

    def keep(_head: Any, args: tuple[Any, ...]) -> None:
        pooled = torch.cat([level.float().mean(dim=(2, 3)) for level in args[0]], dim=1)[0]
        if bool(torch.isfinite(pooled).all()):
            pooled = pooled / pooled.norm().clamp_min(1e-12)
            seen.append(tuple(round(float(v), 5) for v in pooled.tolist()))

    network.model[-1].register_forward_pre_hook(keep)
    return True


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    fd = int(os.environ.get("FLYWHEEL_EVENT_FD", "1"))
    events = _Events(os.fdopen(fd, "w", buffering=1))
    # Before `import ultralytics`: it reads these at import time.
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ["OMP_NUM_THREADS"] = str(request.get("threads") or 1)
    try:
        predict(request, events)
    except BaseException as exc:
        traceback.print_exc()
        with contextlib.suppress(OSError):
            events.send(PredictFailed(error=f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
