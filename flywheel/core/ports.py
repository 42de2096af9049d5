"""The ports the core's workflows call, in one file. Adapters implement them; the core and the
flows never import an adapter (the composition root, `flywheel.app`, wires them in)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from flywheel.core.domain import ManifestItem, RunState, StartKind
from flywheel.core.events import TrainingEvent
from flywheel.core.exports import Artifact, ExportJob
from flywheel.core.ingest_result import IngestResult
from flywheel.core.labeling import LabeledTask, NewTask, PullMark
from flywheel.core.ledger import Action
from flywheel.core.mirror import MirrorState, MirrorStatus, RunReport, VersionReport
from flywheel.core.predict_events import PredictEvent
from flywheel.core.prediction import ImageInput, PredictOutcome, PredictRequest
from flywheel.core.records import (
    KEEP,
    Epoch,
    Evaluation,
    GateRecord,
    Keep,
    LedgerEntry,
    Model,
    ProductionChange,
    Run,
    Version,
)
from flywheel.core.screening import Hashed, Screening
from flywheel.core.spec import TrainSpec


class Trainer(Protocol):
    """Trains and evaluates per a spec, somewhere other than the caller's process."""

    def run(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]: ...

    def cancel(self) -> None: ...


@runtime_checkable
class RemoteTrainer(Trainer, Protocol):
    """A trainer whose trainings outlive the daemon (a Ray cluster's jobs): checked before
    trainings, and followed again after a restart instead of trained twice."""

    def check(self, data_root: Path) -> str:
        """Where trainings go, or ExecutorUnavailable / DataRootError when they cannot go there."""
        ...

    def adopts(self, run_id: int) -> bool:
        """Whether `run` would follow the run's job that runs or finished rather than start one."""
        ...


class Exporter(Protocol):
    """Exports a checkpoint for serving and scores each artifact and the .pt alike, somewhere
    other than the caller's process (flywheel.training.export): the .pt as scored, the
    artifacts written under `out_dir`, and per format the error of those that failed."""

    def export(
        self, checkpoint: Path, out_dir: Path, job: ExportJob
    ) -> tuple[Artifact, dict[str, Artifact], dict[str, str]]: ...


class BatchIngester(Protocol):
    """Turns a dropped batch (a folder or an archive) into records, stored objects and the next
    dataset version (flywheel.ingest.pipeline.BatchPipeline). `move`: take it out of the inbox
    afterwards; `again`: even if the same content was ingested before."""

    def ingest(self, batch_dir: Path, *, move: bool, again: bool = False) -> IngestResult: ...


class RunStopper(Protocol):
    """Asks whichever process runs a training to stop it after its current batch (the run
    folder's CANCEL file, flywheel.training.local_trainer.request_cancel)."""

    def request_stop(self, run_id: int, reason: str) -> None: ...


class Predictor(Protocol):
    """Runs a model over images and says what it found in each (flywheel.training.local_predictor:
    a child process). An in-process runtime implements the same call. `on_event` hears each
    predict event as it comes (progress); the outcome holds every image's answer."""

    def predict(
        self,
        request: PredictRequest,
        images: Sequence[ImageInput],
        on_event: Callable[[PredictEvent], None] | None = None,
    ) -> PredictOutcome: ...


class LabelingTool(Protocol):
    """A labeling tool's project (flywheel.labeling.labelstudio: Label Studio's REST API). Every
    failure to reach it or to be understood is LabelingToolUnavailable, naming the URL."""

    def ensure_project(self, class_names: Sequence[str]) -> str:
        """The configured project (made, with boxes of these classes, when the title names none);
        returns how to name it to people."""
        ...

    def project_key(self) -> str:
        """The project's identity for the pull marks: the tool's URL and the project's id."""
        ...

    def class_names(self) -> list[str]:
        """The project's labels, in its labeling config's order: the classes a pull writes."""
        ...

    def pushed_images(self) -> set[str]:
        """The sha256 of every image flywheel pushed to the project (so none goes twice)."""
        ...

    def push(self, tasks: Sequence[NewTask]) -> list[int]:
        """Create the tasks, their images and pre-annotations; returns the task ids."""
        ...

    def tasks(self) -> list[LabeledTask]:
        """Every task of the project with its annotations (skips included)."""
        ...

    def image(self, task: LabeledTask) -> bytes: ...

    def ensure_webhook(self, url: str) -> bool:
        """The project posts to `url` when an annotation is made or changed; True when it
        was registered now, False when it was already."""
        ...


class LabelPulls(Protocol):
    """What was pulled from a labeling project, per task (flywheel.store.label_pulls: a table)."""

    def marks(self, project: str) -> dict[int, PullMark]: ...

    def record(self, project: str, marks: Sequence[PullMark]) -> None:
        """Keep these marks (one per task: a newer one replaces the task's old one), in one transaction."""
        ...


