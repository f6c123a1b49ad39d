"""Static INT8 quantization of an exported YOLO11 ONNX model for CPU edge boxes, kept only where it keeps accuracy.

ONNX Runtime's static quantization (QDQ format, per-channel signed weights, unsigned activations) calibrated on
training images, preprocessed exactly as the edge will (rectangular letterbox at the serving size). The detection
head's decoding (distribution focal loss, box arithmetic, the final class-logit and box convolutions, the sigmoid)
stays FP32: quantizing those outputs costs accuracy (measured: the whole head quantized found nothing at 320). On the
benchmark's 2-core AMD EPYC VMs with VNNI the edge serves frames 1.2-1.4x faster end to end with it than with FP32
(docs/benchmarks.md, figure 1's limits).

Weights use 7 of their 8 bits (``reduce_range``). The file is made once and served by every box in the fleet, and
x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) multiply unsigned activations by signed weights with an
instruction whose 16-bit pair sums saturate at full-range weights (ONNX Runtime's quantization guide). Measured on
an AMD EPYC with AVX2 only, the benchmark's vehicle model: mAP50-95 0.0632 FP32, 0.0554 INT8 with 8-bit weights (a
0.8-point drop the gate rejects), 0.0635 with 7-bit, at the same speed. Seven bits cost a little resolution on every
CPU; the accuracy gate measures each version with them.

:func:`compare_accuracy` scores both models on labelled images through the edge's own inference code; the pipeline
publishes the INT8 file only when mAP50-95 drops by no more than :data:`MAX_MAP_DROP` (0.5 points).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alpr_pipelines.edge.backends.onnx import PRECISION_KEY, OnnxDetector
from alpr_pipelines.edge.yolo import Detection
from alpr_pipelines.lib.exports import ExportResult

MAX_MAP_DROP = 0.005  # mAP50-95, absolute: 0.5 points
CALIBRATION_IMAGES = 32


class QuantizationError(Exception):
    """INT8 quantization failed; the FP32 model is unaffected."""


def head_nodes_to_exclude(model: Any) -> list[str]:
    """Names of the detection head's decoding nodes: everything in the head's scope (``/model.N/``, the scope of
    the graph's last node) except the inner convolutions of its box and class branches (``cv2.i.0/1``,
    ``cv3.i.0/1``), which carry the compute."""
    nodes = list(model.graph.node)
    last = nodes[-1].name
    if not last.startswith("/model.") or last.count("/") < 2:
        raise QuantizationError(f"unexpected graph: last node {last!r} is not in a /model.N/ scope (not a YOLO "
                                "export from Ultralytics?)")
    head = "/".join(last.split("/")[:2]) + "/"
    inner = tuple(f"{head}{branch}.{i}/{branch}.{i}.{j}/" for branch in ("cv2", "cv3") for i in range(8)
                  for j in (0, 1))
    return [n.name for n in nodes if n.name.startswith(head) and not n.name.startswith(inner)]


def _calibration_tensors(images: list[Path], sizes: list[int], stride: int) -> list[np.ndarray]:
    from alpr_pipelines.edge.yolo import letterbox, to_tensor

    tensors = []
    for i, path in enumerate(images):
        image = cv2.imread(str(path))
        if image is None:
            raise QuantizationError(f"calibration image {path} cannot be read")
        size = sizes[i % len(sizes)]  # several serving sizes: alternate, so ranges cover each
        tensors.append(to_tensor(letterbox(image, (size, size), stride, auto=True)[0]))
    return tensors


def quantize_int8(fp32_onnx: Path, calibration_images: list[Path], dest: Path,
                  imgsz: int | list[int] | None = None) -> Path:
    """Write a statically quantized copy of the dynamic-shape ``fp32_onnx`` to ``dest`` (atomically).

    ``imgsz``: the serving size(s) to calibrate at (default: the exported size). Raises :class:`QuantizationError`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_images:
        raise QuantizationError("INT8 calibration needs images; the dataset's train split is empty")
    fp32 = OnnxDetector(fp32_onnx, providers=["CPUExecutionProvider"])
    if not fp32.dynamic:
        raise QuantizationError(f"{fp32_onnx} has a fixed input shape; quantize the dynamic-shape export")
    sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz or [fp32.imgsz[0]])
    step = max(1, len(calibration_images) // CALIBRATION_IMAGES)
    tensors = _calibration_tensors(calibration_images[::step][:CALIBRATION_IMAGES], sizes, fp32.stride)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{fp32.input_name: t} for t in tensors])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alpr-int8-", dir=dest.parent) as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            # Symbolic shape inference cannot follow the dynamic H/W through YOLO's head; the rest of the
            # pre-processing (constant folding, fusions) still applies.
            quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
            exclude = head_nodes_to_exclude(onnx.load(str(pre)))
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            nodes_to_exclude=exclude)
        except QuantizationError:
            raise
        except Exception as exc:
            raise QuantizationError(f"INT8 quantization of {fp32_onnx} failed: {exc}") from exc
        model = onnx.load(str(out))
        # Ultralytics' metadata (names, imgsz, stride) survives quantization; add the precision for the edge.
        props = {p.key: p.value for p in model.metadata_props}
        missing = {"names", "imgsz", "stride"} - set(props)
        if missing:
            for p in onnx.load(str(fp32_onnx), load_external_data=False).metadata_props:
                if p.key in missing:
                    model.metadata_props.add(key=p.key, value=p.value)
        model.metadata_props.add(key=PRECISION_KEY, value="int8")
        onnx.save(model, str(out))
        os.replace(out, dest)
    return dest


