"""What a YOLO11 detector's numbers mean, with numpy and OpenCV only: boxes, the letterbox that fits an image to the
network's input, and decoding its raw output (boxes, class scores, NMS) back into image pixels.

Preprocessing reproduces Ultralytics' letterbox (centred padding with grey 114, RGB, [0, 1], NCHW), so the same model
gives the same boxes here as in Ultralytics. The backends (``edge.backends``) run the network; the pipeline's
evaluation and export checks use these functions too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Each vehicle box is grown by this share of its width and height on every side before its crop goes to the plate
# detector: a plate at the box's edge is not cut, and the plate model sees the context it was trained with
# (lib.views cuts its training crops the same way).
CROP_MARGIN = 0.05
MIN_CROP_PX = 8  # a crop narrower or lower than this holds no readable plate


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
    (an image smaller than ``size`` keeps its pixels).
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
    idx = nms(offset, best, iou)[:max_det]
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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
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


def iou(a: Detection, b: Detection) -> float:
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def crop_region(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
                margins: tuple[float, float, float, float] = (CROP_MARGIN,) * 4) -> tuple[int, int, int, int]:
    """The pixels cut out for the vehicle box ``(x1, y1, x2, y2)``: the box grown by ``margins`` (left, top, right,
    bottom, as shares of its width and height), inside the ``width`` x ``height`` frame."""
    bw, bh = x2 - x1, y2 - y1
    left, top, right, bottom = margins
    return (max(0, int(np.floor(x1 - left * bw))), max(0, int(np.floor(y1 - top * bh))),
            min(width, int(np.ceil(x2 + right * bw))), min(height, int(np.ceil(y2 + bottom * bh))))
