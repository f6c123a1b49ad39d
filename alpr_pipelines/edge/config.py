"""The edge service's configuration file (the original ALPR registry design's ``pilot.py --config``)::

    registry:
      tracking_uri: http://127.0.0.1:5000   # default: MLFLOW_TRACKING_URI
      stage: Production                      # default: MLFLOW_MODEL_STAGE or Production
      poll_interval: 10                      # seconds, at most 15 recommended
    models:
      vehicle: {name: alpr-vehicle-detector, fallback: models/yolo11n.onnx}
      plate: {name: alpr-plate-detector, fallback: models/yolo11n-plate.onnx}
      reader: {name: alpr-plate-ocr, fallback: null, enabled: true,   # the plate reader (text of each plate)
               reread_below: 0.9}    # plates read less surely are read again as moved copies; 0: never
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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alpr_pipelines.edge.contract import OCR_MODEL, PLATE_MODEL, VEHICLE_MODEL
from alpr_pipelines.edge.reread import REREAD_BELOW, check_reread_below
from alpr_pipelines.edge.swap.priority import check_priority
from alpr_pipelines.edge.trust import TrustedKeys


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
    reader_name: str = OCR_MODEL
    reader_fallback: str | None = None
    read_plates: bool = True  # the third stage; without a reader anywhere the edge runs without it and says so
    reread_below: float = REREAD_BELOW  # readings less sure than this are read again as moved copies (edge.reread)
    detections: str = "-"
    annotated_dir: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    cache_dir: str | None = None
    use_mlflow: bool = True
    imgsz: int | None = None  # serving size of a dynamic-shape vehicle model; None: as exported
    plate_imgsz: int | None = None
    threads: int | None = None  # ONNX Runtime intra-op threads; None: one per core
    trusted_keys: list[str] | None = None  # Ed25519 public keys (PEM paths or base64); None: ALPR_EDGE_TRUSTED_KEYS
    realtime_priority: int | None = None  # SCHED_FIFO priority of the frames' threads (edge.swap.priority); None: normal

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
        vehicle, plate, reader = (models.get(k) or {} for k in ("vehicle", "plate", "reader"))
        if not isinstance(reader.get("enabled", True), bool):
            raise ConfigError(f"{path}: models.reader.enabled must be true or false")
        try:
            reread_below = check_reread_below(reader.get("reread_below", REREAD_BELOW))
        except ValueError as exc:
            raise ConfigError(f"{path}: models.reader.reread_below {exc}") from exc

        def rel(p: str | None) -> str | None:
            return None if p is None else str(p if Path(p).is_absolute() else path.parent / p)

        detections = out.get("detections", "-")
        return cls(
            cameras=cameras, tracking_uri=reg.get("tracking_uri"), stage=reg.get("stage"),
            poll_interval=float(reg.get("poll_interval", 10)), use_mlflow=bool(reg.get("enabled", True)),
            vehicle_name=vehicle.get("name", VEHICLE_MODEL), plate_name=plate.get("name", PLATE_MODEL),
            vehicle_fallback=rel(vehicle.get("fallback")), plate_fallback=rel(plate.get("fallback")),
            reader_name=reader.get("name", OCR_MODEL), reader_fallback=rel(reader.get("fallback")),
            read_plates=reader.get("enabled", True), reread_below=reread_below,
            detections=detections if detections == "-" else str(rel(detections)),
            annotated_dir=rel(out.get("annotated_dir")), http_host=http.get("host", "127.0.0.1"),
            http_port=int(http.get("port", 9108)), cache_dir=rel(raw.get("cache_dir")),
            imgsz=_opt_int(vehicle.get("imgsz"), "models.vehicle.imgsz", path),
            plate_imgsz=_opt_int(plate.get("imgsz"), "models.plate.imgsz", path),
            threads=_opt_int(raw.get("threads"), "threads", path),
            realtime_priority=_priority(raw.get("realtime_priority"), path),
            trusted_keys=_trusted_keys(reg.get("trusted_keys"), path, rel),
        )


def _trusted_keys(value: Any, path: Path, rel: Any) -> list[str] | None:
    """``registry.trusted_keys``: a list of PEM files (relative to the config) or base64 keys, checked here."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: registry.trusted_keys must be a list of public key files or base64 keys")
    entries = [rel(v) if Path(rel(v)).is_file() else v for v in value]
    try:
        TrustedKeys.parse(entries)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return entries


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