@dataclass(frozen=True)
class Int8Report:
    """FP32 against INT8 on the same labelled images, through the edge's inference code."""

    images: int
    imgsz: int
    map50_95_fp32: float
    map50_95_int8: float
    map50_fp32: float
    map50_int8: float
    ms_per_image_fp32: float
    ms_per_image_int8: float
    max_drop: float
    accepted: bool

    @property
    def drop(self) -> float:
        return self.map50_95_fp32 - self.map50_95_int8

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop,
                "speedup": self.ms_per_image_fp32 / self.ms_per_image_int8 if self.ms_per_image_int8 else None}


def compare_accuracy(fp32_onnx: Path, int8_onnx: Path, images: list[Path], imgsz: int | None = None,
                     max_drop: float = MAX_MAP_DROP) -> Int8Report:
    """Score both models on labelled ``images`` (rectangular inference at ``imgsz``); accepted when the INT8
    model's mAP50-95 is at most ``max_drop`` below FP32's."""
    from alpr_pipelines.lib.evaluation import EVAL_CONF, score_detections

    if not images:
        raise QuantizationError("the INT8 accuracy check needs labelled images; the validation split is empty")
    warm = cv2.imread(str(images[0]))
    if warm is None:
        raise QuantizationError(f"image {images[0]} cannot be read")
    results = {}
    for key, path in (("fp32", fp32_onnx), ("int8", int8_onnx)):
        det = OnnxDetector(path, providers=["CPUExecutionProvider"], imgsz=imgsz)
        det.detect(warm, conf=EVAL_CONF)

        def detect(image: np.ndarray, d: OnnxDetector = det) -> list[Detection]:
            return d.detect(image, conf=EVAL_CONF)

        results[key] = score_detections(detect, det.names, images)
        size = det.imgsz[0]
    fp, q = results["fp32"], results["int8"]
    return Int8Report(
        images=len(images), imgsz=size, map50_95_fp32=fp.mAP50_95, map50_95_int8=q.mAP50_95, map50_fp32=fp.mAP50,
        map50_int8=q.mAP50, ms_per_image_fp32=float(np.median(fp.latencies_ms)),
        ms_per_image_int8=float(np.median(q.latencies_ms)), max_drop=max_drop,
        accepted=fp.mAP50_95 - q.mAP50_95 <= max_drop,
    )


def build_int8(fp32_onnx: Path, train_images: list[Path], val_images: list[Path],
               max_drop: float = MAX_MAP_DROP) -> ExportResult:
    """Quantize ``fp32_onnx`` to ``model.int8.onnx`` beside it (reused when already there) and check it on
    ``val_images``; the result has a path only when accepted, else ``skipped_reason`` with both scores."""
    from alpr_pipelines.edge.integrity import sha256_file

    dest = fp32_onnx.with_name("model.int8.onnx")
    if not dest.is_file():
        quantize_int8(fp32_onnx, train_images, dest)
    report = compare_accuracy(fp32_onnx, dest, val_images, max_drop=max_drop)
    details = {k: round(v, 5) if isinstance(v, float) else v for k, v in report.as_dict().items()}
    if not report.accepted:
        return ExportResult(format="onnx_int8", path=None, details=details, skipped_reason=(
            f"skipped: INT8 mAP50-95 {report.map50_95_int8:.4f} is {report.drop:.4f} below FP32 "
            f"{report.map50_95_fp32:.4f} (allowed {max_drop:.4f}); edge boxes keep the FP32 model"))
    return ExportResult(format="onnx_int8", path=str(dest), sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                        details=details)
