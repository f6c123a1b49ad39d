"""Score an exported ONNX model on the frozen golden set, through the same inference code the edge runs.

Detection decoding is ours (``alpr_pipelines.edge.backends.onnx``, what the edge runs); the metric arithmetic is
Ultralytics' ``ap_per_class`` (COCO-style AP at IoU 0.50:0.95, precision/recall at the max-F1 confidence), so the
numbers read like the ones its validator prints. A model that cannot be loaded or run raises: never a score of 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alpr_pipelines.edge.backends.onnx import OnnxDetector
from alpr_pipelines.edge.yolo import Detection
from alpr_pipelines.lib.datasets import label_path, load_data_yaml, split_images
from alpr_pipelines.lib.gate import CLASS_AP50_PREFIX

EVALUATOR_VERSION = "2"  # bump when scoring changes, so cached scores of older versions are recomputed
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EVAL_CONF = 0.001  # as Ultralytics' validator: keep low-confidence boxes so the PR curve is complete
LATENCY_WARMUP = 3


class EvaluationError(Exception):
    """The model could not be evaluated; promotion must not treat this as a score."""


class ModelUnusable(EvaluationError):
    """The model itself does not load or run: the version's fault, not the golden set's or the machine's."""


@dataclass(frozen=True)
class EvaluationResult:
    """Scores on the golden set and, when it was given, on its held-out "shift" split (generator settings training
    never draws: plate formats, colours, a font), which tells generalisation from memorisation."""

    mAP50: float
    mAP50_95: float
    precision: float
    recall: float
    per_class_ap50_95: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float
    file_size_mb: float
    images: int
    imgsz: int
    golden_fingerprint: str
    evaluator_version: str = EVALUATOR_VERSION
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    shift_mAP50: float | None = None
    shift_mAP50_95: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The numbers the gate reads (``AP50/<class>`` per class), and the shift split's beside them."""
        out = {"mAP50": self.mAP50, "mAP50-95": self.mAP50_95, "precision": self.precision, "recall": self.recall,
               "latency_ms_p95": self.latency_ms_p95,
               **{f"{CLASS_AP50_PREFIX}{name}": ap for name, ap in self.per_class_ap50.items()}}
        if self.shift_mAP50 is not None and self.shift_mAP50_95 is not None:
            out.update({"shift_mAP50": self.shift_mAP50, "shift_mAP50-95": self.shift_mAP50_95})
        return out


