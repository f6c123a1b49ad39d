"""YOLO11 detection through ONNX Runtime: letterbox, inference, decoding and NMS, with numpy and OpenCV only.

Preprocessing reproduces Ultralytics' fixed-size letterbox (centre padding with grey 114, RGB, [0, 1], NCHW) so the
same ONNX file gives the same boxes here as in Ultralytics. Class names, input size and stride come from the model's
own ``metadata_props``, written by Ultralytics' exporter.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from alpr_pipelines.edge.box_optimized import available_providers

log = logging.getLogger(__name__)

PRECISION_KEY = "alpr_precision"  # metadata_props key: "int8" on a statically quantized model, absent on FP32
BATCH_PAD_WASTE = 1.3  # a batch of crops may hold at most 30% more pixels than its crops alone


@dataclass(frozen=True)
class Detection:
    """One detected box in original image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int
    class_name: str
    model_version: str | None = None


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: scale, then padding on the left/top."""

    gain: float
    pad_x: int
    pad_y: int


def letterbox(
    image: np.ndarray, size: tuple[int, int], stride: int = 32, auto: bool = False, scaleup: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad, as Ultralytics' ``LetterBox`` (centred, grey 114).

    ``auto=False`` pads to exactly ``size`` (h, w): what a fixed-shape model needs. ``auto=True`` pads only to the
    next multiple of ``stride`` (rectangular inference, for dynamic-shape models): a 640x384 frame at 640 stays
    640x384 instead of becoming 640x640, 40% less compute for the same boxes. ``scaleup=False`` never enlarges
    (crops smaller than ``size`` keep their pixels, the scale the model saw objects at in training).
    """
    h, w = image.shape[:2]
    gain = min(size[0] / h, size[1] / w)
    if not scaleup:
        gain = min(gain, 1.0)
    new_w, new_h = round(w * gain), round(h * gain)
    dw, dh = size[1] - new_w, size[0] - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, Letterbox(gain=gain, pad_x=left, pad_y=top)


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """HWC BGR uint8 -> 1x3xHxW RGB float32 in [0, 1] (one pass through OpenCV's ``blobFromImage``)."""
    return cv2.dnn.blobFromImage(image_bgr, scalefactor=1 / 255.0, swapRB=True)


def decode(
    raw: np.ndarray,
    box: Letterbox,
    shape: tuple[int, int],
    names: dict[int, str],
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    model_version: str | None = None,
) -> list[Detection]:
    """Turn one raw YOLO11 output ``(4 + nc, anchors)`` into detections in original image pixels.

    Class-aware NMS, as Ultralytics' default (``agnostic=False``).
    """
    # Threshold on the row-wise max first (contiguous rows of the raw output), transpose only the survivors.
    keep = raw[4:].max(0) > conf
    if not keep.any():
        return []
    pred = raw[:, keep].T  # kept anchors x (4 + nc)
    cls = pred[:, 4:].argmax(1)
    xywh, best = pred[:, :4], pred[np.arange(len(cls)), 4 + cls]
    xyxy = np.empty_like(xywh)
    xyxy[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    xyxy[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    order = np.argsort(-best, kind="stable")[:30000]
    xyxy, best, cls = xyxy[order], best[order], cls[order]
    # Offset boxes by class so one NMS pass never suppresses across classes.
    offset = xyxy + (cls[:, None] * 7680.0)
    idx = _nms(offset, best, iou)[:max_det]
    xyxy = xyxy[idx]
    xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - box.pad_x) / box.gain
    xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - box.pad_y) / box.gain
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, shape[1])
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, shape[0])
    return [
        Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(c), names.get(int(c), str(c)),
                  model_version)
        for b, s, c in zip(xyxy, best[idx], cls[idx], strict=True)
    ]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over score-sorted boxes; returns kept indices in score order."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(len(scores))
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def check_answer(raw: np.ndarray, names: dict[int, str], path: Path) -> None:
    """Raise ValueError unless ``raw`` (a network's answer for one image) has the rows a detector of ``names``
    answers with: 4 box values and one score per class, for each anchor."""
    if raw.ndim != 2 or raw.shape[0] != 4 + len(names):
        raise ValueError(f"{path}: the network answers {tuple(raw.shape)} per image, not 4 box values and "
                         f"{len(names)} class scores per anchor as its metadata's class names need; export it "
                         "again with Ultralytics")


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