class InboxDrop(Protocol):
    """Puts a labeled batch into the inbox as a person would: whole, then its READY marker
    (flywheel.ingest.drop). `files`: relpath -> bytes."""

    def drop(self, name: str, files: Mapping[str, bytes]) -> bool:
        """False when a batch of this name is there already (in the inbox or done with)."""


class ScreenFiles(Protocol):
    """The files a screening reads and writes (flywheel.ingest.screen_files.ScreenFolders)."""

    def stage(
        self, name: str, items: Sequence[ManifestItem]
    ) -> tuple[list[ImageInput], dict[str, list[tuple[int, float, float, float, float]]]]:
        """The items' images ready for the Predictor (under a work folder `name`), and each
        one's boxes (class, cx, cy, w, h normalised) by image sha256."""
        ...

    def clear(self, name: str) -> None: ...

    def label_classes(self, items: Iterable[ManifestItem]) -> list[int]:
        """The class id of every box of the items' labels."""
        ...

    def fine_distance(self, a: str, b: str) -> int | None:
        """Bits apart of two stored images' fine (512-bit) difference hashes; None when either
        is not a stored image (a golden one)."""
        ...

    def golden_hashes(self, folder: Path | None) -> list[Hashed]:
        """The golden set's images' difference hashes (none without a golden set)."""
        ...

    def quarantine(self, batch: str, items: Iterable[ManifestItem], report: dict[str, object]) -> Path:
        """Copies of the items' files and the report under quarantine/<batch>/screen/."""
        ...


class Notifier(Protocol):
    """Tells the outside world that production changed (flywheel.service.notify: a command, a
    webhook); must not block the caller."""

    def notify(self, change: ProductionChange) -> None: ...

    def wait(self, timeout: float = 30.0) -> None:
        """Until the notifications under way are sent (a CLI command waits before it exits)."""


class NullNotifier:
    def notify(self, change: ProductionChange) -> None:
        pass

    def wait(self, timeout: float = 30.0) -> None:
        pass


class Tracker(Protocol):
    """An outside run tracker and model registry that mirrors flywheel's (MLflow:
    flywheel.mirror.mlflow; its in-memory twin: flywheel.mirror.memory). Each call is keyed by
    flywheel's names, so a call repeated after an outage finds what the first one made instead
    of making it twice. An unreachable or refusing tracker raises MirrorUnavailable."""

    def log_run(self, report: RunReport) -> str:
        """The tracker's id of the run logged for `report.run`, logging it if it is not there."""
        ...

    def register_version(self, report: VersionReport, run_ref: str) -> str:
        """The version registered for `report.model` (from run `run_ref`), registering it if needed."""
        ...

    def set_alias(self, alias: str, version: str) -> None: ...


class MirrorStateStore(Protocol):
    """Where the mirror keeps what the tracker is known to hold (flywheel.mirror.state: a file
    in the data root)."""

    def load(self) -> MirrorState: ...

    def save(self, state: MirrorState) -> None: ...

    def hold(self) -> AbstractContextManager[object]:
        """One sync at a time across processes (the daemon and `flywheel mirror sync`)."""
        ...


class RegistryMirror(Protocol):
    """Mirrors the store's runs, models and production changes into a tracker, never in the way
    of them: `sync` brings the tracker up to the store as far as it answers and says what still
    waits; it does not raise for an unreachable tracker. Between failed tries it waits (backoff)
    unless `force`d."""

    def sync(self, force: bool = False) -> MirrorStatus: ...

    def status(self) -> MirrorStatus:
        """What waits now and how the last try went, without asking the tracker."""
        ...


class NullMirror:
    """No tracker configured (mlflow.tracking_uri empty)."""

    def sync(self, force: bool = False) -> MirrorStatus:
        return MirrorStatus(target="", up=None)

    def status(self) -> MirrorStatus:
        return MirrorStatus(target="", up=None)


class Observer(Protocol):
    """Told of what happens as it happens (the Prometheus adapter is one)."""

    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None: ...

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None: ...

    def training_event(self, event: TrainingEvent) -> None: ...

    def training_finished(self, outcome: RunState, seconds: float) -> None: ...


class NullObserver:
    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        pass

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None:
        pass

    def training_event(self, event: TrainingEvent) -> None:
        pass

    def training_finished(self, outcome: RunState, seconds: float) -> None:
        pass


class Objects(Protocol):
    """Content-addressed files, `<sha[:2]>/<sha><suffix>` (flywheel.store.objects.ObjectStore)."""

    def path(self, sha: str) -> Path: ...

    def put_file(self, source: Path, sha: str | None = None, durable: bool = True) -> str: ...

    def verify(self, sha: str) -> Path:
        """The object's path, after checking its bytes still hash to `sha` (IntegrityError if not)."""
        ...


