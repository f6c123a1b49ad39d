"""Verify the GPU path on a machine with an NVIDIA GPU: CUDA training of a detector and of the plate reader, ONNX
export and inference on the GPU, and a TensorRT FP16 engine where TensorRT is installed. Writes a JSON report
(``--report``, default ``gpu-report.json``).

Exit status: 0 all checks passed; 1 a check failed; 3 no CUDA device (nothing could be verified).
No network and no MLflow server needed: runs log to a temporary SQLite tracking store.

    python scripts/verify_gpu.py --report gpu-report.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
# Run as `python scripts/verify_gpu.py` from a plain checkout (no `pip install -e .`): Python puts scripts/ on the
# path, not the repository root, so add the root when the package is not importable otherwise.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "alpr_pipelines").is_dir() and str(_ROOT) not in sys.path:
    try:
        import alpr_pipelines  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(_ROOT))


def reader_training(work: Path, device: str, epochs: int) -> dict:
    """Train a small plate reader on ``device`` (a CUDA id, or "cpu" where a test runs it), export it to ONNX and
    check the export against the trained network (on the CPU: the reader's inference on CUDA is not checked): the
    reader's own recipe, at a size a minute trains."""
    import torch
    from mlflow import MlflowClient

    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_data import load_split_crops, validate_reader_dataset, write_synthetic_reader_dataset
    from alpr_pipelines.lib.reader_model import (
        PRECISION_TAG,
        ReaderParams,
        export_reader_onnx,
        reader_parity,
        train_reader,
    )

    data = validate_reader_dataset(write_synthetic_reader_dataset(work / "reader-data", 0, 128, 32))
    client = MlflowClient(f"sqlite:///{work / 'reader-mlflow.db'}")
    params = ReaderParams(epochs=epochs, batch=32, device=device)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()  # the detector's check ran first: count the reader's training alone
    result = train_reader(OCR, data, params, client, "gpu-check", work / "reader-train")
    precision = client.get_run(result.run_id).data.tags.get(PRECISION_TAG)
    if device != "cpu":  # CUDA trains without the CPU's bfloat16 autocast, and must have used the device
        if precision != "fp32":
            raise AssertionError(f"a reader trained on CUDA should say fp32 in {PRECISION_TAG}, got {precision!r}")
        if torch.cuda.max_memory_allocated() == 0:
            raise AssertionError("the reader's training allocated no CUDA memory: it did not run on the GPU")
    onnx = export_reader_onnx(result.best_pt, work / "reader-export")
    parity = reader_parity(result.best_pt, Path(str(onnx.path)), load_split_crops(data.splits["val"]))
    if not parity.passed:
        raise AssertionError(f"reader ONNX parity failed: {parity.as_dict()}")
    return {"run_id": result.run_id, "images_per_second": result.images_per_second, "precision": precision,
            "final_metrics": result.final_metrics, "parity": parity.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="gpu-report.json")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training (detector and reader)")
    parser.add_argument("--imgsz", type=int, default=320)
    args = parser.parse_args()

    import torch

    report: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "checks": {}}
    if not torch.cuda.is_available():
        report["result"] = "skipped: no CUDA device"
        Path(args.report).write_text(json.dumps(report, indent=2))
        print("skipped: no CUDA device; nothing to verify here")
        return 3

    from mlflow import MlflowClient

    from alpr_pipelines.lib.datasets import load_data_yaml, split_images, validate_dataset, write_synthetic_views
    from alpr_pipelines.lib.exports import cuda_environment, export_onnx, export_tensorrt, onnx_parity
    from alpr_pipelines.lib.models import DETECTOR_SPECS, PLATE
    from alpr_pipelines.lib.training import TrainingParams, train

    report["gpu"] = cuda_environment()
    work = Path(tempfile.mkdtemp(prefix="alpr-gpu-"))
    checks = report["checks"]

    def check(name, fn):
        started = time.perf_counter()
        try:
            checks[name] = {"passed": True, **(fn() or {})}
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next check runs
            checks[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc()[-2000:]}
        checks[name]["seconds"] = round(time.perf_counter() - started, 2)
        c = checks[name]
        skipped = c.get("skipped") or (c.get("cuda_execution_provider") if c.get("cuda_execution_provider") != "used"
                                       else None)
        status = ("ok" if c["passed"] else "FAILED") + (f"; {skipped}" if skipped else "")
        print(f"{name}: {status} ({c['seconds']}s)" + ("" if c["passed"] else f"\n{c['traceback']}"))

    views = write_synthetic_views(work / "data", DETECTOR_SPECS.values(), 0, {"train": 64, "val": 16}, 512, 320)
    golden = write_synthetic_views(work / "golden", DETECTOR_SPECS.values(), 1, {"val": 8}, 512, 320, purpose="golden")
    golden_images = split_images(load_data_yaml(golden["plate"]), "val")
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    state: dict = {}

    def cuda_training():
        fp = validate_dataset(views["plate"]).fingerprint
        result = train(PLATE, views["plate"], fp, TrainingParams(epochs=args.epochs, imgsz=args.imgsz, batch=16,
                                                                 device="0"), client, "gpu-check", work / "train")
        state["best"] = result.best_pt
        return {"run_id": result.run_id, "images_per_second": result.images_per_second,
                "final_metrics": result.final_metrics}

    def onnx_on_gpu():
        onnx = export_onnx(state["best"], work / "export", args.imgsz)
        state["onnx"] = Path(onnx.path or "")
        import onnxruntime as ort

        from alpr_pipelines.edge.backends.onnx import OnnxDetector

        providers = ort.get_available_providers()
        detector = OnnxDetector(state["onnx"], providers=[p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                                          if p in providers])
        session_providers = detector.session.get_providers()
        if "CUDAExecutionProvider" in session_providers:
            cuda_ep = "used"
        elif "CUDAExecutionProvider" in providers:
            cuda_ep = ("skipped: onnxruntime offers CUDAExecutionProvider but the session fell back to the CPU "
                       "(CUDA/cuDNN libraries that this onnxruntime-gpu build needs are not loadable)")
        else:
            cuda_ep = (f"skipped: onnxruntime {ort.__version__} is a CPU build without CUDAExecutionProvider "
                       "(onnxruntime-gpu is not installed: pip install '.[gpu]')")
        parity = onnx_parity(state["best"], state["onnx"], golden_images)
        if not parity.passed:
            raise AssertionError(f"ONNX parity failed: {parity.as_dict()}")
        return {"providers_available": providers, "session_providers": session_providers,
                "cuda_execution_provider": cuda_ep, "parity": parity.as_dict()}

    def tensorrt_engine():
        result = export_tensorrt(state["best"], work / "export", args.imgsz)
        if result.path is None:
            return {"skipped": result.skipped_reason}
        from ultralytics import YOLO

        engine = YOLO(result.path, task="detect")
        preds = engine.predict([str(p) for p in golden_images], imgsz=args.imgsz, device=0, verbose=False)
        # The edge's own engine backend (TensorRT runtime + cuda-python, no torch) against ONNX Runtime.
        import cv2

        from alpr_pipelines.edge.backends.onnx import OnnxDetector
        from alpr_pipelines.edge.backends.tensorrt import TensorRTDetector
        from alpr_pipelines.edge.yolo import letterbox, to_tensor

        edge_engine = TensorRTDetector(result.path)
        onnx = OnnxDetector(state["onnx"], providers=["CPUExecutionProvider"])
        diffs = []
        for p in golden_images:
            image = cv2.imread(str(p))
            tensor = to_tensor(letterbox(image, onnx.imgsz)[0])
            diffs.append(float(abs(edge_engine.raw(tensor)[4:] - onnx.raw(tensor)[4:]).max()))
        if max(diffs) > 0.02:  # FP16 engine vs FP32 ONNX: scores agree to about 1e-2
            raise AssertionError(f"edge TensorRT backend disagrees with ONNX: max score diff {max(diffs):.4f}")
        return {"engine": result.path, "details": result.details, "size_bytes": result.size_bytes,
                "golden_detections_ultralytics": sum(len(p.boxes) for p in preds),
                "edge_backend_max_score_diff_vs_onnx": max(diffs)}

    check("cuda_training", cuda_training)
    check("reader_cuda_training", lambda: reader_training(work, "0", args.epochs))
    if checks["cuda_training"]["passed"]:
        check("onnx_export_and_parity", onnx_on_gpu)
        check("tensorrt_engine", tensorrt_engine)
    failed = [name for name, c in checks.items() if not c["passed"]]
    report["result"] = "failed: " + ", ".join(failed) if failed else "passed"
    # What was not verified here, and why (a pass does not cover these).
    report["skipped"] = {
        "tensorrt": checks.get("tensorrt_engine", {}).get("skipped"),
        "onnxruntime_cuda_execution_provider": (
            None if checks.get("onnx_export_and_parity", {}).get("cuda_execution_provider") == "used"
            else checks.get("onnx_export_and_parity", {}).get("cuda_execution_provider", "not reached")),
    }
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    print(f"report: {args.report} ({report['result']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
