"""The server's Prometheus metrics, on a registry the caller injects (one per server, so tests
and several servers in one process never share counters). Names start `flywheel_serve_`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.latency = Histogram(
            "flywheel_serve_request_seconds",
            "Time from a detect request's arrival to its answer, by HTTP status",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "flywheel_serve_requests", "Detect requests answered, by HTTP status", ["status"], registry=registry
        )
        self.images = Counter(
            "flywheel_serve_images", "Images run through the model (rate() is images/s)", registry=registry
        )
        self.batch_size = Histogram(
            "flywheel_serve_batch_size",
            "Images per model call (dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "flywheel_serve_batch_seconds",
            "Time of one batch: pre-processing, model, NMS",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge("flywheel_serve_queue_depth", "Images waiting for the model", registry=registry)
        self.rejected = Counter(
            "flywheel_serve_rejected", "Requests refused before the model, by reason", ["reason"], registry=registry
        )
        self.detections = Counter(
            "flywheel_serve_detections", "Boxes answered, by class", ["class_name"], registry=registry
        )
        self.confidence = Histogram(
            "flywheel_serve_confidence",
            "Confidence of the boxes answered",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.model = Info("flywheel_serve_model", "The model serving: id, dataset version, runtime", registry=registry)
        self.ready = Gauge("flywheel_serve_ready", "1 when a model is loaded and answering", registry=registry)
        self.differs = Gauge(
            "flywheel_serve_model_differs",
            "1 while the model served is not the one production/ names (a swap pending or failing)",
            registry=registry,
        )
        self.differs_since = Gauge(
            "flywheel_serve_model_differs_since_timestamp_seconds",
            "Since when the model served differs from production/ (Unix time); 0 when they agree",
            registry=registry,
        )
        self.swaps = Counter("flywheel_serve_swaps", "Models swapped in, by outcome", ["outcome"], registry=registry)
        self.captured = Counter(
            "flywheel_serve_captured", "Images kept in captured/, by why (doubt, control)", ["why"], registry=registry
        )
        self.capture_dropped = Counter(
            "flywheel_serve_capture_dropped",
            "Images capture had to skip (its queue was full, or the write failed)",
            registry=registry,
        )
        self.capture_bytes = Gauge("flywheel_serve_capture_bytes", "Bytes in captured/", registry=registry)
