"""Dynamic batching: images from concurrent requests wait in one bounded queue; one worker
thread takes up to `max_batch` of them, waiting at most `max_wait` after the first for more,
and runs them through the current model together. The queue refuses a request whose images do
not all fit (the HTTP layer answers 503 + Retry-After), so memory and latency stay bounded
under overload. An image whose request has timed out is dropped before it costs model time."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.prelabel.uncertainty import SCORING_CONF
from flywheel.serve import detect
from flywheel.serve.detect import Box, Params
from flywheel.serve.holder import ModelHolder, Served
from flywheel.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


@dataclass
class Job:
    image: np.ndarray  # BGR uint8
    params: Params
    deadline: float  # time.monotonic() after which nobody waits for the answer
    future: asyncio.Future[Answer]
    loop: asyncio.AbstractEventLoop
    data: bytes = b""  # the bytes as sent, for capture
    fmt: str = ""


@dataclass(frozen=True)
class Answer:
    served: Served
    boxes: list[Box]  # at the request's conf
    scored: list[Box] = field(default_factory=list)  # every box at SCORING_CONF, when capture is on


Capture = Callable[[Job, Answer], None]


class Batcher:
    def __init__(
        self,
        holder: ModelHolder,
        max_batch: int,
        max_wait: float,
        queue_size: int,
        metrics: ServeMetrics,
        capture: Capture | None = None,
    ) -> None:
        self.holder = holder
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.metrics = metrics
        self.capture = capture
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="serve-batcher", daemon=True)
        self.batch_seconds = 0.05  # the last batch's time: the Retry-After estimate

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=10)

    def submit(self, jobs: list[Job]) -> bool:
        """Queue all of `jobs`, or none of them (False: the queue is full)."""
        with self._cv:
            if len(self._queue) + len(jobs) > self.queue_size:
                return False
            self._queue.extend(jobs)
            self.metrics.queue_depth.set(len(self._queue))
            self._cv.notify()
        return True

    def retry_after(self) -> int:
        """Seconds until the queue has drained at the current pace, at least 1."""
        with self._cv:
            waiting = len(self._queue)
        return max(1, round(waiting / self.max_batch * self.batch_seconds + 0.5))

    def _take(self) -> list[Job]:
        with self._cv:
            while not self._queue and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return []
            batch = [self._queue.popleft()]
            until = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
                if self._stopping:
                    break
            self.metrics.queue_depth.set(len(self._queue))
        now = time.monotonic()
        return [job for job in batch if job.deadline > now and not job.future.done()]

    def _work(self) -> None:
        while not self._stopping:
            batch = self._take()
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        served = self.holder.current  # read once: the whole batch is answered by one model
        if served is None:
            self._fail(batch, RuntimeError("no model is loaded"))
            return
        scoring = self.capture is not None
        params = [
            Params(min(j.params.conf, SCORING_CONF), j.params.iou, j.params.max_det) if scoring else j.params
            for j in batch
        ]
        started = time.perf_counter()
        try:
            found = detect.run(served.runtime, [job.image for job in batch], params)
        except Exception as exc:  # a runtime failure answers 500 for this batch; the worker goes on
            log.exception("inference failed on a batch of %d with %s", len(batch), served.production.id)
            self._fail(batch, exc)
            return
        self.batch_seconds = time.perf_counter() - started
        self.metrics.inference.observe(self.batch_seconds)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.images.inc(len(batch))
        names = served.production.classes or [str(n) for n in served.runtime.backend.names.values()]
        for job, boxes in zip(batch, found, strict=True):
            kept = [box for box in boxes if box.score >= job.params.conf] if scoring else boxes
            answer = Answer(served, kept, boxes if scoring else [])
            for box in kept:
                self.metrics.detections.labels(_name(names, box.class_id)).inc()
                self.metrics.confidence.observe(box.score)
            job.loop.call_soon_threadsafe(_resolve, job.future, answer)
            if self.capture is not None:
                self.capture(job, answer)

    def _fail(self, batch: list[Job], exc: Exception) -> None:
        for job in batch:
            job.loop.call_soon_threadsafe(_reject, job.future, exc)


def _name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def _resolve(future: asyncio.Future[Any], answer: Answer) -> None:
    if not future.done():  # done: the request timed out meanwhile
        future.set_result(answer)


def _reject(future: asyncio.Future[Any], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