class Datasets(Protocol):
    """Dataset versions laid out on disk for the trainer (flywheel.store.materialize)."""

    def materialize(self, version_id: int, class_names: list[str], manifest: Mapping[str, ManifestItem]) -> Path:
        """The version's data.yaml, building its folder if it is not there yet; the folder is
        the data.yaml's parent (the eval sets' subsets are written beside it)."""
        ...


class StorePort(Protocol):
    """The records the flows read and write (flywheel.store.Store implements it on SQLite and
    PostgreSQL). Each method is one transaction; every state change is checked against
    flywheel.core.domain's transition table (InvalidTransition); a missing id is NotFound; a
    database failure is StoreError. Results are flywheel.core.records values, ordered by id."""

    # --- dataset versions
    def latest_version(self) -> Version | None: ...

    def version(self, version_id: int) -> Version: ...

    def versions(self) -> list[Version]: ...

    def manifest(self, version_id: int) -> dict[str, ManifestItem]:
        """Every item of the version, by image sha256."""
        ...

    def items(self, version_id: int, image_shas: Iterable[str]) -> dict[str, ManifestItem]:
        """The version's items for these images (the ones it has), without its whole manifest."""
        ...

    # --- training runs and their epochs
    def create_run(
        self,
        version_id: int,
        start_kind: StartKind,
        start_checkpoint: str,
        start_model_id: int | None = None,
        epochs: int = 0,
        params: dict[str, Any] | None = None,
        purpose: str = "candidate",
        challenger_for: int | None = None,
        replay: dict[str, Any] | None = None,
    ) -> Run:
        """A QUEUED run (flywheel.core.records.Run's fields)."""
        ...

    def update_run(
        self,
        run_id: int,
        state: RunState | None = None,
        *,
        error: str | Keep | None = KEEP,
        model_id: int | None = None,
        epochs_done: int | None = None,
        resumed: int | None = None,
        batch: int | None = None,
        batches: int | None = None,
        warm_tensors_matched: int | None = None,
        warm_tensors_total: int | None = None,
        params: dict[str, Any] | None = None,
        guard: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
    ) -> Run:
        """Move the run to `state` (checked; stamps started_at / finished_at) and set the fields
        given; a field left None (`error`: KEEP, as None clears it) keeps its value."""
        ...

    def run(self, run_id: int) -> Run: ...

    def runs(self) -> list[Run]: ...

    def add_epoch(self, epoch: Epoch) -> None:
        """Record an epoch; one already recorded under its (run, epoch) is replaced."""
        ...

    def epochs(self, run_id: int) -> list[Epoch]:
        """The run's epochs, in epoch order."""
        ...

    def delete_epochs(self, run_id: int) -> None: ...

    # --- models and the production pointer
    def add_model(
        self, sha256: str, run_id: int, version_id: int, class_names: list[str], parent_model_id: int | None = None
    ) -> Model:
        """A CANDIDATE model (flywheel.core.records.Model's fields)."""
        ...

    def model(self, model_id: int) -> Model: ...

    def models(self) -> list[Model]: ...

    def production(self) -> Model | None: ...

    def previous_production(self, current_id: int) -> Model:
        """The model production before `current_id` (RegistryError when there is none)."""
        ...

    def reject(self, model_id: int, reason: str, actor: str = "flywheel") -> LedgerEntry: ...

    def set_production(
        self, model_id: int, action: Action, actor: str, reason: str, forced: bool = False
    ) -> LedgerEntry:
        """Retire the production model and make `model_id` production, with its ledger entry,
        in one transaction."""
        ...

    # --- the ledger and the pin
    def set_pin(self, pinned: bool, actor: str, reason: str) -> LedgerEntry: ...

    def pin(self) -> LedgerEntry | None:
        """The pin entry holding promotions, or None when production is not pinned."""
        ...

    def append_ledger(self, action: Action, actor: str, reason: str, model_id: int | None = None) -> LedgerEntry: ...

    def ledger(self) -> list[LedgerEntry]: ...

    # --- scores and gate decisions
    def evaluation(self, model_sha256: str, eval_sha256: str) -> Evaluation | None: ...

    def put_evaluation(self, evaluation: Evaluation) -> None:
        """Cache a score; one cached under the same (model, eval set) is replaced."""
        ...

    def add_gate_decision(self, gate: GateRecord) -> GateRecord:
        """Record a decision; the result carries its id and time."""
        ...

    def gate_decisions(self) -> list[GateRecord]: ...

    # --- screenings (the data engine, flywheel/core/screening.py)
    def add_screening(self, screening: Screening) -> Screening:
        """Record a screening; the result carries its id and time."""
        ...

    def approve_screening(self, screening_id: int, actor: str) -> Screening:
        """Release a held screening (InvalidTransition when it is not held)."""
        ...

    def screenings(self, batch_id: int | None = None) -> list[Screening]:
        """Every screening (of one batch), oldest first; a batch's newest one is what counts."""
        ...

    def stored_hashes(self) -> list[Hashed]:
        """Every stored image's difference hash and split (ingest records them)."""
        ...
