"""Exports of trained weights: ONNX (always) and TensorRT FP16 (on a CUDA machine with TensorRT).

A thin, tested layer over Ultralytics' exporter: we choose arguments, place the file atomically in its own folder,
and record what a deployer needs (hashes, GPU identity for engines). Ultralytics writes class names, imgsz and stride
into the ONNX ``metadata_props``; :func:`export_onnx` checks they are there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpr_pipelines.edge.backends.onnx import OnnxDetector
from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.edge.yolo import Detection, decode, iou, letterbox, to_tensor

# Parity tolerances between PyTorch and ONNX Runtime (both FP32 on the same preprocessed tensor).
PARITY_SCORE_ATOL = 1e-3  # class scores are sigmoid outputs in [0, 1]
PARITY_BOX_ATOL_PX = 0.5  # box centre/size, in network-input pixels
PARITY_MATCH_IOU = 0.95  # a detection matches its twin when IoU >= this, same class, |dconf| <= 1e-3


class ExportError(Exception):
    """An export failed or produced an unusable file."""


_DFL_PATCH = threading.Lock()  # the patch is the class's, for the whole process: one export at a time holds it


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: str | None
    sha256: str | None = None
    size_bytes: int | None = None
    skipped_reason: str | None = None
    details: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _place(produced: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(produced, tmp)
    os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def dfl_as_reductions() -> Iterator[None]:
    """Ultralytics' DFL (the head's box decoding) traced as reductions over its bins instead of a softmax, for the
    length of the block; the same numbers (within float rounding, which the parity check bounds).

    DFL turns each box side's 16-bin distribution into its expectation: Ultralytics views the head's output as
    (batch, 4, 16, anchors), transposes the bins to axis 1 and takes a softmax there, then a 1x1 convolution with
    weights 0..15. A softmax along any axis but the last makes ONNX Runtime transpose the tensor there and back, with
    rows of 16: 2.0 ms of a 14 ms YOLO11n run at 640x384 on 2 cores (its profiler; bench/edge_bench.py measures
    the whole frame). Here the bins stay on axis 2, where each reduction runs over contiguous rows of anchors:
    ``sum(exp(x - max) * w) / sum(exp(x - max))``, with the module's own weights ``w``. Both the FP32 file and the
    INT8 copy made from it (whose head stays FP32, ``quantize.head_nodes_to_exclude``) run the faster graph. A head
    without DFL (``reg_max=1``, an identity there) is exported as it is. Exports made before this existed keep their
    graph (the same numbers) until their training is exported again.
    """
    from unittest import mock

    from ultralytics.nn.modules.block import DFL

    def forward(self: Any, x: Any) -> Any:
        b, _, a = x.shape  # batch, 4 x bins, anchors
        bins = x.view(b, 4, self.c1, a)
        weight = (bins - bins.amax(2, keepdim=True)).exp()  # the softmax's numerator, kept from overflow
        return (weight * self.conv.weight.view(1, 1, self.c1, 1)).sum(2) / weight.sum(2)

    with _DFL_PATCH, mock.patch.object(DFL, "forward", forward):  # Ultralytics' own forward is back after the block
        yield


def export_onnx(weights: Path, out_dir: Path, imgsz: int, simplify: bool = True, opset: int | None = None) -> ExportResult:
    """Export ``weights`` to ``out_dir/model.onnx`` (FP32, dynamic batch/height/width); reuse it when already there.

    Dynamic shape lets the edge run rectangular inference (a 640x384 frame is not padded to 640x640) and serve at
    another size than the training one; the metadata's ``imgsz`` stays the default serving size. The head's box
    decoding is traced as reductions (:func:`dfl_as_reductions`), which ONNX Runtime runs faster than Ultralytics'
    softmax along a middle axis.
    """
    dest = out_dir / "model.onnx"
    if dest.is_file() and not OnnxDetector(dest, providers=["CPUExecutionProvider"]).dynamic:
        dest.unlink()  # a fixed-shape export from before exports were dynamic: export again
        (out_dir / "model.int8.onnx").unlink(missing_ok=True)
    if not dest.is_file():
        from alpr_pipelines.lib.training import offline_ultralytics

        offline_ultralytics()
        from ultralytics import YOLO

        # Export from a scratch copy: Ultralytics writes next to its input, and best.pt must stay untouched.
        scratch = out_dir / ".export"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        src = shutil.copyfile(weights, scratch / "best.pt")
        try:
            with dfl_as_reductions():
                produced = YOLO(str(src)).export(format="onnx", imgsz=imgsz, simplify=simplify, opset=opset,
                                                 dynamic=True, half=False, device="cpu")
        except Exception as exc:
            raise ExportError(f"ONNX export of {weights} failed: {exc}") from exc
        _place(Path(produced), dest)
        shutil.rmtree(scratch, ignore_errors=True)
    import onnx

    detector = OnnxDetector(dest, providers=["CPUExecutionProvider"])
    proto = onnx.load(str(dest), load_external_data=False)
    return ExportResult(
        format="onnx", path=str(dest), sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
        details={"names": detector.names, "imgsz": list(detector.imgsz), "stride": detector.stride,
                 "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))},
    )


def cuda_environment() -> dict[str, Any] | None:
    """GPU identity when CUDA and TensorRT are both usable here, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return {"gpu_name": torch.cuda.get_device_name(0), "tensorrt": None,
                "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    return {
        "gpu_name": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "tensorrt": tensorrt.__version__,
        "cuda": torch.version.cuda,
    }


