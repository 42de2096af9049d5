"""The model registry: checkpoints stored by content, the production pointer, rollback, pin.

The database says which model is production (one row, enforced by a unique index); the
folder `<data_root>/production` mirrors it for whatever serves the model. That folder is a
symlink to `.production/<model>/` (`model.pt`, each verified export — `model.onnx`,
`model_openvino_model/`, `model.torchscript`, `model.engine` — and `model.json` listing them),
swapped with one `rename`, so a reader sees the old set or the new set, never a mix or a torn
file. Every change runs
under a lock file, so the daemon promoting and the CLI rolling back in the same instant end
with the database and the folder agreeing.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flywheel.core.domain import ModelStatus, model_name, run_name, version_name
from flywheel.core.errors import ExportFailed, FlywheelError, IntegrityError, RegistryError
from flywheel.core.faults import crash_point
from flywheel.core.hashing import sha256_file
from flywheel.core.ledger import Action
from flywheel.core.ports import Notifier, NullMirror, NullNotifier, Objects, RegistryMirror, StorePort
from flywheel.core.records import LedgerEntry, Model, ProductionChange, as_utc
from flywheel.flow.exports import ExportShelf, copy_artifact
from flywheel.flow.gc import removed_note

log = logging.getLogger(__name__)


def current_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class Registry:
    def __init__(
        self,
        store: StorePort,
        checkpoints: Objects,  # models/<sha[:2]>/<sha>.pt (flywheel.store.ObjectStore with ".pt")
        production_link: Path,
        notifier: Notifier | None = None,  # None: nobody is told (tests, one-off tools)
        exports: ExportShelf | None = None,  # None: production is model.pt alone
        imgsz: int = 640,  # of a model whose run did not record one
        mirror: RegistryMirror | None = None,  # None: mirrored nowhere ([mlflow] off)
    ):
        self.store = store
        self.exports = exports
        self.imgsz = imgsz
        self.mirror: RegistryMirror = mirror or NullMirror()
        self.checkpoints = checkpoints
        self.production_link = production_link
        self.notifier: Notifier = notifier or NullNotifier()
        self._published = production_link.parent / ".production"
        self._lock_path = production_link.parent / ".production.lock"

    def add_candidate(
        self, best_pt: Path, run_id: int, version_id: int, parent_model_id: int | None, class_names: list[str]
    ) -> Model:
        sha = self.checkpoints.put_file(best_pt)
        for model in self.store.models():  # a resumed run registered this very checkpoint before it died
            if model.run_id == run_id and model.sha256 == sha:
                return model
        return self.store.add_model(
            sha256=sha,
            run_id=run_id,
            version_id=version_id,
            parent_model_id=parent_model_id,
            class_names=class_names,
        )

    def checkpoint(self, model: Model) -> Path:
        """The model's checkpoint, verified against its recorded sha256 (it is a pickle)."""
        try:
            return self.checkpoints.verify(model.sha256)
        except IntegrityError as exc:
            gone = removed_note(self.checkpoints.path(model.sha256))
            raise IntegrityError(f"model {model_name(model.id)}: {gone or exc}") from None

    # --- production changes ---------------------------------------------------------------
    def promote(self, model_id: int, reason: str, actor: str = "flywheel", force: bool = False) -> LedgerEntry:
        """Make `model_id` production. The gate calls this for a candidate it passed; a person
        may promote a retired model, or with `force` a rejected one."""
        self.verify_exports(model_id)  # before the lock: it takes seconds to minutes
        with self._locked():
            model = self.store.model(model_id)
            if model.status == ModelStatus.PRODUCTION:
                raise RegistryError(f"{model_name(model_id)} is already in production")
            self.checkpoint(model)
            entry = self.store.set_production(model_id, Action.PROMOTE, actor, reason, forced=force)
            crash_point("promote.committed")
            self.publish()
        self._announce(entry)
        return entry

    def finish_promotion(self, model_id: int) -> None:
        """A promotion committed by a step that stopped before production/ was swapped and the
        change announced (a kill, or the database gone just then): swap and announce now. At
        least once: a step that stopped just after announcing is announced again."""
        ledger = self.store.ledger()
        entry = next((e for e in reversed(ledger) if e.model_id == model_id and e.action == Action.PROMOTE), None)
        if entry is None:
            return
        with self._locked():
            self.publish()
        self._announce(entry)

    def reject(self, model_id: int, reason: str) -> LedgerEntry:
        return self.store.reject(model_id, reason)

    def rollback(self, reason: str, to: int | None = None, actor: str | None = None) -> LedgerEntry:
        """Make the previous production model (or `to`) production again. No training, no eval."""
        with self._locked():
            current = self.store.production()
            if current is None:
                raise RegistryError("no model is in production yet, so there is nothing to roll back")
            target = self.store.model(to) if to is not None else self.store.previous_production(current.id)
            if target.id == current.id:
                raise RegistryError(f"{model_name(current.id)} is already in production")
            if target.status != ModelStatus.RETIRED:
                raise RegistryError(
                    f"{model_name(target.id)} is {target.status}: rollback goes back to a model that "
                    "was in production before (status retired); see `flywheel models`"
                )
            self.checkpoint(target)  # refuse before switching if its file is damaged
            entry = self.store.set_production(target.id, Action.ROLLBACK, actor or current_actor(), reason)
            self.publish()
        log.info("rolled back production %s -> %s: %s", model_name(current.id), model_name(target.id), reason)
        self._announce(entry)
        return entry

    def pin(self, reason: str, actor: str | None = None) -> LedgerEntry:
        """Hold promotions: the gate still scores candidates, but none replaces production."""
        with self._locked():
            if self.store.pin() is not None:
                raise RegistryError("production is already pinned; `flywheel unpin --reason ...` releases it")
            return self.store.set_pin(True, actor or current_actor(), reason)

    def unpin(self, reason: str, actor: str | None = None) -> LedgerEntry:
        with self._locked():
            if self.store.pin() is None:
                raise RegistryError("production is not pinned")
            return self.store.set_pin(False, actor or current_actor(), reason)

    def verify_exports(self, model_id: int, eval_sets: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Export and verify each configured format (once per model; stored beside its
        checkpoint). ExportFailed when one failed or missed parity and the policy holds; with
        on_export_failure = "promote_pt" the failures are logged and returned (the model goes
        with the formats that passed)."""
        if self.exports is None:
            return []
        model = self.store.model(model_id)
        self.checkpoint(model)
        failures = self.exports.verify(model, self.imgsz_of(model), eval_sets)
        if not failures:
            return []
        name = model_name(model_id)
        what = "; ".join(f.explain() for f in failures)
        if self.exports.policy.on_failure == "promote_pt":
            log.error("model %s: export_failed: %s; promoted without those (production.on_export_failure)", name, what)
            return [f.as_dict() for f in failures]
        raise ExportFailed(
            f"{name} is not promoted: export_failed: {what}. Production is unchanged. Fix the runtime or the "
            "export, or widen production.export_tolerance, or drop the format from production.formats, or set "
            f'production.on_export_failure = "promote_pt" to promote without it; then `flywheel promote {name}`',
            [f.as_dict() for f in failures],
        )

    def imgsz_of(self, model: Model) -> int:
        """The image size the model was trained at: its exports' input size."""
        return int(self.store.run(model.run_id).params.get("imgsz", self.imgsz))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # waits: production changes take milliseconds
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _announce(self, entry: LedgerEntry) -> None:
        model = self.store.model(entry.model_id or 0)
        self.notifier.notify(
            ProductionChange(
                action=entry.action,
                model=model_name(model.id),
                previous=model_name(entry.previous_model_id) if entry.previous_model_id else None,
                actor=entry.actor,
                reason=entry.reason,
                at=entry.at,
                production=self.describe(model),
            )
        )
        try:  # after the commit and the swap: the mirror never holds a production change back
            self.mirror.sync()
        except FlywheelError as exc:
            log.error("production changed, its mirror did not follow yet: %s", exc)

    # --- the production folder ------------------------------------------------------------
    def publish(self) -> Path | None:
        """Make `production/` show the database's production model. Idempotent: the daemon
        calls it at start-up, so a crash between the database commit and the swap heals."""
        model = self.store.production()
        if model is None:
            return None
        name = model_name(model.id)
        folder = self._published / name
        stored = self.checkpoint(model)
        shared = (folder / "model.pt").is_file() and os.path.samefile(folder / "model.pt", stored)
        if not (folder / "model.json").is_file() or shared:  # shared: a hard link, so damage to one is damage to both
            tmp = self._published / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            # A copy, not a hard link: damage to one file must not be damage to both, so each
            # can restore the other (heal_production).
            _copy_durably(stored, tmp / "model.pt")
            if self.exports is not None:  # verified at promotion and stored: a rollback never re-exports
                folder_of = self.exports.folder(model.sha256)
                for record in self.exports.published(model.sha256).values():
                    if record["path"] != "model.pt":
                        copy_artifact(folder_of / record["path"], tmp / record["path"])
            (tmp / "model.json").write_text(json.dumps(self.describe(model), indent=2) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        if os.path.realpath(self.production_link) != str(folder.resolve()):
            link_tmp = self.production_link.with_name(".production-link.tmp")
            link_tmp.unlink(missing_ok=True)
            link_tmp.symlink_to(folder.relative_to(self.production_link.parent))
            os.replace(link_tmp, self.production_link)  # atomic: readers never see a gap
        for old in self._published.iterdir():
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def production_problem(self) -> str:
        """What is wrong with production's two copies (the registry's object and
        production/model.pt) against its recorded sha256; "" when both are intact."""
        stored_ok, published_ok, stored, published, model = self._production_copies()
        if model is None or (stored_ok and published_ok):
            return ""
        bad = [str(p) for p, ok in ((stored, stored_ok), (published, published_ok)) if not ok]
        name = model_name(model.id)
        return f"production model {name}: {' and '.join(bad)} do not hash to its sha256 {model.sha256}"

    def heal_production(self) -> str:
        """Restore a damaged copy of the production model from the intact one; returns what was
        restored ("" if nothing was wrong). Both damaged: IntegrityError, naming both and the fix."""
        stored_ok, published_ok, stored, published, model = self._production_copies()
        if model is None or (stored_ok and published_ok):
            return ""
        if stored_ok:  # missing: a crash between the production commit and the swap left no copy yet
            state = f"damaged (not the sha256 of {model_name(model.id)})" if published.is_file() else "missing"
            shutil.rmtree(published.parent, ignore_errors=True)
            self.publish()
            return f"{published} was {state}: copied again from {stored}"
        if published_ok:
            _copy_durably(published, stored.with_name(f".restore-{stored.name}"))
            os.replace(stored.with_name(f".restore-{stored.name}"), stored)
            return f"{stored} was damaged (not its sha256): restored from {published}"
        raise IntegrityError(  # the message from what was just hashed: no second read of either file
            f"production model {model_name(model.id)}: {stored} and {published} do not hash to its sha256 "
            f"{model.sha256}: both copies are damaged, nothing trains from it. Run "
            f"`flywheel rollback --reason '...'` to serve the previous model, or restore {stored} from a backup"
        )

    def _production_copies(self) -> tuple[bool, bool, Path, Path, Model | None]:
        model = self.store.production()
        if model is None:
            return True, True, Path(), Path(), None
        stored = self.checkpoints.path(model.sha256)
        published = self._published / model_name(model.id) / "model.pt"
        stored_ok = stored.is_file() and sha256_file(stored) == model.sha256
        published_ok = published.is_file() and sha256_file(published) == model.sha256
        return stored_ok, published_ok, stored, published, model

    def describe(self, model: Model) -> dict[str, Any]:
        version = self.store.version(model.version_id)
        score = self.store.evaluation(model.sha256, version.val_sha256)
        return {
            "id": model_name(model.id),
            "sha256": model.sha256,
            "version": version_name(model.version_id),
            "run": run_name(model.run_id),
            "parent": model_name(model.parent_model_id) if model.parent_model_id else None,
            "promoted_at": as_utc(model.promoted_at).isoformat() if model.promoted_at else None,
            "classes": model.class_names,
            "imgsz": self.imgsz_of(model),
            "artifacts": self.exports.published(model.sha256) if self.exports else {},
            "metrics": None
            if score is None
            else {
                "eval_set": f"{version_name(model.version_id)}/val",
                "map50_95": score.score.map50_95,
                "map50": score.score.map50,
                "precision": score.score.precision,
                "recall": score.score.recall,
                "per_class": score.score.per_class,
            },
        }


def _copy_durably(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with target.open("rb") as fh:
        os.fsync(fh.fileno())
