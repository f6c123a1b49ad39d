"""Two-stage ALPR detection with hot-swappable models: vehicles in the frame, then plates within each vehicle.

A :class:`ModelSlot` holds the model that serves frames. A new version is loaded and made ready off the frame path,
then put in the slot with one reference assignment between frames; the frame path reads the slot once per frame, so
a frame is served entirely by one version and no frame waits for a download or a load. Inference takes turns
(``edge.turns.Turns``): a frame and a piece of loading a new version never overlap (see there why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alpr_pipelines.edge.box_optimized import optimized_for_this_box
from alpr_pipelines.edge.loader import MLflowModelLoader, ModelLoadError, RemoteVersion, manifest_sha256
from alpr_pipelines.edge.onnx_backend import Detection, OnnxDetector, on_the_callers_core
from alpr_pipelines.edge.prefetch import Spare, fetch_prepared
from alpr_pipelines.edge.priority import check_priority, realtime
from alpr_pipelines.edge.turns import Turns, piece_of

log = logging.getLogger(__name__)

VEHICLE_MODEL = "alpr-vehicle-detector"
PLATE_MODEL = "alpr-plate-detector"
# Each vehicle box is grown by this share of its width and height on every side before its crop goes to the plate
# detector: a plate at the box's edge is not cut, and the plate model sees the context it was trained with
# (lib.views cuts its training crops the same way).
CROP_MARGIN = 0.05
MIN_CROP_PX = 8  # a crop narrower or lower than this holds no readable plate
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
        from alpr_pipelines.edge.tensorrt_backend import TensorRTDetector

        return TensorRTDetector(path, model_version=version)
    raise ModelLoadError(f"{path}: the edge loads only .onnx or .engine files, never {path.suffix or 'this'}")


def warm_up(backend: Backend, runs: int = 2, frame_shape: tuple[int, ...] | None = None,
            turns: Turns | None = None) -> None:
    """Run the model on grey frames before it serves: ONNX Runtime plans memory and picks kernels per input shape
    on the first run, so warm up at the shape the camera delivers (``frame_shape``) when it is known. ``turns``: the
    serving detector's :class:`Turns`, a piece for each run, so a warm-up never overlaps a frame."""
    h, w = frame_shape[:2] if frame_shape else backend.imgsz
    frame = np.full((h, w, 3), 114, np.uint8)
    for _ in range(runs):
        with piece_of(turns):
            backend.detect(frame)


def first_run(backend: Backend, frame_shape: tuple[int, ...] | None = None) -> bool:
    """A new version's first run, made in the same piece (turn) as its session: a new ONNX Runtime session's threads
    spin from their start until a run ends (measured on 2 cores: 28-71 ms of CPU in the 100 ms after a creation,
    none after a run), and the frame after a piece that only created the session lost that much of a core. Returns
    whether the version is ready to serve after it.

    For an ONNX model whose first run at the frames' shape is cheap (``OnnxDetector.first_run_costly``: the CPU
    provider, dynamic shape), the run is one on its smallest input (``prove``, a few ms), which shows it runs here
    and leaves the shape's memory planning to its first frame: True. For the others (GPU providers, fixed-shape
    models, TensorRT engines) it is the first of the warm-up's runs at the frames' shape: False, one more run
    (:func:`warm_up` with ``runs=1``) in a piece of its own. Raises whatever the run raises: the caller keeps
    serving the old version."""
    if isinstance(backend, OnnxDetector) and not backend.first_run_costly:
        backend.prove()
        return True
    warm_up(backend, runs=1, frame_shape=frame_shape)
    return False


@dataclass
class ModelSlot:
    """The model serving one role; ``swap`` replaces it atomically and keeps the previous one for fallback."""

    name: str
    model: Backend | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    previous: Backend | None = None
    swaps: int = 0

    @property
    def version(self) -> str | None:
        return self.metadata.get("version")

    def swap(self, model: Backend, metadata: dict[str, Any]) -> None:
        self.previous, self.model, self.metadata = self.model, model, metadata
        self.swaps += 1


