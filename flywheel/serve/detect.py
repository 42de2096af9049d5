"""Pre- and post-processing around a runtime, with Ultralytics' own functions in the order its
DetectionPredictor applies them (engine/predictor.py, models/yolo/detect/predict.py): LetterBox
(minimal padding only for a batch of equal shapes on a dynamic-shape model), BGR to RGB, /255,
the model, `non_max_suppression`, `scale_boxes` back to the image. Same steps, same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel.serve.runtime import Runtime


@dataclass(frozen=True)
class Box:
    class_id: int
    score: float
    xyxy: tuple[float, float, float, float]  # pixels of the image as sent (after its EXIF rotation)


@dataclass(frozen=True)
class Params:
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300


def run(runtime: Runtime, images: list[np.ndarray], params: list[Params]) -> list[list[Box]]:
    """Detections for each BGR uint8 image (H, W, 3), each with its own thresholds."""
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    same_shapes = len({image.shape for image in images}) == 1
    letterbox = LetterBox(runtime.imgsz, auto=same_shapes and runtime.dynamic, stride=runtime.stride)
    boxed = np.stack([letterbox(image=image) for image in images])
    batch = torch.from_numpy(boxed).permute(0, 3, 1, 2).contiguous().flip(1).float().div_(255)
    with torch.inference_mode():
        raw = runtime.forward(batch)
        answers = []
        for index, (image, param) in enumerate(zip(images, params, strict=True)):
            kept: Any = non_max_suppression(
                raw[index : index + 1],
                param.conf,
                param.iou,
                max_det=param.max_det,
                end2end=runtime.end2end,
            )[0]
            kept[:, :4] = ops.scale_boxes(batch.shape[2:], kept[:, :4], image.shape)
            answers.append(
                [
                    Box(int(c), float(s), (float(x1), float(y1), float(x2), float(y2)))
                    for x1, y1, x2, y2, s, c in kept[:, :6].tolist()
                ]
            )
    return answers