def _targets(image: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    lbl = label_path(image)
    rows = [line.split() for line in (lbl.read_text().splitlines() if lbl.is_file() else []) if line.strip()]
    if not rows:
        return np.zeros(0, int), np.zeros((0, 4))
    arr = np.asarray(rows, float)
    cls, cx, cy, w, h = arr[:, 0].astype(int), arr[:, 1] * width, arr[:, 2] * height, arr[:, 3] * width, arr[:, 4] * height
    return cls, np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes ``a`` (M, 4) and ``b`` (N, 4) -> (M, N)."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match(dets: list[Detection], true_cls: np.ndarray, true_boxes: np.ndarray) -> np.ndarray:
    """(N, 10) correct-at-IoU-threshold matrix; greedy in confidence order, one target per detection and threshold."""
    correct = np.zeros((len(dets), len(IOU_THRESHOLDS)), bool)
    if not dets or not len(true_cls):
        return correct
    boxes = np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets])
    pred_cls = np.array([d.class_id for d in dets])
    iou = _iou_matrix(true_boxes, boxes) * (true_cls[:, None] == pred_cls[None, :])
    claimed = np.zeros((len(true_cls), len(IOU_THRESHOLDS)), bool)
    for j in np.argsort([-d.confidence for d in dets], kind="stable"):
        available = np.where(claimed, 0.0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[k, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


@dataclass(frozen=True)
class Scores:
    """COCO-style detection scores of a set of images."""

    mAP50: float
    mAP50_95: float
    precision: float
    recall: float
    per_class_ap50_95: dict[str, float]
    latencies_ms: list[float]
    per_class_ap50: dict[str, float] = field(default_factory=dict)


def score_detections(detect: Callable[[np.ndarray], list[Detection]], names: dict[int, str],
                     images: list[Path]) -> Scores:
    """Score ``detect`` (BGR image -> detections in image pixels, low confidence kept) on labelled ``images``.

    Any detector can be scored the same way: ours, or Ultralytics' predict wrapped to return :class:`Detection`.

    Raises:
        EvaluationError: an image cannot be read or the detector fails on it.
    """
    from ultralytics.utils.metrics import ap_per_class

    stats_tp, stats_conf, stats_pred, stats_target = [], [], [], []
    latencies = []
    for image_path in images:
        image = cv2.imread(str(image_path))
        if image is None:
            raise EvaluationError(f"golden image {image_path} cannot be read")
        started = time.perf_counter()
        try:
            dets = detect(image)
        except Exception as exc:
            raise ModelUnusable(f"the detector failed on {image_path}: {exc}") from exc
        latencies.append((time.perf_counter() - started) * 1000)
        true_cls, true_boxes = _targets(image_path, image.shape[1], image.shape[0])
        stats_tp.append(match(dets, true_cls, true_boxes))
        stats_conf.append(np.array([d.confidence for d in dets]))
        stats_pred.append(np.array([d.class_id for d in dets], int))
        stats_target.append(true_cls)
    tp = np.concatenate(stats_tp) if stats_tp else np.zeros((0, 10), bool)
    conf, pred, target = (np.concatenate(x) for x in (stats_conf, stats_pred, stats_target))
    # Classes the images hold: a class with no instance here has no AP to speak of, and is left out.
    per_class = {names[int(c)]: 0.0 for c in sorted(set(target.tolist())) if int(c) in names}
    per_class50 = dict(per_class)
    if len(target) and len(conf):
        _, _, p, r, _, ap, classes, *_ = ap_per_class(tp, conf, pred, target)
        for c, ap_c in zip(classes, ap, strict=True):
            per_class[names[int(c)]] = float(ap_c.mean())
            per_class50[names[int(c)]] = float(ap_c[0])
        map50, map50_95, precision, recall = float(ap[:, 0].mean()), float(ap.mean()), float(p.mean()), float(r.mean())
    else:  # nothing detected at all: a real, measured zero (the model ran), not a failure
        map50 = map50_95 = precision = recall = 0.0
    return Scores(map50, map50_95, precision, recall, per_class, latencies, per_class50)


def evaluate_onnx(onnx_path: Path, golden_yaml: Path, golden_fingerprint: str, threads: int | None = None,
                  max_images: int | None = None, imgsz: int | None = None,
                  shift_yaml: Path | None = None) -> EvaluationResult:
    """Score ``onnx_path`` on the golden set's ``val`` split (at ``imgsz`` for a dynamic-shape model, if given), and
    on the held-out shift split ``shift_yaml`` when given.

    Raises:
        EvaluationError: the model does not load or run, or the golden set is empty.
    """
    try:
        detector = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"], threads=threads, imgsz=imgsz)
    except Exception as exc:
        raise ModelUnusable(f"cannot load {onnx_path} for evaluation: {exc}") from exc

    def images_of(data_yaml: Path) -> list[Path]:
        images = split_images(load_data_yaml(data_yaml), "val")[:max_images]
        if not images:
            raise EvaluationError(f"golden set {data_yaml} has no images")
        return images

    images = images_of(golden_yaml)
    warm = cv2.imread(str(images[0]))
    if warm is None:
        raise EvaluationError(f"golden image {images[0]} cannot be read")
    for _ in range(LATENCY_WARMUP):
        detector.detect(warm, conf=EVAL_CONF)

    def detect(image: np.ndarray) -> list[Detection]:
        return detector.detect(image, conf=EVAL_CONF)

    scores = score_detections(detect, detector.names, images)
    shift = score_detections(detect, detector.names, images_of(shift_yaml)) if shift_yaml is not None else None
    lat = np.asarray(scores.latencies_ms)
    return EvaluationResult(
        mAP50=scores.mAP50, mAP50_95=scores.mAP50_95, precision=scores.precision, recall=scores.recall,
        per_class_ap50_95=scores.per_class_ap50_95, per_class_ap50=scores.per_class_ap50,
        latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p95=float(np.percentile(lat, 95)),
        file_size_mb=Path(onnx_path).stat().st_size / 1e6, images=len(images), imgsz=detector.imgsz[0],
        golden_fingerprint=golden_fingerprint,
        shift_mAP50=shift.mAP50 if shift else None, shift_mAP50_95=shift.mAP50_95 if shift else None,
    )


@dataclass(frozen=True)
class Agreement:
    """How detections agree with known boxes at one IoU: matched pairs, and what each side had in all."""

    matched: int
    detected: int
    truth: int

    @property
    def precision(self) -> float:
        return self.matched / self.detected if self.detected else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 0.0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.matched + other.matched, self.detected + other.detected, self.truth + other.truth)


def match_boxes(truth: np.ndarray, detected: np.ndarray, iou: float = 0.5,
                same_class: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(truth index, detection index) pairs, greedily by IoU, each box at most once, every pair's IoU at least
    ``iou``; ``same_class`` (truth x detected, bool) restricts pairs to boxes of one class."""
    if not len(truth) or not len(detected):
        return []
    overlap = _iou_matrix(truth, detected)
    if same_class is not None:
        overlap *= same_class
    pairs = []
    while overlap.size and overlap.max() >= iou:
        t, d = np.unravel_index(overlap.argmax(), overlap.shape)
        pairs.append((int(t), int(d)))
        overlap[t, :] = 0
        overlap[:, d] = 0
    return pairs


def agreement(detected: list[tuple[str, list[float]]], truth: list[tuple[str, list[float]]],
              iou: float = 0.5) -> Agreement:
    """Match ``(class, [x1, y1, x2, y2])`` detections to known boxes of the same class, greedily by IoU, each box
    at most once; a pair counts when its IoU reaches ``iou``."""
    if not detected or not truth:
        return Agreement(0, len(detected), len(truth))
    pairs = match_boxes(np.array([b for _, b in truth], float), np.array([b for _, b in detected], float), iou,
                        np.array([[t == d for d, _ in detected] for t, _ in truth]))
    return Agreement(len(pairs), len(detected), len(truth))
