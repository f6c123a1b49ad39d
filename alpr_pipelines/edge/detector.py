"""Two-stage ALPR detection: vehicles in the frame, then plates within each vehicle's crop; optional stages after
them (the plate reader, ``edge.reading``) are components added to the detector, each with its own slot.

A :class:`ModelSlot` holds the model that serves one role. A new version is made ready off the frame path
(``swap.poller``) and put in its slot with one reference assignment between frames; a frame reads each slot once, so
it is served entirely by one version per role. Frames take turns with the steps of loading new versions
(``swap.policy.SwapPolicy``, the detector's ``policy``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alpr_pipelines.edge.backends.box_optimized import optimized_for_this_box
from alpr_pipelines.edge.backends.onnx import OnnxDetector
from alpr_pipelines.edge.contract import PLATE_MODEL, VEHICLE_MODEL
from alpr_pipelines.edge.loader import MLflowModelLoader, ModelLoadError
from alpr_pipelines.edge.swap.policy import SwapPolicy
from alpr_pipelines.edge.yolo import MIN_CROP_PX, Detection, crop_region, iou

log = logging.getLogger(__name__)

PLATE_DEDUP_IOU = 0.5


class Backend(Protocol):
    names: dict[int, str]
    imgsz: tuple[int, int]
    model_version: str | None

    def detect(self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.7,
               scaleup: bool = True) -> list[Detection]: ...


def load_backend(path: str | Path, version: str | None, threads: int | None = None,
                 imgsz: int | None = None, optimized: Path | None = None) -> Backend:
    """ONNX Runtime for ``.onnx`` (CPU, CUDA or TensorRT provider, whichever this box has); TensorRT for ``.engine``.

    ``imgsz`` runs a dynamic-shape ONNX model at another size than it was exported at; a fixed-shape model or an
    engine keeps its own size. ``optimized``: ``path`` optimized for this box (``box_optimized.optimized_for_this_box``,
    made beside it in the version cache and pruned with it), loaded instead.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        detector = OnnxDetector(path, threads=threads, model_version=version, optimized=optimized)
        if imgsz is not None and detector.dynamic:
            detector.resize(imgsz)
        return detector
    if path.suffix == ".engine":
        from alpr_pipelines.edge.backends.tensorrt import TensorRTDetector

        return TensorRTDetector(path, model_version=version)
    raise ModelLoadError(f"{path}: the edge loads only .onnx or .engine files, never {path.suffix or 'this'}")


def warm_up(backend: Backend, runs: int = 2, frame_shape: tuple[int, ...] | None = None,
            policy: SwapPolicy | None = None) -> None:
    """Run the model on grey frames before it serves: ONNX Runtime plans memory and picks kernels per input shape
    on the first run, so warm up at the shape the camera delivers (``frame_shape``) when it is known. ``policy``:
    the serving detector's, a loading step for each run, so a warm-up never overlaps a frame."""
    h, w = frame_shape[:2] if frame_shape else backend.imgsz
    frame = np.full((h, w, 3), 114, np.uint8)
    for _ in range(runs):
        with policy.loading_step() if policy is not None else contextlib.nullcontext():
            backend.detect(frame)


@dataclass
class ModelSlot:
    """The model serving one role; ``swap`` replaces it atomically and keeps the previous one for fallback.
    ``load``: how a file of this role becomes a model (``load_backend``'s arguments): a detector by default.
    ``prefetch_optimized_copy``: whether ``load`` uses a copy of a new version optimized for this box, which
    ``swap.prefetch`` then makes (the plate reader loads its file as it is)."""

    name: str
    model: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    previous: Any = None
    swaps: int = 0
    load: Callable[..., Any] = load_backend
    prefetch_optimized_copy: bool = True

    @property
    def version(self) -> str | None:
        return self.metadata.get("version")

    def swap(self, model: Any, metadata: dict[str, Any]) -> None:
        self.previous, self.model, self.metadata = self.model, model, metadata
        self.swaps += 1


@dataclass(frozen=True)
class PlateText:
    """What the reader made of one plate: its text and confidence (None for both: too small to read)."""

    text: str | None
    confidence: float | None