def tensorrt_skip_reason(env: dict[str, Any] | None) -> str | None:
    if env is None:
        return "skipped: no CUDA device"
    if env.get("tensorrt") is None:
        return "skipped: TensorRT is not installed (pip install '.[gpu]')"
    return None


def export_tensorrt(weights: Path, out_dir: Path, imgsz: int, env: dict[str, Any] | None = None) -> ExportResult:
    """Build a TensorRT FP16 engine for this machine's GPU, or say why it was skipped.

    Engines do not move between GPUs, so the result carries GPU name, compute capability and TensorRT version, and
    the file name carries the compute capability.
    """
    env = cuda_environment() if env is None else env
    reason = tensorrt_skip_reason(env)
    if reason is not None:
        return ExportResult(format="engine", path=None, skipped_reason=reason, details=env)
    assert env is not None
    dest = out_dir / f"model_sm{env['compute_capability'].replace('.', '')}_fp16.engine"
    if not dest.is_file():
        from alpr_pipelines.lib.training import offline_ultralytics

        offline_ultralytics()
        from ultralytics import YOLO

        scratch = out_dir / ".export-engine"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        src = shutil.copyfile(weights, scratch / "best.pt")
        try:
            produced = YOLO(str(src)).export(format="engine", imgsz=imgsz, half=True, device=0, dynamic=False)
        except Exception as exc:
            raise ExportError(f"TensorRT export of {weights} failed: {exc}") from exc
        _place(Path(produced), dest)
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(format="engine", path=str(dest), sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                        details=env)


# --------------------------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class ParityReport:
    images: int
    max_score_diff: float
    max_box_diff_px: float
    torch_detections: int
    onnx_detections: int
    unmatched: int
    passed: bool
    tolerance: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unmatched(ours: list[Detection], theirs: list[Detection], conf: float) -> int:
    """Detections with no twin, ignoring those whose confidence sits within tolerance of the threshold."""
    missing = 0
    for a, b in ((ours, theirs), (theirs, ours)):
        for d in a:
            if abs(d.confidence - conf) <= PARITY_SCORE_ATOL:
                continue
            twin = any(
                d.class_id == e.class_id and abs(d.confidence - e.confidence) <= PARITY_SCORE_ATOL
                and iou(d, e) >= PARITY_MATCH_IOU
                for e in b
            )
            missing += not twin
    return missing


def onnx_parity(weights: Path, onnx_path: Path, images: list[Path], conf: float = 0.05) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same preprocessed golden images and compare raw outputs and detections.

    A low ``conf`` keeps many boxes in play, so the detection comparison sees more than a barely trained model's
    handful of confident boxes.
    """
    import cv2
    import torch

    from alpr_pipelines.lib.training import offline_ultralytics

    offline_ultralytics()
    from ultralytics import YOLO

    if not images:
        raise ExportError("parity needs at least one golden image; the golden set is empty")
    net = YOLO(str(weights)).model
    if not isinstance(net, torch.nn.Module):
        raise ExportError(f"{weights} is not a PyTorch checkpoint Ultralytics can load")
    net = net.float().eval()
    onnx = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"])
    max_score = max_box = 0.0
    n_torch = n_onnx = unmatched = 0
    for image_path in images:
        image = cv2.imread(str(image_path))
        if image is None:
            raise ExportError(f"golden image {image_path} cannot be read")
        padded, box = letterbox(image, onnx.imgsz)
        tensor = to_tensor(padded)
        with torch.no_grad():
            out = net(torch.from_numpy(tensor))
        torch_raw = (out[0] if isinstance(out, (list, tuple)) else out)[0].numpy()
        onnx_raw = onnx.raw(tensor)
        if torch_raw.shape != onnx_raw.shape:
            raise ExportError(f"output shapes differ: torch {torch_raw.shape} vs onnx {onnx_raw.shape}")
        max_box = max(max_box, float(np.abs(torch_raw[:4] - onnx_raw[:4]).max()))
        max_score = max(max_score, float(np.abs(torch_raw[4:] - onnx_raw[4:]).max()))
        dt = decode(torch_raw, box, image.shape[:2], onnx.names, conf)
        do = decode(onnx_raw, box, image.shape[:2], onnx.names, conf)
        n_torch, n_onnx = n_torch + len(dt), n_onnx + len(do)
        unmatched += _unmatched(dt, do, conf)
    passed = max_score <= PARITY_SCORE_ATOL and max_box <= PARITY_BOX_ATOL_PX and unmatched == 0
    return ParityReport(
        images=len(images), max_score_diff=max_score, max_box_diff_px=max_box, torch_detections=n_torch,
        onnx_detections=n_onnx, unmatched=unmatched, passed=passed,
        tolerance={"score_atol": PARITY_SCORE_ATOL, "box_atol_px": PARITY_BOX_ATOL_PX, "match_iou": PARITY_MATCH_IOU},
    )
