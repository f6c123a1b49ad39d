"""The edge detector service (the seed's ``pilot.py --config``): cameras in, detections out, models kept current.

Config (YAML)::

    registry:
      tracking_uri: http://127.0.0.1:5000   # default: MLFLOW_TRACKING_URI
      stage: Production                      # default: MLFLOW_MODEL_STAGE or Production
      poll_interval: 10                      # seconds, at most 15 recommended
    models:
      vehicle: {name: alpr-vehicle-detector, fallback: models/yolo11n.onnx}
      plate: {name: alpr-plate-detector, fallback: models/yolo11n-plate.onnx}
    cameras:
      - {name: gate-1, source: rtsp://10.0.0.5/stream, fps_limit: 10}
      - {name: sample, source: sample.avi, fps_limit: 0}     # 0: as fast as it decodes
      - {name: usb, source: 0}                                # a device id
    output:
      detections: detections.jsonl           # "-" for standard output
      annotated_dir: null                    # a folder to write annotated JPEG frames into
    http: {host: 127.0.0.1, port: 9108}      # /metrics (Prometheus) and /health
    threads: null                            # ONNX Runtime threads per session; default: one per core
    realtime_priority: 0                     # 1-99: frames' threads at SCHED_FIFO (needs CAP_SYS_NICE); 0: normal
    cache_dir: null                          # default: ALPR_EDGE_CACHE or ~/.cache/alpr-edge
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import cv2
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alpr_pipelines.edge.detector import PLATE_MODEL, VEHICLE_MODEL, FrameResult, RegistryPoller, YOLOv11Detector
from alpr_pipelines.edge.frames import FrameReader, SourceError
from alpr_pipelines.edge.loader import MLflowModelLoader
from alpr_pipelines.edge.onnx_backend import on_the_callers_core
from alpr_pipelines.edge.prefetch import Spare
from alpr_pipelines.edge.priority import check_priority, realtime

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """The camera config is unusable; the message names the field."""


@dataclass(frozen=True)
class Camera:
    name: str
    source: str | int
    fps_limit: float = 0.0


@dataclass
class EdgeConfig:
    cameras: list[Camera]
    tracking_uri: str | None = None
    stage: str | None = None
    poll_interval: float = 10.0
    vehicle_name: str = VEHICLE_MODEL
    plate_name: str = PLATE_MODEL
    vehicle_fallback: str | None = None
    plate_fallback: str | None = None
    detections: str = "-"
    annotated_dir: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    cache_dir: str | None = None
    use_mlflow: bool = True
    imgsz: int | None = None  # serving size of a dynamic-shape vehicle model; None: as exported
    plate_imgsz: int | None = None
    threads: int | None = None  # ONNX Runtime intra-op threads; None: one per core
    realtime_priority: int | None = None  # SCHED_FIFO priority of the frames' threads (edge.priority); None: normal
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> EdgeConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"camera config {path} does not exist; see config/cameras.yaml for an example")
        raw = yaml.safe_load(path.read_text()) or {}
        cams = raw.get("cameras") or []
        if not cams:
            raise ConfigError(f"{path}: 'cameras' is empty; list at least one camera with a source")
        cameras = []
        for i, c in enumerate(cams):
            if "source" not in c:
                raise ConfigError(f"{path}: camera #{i + 1} has no 'source' (a video file, an RTSP URL or a device id)")
            source = c["source"]
            if isinstance(source, str) and not source.isdigit() and "://" not in source:
                src = Path(source) if Path(source).is_absolute() else path.parent / source
                source = str(src)
            elif isinstance(source, str) and source.isdigit():
                source = int(source)
            cameras.append(Camera(name=str(c.get("name", f"camera-{i + 1}")), source=source,
                                  fps_limit=float(c.get("fps_limit", 0) or 0)))
        reg, models, out, http = (raw.get(k) or {} for k in ("registry", "models", "output", "http"))
        vehicle, plate = models.get("vehicle") or {}, models.get("plate") or {}

        def rel(p: str | None) -> str | None:
            return None if p is None else str(p if Path(p).is_absolute() else path.parent / p)

        detections = out.get("detections", "-")
        return cls(
            cameras=cameras, tracking_uri=reg.get("tracking_uri"), stage=reg.get("stage"),
            poll_interval=float(reg.get("poll_interval", 10)), use_mlflow=bool(reg.get("enabled", True)),
            vehicle_name=vehicle.get("name", VEHICLE_MODEL), plate_name=plate.get("name", PLATE_MODEL),
            vehicle_fallback=rel(vehicle.get("fallback")), plate_fallback=rel(plate.get("fallback")),
            detections=detections if detections == "-" else str(rel(detections)),
            annotated_dir=rel(out.get("annotated_dir")), http_host=http.get("host", "127.0.0.1"),
            http_port=int(http.get("port", 9108)), cache_dir=rel(raw.get("cache_dir")),
            imgsz=_opt_int(vehicle.get("imgsz"), "models.vehicle.imgsz", path),
            plate_imgsz=_opt_int(plate.get("imgsz"), "models.plate.imgsz", path),
            threads=_opt_int(raw.get("threads"), "threads", path),
            realtime_priority=_priority(raw.get("realtime_priority"), path),
        )


def _priority(value: Any, path: Path) -> int | None:
    try:
        return check_priority(value, "realtime_priority")
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _opt_int(value: Any, name: str, path: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: {name} must be a positive integer, got {value!r}")
    return value


class EdgeMetrics:
    """Prometheus metrics of one service (its own registry, so tests and several services do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fps = Gauge("alpr_inference_fps", "Frames processed per second", ["camera"], registry=r)
        self.latency = Histogram("alpr_inference_latency_seconds", "Detection time per frame (both stages)",
                                 ["camera"], registry=r,
                                 buckets=(0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0))
        self.confidence = Histogram("alpr_detection_confidence", "Confidence of emitted detections", ["kind"],
                                    registry=r, buckets=tuple(i / 10 for i in range(1, 11)))
        self.frames = Counter("alpr_frames_total", "Frames processed", ["camera"], registry=r)
        self.model_info = Gauge("alpr_model_version_info", "Serving model version (value 1)",
                                ["model", "version", "source"], registry=r)
        self.swaps = Counter("alpr_model_swaps_total", "Hot swaps to a new version", ["model"], registry=r)
        self.failed_swaps = Counter("alpr_model_swap_failures_total", "New versions that failed to load",
                                    ["model"], registry=r)
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


class EdgeService:
    def __init__(self, config: EdgeConfig, detector: YOLOv11Detector | None = None):
        self.config = config
        self.metrics = EdgeMetrics()
        self.loader = MLflowModelLoader(tracking_uri=config.tracking_uri, preferred_stage=config.stage,
                                        cache_dir=config.cache_dir) if config.use_mlflow else None
        self.detector = detector or YOLOv11Detector(
            vehicle_model_path=config.vehicle_fallback, plate_model_path=config.plate_fallback,
            use_mlflow=config.use_mlflow, loader=self.loader, vehicle_model_name=config.vehicle_name,
            plate_model_name=config.plate_name, imgsz=config.imgsz, plate_imgsz=config.plate_imgsz,
            threads=config.threads, realtime_priority=config.realtime_priority)
        for slot in self.detector.slots():
            self.metrics.set_version(slot.name, slot.version, slot.metadata.get("source"))
        self.pollers: list[RegistryPoller] = []
        self.spare = Spare()  # one child ready to fetch the next new version, whichever model it is for
        self._stop = threading.Event()
        self._out_lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.frames_by_camera: dict[str, int] = {}
        self.versions_seen: dict[str, set[str]] = {s.name: set() for s in self.detector.slots()}

    # ------------------------------------------------------------------------------------------- events

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        model = data["model"]
        if kind == "poll_error":
            self.metrics.poll_errors.labels(model=model).inc()
            self.metrics.reachable.labels(model=model).set(0)
        elif kind == "poll_ok":
            self.metrics.reachable.labels(model=model).set(1)
        elif kind == "swapped":
            self.metrics.swaps.labels(model=model).inc()
            slot = next(s for s in self.detector.slots() if s.name == model)
            self.metrics.set_version(model, slot.version, slot.metadata.get("source"))
        elif kind == "swap_failed":
            self.metrics.failed_swaps.labels(model=model).inc()
            log.error("swap of %s to v%s failed: %s", model, data.get("version"), data.get("error"))

    def health(self) -> dict[str, Any]:
        models = {s.name: {"loaded": s.model is not None, "version": s.version, "source": s.metadata.get("source"),
                           "swaps": max(0, s.swaps - 1)} for s in self.detector.slots()}
        reachable = all(p.stats.reachable for p in self.pollers) if self.pollers else None
        ok = all(m["loaded"] for m in models.values())
        return {"status": "ok" if ok else "down", "models": models, "registry_reachable": reachable}

    # ------------------------------------------------------------------------------------------- http

    def start_http(self) -> int:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/health"):
                    h = service.health()
                    body, ctype, code = json.dumps(h).encode(), "application/json", 200 if h["status"] == "ok" else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((self.config.http_host, self.config.http_port), Handler)
        threading.Thread(target=self._http.serve_forever, name="edge-http", daemon=True).start()
        return self._http.server_address[1]

    # ------------------------------------------------------------------------------------------- run

    def start_pollers(self) -> None:
        if self.loader is None:
            return
        for slot in self.detector.slots():
            poller = RegistryPoller(self.loader, slot, interval=self.config.poll_interval, on_event=self._on_event,
                                    threads=self.detector.threads, imgsz=self.detector.serving_imgsz(slot),
                                    frame_shape=lambda: self.detector.frame_shape, turns=self.detector.turns,
                                    spare=self.spare, realtime_priority=self.detector.realtime_priority)
            poller.start()
            self.pollers.append(poller)

    def _emit(self, out: TextIO, camera: Camera, index: int, result: FrameResult) -> None:
        line = json.dumps({"camera": camera.name, "frame": index, "time": round(time.time(), 3), **result.as_dict()})
        with self._out_lock:
            out.write(line + "\n")
            out.flush()

    def _annotate(self, camera: Camera, index: int, frame, result: FrameResult) -> None:
        assert self.config.annotated_dir is not None
        img = frame.copy()
        for d in result.vehicles:
            cv2.rectangle(img, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), (0, 200, 0), 2)
        for d in result.plates:
            cv2.rectangle(img, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), (0, 0, 255), 2)
        cv2.putText(img, f"vehicle v{result.vehicle_version} plate v{result.plate_version}", (5, 15),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        folder = Path(self.config.annotated_dir) / camera.name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:06d}.jpg"), img)

    def process_camera(self, camera: Camera, out: TextIO, max_frames: int | None = None) -> int:
        """Read ``camera`` until it ends (files), ``max_frames``, or stop; every decoded frame is processed."""
        try:
            reader = FrameReader(camera.source, name=camera.name)  # decodes ahead, overlapping inference
        except SourceError as exc:
            raise ConfigError(str(exc)) from exc
        index, window_start, window_frames = 0, time.monotonic(), 0
        min_gap = 1.0 / camera.fps_limit if camera.fps_limit > 0 else 0.0
        next_due = time.monotonic()
        # The frame loop runs ONNX Runtime's calls, so it takes the core the pinned pool threads leave to the caller:
        # a frame's threads then hold every core, and no other thread (a starting child of the lowest priority, say)
        # keeps one while the frame's threads share the other. At ``realtime_priority`` (edge.priority), if set.
        try:
            with on_the_callers_core(self.detector.threads), realtime(self.detector.realtime_priority):
                while not self._stop.is_set() and (max_frames is None or index < max_frames):
                    frame = reader.read()
                    if frame is None:
                        break
                    if min_gap:
                        delay = next_due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        next_due = max(next_due + min_gap, time.monotonic())
                    result = self.detector.detect(frame)
                    self._emit(out, camera, index, result)
                    self.metrics.record(camera.name, result)
                    if self.config.annotated_dir:
                        self._annotate(camera, index, frame, result)
                    self.versions_seen[self.detector.vehicle.name].add(str(result.vehicle_version))
                    self.versions_seen[self.detector.plate.name].add(str(result.plate_version))
                    index += 1
                    window_frames += 1
                    elapsed = time.monotonic() - window_start
                    if elapsed >= 1.0:
                        self.metrics.fps.labels(camera=camera.name).set(window_frames / elapsed)
                        window_start, window_frames = time.monotonic(), 0
        finally:
            reader.close()
        self.frames_by_camera[camera.name] = index
        return index

    def run(self, max_frames: int | None = None, serve_http: bool = True) -> dict[str, int]:
        """Process every camera (one thread each) until the sources end or :meth:`stop`; returns frames per camera."""
        if serve_http:
            self.start_http()
        self.start_pollers()
        out: TextIO
        if self.config.detections == "-":
            out = sys.stdout
        else:
            Path(self.config.detections).parent.mkdir(parents=True, exist_ok=True)
            out = Path(self.config.detections).open("a")
        errors: list[BaseException] = []

        def worker(cam: Camera) -> None:
            try:
                self.process_camera(cam, out, max_frames)
            except BaseException as exc:  # noqa: BLE001 - reported after join
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(c,), name=f"camera-{c.name}") for c in self.config.cameras]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        finally:
            self.stop()
            if out is not sys.stdout:
                out.close()
        if errors:
            raise errors[0]
        return dict(self.frames_by_camera)

    def stop(self) -> None:
        self._stop.set()
        for p in self.pollers:
            p.stop()
        self.spare.close()
        if self._http is not None:
            self._http.shutdown()
            self._http = None