@dataclass(frozen=True)
class FrameResult:
    """Detections of one frame; every detection carries the version of the model that produced it."""

    vehicles: list[Detection]
    plates: list[Detection]
    vehicle_version: str | None
    plate_version: str | None
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        def det(d: Detection) -> dict[str, Any]:
            return {"box": [round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1)], "class": d.class_name,
                    "confidence": round(d.confidence, 4), "model_version": d.model_version}

        return {"vehicles": [det(d) for d in self.vehicles], "plates": [det(d) for d in self.plates],
                "vehicle_version": self.vehicle_version, "plate_version": self.plate_version,
                "latency_ms": round(self.latency_ms, 2)}


class YOLOv11Detector:
    """The seed's detector API.

    ``YOLOv11Detector(vehicle_model_path=..., plate_model_path=..., use_mlflow=True, mlflow_tracking_uri=...)``:
    with ``use_mlflow`` the registry's current version of each model is loaded (falling back to the cache, then to
    the given local files); without it, the local files only. Paths must be ``.onnx`` or ``.engine``.
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
        threads: int | None = None,
        vehicle_model_name: str = VEHICLE_MODEL,
        plate_model_name: str = PLATE_MODEL,
        imgsz: int | None = None,
        plate_imgsz: int | None = None,
        realtime_priority: int | None = None,
    ):
        self.conf, self.plate_conf, self.threads = conf, plate_conf, threads
        self.realtime_priority = check_priority(realtime_priority, "realtime_priority")
        self.frame_shape: tuple[int, ...] | None = None  # the last frame's, for warming up new versions
        # Serving sizes for dynamic-shape models (None: the size each model was exported at).
        self.imgsz, self.plate_imgsz = imgsz, plate_imgsz
        self.use_mlflow = use_mlflow
        self.loader = loader or (MLflowModelLoader(tracking_uri=mlflow_tracking_uri) if use_mlflow else None)
        self.vehicle = ModelSlot(vehicle_model_name)
        self.plate = ModelSlot(plate_model_name)
        self.turns = Turns()  # frames take turns with the pieces of loading new versions (edge.turns)
        for slot, fallback in ((self.vehicle, vehicle_model_path), (self.plate, plate_model_path)):
            path, meta = self._resolve(slot.name, fallback)
            cached = meta.get("source") in ("mlflow", "cache") and Path(path).suffix == ".onnx"
            optimized = optimized_for_this_box(Path(path)) if cached else None  # no frames to disturb yet
            with realtime(self.realtime_priority):  # the session's pool threads serve at the frames' priority
                model = load_backend(path, meta.get("version"), threads, self.serving_imgsz(slot), optimized)
                warm_up(model)
            slot.swap(model, meta)
            log.info("%s: serving %s (%s)", slot.name, meta.get("version") or path, meta.get("source"))

    def _resolve(self, name: str, fallback: str | None) -> tuple[str, dict[str, Any]]:
        if self.loader is not None:
            return self.loader.get_model_path(name, fallback_filename=fallback)
        if not fallback:
            raise ModelLoadError(f"{name}: use_mlflow=False needs a local model path")
        path = Path(fallback)
        if not path.is_file():
            raise ModelLoadError(f"{name}: local model {path} does not exist")
        return str(path), {"source": "local", "version": None}

    def slots(self) -> list[ModelSlot]:
        return [self.vehicle, self.plate]

    def serving_imgsz(self, slot: ModelSlot) -> int | None:
        return self.imgsz if slot is self.vehicle else self.plate_imgsz

    def detect(self, frame: np.ndarray) -> FrameResult:
        """Vehicles in the frame, then plates within each vehicle's crop (the whole frame when no vehicle is found).

        Each vehicle box grows by :data:`CROP_MARGIN` before it is cut out; the crops go to the plate model in
        batches, each fitted to the model's input size as its training images were (``lib.views``), so a plate
        keeps its size relative to its vehicle at any distance. Plates come back in frame pixels; where vehicle
        crops overlap, a plate found in both is kept once (:data:`PLATE_DEDUP_IOU`).
        """
        started = time.perf_counter()  # a frame's latency includes any wait for its turn
        with self.turns:
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
        return FrameResult(vehicles, plates, vehicle_model.model_version, plate_model.model_version,
                           (time.perf_counter() - started) * 1000)


def crop_region(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
                margins: tuple[float, float, float, float] = (CROP_MARGIN,) * 4) -> tuple[int, int, int, int]:
    """The pixels cut out for the vehicle box ``(x1, y1, x2, y2)``: the box grown by ``margins`` (left, top, right,
    bottom, as shares of its width and height), inside the ``width`` x ``height`` frame."""
    bw, bh = x2 - x1, y2 - y1
    left, top, right, bottom = margins
    return (max(0, int(np.floor(x1 - left * bw))), max(0, int(np.floor(y1 - top * bh))),
            min(width, int(np.ceil(x2 + right * bw))), min(height, int(np.ceil(y2 + bottom * bh))))


def dedup(detections: list[Detection], iou: float) -> list[Detection]:
    """Keep the most confident of detections of one class that overlap by more than ``iou`` (the same object found
    in two overlapping crops); order by confidence."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.confidence):
        if all(k.class_id != d.class_id or _iou(k, d) <= iou for k in kept):
            kept.append(d)
    return kept


