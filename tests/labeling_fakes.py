"""In-memory twins of the labeling ports (flywheel.core.ports LabelingTool, LabelPulls,
InboxDrop) for unit tests of flow/labeling.py; tests/test_labelstudio_loop.py proves the same
flow on a real Label Studio, the database and the inbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from flywheel.core.errors import LabelingToolUnavailable
from flywheel.core.labeling import Annotation, LabeledTask, NewTask, PullMark, Region


class MemoryLabelingTool:
    def __init__(self, names: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.project_made = False
        self.pushed: list[NewTask] = []
        self.task_list: list[LabeledTask] = []
        self.images: dict[int, bytes] = {}
        self.down = False
        self.webhooks: list[str] = []
        self._clock = 0

    def _up(self) -> None:
        if self.down:
            raise LabelingToolUnavailable("Label Studio at memory:// (labelstudio.url): cannot be reached")

    def ensure_project(self, class_names: Sequence[str]) -> str:
        self._up()
        if not self.names:
            self.names, self.project_made = list(class_names), True
        return "memory project"

    def project_key(self) -> str:
        return "memory://projects/1"

    def class_names(self) -> list[str]:
        self._up()
        return list(self.names)

    def pushed_images(self) -> set[str]:
        self._up()
        return {t.image_sha256 for t in self.pushed}

    def push(self, tasks: Sequence[NewTask]) -> list[int]:
        self._up()
        ids = []
        for t in tasks:
            task_id = len(self.task_list) + 1
            self.pushed.append(t)
            self.task_list.append(LabeledTask(task_id, t.name, f"/data/upload/{t.name}", t.image_sha256))
            self.images[task_id] = t.image
            ids.append(task_id)
        return ids

    def tasks(self) -> list[LabeledTask]:
        self._up()
        return list(self.task_list)

    def image(self, task: LabeledTask) -> bytes:
        self._up()
        return self.images[task.id]

    def ensure_webhook(self, url: str) -> bool:
        self._up()
        if url in self.webhooks:
            return False
        self.webhooks.append(url)
        return True

    # --- what a person does in the tool
    def annotate(self, task_id: int, regions: Sequence[Region], cancelled: bool = False, edit: int = 0) -> int:
        """A new annotation (edit=0), or a new edit of annotation `edit`; returns its id."""
        self._clock += 1
        stamp = f"2030-01-01T00:00:{self._clock:02d}.000000Z"
        task = self.task_list[task_id - 1]
        if edit:
            annotations = tuple(
                replace(a, updated_at=stamp, regions=tuple(regions)) if a.id == edit else a for a in task.annotations
            )
            annotation_id = edit
        else:
            annotation_id = 100 * task_id + len(task.annotations) + 1
            annotations = (*task.annotations, Annotation(annotation_id, stamp, cancelled, tuple(regions)))
        self.task_list[task_id - 1] = replace(task, annotations=annotations)
        return annotation_id


class MemoryLabelPulls:
    def __init__(self) -> None:
        self.rows: dict[str, dict[int, PullMark]] = {}

    def marks(self, project: str) -> dict[int, PullMark]:
        return dict(self.rows.get(project, {}))

    def record(self, project: str, marks: Sequence[PullMark]) -> None:
        self.rows.setdefault(project, {}).update({m.task_id: m for m in marks})


class MemoryInbox:
    def __init__(self) -> None:
        self.batches: dict[str, dict[str, bytes]] = {}

    def drop(self, name: str, files: Mapping[str, bytes]) -> bool:
        if name in self.batches:
            return False
        self.batches[name] = dict(files)
        return True
