"""Prometheus metrics of a device (names from ARCHITECTURE.md), on an injectable registry.

Labels come from small fixed sets: model names of loaded bundles, route rules, HTTP status
codes. Nothing a client sends (prompts, unknown model names, raw paths) becomes a label.
"""

from __future__ import annotations

import platform
import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from .system import SystemCollector

# Generation takes from milliseconds (a DCGAN image) to minutes (a long text); the client's
# DEFAULT_BUCKETS stop at 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 120.0, 300.0)
ENERGY_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0)
NO_MODEL = "none"  # label for requests that did not resolve to a loaded model
REJECT_REASONS = ("queue_full", "queue_timeout", "unauthorized", "auth_throttled",
                  "client_timeout")


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "edgegen_requests", "HTTP requests served, by model, route and status code.",
            ["model", "endpoint", "status"], registry=registry)
        self.duration = Histogram(
            "edgegen_request_duration_seconds", "Time from request to response.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.images = Counter(
            "edgegen_generated_images", "Images generated.", ["model"], registry=registry)
        self.tokens = Counter(
            "edgegen_generated_tokens", "Tokens generated.", ["model"], registry=registry)
        self.ttft = Histogram(
            "edgegen_time_to_first_token_seconds", "Prompt processing and first token.",
            ["model"], buckets=LATENCY_BUCKETS, registry=registry)
        self.model_info = Gauge(
            "edgegen_model_info", "Loaded models (value 1), with their manifest facts, the "
            "execution provider in use (runtime) and the configured chain (requested_providers).",
            ["model", "family", "task", "precision", "runtime", "requested_providers",
             "schema_version"],
            registry=registry)
        self.power = Gauge(
            "edgegen_power_watts", "Latest power reading per sensor rail ('total' for the "
            "sensor's total).", ["sensor", "rail"], registry=registry)
        self.energy = Counter(
            "edgegen_energy_joules", "Energy measured by the sensor since start (rate() gives "
            "watts).", ["sensor"], registry=registry)
        self.request_energy = Histogram(
            "edgegen_request_energy_joules", "Energy per request above the idle baseline.",
            ["model", "endpoint"], buckets=ENERGY_BUCKETS, registry=registry)
        self.inflight = Gauge(
            "edgegen_inflight_requests", "Requests being served now.", registry=registry)
        self.queue_depth = Gauge(
            "edgegen_queue_depth", "Generation requests waiting for a slot.", registry=registry)
        self.rejected = Counter(
            "edgegen_requests_rejected", "Requests refused before generating: queue_full, "
            "queue_timeout, unauthorized, auth_throttled (too many wrong keys), client_timeout "
            "(a request begun but not received in time: 408).", ["reason"], registry=registry)
        self.device_info = Gauge(
            "edgegen_device_info", "This device (value 1): fleet class, hardware, CPU, "
            "accelerators ONNX Runtime can use.",
            ["device_class", "hardware", "arch", "cpus", "memory_bytes", "providers"],
            registry=registry)
        self.reloads = Counter(
            "edgegen_reloads", "Bundle reloads (SIGHUP or /admin/reload) by result: success, "
            "failure (the previous models kept serving).", ["result"], registry=registry)
        # Counters with fixed label sets start at 0, so the first event is an increase that
        # rate() and increase() can see (a series born at 1 shows no increase).
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.build_info = Gauge(
            "edgegen_build_info", "Server build (value 1).",
            ["version", "python", "onnxruntime"], registry=registry)


UNTIMED = ("/metrics", "/health")  # probes and scrapes are not traffic


def init_app(app: Flask, metrics: Metrics, versions: dict[str, str],
             sensors_root: str = "/") -> None:
    """Time every request, export device gauges, and serve GET /metrics (Prometheus text, or
    OpenMetrics when the scraper asks for it). Thermal zones are read under `sensors_root`
    (the power sensors' root), process memory from this process."""
    metrics.registry.register(SystemCollector("/", thermal_root=sensors_root))
    metrics.build_info.labels(versions["edgegen"], platform.python_version(),
                              versions["onnxruntime"]).set(1)

    @app.get("/metrics")
    def prometheus_metrics():
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(metrics.registry), content_type=content_type)

    @app.before_request
    def _start_timer():
        if request.path in UNTIMED:
            return
        g.edgegen_start = time.perf_counter()
        g.edgegen_model = NO_MODEL
        metrics.inflight.inc()

    @app.after_request
    def _observe(response):
        start = g.get("edgegen_start")
        if start is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            model, status = g.get("edgegen_model", NO_MODEL), str(response.status_code)

            def done():
                metrics.requests.labels(model, endpoint, status).inc()
                metrics.duration.labels(model, endpoint).observe(time.perf_counter() - start)
                metrics.inflight.dec()

            if response.is_streamed:  # a stream ends when its last event is sent, not now
                response.call_on_close(done)
            else:
                done()
        return response
