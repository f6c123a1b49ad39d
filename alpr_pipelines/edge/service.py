"""The edge detector service (the original ALPR registry design's ``pilot.py --config``): cameras in, detections and
plate texts out, models kept current by one registry poller per model. Its configuration: ``edge.config``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import cv2
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alpr_pipelines.edge.config import Camera, ConfigError, EdgeConfig
from alpr_pipelines.edge.detector import FrameResult, YOLOv11Detector
from alpr_pipelines.edge.frames import FrameReader, SourceError
from alpr_pipelines.edge.loader import MLflowModelLoader
from alpr_pipelines.edge.metrics import EdgeMetrics
from alpr_pipelines.edge.reading import PlateReadingStage, attach_reader, reader_status
from alpr_pipelines.edge.swap.policy import SwapPolicy
from alpr_pipelines.edge.swap.poller import RegistryPoller

log = logging.getLogger(__name__)


class EdgeService:
    def __init__(self, config: EdgeConfig, detector: YOLOv11Detector | None = None):
        self.config = config
        self.metrics = EdgeMetrics()
        self.loader = MLflowModelLoader(tracking_uri=config.tracking_uri, preferred_stage=config.stage,
                                        cache_dir=config.cache_dir, trusted_keys=config.trusted_keys,
                                        ) if config.use_mlflow else None
        self.detector = detector or YOLOv11Detector(
            vehicle_model_path=config.vehicle_fallback, plate_model_path=config.plate_fallback,
            use_mlflow=config.use_mlflow, loader=self.loader, vehicle_model_name=config.vehicle_name,
            plate_model_name=config.plate_name, imgsz=config.imgsz, plate_imgsz=config.plate_imgsz,
            policy=SwapPolicy(threads=config.threads, realtime_priority=config.realtime_priority))
        self.reader: PlateReadingStage | None = None
        if config.read_plates:
            self.reader = attach_reader(self.detector, config.reader_name, config.reader_fallback,
                                        config.reread_below)
        else:
            log.info("plate reading is off (models.reader.enabled: false): plates are reported without text")
        for slot in self.detector.slots():
            if slot.model is not None:  # an empty slot (no reader yet) has no version to report
                self.metrics.set_version(slot.name, slot.version, slot.metadata.get("source"))
        self.pollers: list[RegistryPoller] = []
        self._stop = threading.Event()
        self._out_lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self.frames_by_camera: dict[str, int] = {}
        self.versions_seen: dict[str, set[str]] = {}  # registered model -> the versions that served frames
        self.model_names = {"vehicle": self.detector.vehicle.name, "plate": self.detector.plate.name,
                            **({"reader": self.reader.slot.name} if self.reader is not None else {})}

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
            if data.get("refused"):
                self.metrics.refused.labels(model=model).inc()
            log.error("swap of %s to v%s failed: %s", model, data.get("version"), data.get("error"))

    def health(self) -> dict[str, Any]:
        """Every serving model (the reader once it serves; ``plate_reading`` says whether it does), whether the
        registry answers, and "ok" while both detectors are loaded: a box without a reader still detects."""
        models = {s.name: {"loaded": s.model is not None, "version": s.version, "source": s.metadata.get("source"),
                           "swaps": max(0, s.swaps - 1)}
                  for s in self.detector.slots() if s.model is not None or s in (self.detector.vehicle,
                                                                                 self.detector.plate)}
        reachable = all(p.stats.reachable for p in self.pollers) if self.pollers else None
        ok = self.detector.vehicle.model is not None and self.detector.plate.model is not None
        return {"status": "ok" if ok else "down", "models": models, "registry_reachable": reachable,
                "plate_reading": reader_status(self.reader)}

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
            poller = RegistryPoller(self.loader, slot, self.detector.policy, interval=self.config.poll_interval,
                                    imgsz=self.detector.serving_imgsz(slot), on_event=self._on_event,
                                    frame_shape=lambda: self.detector.frame_shape)
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
        for i, d in enumerate(result.plates):
            cv2.rectangle(img, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), (0, 0, 255), 2)
            text = result.texts[i].text if result.texts is not None else None
            if text:
                cv2.putText(img, text, (int(d.x1), max(10, int(d.y1) - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (0, 255, 255), 1)
        cv2.putText(img, " ".join(f"{name} v{v}" for name, v in result.versions().items()), (5, 15),
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
        try:
            with self.detector.policy.frame_loop():
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
                    for role, version in result.versions().items():
                        self.versions_seen.setdefault(self.model_names[role], set()).add(str(version))
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
        self.detector.policy.close()
        if self._http is not None:
            self._http.shutdown()
            self._http = None
