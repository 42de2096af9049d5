"""`flywheel serve [ROOT]`: the production model behind HTTP, in a process of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import call, setup_logging


def serve(
    root: Annotated[
        Path, typer.Argument(help="The data root (its production/ is what is served).", file_okay=False)
    ] = Path("."),
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: serve.host, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: serve.port, 8080]; 0 picks a free one.")] = None,
    runtime: Annotated[
        str | None, typer.Option(help="auto, openvino, onnx, torchscript or pt [default: serve.runtime].")
    ] = None,
) -> None:
    """Serve the production model over HTTP, following promotions and rollbacks.

    `POST /v1/detect` takes one image as the body (Content-Type image/jpeg, image/png, ...) or
    several as multipart/form-data file parts, with optional `?conf=0.25&iou=0.7&max_det=300`,
    and answers JSON boxes (class, score, x1 y1 x2 y2 in pixels) with the model id and dataset
    version that answered. Concurrent requests are batched ([serve] max_batch, max_wait_ms);
    above serve.queue_size waiting images the answer is 503 with Retry-After.

    When production/ changes (promote, rollback) the new model is loaded, warmed and swapped in
    between batches: no request fails. `GET /metrics` (Prometheus), `/healthz`, `/readyz`.

    Binds 127.0.0.1 unless told otherwise; set $FLYWHEEL_SERVE_TOKEN (serve.token_env) or
    serve.token_file to require `Authorization: Bearer <token>`. [serve.capture] keeps the
    images the model doubts in captured/ as pre-labels (off by default). Example:

        curl -H 'Content-Type: image/jpeg' --data-binary @cat.jpg http://127.0.0.1:8080/v1/detect
    """
    from flywheel.config_file import load
    from flywheel.serve.server import serve as run_server

    config = call(lambda: load(root))
    setup_logging(config.log_level)
    chosen = runtime or config.serve.runtime
    if chosen not in ("auto", "openvino", "onnx", "torchscript", "pt"):
        raise typer.BadParameter("must be auto, openvino, onnx, torchscript or pt", param_hint="--runtime")
    call(
        lambda: run_server(root, config, host or config.serve.host, config.serve.port if port is None else port, chosen)
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