@dataclass(frozen=True)
class FrameResult:
    """Detections of one frame; every detection carries the version of the model that produced it. ``texts``: one
    per plate when a reader served the frame (``reader_version``), else None."""

    vehicles: list[Detection]
    plates: list[Detection]
    vehicle_version: str | None
    plate_version: str | None
    latency_ms: float
    texts: list[PlateText] | None = None
    reader_version: str | None = None
    read_ms: float | None = None

    def versions(self) -> dict[str, str | None]:
        """The version of each model that served this frame, by model (the reader's only when it read)."""
        served = {"vehicle": self.vehicle_version, "plate": self.plate_version}
        if self.texts is not None:
            served["reader"] = self.reader_version
        return served

    def as_dict(self) -> dict[str, Any]:
        def det(d: Detection) -> dict[str, Any]:
            return {"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)], "class": d.class_name,
                    "confidence": round(d.confidence, 4), "model_version": d.model_version}

        plates = [det(d) for d in self.plates]
        out: dict[str, Any] = {"vehicles": [det(d) for d in self.vehicles], "plates": plates,
                               "vehicle_version": self.vehicle_version, "plate_version": self.plate_version}
        if self.texts is not None:
            for plate, read in zip(plates, self.texts, strict=True):
                plate["text"] = read.text
                plate["text_confidence"] = None if read.confidence is None else round(read.confidence, 4)
            out["reader_version"] = self.reader_version
        out["latency_ms"] = round(self.latency_ms, 2)
        return out


class FrameStage(Protocol):
    """A stage after the two detectors: it has slots of its own, and adds to each frame's result in the frame's
    turn (``YOLOv11Detector.add_stage``)."""

    def slots(self) -> list[ModelSlot]: ...

    def __call__(self, frame: np.ndarray, result: FrameResult) -> FrameResult: ...


