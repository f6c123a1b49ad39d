"""YOLO11 detection through ONNX Runtime: letterbox, inference, decoding and NMS, with numpy and OpenCV only.

Preprocessing reproduces Ultralytics' fixed-size letterbox (centre padding with grey 114, RGB, [0, 1], NCHW) so the
same ONNX file gives the same boxes here as in Ultralytics. Class names, input size and stride come from the model's
own ``metadata_props``, written by Ultralytics' exporter.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


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


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad to ``size`` (h, w), as Ultralytics' ``LetterBox(auto=False)``."""
    h, w = image.shape[:2]
    gain = min(size[0] / h, size[1] / w)
    new_w, new_h = round(w * gain), round(h * gain)
    dw, dh = (size[1] - new_w) / 2, (size[0] - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return out, Letterbox(gain=gain, pad_x=left, pad_y=top)


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """HWC BGR uint8 -> 1x3xHxW RGB float32 in [0, 1]."""
    rgb = image_bgr[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(rgb, dtype=np.float32)[None] / 255.0


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
    pred = raw.T  # anchors x (4 + nc)
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best > conf
    if not keep.any():
        return []
    xywh, best, cls = pred[keep, :4], best[keep], cls[keep]
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


def read_metadata(session: ort.InferenceSession) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def available_providers() -> list[str]:
    """Execution providers in order of preference, limited to what this machine's onnxruntime offers."""
    preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    return [p for p in preferred if p in have]


class OnnxDetector:
    """A YOLO11 ONNX model ready to detect; names, imgsz and stride are read from the file's metadata."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        model_version: str | None = None,
    ):
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"{path} is not an .onnx file; the ONNX backend loads only ONNX models")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = path
        self.model_version = model_version
        self.session = ort.InferenceSession(str(path), options, providers=providers or available_providers())
        meta = read_metadata(self.session)
        if "names" not in meta:
            raise ValueError(f"{path} has no class names in its metadata; export it with Ultralytics")
        self.names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        imgsz = ast.literal_eval(meta.get("imgsz", "[640, 640]"))
        self.imgsz: tuple[int, int] = (int(imgsz[0]), int(imgsz[1]))
        self.stride = int(meta.get("stride", 32))
        self.input_name = self.session.get_inputs()[0].name

    def raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run the network on a preprocessed 1x3xHxW tensor; returns ``(4 + nc, anchors)``."""
        return self.session.run(None, {self.input_name: tensor})[0][0]

    def detect(self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> list[Detection]:
        """Detect objects in a BGR image (as ``cv2.imread`` gives)."""
        padded, box = letterbox(image_bgr, self.imgsz)
        raw = self.raw(to_tensor(padded))
        return decode(raw, box, image_bgr.shape[:2], self.names, conf, iou, model_version=self.model_version)
