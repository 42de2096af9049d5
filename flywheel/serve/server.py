"""Builds one `flywheel serve` process from a data root's config and runs it until SIGTERM or
Ctrl-C: the model holder (loads production, watches for swaps), the batcher, capture when
enabled, and the HTTP app on uvicorn (one worker: the batcher is what uses the cores)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry

from flywheel.core.config import Config, resolve
from flywheel.core.errors import ConfigError, FlywheelError
from flywheel.serve.batcher import Batcher
from flywheel.serve.capture import Capturer
from flywheel.serve.holder import ModelHolder
from flywheel.serve.http import Limits, build
from flywheel.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


def token(root: Path, config: Config) -> str:
    """The bearer token from serve.token_file or the variable serve.token_env names; "" = none."""
    if config.serve.token_file:
        path = resolve(root, config.serve.token_file)
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"key `serve.token_file`: {path} cannot be read ({exc.strerror})") from None
        if not value:
            raise ConfigError(f"key `serve.token_file`: {path} is empty; write the token in it or unset the key")
        return value
    return os.environ.get(config.serve.token_env, "").strip() if config.serve.token_env else ""


def serve(root: Path, config: Config, host: str, port: int, runtime: str) -> None:
    import uvicorn

    settings = config.serve
    metrics = ServeMetrics(CollectorRegistry())
    holder = ModelHolder(
        root / "production",
        runtime,
        config.training.imgsz,
        settings.threads,
        settings.max_batch,
        settings.poll_seconds,
        metrics,
    )
    try:
        served: str = holder.load_current().production.id
    except FlywheelError as exc:  # e.g. nothing promoted yet: /readyz says 503 until the watcher loads one
        log.error("%s; not ready until production/ holds a model this server can load", exc)
        holder.last_error, served = str(exc), "no model yet"
    capturer = None
    if settings.capture.enabled:
        capture = settings.capture
        quota = int(capture.quota_mb * 2**20)
        capturer = Capturer(resolve(root, capture.dir), capture.threshold, capture.control_share, quota, metrics)
        capturer.start()
    batcher = Batcher(
        holder,
        settings.max_batch,
        settings.max_wait_ms / 1000,
        settings.queue_size,
        metrics,
        capturer.offer if capturer else None,
    )
    batcher.start()
    holder.start()
    secret = token(root, config)
    limits = Limits(
        int(settings.max_request_mb * 2**20), settings.max_images, config.ingest.max_image_pixels, settings.timeout
    )
    app = build(holder, batcher, metrics, limits, secret)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    print(
        f"flywheel serve: {served} on "
        f"http://{host}:{bound} (token {'required' if secret else 'off'}, capture {'on' if capturer else 'off'})",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=config.log_level.lower(), access_log=False, timeout_graceful_shutdown=5)
    )
    try:
        server.run(sockets=[sock])
    finally:
        holder.stop()
        batcher.stop()
        if capturer:
            capturer.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"keys `serve.host`/`serve.port`: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