def _iou(a: Detection, b: Detection) -> float:
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class PollStats:
    polls: int = 0
    errors: int = 0
    swaps: int = 0
    failed_swaps: int = 0
    reachable: bool = True
    last_error: str | None = None


class RegistryPoller(threading.Thread):
    """Follows the registry for one slot: one small request per interval, a download only when the version changed.

    The interval gets up to ``jitter`` of random spread (a fleet does not poll in lockstep) and backs off
    exponentially, up to ``max_backoff``, while the registry is unreachable. Any failure in download, verification,
    load or proving run leaves the serving model in place and is reported through ``on_event``. ``turns``: the
    serving detector's :class:`Turns`, so that the new version's pieces of loading fall between frames.
    ``spare``: the box's ``prefetch.Spare``, shared by its pollers (by default each poller keeps its own).
    ``realtime_priority``: the frame loop's (``edge.priority``), at which the new sessions are created, so that their
    pool threads serve at it.

    A new version is downloaded, verified and optimized for this box by a child process of the lowest CPU priority
    (``edge.prefetch``), to which this thread gives slices of idle cores in turns with the frames; it then creates
    the session and runs it once (:func:`first_run`) in one piece at a frame's end, and warms it up further where
    its first run at the frames' shape is costly, a piece per run. A new version so costs the frames being served
    nothing but the turns it takes.
    """

    def __init__(self, loader: MLflowModelLoader, slot: ModelSlot, interval: float = 10.0, jitter: float = 0.2,
                 max_backoff: float = 120.0, threads: int | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None, imgsz: int | None = None,
                 frame_shape: Callable[[], tuple[int, ...] | None] = lambda: None,
                 turns: Turns | None = None, spare: Spare | None = None, realtime_priority: int | None = None):
        super().__init__(name=f"poller-{slot.name}", daemon=True)
        if interval > 15:
            log.warning("poll interval %.0fs is above 15s: new versions will take longer to reach this box", interval)
        self.loader, self.slot, self.interval, self.jitter = loader, slot, interval, jitter
        self.max_backoff, self.threads, self.imgsz = max_backoff, threads, imgsz
        self.frame_shape = frame_shape  # where the frames' shape is read from, to warm up new versions at it
        self.turns = turns
        self.realtime_priority = check_priority(realtime_priority, "realtime_priority")  # of its sessions' threads
        self.on_event = on_event or (lambda kind, data: None)
        self.stats = PollStats()
        self._stop = threading.Event()
        self.spare = spare or Spare()  # the next fetch's child, started ahead (edge.prefetch); shared by a box's pollers
        self._own_spare = spare is None
        self._rng = np.random.default_rng()

    def stop(self) -> None:
        self._stop.set()

    def next_delay(self) -> float:
        base = self.interval if self.stats.reachable else min(
            self.max_backoff, self.interval * 2 ** min(self.stats.errors, 10))
        return base * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def poll_once(self) -> bool:
        """One poll; returns True when a new version was swapped in."""
        self.stats.polls += 1
        try:
            remote = self.loader.current_version(self.slot.name)
        except Exception as exc:  # noqa: BLE001 - any registry failure means: keep serving, back off
            self.stats.errors += 1
            self.stats.reachable = False
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.on_event("poll_error", {"model": self.slot.name, "error": self.stats.last_error})
            return False
        self.stats.reachable, self.stats.errors = True, 0
        self.on_event("poll_ok", {"model": self.slot.name})
        if remote is None or remote.version == self.slot.version:
            return False
        log.info("%s: v%s is the registry's version now (%s); loading it while v%s serves", self.slot.name,
                 remote.version, remote.via, self.slot.version)
        started = time.perf_counter()
        try:
            return self._swap_in(remote, started)
        finally:
            self.spare.done()

    def _swap_in(self, remote: RemoteVersion, started: float) -> bool:
        try:
            path, manifest, optimized = fetch_prepared(self.loader, remote, turns=self.turns, child=self.spare.take())
            fetched = time.perf_counter()
            log.debug("%s v%s: fetched, verified, optimized: %s", self.slot.name, remote.version, optimized)
            # What is left is tens of ms of one core: between frames too, and on the core ONNX Runtime leaves free.
            with piece_of(self.turns), on_the_callers_core(self.threads), realtime(self.realtime_priority):
                model = load_backend(path, remote.version, self.threads, self.imgsz, optimized)
                ready = first_run(model, frame_shape=self.frame_shape())
            loaded = time.perf_counter()
            log.debug("%s v%s: session created and run once", self.slot.name, remote.version)
            if not ready:
                warm_up(model, runs=1, frame_shape=self.frame_shape(), turns=self.turns)
            warmed = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - a bad version must never take down the serving one
            self.stats.failed_swaps += 1
            self.on_event("swap_failed", {"model": self.slot.name, "version": remote.version,
                                          "error": f"{type(exc).__name__}: {exc}"})
            log.error("%s v%s could not be loaded, still serving v%s: %s", self.slot.name, remote.version,
                      self.slot.version, exc)
            return False
        old = self.slot.version
        sha = manifest_sha256(manifest, path)
        with piece_of(self.turns):  # it releases the version before the old one, whose memory goes back then
            self.slot.swap(model, {"source": "mlflow", "version": remote.version, "via": remote.via, "sha256": sha})
        self.loader.mark_current(self.slot.name, remote.version, Path(path), sha, remote.via)
        self.loader.prune(self.slot.name, {v for v in (remote.version, old) if v})
        self.stats.swaps += 1
        self.on_event("swapped", {"model": self.slot.name, "from": old, "to": remote.version})
        log.info("%s: swapped v%s -> v%s (fetch %.2f s, session and first run %.0f ms, warm-up %.0f ms)",
                 self.slot.name, old, remote.version, fetched - started, (loaded - fetched) * 1000,
                 (warmed - loaded) * 1000)
        return True

    def run(self) -> None:
        try:
            while True:
                self.spare.ready(self.turns)  # started ahead, so it has imported by the time a version is new
                if self._stop.wait(self.next_delay()):
                    break
                self.poll_once()
        finally:
            if self._own_spare:
                self.spare.close()
