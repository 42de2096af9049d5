"""The labeling round trip through the LabelingTool port: push the images to label next with
production's boxes as pre-annotations, and pull what people finished as an inbox batch.

A pull takes each finished annotation once (flywheel.core.labeling.to_pull against the marks
in the database), writes the batch into the inbox as a person would drop it, then records the
marks. The batch's name is a hash of the annotations in it, so a pull cut off between the two
steps writes the same batch again next time, and ingest, which knows a batch by its content,
takes it once: nothing is lost and nothing is versioned twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from flywheel.core.hashing import sha256_bytes
from flywheel.core.labeling import NewTask, PullMark, PullResult, regions_of, to_pull, yolo_label
from flywheel.core.ports import InboxDrop, LabelingTool, LabelPulls
from flywheel.core.prediction import Prediction

BATCH_PREFIX = "labelstudio-"


@dataclass
class PushResult:
    project: str
    tasks: list[int] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)  # the images' names, in the order of `tasks`
    already: list[str] = field(default_factory=list)  # names of images the project had already


def push(
    tool: LabelingTool, class_names: Sequence[str], model: str, chosen: Sequence[tuple[Prediction, bytes]]
) -> PushResult:
    """Send `chosen` (each prediction with its image's bytes), in their order, as tasks whose
    pre-annotation is the prediction (`model_version` = `model`); an image the project already
    has is not sent again. The project is made from `class_names` when it does not exist."""
    project = tool.ensure_project(class_names)
    there = tool.pushed_images()
    result = PushResult(project)
    tasks = []
    for prediction, image in chosen:
        sha = sha256_bytes(image)
        if sha in there:
            result.already.append(prediction.name)
            continue
        there.add(sha)
        regions = regions_of(prediction, class_names)
        tasks.append(
            NewTask(prediction.name, sha, image, prediction.width, prediction.height, model, prediction.score, regions)
        )
    if tasks:
        result.tasks = tool.push(tasks)
        result.pushed = [t.name for t in tasks]
    return result


def pull(tool: LabelingTool, pulls: LabelPulls, inbox: InboxDrop) -> PullResult:
    """Every annotation finished since the last pull, as one inbox batch (images, YOLO labels,
    data.yaml with the project's labels as class names, then the marker)."""
    project_key = tool.project_key()
    names = tool.class_names()
    chosen, waiting = to_pull(tool.tasks(), pulls.marks(project_key))
    result = PullResult(waiting=waiting)
    if not chosen:
        return result
    files: dict[str, bytes] = {}
    for item in chosen:
        task = item.task
        stem = f"t{task.id}-{PurePosixPath(task.name).stem}"
        suffix = PurePosixPath(task.image_ref.split("?")[0]).suffix or PurePosixPath(task.name).suffix
        files[f"images/{stem}{suffix}"] = tool.image(task)
        text, unknown = yolo_label(item.annotation.regions, names)
        files[f"labels/{stem}.txt"] = text.encode()
        if unknown:
            result.unknown_labels[task.id] = unknown
        (result.relabels if item.relabel else result.tasks).append(task.id)
    files["data.yaml"] = ("names:\n" + "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))).encode()
    taken = sorted((i.task.id, i.annotation.id, i.annotation.updated_at) for i in chosen)
    digest = hashlib.sha256(json.dumps([project_key, taken]).encode()).hexdigest()[:12]
    result.batch = f"{BATCH_PREFIX}{digest}"
    inbox.drop(result.batch, files)  # False: dropped by an earlier, cut-off pull; recorded now
    pulls.record(project_key, [PullMark(t, a, u, result.batch) for t, a, u in taken])
    return result


class Labeling:
    """The round trip's use cases bound to the ports the composition root built."""

    def __init__(self, tool: LabelingTool, pulls: LabelPulls, inbox: InboxDrop, webhook_url: str = ""):
        self.tool = tool
        self._pulls = pulls
        self._inbox = inbox
        self.webhook_url = webhook_url  # "" = none; else the project posts to it (the daemon's hook)

    def push(self, class_names: Sequence[str], model: str, chosen: Sequence[tuple[Prediction, bytes]]) -> PushResult:
        """`push`, then, with a webhook, make sure the project (perhaps made just now) posts to it."""
        result = push(self.tool, class_names, model, chosen)
        if self.webhook_url:
            self.tool.ensure_webhook(self.webhook_url)
        return result

    def pull(self) -> PullResult:
        return pull(self.tool, self._pulls, self._inbox)

    def ensure_webhook(self) -> bool:
        """The project posts to the webhook URL (the daemon's /hooks/labelstudio) when an
        annotation is made or changed; True when registered now."""
        return self.tool.ensure_webhook(self.webhook_url)
