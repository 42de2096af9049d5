"""The daemon's HTTP endpoints on `metrics.host:metrics.port`.

- `/metrics`: Prometheus exposition, by prometheus_client's own handler (content negotiation,
  OpenMetrics, gzip, `name[]` filters), on the daemon's registry.
- `/healthz`: liveness, 200 while the work loop is alive, 503 when it has stalled or stopped.
- `/readyz`: readiness, 200 when start-up is done, the database answers and the data root
  takes a write; else 503. Both answer JSON: `{"status", "reason", "checks"}`.
- `POST /hooks/labelstudio` (with `[labelstudio] webhook_url`): Label Studio's webhook; 202, and
  the daemon pulls (flywheel/service/label_pull.py).

prometheus_client's `start_http_server` serves nothing but metrics, hence this small server.

`python -m flywheel.service.http healthz|readyz [--root DIR]` asks a running daemon (the container's
HEALTHCHECK): exit 0 on 200, 1 otherwise, 2 when the data root's config cannot be read.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler, choose_encoder, gzip_accepted

from flywheel.service.health import Check

Probe = Callable[[], list[Check]]

HEALTHZ = "/healthz"
READYZ = "/readyz"


def check_body(checks: list[Check]) -> tuple[int, dict[str, object]]:
    """HTTP status and JSON body for a probe's checks: 200 iff every check passed."""
    failing = [c for c in checks if not c.ok]
    body: dict[str, object] = {
        "status": "fail" if failing else "ok",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    if failing:
        body["reason"] = "; ".join(c.detail for c in failing)
    return (503 if failing else 200), body


class Exposition:
    """The registry rendered at most once per `max_age` seconds, whoever asks: concurrent
    scrapes share one render (one database snapshot, one walk of the collectors) instead of
    each running its own. 16 clients at once beside a training took p99 2.4 s and up to 7 s
    when each scrape rendered; Prometheus scrapes every 15 s, so a value a second old is fresh."""

    def __init__(self, registry: CollectorRegistry, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.registry, self.max_age, self.clock = registry, max_age, clock
        self._lock = threading.Lock()  # single flight: one render at a time, the others wait for it
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, bytes]] = {}

    def render(self, accept: str | None, names: list[str] | None) -> tuple[str, bytes]:
        encoder, content_type = choose_encoder(accept or "")
        key = (content_type, tuple(sorted(names or ())))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and self.clock() - hit[0] < self.max_age:
                return content_type, hit[1]
            registry = self.registry.restricted_registry(names) if names else self.registry
            body = encoder(registry)
            self._cache[key] = (self.clock(), body)
            return content_type, body


class _Handler(MetricsHandler):
    probes: ClassVar[Mapping[str, Probe]] = {}
    hooks: ClassVar[Mapping[str, Callable[[], None]]] = {}  # POST path -> what it sets off (its body unread)
    exposition: ClassVar[Exposition]

    def do_POST(self) -> None:
        hook = self.hooks.get(urlsplit(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:  # read, so the connection ends cleanly; not used: a hook only says "look now"
            self.rfile.read(min(length, 1 << 20))
        if hook is None:
            self._send(404, "text/plain; charset=utf-8", b"not found: nothing takes a POST here\n")
            return
        hook()  # quick: it starts the work elsewhere
        self._send(202, "application/json", b'{"status": "accepted"}\n')

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
            return
        probe = self.probes.get(path)
        if probe is not None:
            try:
                status, body = check_body(probe())
            except Exception as exc:  # a broken probe is a failing probe, not a dropped connection
                status, body = 503, {"status": "fail", "reason": f"probe error: {exc!r}", "checks": {}}
            self._send(status, "application/json", json.dumps(body, indent=1).encode() + b"\n")
        elif path == "/":
            links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in ("/metrics", *self.probes))
            self._send(200, "text/html; charset=utf-8", f"<h1>flywheel</h1><ul>{links}</ul>\n".encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

    def _metrics(self) -> None:
        names = parse_qs(urlsplit(self.path).query).get("name[]")
        content_type, body = self.exposition.render(self.headers.get("Accept"), names)
        encoding = gzip_accepted(self.headers.get("Accept-Encoding") or "")
        payload = gzip.compress(body, compresslevel=1) if encoding else body
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if encoding:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen() backlog: socketserver's 5 made 54 of 64 simultaneous probes wait over 1 s just to
    # connect; Prometheus and an orchestrator's probes together need more than that
    request_queue_size = 128


class HttpServer:
    """Serves /metrics and the probes from a background thread until `stop()`."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        probes: Mapping[str, Probe],
        render_seconds: float = 1.0,  # /metrics renders at most this often (Exposition)
        hooks: Mapping[str, Callable[[], None]] | None = None,  # POST paths (Label Studio's webhook)
    ):
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        attrs = {
            "registry": registry,
            "probes": dict(probes),
            "hooks": dict(hooks or {}),
            "exposition": Exposition(registry, render_seconds),
        }
        handler = type("FlywheelHandler", (_Handler,), attrs)
        server_class = type("FlywheelServer", (_Server,), {"address_family": family})
        self._server: ThreadingHTTPServer = server_class((host, port), handler)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def probe_url(host: str, port: int, path: str) -> str:
    """Where a client on this host reaches a server bound to `host` (any address: loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def ask(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    from flywheel import config_file
    from flywheel.core.errors import FlywheelError

    parser = argparse.ArgumentParser(
        prog="python -m flywheel.service.http", description="Ask a running daemon's probe."
    )
    parser.add_argument("probe", choices=["healthz", "readyz"])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("FLYWHEEL_ROOT", ".")))
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        metrics = config_file.load(args.root).metrics
    except FlywheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if metrics.port == 0:
        print("error: metrics.port is 0 (a random port): set a fixed port to probe the daemon", file=sys.stderr)
        return 2
    url = probe_url(metrics.host, metrics.port, f"/{args.probe}")
    try:
        status, body = ask(url, args.timeout)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status} {body.strip()}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
