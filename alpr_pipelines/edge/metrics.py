"""The edge service's Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alpr_pipelines.edge.detector import FrameResult


class EdgeMetrics:
    """Prometheus metrics of one service (its own registry, so tests and several services do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("alpr_inference_fps", "Frames processed per second", ["camera"], registry=r)
        self.latency = Histogram("alpr_inference_latency_seconds",
                                 "Time per frame, every stage (the two detectors and, when it serves, the reader)",
                                 ["camera"], registry=r,
                                 buckets=(0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0))
        self.confidence = Histogram("alpr_detection_confidence", "Confidence of emitted detections", ["kind"],
                                    registry=r, buckets=tuple(i / 10 for i in range(1, 11)))
        self.read_latency = Histogram("alpr_read_latency_seconds", "Plate reading time per frame (all its plates in "
                                      "one batch)", ["camera"], registry=r,
                                      buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128))
        self.read_confidence = Histogram("alpr_read_confidence", "Reader's confidence in each plate's whole text",
                                         registry=r, buckets=(0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))
        self.plates_read = Counter("alpr_plates_read_total", "Plates read, by outcome (read; too_small: under the "
                                   "reader's minimum width)", ["outcome"], registry=r)
        self.frames = Counter("alpr_frames_total", "Frames processed", ["camera"], registry=r)
        self.model_info = Gauge("alpr_model_version_info", "Serving model version (value 1)",
                                ["model", "version", "source"], registry=r)
        self.swaps = Counter("alpr_model_swaps_total", "Hot swaps to a new version", ["model"], registry=r)
        self.failed_swaps = Counter("alpr_model_swap_failures_total", "New versions that failed to load",
                                    ["model"], registry=r)
        self.refused = Counter("alpr_model_versions_refused_total", "Versions refused by the trust checks "
                               "(unregistered manifest, missing or wrong signature, unsafe names)", ["model"],
                               registry=r)
        self.poll_errors = Counter("alpr_registry_poll_errors_total", "Failed registry polls", ["model"], registry=r)
        self.reachable = Gauge("alpr_registry_reachable", "1 while the registry answers", ["model"], registry=r)
        self._versions: dict[str, tuple[str, str]] = {}

    def set_version(self, model: str, version: str | None, source: str | None) -> None:
        """One info series per model: the old version's series goes when a new one is set."""
        self.model_info.clear()
        self._versions[model] = (version or "local", source or "local")
        for m, (v, s) in self._versions.items():
            self.model_info.labels(model=m, version=v, source=s).set(1)

    def record(self, camera: str, result: FrameResult) -> None:
        self.frames.labels(camera=camera).inc()
        self.latency.labels(camera=camera).observe(result.latency_ms / 1000)
        for d in result.vehicles:
            self.confidence.labels(kind="vehicle").observe(d.confidence)
        for d in result.plates:
            self.confidence.labels(kind="plate").observe(d.confidence)
        if result.texts is not None:
            if result.read_ms is not None:
                self.read_latency.labels(camera=camera).observe(result.read_ms / 1000)
            for t in result.texts:
                if t.confidence is None:
                    self.plates_read.labels(outcome="too_small").inc()
                else:
                    self.plates_read.labels(outcome="read").inc()
                    self.read_confidence.observe(t.confidence)
