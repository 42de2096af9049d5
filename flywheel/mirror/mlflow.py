"""The Tracker port on MLflow (pip install 'flywheel[mlflow]'): a run per training in one
experiment, a version per model of one registered model, and its aliases.

Every call is keyed by flywheel's names as tags (`flywheel.run_id`, `flywheel.model_id`), so a
call repeated after an outage finds what the first one made: a run half logged when MLflow went
away (still RUNNING) is deleted and logged again whole; a version is created with its tags in
one request. Imported only by the composition root when `[mlflow] tracking_uri` is set: the
daemon's default install never loads MLflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flywheel.core.domain import RunState
from flywheel.core.errors import MirrorUnavailable
from flywheel.core.mirror import RunReport, VersionReport

T = TypeVar("T")
_STATUS = {RunState.SUCCEEDED: "FINISHED", RunState.FAILED: "FAILED", RunState.CANCELLED: "KILLED"}
_DONE = frozenset(_STATUS.values())


def _quiet_client_settings(timeout_seconds: float) -> None:
    """MLflow's client retries a failed request 7 times with backoff (minutes against a server
    that is down) and prints a URL to stdout at each run's end. flywheel retries itself, between
    steps, and its stdout is the CLI's: one try per request, within the timeout, nothing printed.
    They are process-wide environment settings; only this adapter's process uses MLflow."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(timeout_seconds)))
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


class MlflowTracker:
    def __init__(self, tracking_uri: str, experiment: str, registered_model: str, timeout_seconds: float = 10.0):
        _quiet_client_settings(timeout_seconds)
        self.uri, self.experiment, self.model = tracking_uri, experiment, registered_model
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id = ""

    def log_run(self, report: RunReport) -> str:
        return self._call(f"logging run {report.run}", lambda: self._log_run(report))

    def register_version(self, report: VersionReport, run_ref: str) -> str:
        return self._call(f"registering model {report.model}", lambda: self._register(report, run_ref))

    def set_alias(self, alias: str, version: str) -> None:
        self._call(
            f"moving alias {alias!r} to version {version}",
            lambda: self.client.set_registered_model_alias(self.model, alias, version),
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (MlflowException, OSError) as exc:  # requests' errors are OSErrors
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise MirrorUnavailable(
                f"MLflow at {self.uri} ([mlflow] tracking_uri): {what} failed: {first}. flywheel goes on and "
                "retries; `flywheel mirror sync` catches up by hand once MLflow answers"
            ) from None

    def _experiment(self) -> str:
        if not self._experiment_id:
            found = self.client.get_experiment_by_name(self.experiment)
            self._experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        return self._experiment_id

    def _log_run(self, report: RunReport) -> str:
        experiment = self._experiment()
        query = f"tags.`flywheel.run_id` = '{report.run}'"
        for found in self.client.search_runs([experiment], query, max_results=10):
            if found.info.status in _DONE:
                return str(found.info.run_id)
            self.client.delete_run(found.info.run_id)  # half logged when MLflow went away: logged again whole
        run = self.client.create_run(experiment, start_time=report.started_ms, tags=report.tags, run_name=report.run)
        run_id = str(run.info.run_id)
        metrics = [
            Metric(key, value, report.started_ms + point.epoch, point.epoch)
            for point in report.epochs
            for key, value in point.values.items()
        ]
        metrics += [Metric(key, value, report.ended_ms, 0) for key, value in report.metrics.items()]
        params = [Param(key, value) for key, value in report.params.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a request...
            self.client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):  # ...and 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        for name, document in report.documents.items():
            self.client.log_dict(run_id, document, name)
        for name, text in report.texts.items():
            self.client.log_text(run_id, text, name)
        for name, path in report.files.items():
            with _named_as(path, Path(name).name) as upload:
                self.client.log_artifact(run_id, str(upload), str(Path(name).parent))
        self.client.set_tag(run_id, "flywheel.mirrored", "complete")
        state = _STATUS.get(RunState(report.state), "FINISHED")
        self.client.set_terminated(run_id, state, end_time=report.ended_ms)
        return run_id

    def _register(self, report: VersionReport, run_ref: str) -> str:
        try:
            self.client.get_registered_model(self.model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(
                self.model, description="flywheel's models: aliases production and candidate follow its registry"
            )
        query = f"name = '{self.model}' and tags.`flywheel.model_id` = '{report.model}'"
        found = self.client.search_model_versions(query)
        if found:
            return str(found[0].version)
        source = f"{self.client.get_run(run_ref).info.artifact_uri}/model"
        version = self.client.create_model_version(
            self.model, source, run_id=run_ref, tags=report.tags, description=report.description
        )
        return str(version.version)


@contextmanager
def _named_as(path: Path, name: str) -> Iterator[Path]:
    """`path` under the file name the artifact should have (models/<sha>.pt goes up as
    model.pt): a hard link in a temporary folder, a copy where links are refused."""
    if path.name == name:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-mirror-") as tmp:
        link = Path(tmp) / name
        try:
            os.link(path, link)
        except OSError:  # another file system
            shutil.copyfile(path, link)
        yield link