class YOLOv11Detector:
    """The original ALPR registry design's detector API (``pilot.py``).

    ``YOLOv11Detector(vehicle_model_path=..., plate_model_path=..., use_mlflow=True, mlflow_tracking_uri=...)``:
    with ``use_mlflow`` the registry's current version of each model is loaded (falling back to the cache, then to
    the given local files); without it, the local files only. Paths must be ``.onnx`` or ``.engine``.
    ``imgsz``/``plate_imgsz``: serving sizes of dynamic-shape models (None: the size each was exported at).
    ``policy``: how frames and hot swaps share the CPU (threads, priority, turns); a default one if not given.
    """

    def __init__(
        self,
        vehicle_model_path: str | None = None,
        plate_model_path: str | None = None,
        use_mlflow: bool = True,
        mlflow_tracking_uri: str | None = None,
        loader: MLflowModelLoader | None = None,
        conf: float = 0.25,
        plate_conf: float = 0.25,
        vehicle_model_name: str = VEHICLE_MODEL,
        plate_model_name: str = PLATE_MODEL,
        imgsz: int | None = None,
        plate_imgsz: int | None = None,
        policy: SwapPolicy | None = None,
    ):
        self.conf, self.plate_conf = conf, plate_conf
        self.policy = policy or SwapPolicy()
        self.frame_shape: tuple[int, ...] | None = None  # the last frame's, for warming up new versions
        self.imgsz, self.plate_imgsz = imgsz, plate_imgsz
        self.use_mlflow = use_mlflow
        self.loader = loader or (MLflowModelLoader(tracking_uri=mlflow_tracking_uri) if use_mlflow else None)
        self.vehicle = ModelSlot(vehicle_model_name)
        self.plate = ModelSlot(plate_model_name)
        self.stages: list[FrameStage] = []
        for slot, fallback in ((self.vehicle, vehicle_model_path), (self.plate, plate_model_path)):
            path, meta = self.resolve(slot.name, fallback)
            cached = meta.get("source") in ("mlflow", "cache") and Path(path).suffix == ".onnx"
            optimized = optimized_for_this_box(Path(path)) if cached else None  # no frames to disturb yet
            with self.policy.session_creation(serving=False):
                model = load_backend(path, meta.get("version"), self.policy.threads, self.serving_imgsz(slot),
                                     optimized)
                warm_up(model)
            slot.swap(model, meta)
            log.info("%s: serving %s (%s)", slot.name, meta.get("version") or path, meta.get("source"))

    def resolve(self, name: str, fallback: str | None) -> tuple[str, dict[str, Any]]:
        """The file to serve ``name`` from, and where it came from: the registry (with ``use_mlflow``), the verified
        cache, else ``fallback``.

        Raises:
            ModelLoadError: none of them has one.
        """
        if self.loader is not None:
            return self.loader.get_model_path(name, fallback_filename=fallback)
        if not fallback:
            raise ModelLoadError(f"{name}: use_mlflow=False needs a local model path")
        path = Path(fallback)
        if not path.is_file():
            raise ModelLoadError(f"{name}: local model {path} does not exist")
        return str(path), {"source": "local", "version": None}

    def add_stage(self, stage: FrameStage) -> None:
        """Run ``stage`` on every frame after the two detectors (the plate reader: ``edge.reading``)."""
        self.stages.append(stage)

    def slots(self) -> list[ModelSlot]:
        """Every model slot: the two detectors', then each added stage's."""
        return [self.vehicle, self.plate, *(s for stage in self.stages for s in stage.slots())]

    def serving_imgsz(self, slot: ModelSlot) -> int | None:
        """The serving size of a detector slot's dynamic-shape model (None: as exported; other stages' slots)."""
        return self.imgsz if slot is self.vehicle else self.plate_imgsz if slot is self.plate else None

    def detect(self, frame: np.ndarray) -> FrameResult:
        """Vehicles in the frame, then plates within each vehicle's crop (the whole frame when no vehicle is found).

        Each vehicle box grows by ``yolo.CROP_MARGIN`` before it is cut out; the crops go to the plate model in
        batches, each fitted to the model's input size as its training images were (``lib.views``), so a plate
        keeps its size relative to its vehicle at any distance. Plates come back in frame pixels; where vehicle
        crops overlap, a plate found in both is kept once (:data:`PLATE_DEDUP_IOU`).
        """
        started = time.perf_counter()  # a frame's latency includes any wait for its turn
        with self.policy.frame():
            return self._detect(frame, started)

    def _detect(self, frame: np.ndarray, started: float) -> FrameResult:
        self.frame_shape = frame.shape
        vehicle_model, plate_model = self.vehicle.model, self.plate.model  # one version per frame, whatever swaps
        assert vehicle_model is not None and plate_model is not None
        vehicles = vehicle_model.detect(frame, conf=self.conf)
        h, w = frame.shape[:2]
        regions = [crop_region(v.x1, v.y1, v.x2, v.y2, w, h) for v in vehicles] or [(0, 0, w, h)]
        regions = [r for r in regions if r[2] - r[0] >= MIN_CROP_PX and r[3] - r[1] >= MIN_CROP_PX]
        crops = [frame[y1:y2, x1:x2] for x1, y1, x2, y2 in regions]
        many = getattr(plate_model, "detect_many", None)
        found = (many(crops, conf=self.plate_conf) if many is not None
                 else [plate_model.detect(c, conf=self.plate_conf) for c in crops])
        plates = [Detection(p.x1 + x1, p.y1 + y1, p.x2 + x1, p.y2 + y1, p.confidence, p.class_id, p.class_name,
                            p.model_version)
                  for (x1, y1, _, _), dets in zip(regions, found, strict=True) for p in dets]
        if len(regions) > 1:
            plates = dedup(plates, PLATE_DEDUP_IOU)
        result = FrameResult(vehicles, plates, vehicle_model.model_version, plate_model.model_version, 0.0)
        for stage in self.stages:
            result = stage(frame, result)
        return replace(result, latency_ms=(time.perf_counter() - started) * 1000)


def dedup(detections: list[Detection], threshold: float) -> list[Detection]:
    """Keep the most confident of detections of one class that overlap by an IoU over ``threshold`` (the same object
    found in two overlapping crops); order by confidence."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.confidence):
        if all(k.class_id != d.class_id or iou(k, d) <= threshold for k in kept):
            kept.append(d)
    return kept