@contextlib.contextmanager
def on_the_callers_core(threads: int | None) -> Iterator[None]:
    """The calling thread on core 0 for the block, where sessions made with ``threads`` (``session_options``) pin
    their pool threads to the other cores (ONNX Runtime's default). For creating a session: its pool threads spin
    from their start until a run ends, and a creation on the core pinned to one of them shared it with the spinning
    thread while core 0 sat idle (measured on 2 cores: 48-55 ms where it took 25-35 on a core of its own)."""
    pinned = None
    if not threads:
        try:
            before = os.sched_getaffinity(0)
            if len(before) > 1:
                os.sched_setaffinity(0, {min(before)})
                pinned = before
        except (AttributeError, OSError):  # not Linux, or not allowed here
            pass
    try:
        yield
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime options for a latency-bound, one-frame-at-a-time detector.

    All graph optimizations; sequential execution (the network is a chain, parallel branches buy nothing on a few
    cores); ``threads`` intra-op threads that spin while a run is in progress and stop the moment it returns.

    Spinning: between the network's ~300 operators the pool's threads either spin (ready for the next operator at
    once) or sleep (woken by the OS every time). ONNX Runtime's default also spins *after* a run, which on an edge box
    is the wrong time: the next thing to run is the other detector's session (vehicles, then plates in the crops) or
    a new version warming up, whose threads then fight the spinning ones for the same cores. So spin during a run,
    stop at its end (``session.force_spinning_stop``). Measured on 2 cores, YOLO11n at 640x384 then a batch of four
    plate crops: never spinning 20.3 ms alone and 29.4 ms per pair, ONNX Runtime's default 17.0 and 45.4 ms, this
    17.2 and 24.2 ms (INT8: 15.9/22.7, 13.4/33.9, 13.5/18.9 ms).

    Threads: ``threads``, else ONNX Runtime's default, one per core with each pool thread pinned to a core of its
    own (thread i to core i; core 0 is left to the calling thread). Pinned, the pool thread keeps its own core.
    Unpinned, on 2 cores, a frame whose pool thread woke on its caller's core while a starting child of the lowest
    priority ran on the other took 115 ms (steady p95 62 ms).
    A thread creating a session runs on core 0 meanwhile (:func:`on_the_callers_core`).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxDetector:
    """A YOLO11 ONNX model ready to detect; names, imgsz and stride are read from the file's metadata.

    A dynamic-shape model (exported with ``dynamic=True``; its input height and width are symbolic) is run
    rectangular: each frame is padded only to a multiple of the stride, never to a square. ``imgsz`` overrides the
    exported size for such a model (a model trained at 320 may serve 640 frames at 640); a fixed-shape model runs at
    its own size only. ``optimized``: the file ``box_optimized.optimized_for_this_box`` made of ``path``, loaded instead with
    no graph optimization left to do (a new version then loads without slowing the serving one).
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        model_version: str | None = None,
        imgsz: int | None = None,
        optimized: Path | None = None,
    ):
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"{path} is not an .onnx file; the ONNX backend loads only ONNX models")
        self.path = path
        self.model_version = model_version
        options = session_options(threads)
        if optimized is not None:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done already, for this box
        self.session = ort.InferenceSession(str(optimized or path), options,
                                            providers=providers or available_providers())
        meta = read_metadata(self.session)
        if "names" not in meta:
            raise ValueError(f"{path} has no class names in its metadata; export it with Ultralytics")
        self.names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        exported = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        self.stride = int(meta.get("stride", 32))
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dynamic = not all(isinstance(d, int) for d in first.shape[2:])
        self.precision = meta.get(PRECISION_KEY, "fp32")  # written by the pipeline's INT8 quantization
        self.imgsz: tuple[int, int] = (int(exported[0]), int(exported[1]))
        if imgsz is not None:
            self.resize(imgsz)

    def resize(self, imgsz: int) -> None:
        """Serve at ``imgsz`` (the longer side). Only a dynamic-shape model can change size."""
        if imgsz == self.imgsz[0] == self.imgsz[1]:
            return
        if not self.dynamic:
            raise ValueError(f"{self.path} has a fixed input of {self.imgsz[0]}x{self.imgsz[1]}; it cannot run at "
                             f"{imgsz} (export it with dynamic=True, or leave imgsz unset)")
        if imgsz < self.stride or imgsz % self.stride:
            raise ValueError(f"imgsz must be a positive multiple of the model's stride {self.stride}, got {imgsz}")
        self.imgsz = (imgsz, imgsz)

    def raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed 1x3xHxW tensor; returns ``(4 + nc, anchors)``."""
        return self.session.run(None, {self.input_name: tensor})[0][0]

    @property
    def first_run_costly(self) -> bool:
        """Whether this session's first run at the frames' shape costs much more than the runs after it, so it
        should warm up at that shape before it serves. On a GPU provider it does (kernel selection, and engine
        builds for TensorRT). On the CPU the first run plans memory for the shape, a few ms more than the runs after
        it, while each full-size warm-up run makes the frame behind it wait for a whole run (figure 4 of
        ``docs/benchmarks.md`` measures the frames of swaps). A fixed-shape model counts as costly: its smallest
        input is its full one, so :meth:`prove` would be a warm-up run anyway."""
        return self.session.get_providers()[0] != "CPUExecutionProvider" or not self.dynamic

    def prove(self) -> None:
        """Run the network once on its smallest input (one stride square), a few ms, to show before it serves that
        it runs on this box and answers as a detector of its classes does. Raises ValueError."""
        check_answer(self.raw(np.zeros((1, 3, self.stride, self.stride), np.float32)), self.names, self.path)

    def prepare(self, image_bgr: np.ndarray, scaleup: bool = True) -> tuple[np.ndarray, Letterbox]:
        """Letterbox (rectangular for a dynamic model) and convert to the network's input tensor."""
        padded, box = letterbox(image_bgr, self.imgsz, self.stride, auto=self.dynamic, scaleup=scaleup)
        return to_tensor(padded), box

    def detect_many(self, images: list[np.ndarray], conf: float = 0.25, iou: float = 0.7) -> list[list[Detection]]:
        """Detect in several images (crops), each fitted to the model's size as :meth:`detect` fits one, in as few
        network runs as pay off.

        A dynamic-shape model takes crops of similar shape as one batch: each is scaled as on its own, then padded
        (centred, grey) into the batch's common shape, the largest scaled height and width rounded up to the stride.
        A crop joins a batch only while the batch's padded pixels stay within :data:`BATCH_PAD_WASTE` of the pixels
        its crops need on their own, so a tall crop never makes every wide one pay for its height. Fewer runs save
        ONNX Runtime's per-call overhead. A fixed-shape model runs them one by one.
        """
        if not images:
            return []
        if not self.dynamic:
            return [self.detect(im, conf, iou) for im in images]
        s = self.stride
        gains = [min(self.imgsz[0] / im.shape[0], self.imgsz[1] / im.shape[1]) for im in images]
        scaled = [(round(im.shape[0] * g), round(im.shape[1] * g)) for im, g in zip(images, gains, strict=True)]
        shapes = [(-(-h // s) * s, -(-w // s) * s) for h, w in scaled]
        order = sorted(range(len(images)), key=lambda i: -shapes[i][0] * shapes[i][1])
        groups: list[list[int]] = []
        for i in order:
            if groups:
                group = groups[-1] + [i]
                h = max(shapes[j][0] for j in group)
                w = max(shapes[j][1] for j in group)
                if h * w * len(group) <= BATCH_PAD_WASTE * sum(shapes[j][0] * shapes[j][1] for j in group):
                    groups[-1] = group
                    continue
            groups.append([i])
        results: list[list[Detection]] = [[] for _ in images]
        for group in groups:
            if len(group) == 1:
                results[group[0]] = self.detect(images[group[0]], conf, iou)
                continue
            h, w = max(shapes[j][0] for j in group), max(shapes[j][1] for j in group)
            padded, boxes = [], []
            for j in group:
                fitted = images[j]
                if scaled[j] != images[j].shape[:2]:
                    fitted = cv2.resize(images[j], (scaled[j][1], scaled[j][0]), interpolation=cv2.INTER_LINEAR)
                out, box = letterbox(fitted, (h, w), s, auto=False, scaleup=False)  # pads only: it fits already
                padded.append(out)
                boxes.append(Letterbox(gain=gains[j] * box.gain, pad_x=box.pad_x, pad_y=box.pad_y))
            batch = cv2.dnn.blobFromImages(padded, scalefactor=1 / 255.0, swapRB=True)
            raw = self.session.run(None, {self.input_name: batch})[0]
            for k, (j, box) in enumerate(zip(group, boxes, strict=True)):
                results[j] = decode(raw[k], box, images[j].shape[:2], self.names, conf, iou,
                                    model_version=self.model_version)
        return results

    def detect(self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.7,
               scaleup: bool = True) -> list[Detection]:
        """Detect objects in a BGR image (as ``cv2.imread`` gives). ``scaleup=False`` never enlarges the image
        (for crops); it matters only for a dynamic model, a fixed one always fills its input."""
        tensor, box = self.prepare(image_bgr, scaleup=scaleup or not self.dynamic)
        raw = self.raw(tensor)
        return decode(raw, box, image_bgr.shape[:2], self.names, conf, iou, model_version=self.model_version)

