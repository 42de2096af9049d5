"""The HTTP face of `flywheel serve` (Starlette on uvicorn).

    POST /v1/detect[?conf=0.25&iou=0.7&max_det=300]
        body: one image (Content-Type image/* or application/octet-stream), or
              multipart/form-data with one file part per image (any field name, in order)
        200: {"model", "version", "runtime", "images": [{"index", "name", "width", "height",
              "model", "detections": [{"class", "class_id", "score", "box": [x1, y1, x2, y2]}]}]}
        4xx/5xx: {"error": code, "detail": what to do, "image": index when one image is at fault}
    GET /metrics (Prometheus), /healthz (the process answers), /readyz (a model is loaded)

Every route but /healthz needs `Authorization: Bearer <token>` when a token is configured.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncGenerator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flywheel.ingest.reasons import Code, Problem
from flywheel.serve.batcher import Answer, Batcher, Job
from flywheel.serve.decode import decode
from flywheel.serve.detect import Params
from flywheel.serve.holder import ModelHolder
from flywheel.serve.metrics import ServeMetrics


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, image: int | None = None, retry_after: int = 0) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.image, self.retry_after = status, code, detail, image, retry_after

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.image is not None:
            body["image"] = self.image
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        return JSONResponse(body, self.status, headers=headers)


class Limits:
    def __init__(self, max_bytes: int, max_images: int, max_pixels: int, timeout: float) -> None:
        self.max_bytes, self.max_images, self.max_pixels, self.timeout = max_bytes, max_images, max_pixels, timeout


def build(holder: ModelHolder, batcher: Batcher, metrics: ServeMetrics, limits: Limits, token: str = "") -> ASGIApp:
    async def detect_route(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await _detect(request, holder, batcher, metrics, limits)
        except Refused as refused:
            if refused.code in ("queue_full", "not_ready", "timeout"):
                metrics.rejected.labels(refused.code).inc()
            response = refused.response()
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.latency.labels(str(response.status_code)).observe(time.perf_counter() - started)
        return response

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        served = holder.current
        if served is None:
            return JSONResponse({"ready": False, "detail": holder.last_error or "loading"}, 503)
        body = {"ready": True, "model": served.production.id, "version": served.production.version}
        return JSONResponse({**body, "runtime": served.runtime.format, "swap_error": holder.last_error or None})

    app = Starlette(
        routes=[
            Route("/v1/detect", detect_route, methods=["POST"]),
            Route("/metrics", metrics_route),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )
    return TokenGate(app, token) if token else app


async def _detect(
    request: Request, holder: ModelHolder, batcher: Batcher, metrics: ServeMetrics, limits: Limits
) -> Response:
    params = _params(request)
    if holder.current is None:
        raise Refused(503, "not_ready", "no model loaded yet; see /readyz", retry_after=5)
    parts = await _images(request, limits)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + limits.timeout
    jobs = []
    for index, (_, data) in enumerate(parts):
        try:
            pixels, fmt = await run_in_threadpool(decode, data, limits.max_pixels)
        except Problem as problem:
            status = 413 if problem.code == Code.IMAGE_TOO_LARGE else 400
            raise Refused(status, str(problem.code.value), str(problem), index) from None
        jobs.append(Job(pixels, params, deadline, loop.create_future(), loop, data, fmt))
    if not batcher.submit(jobs):
        raise Refused(
            503, "queue_full", "the server is at capacity; retry after Retry-After", None, batcher.retry_after()
        )
    try:
        answers: list[Answer] = await asyncio.wait_for(
            asyncio.gather(*(job.future for job in jobs)), timeout=max(0.0, deadline - time.monotonic())
        )
    except TimeoutError:
        raise Refused(504, "timeout", f"no answer within serve.timeout = {limits.timeout} s") from None
    first = answers[0].served
    return JSONResponse(
        {
            "model": first.production.id,
            "version": first.production.version,
            "runtime": first.runtime.format,
            "images": [
                _image_json(i, name, job, answer)
                for i, ((name, _), job, answer) in enumerate(zip(parts, jobs, answers, strict=True))
            ],
        }
    )


def _image_json(index: int, name: str, job: Job, answer: Answer) -> dict[str, Any]:
    names = answer.served.production.classes
    height, width = job.image.shape[:2]
    return {
        "index": index,
        "name": name,
        "width": width,
        "height": height,
        "model": answer.served.production.id,
        "detections": [
            {
                "class": names[b.class_id] if 0 <= b.class_id < len(names) else str(b.class_id),
                "class_id": b.class_id,
                "score": round(b.score, 5),
                "box": [round(v, 2) for v in b.xyxy],
            }
            for b in answer.boxes
        ],
    }


def _params(request: Request) -> Params:
    def number(key: str, default: float, low: float, high: float) -> float:
        raw = request.query_params.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise Refused(422, "bad_parameter", f"{key} must be a number in [{low}, {high}] (got {raw!r})")
        return value

    return Params(number("conf", 0.25, 0.0, 1.0), number("iou", 0.7, 0.0, 1.0), int(number("max_det", 300, 1, 10000)))


async def _images(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise Refused(
            413, "request_too_large", f"{declared} bytes, above serve.max_request_mb ({limits.max_bytes} bytes)"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_bytes:
            raise Refused(413, "request_too_large", f"more than serve.max_request_mb ({limits.max_bytes} bytes)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        if not body:
            raise Refused(400, "empty", "the request has no body: send the image's bytes", 0)
        return [("", bytes(body))]
    if kind != "multipart/form-data":
        raise Refused(
            415,
            "unsupported_media_type",
            "send one image (Content-Type image/*) or multipart/form-data with image files",
        )
    try:
        form = await MultiPartParser(
            request.headers, _once(bytes(body)), max_files=limits.max_images, max_fields=limits.max_images
        ).parse()
    except MultiPartException as exc:
        raise Refused(
            400, "bad_multipart", f"{exc.message} (at most serve.max_images = {limits.max_images} images)"
        ) from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise Refused(400, "empty", "the multipart body has no file part: add the images as files")
    return [(upload.filename or "", await upload.read()) for upload in files]


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


class TokenGate:
    """Requires `Authorization: Bearer <token>` on every route but /healthz (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refused = Refused(401, "unauthorized", "send Authorization: Bearer <the serve token>")
                await refused.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
