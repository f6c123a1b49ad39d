"""Edge benchmarks, each figure measured beside its baseline in the same run; medians of interleaved runs, and ratios.

1. Edge throughput: frames per second end to end (decode, preprocess, inference, postprocess) of our vehicle
   detector against Ultralytics' own predict path (``YOLO(model.onnx).predict(source=clip, stream=True)``) on the
   same FP32 ONNX file the registry publishes, the same 640x384 clip, thread count and image size (the size the
   recipe trains and the edge serves the vehicle detector at). Ours runs what an edge box without a GPU loads: the
   INT8 model when it kept accuracy, rectangular inference, decoding on its own thread. Accuracy: mAP50-95 of both
   paths on the golden set (target: within 0.5 points).
2. Efficiency: achieved GFLOP/s of FP32 inference (the network's FLOPs at the served input shape over the time of
   ``session.run``) over this machine's FP32 matmul GFLOP/s (numpy, same thread count), both in this run.
3. Two-stage ALPR per stream: vehicles, then plates in each vehicle's crop fitted to the plate detector's size, on
   the sample clip; beside the same two stages done with Ultralytics predict on the same files and crops.

Full mode trains both detectors with the default recipe once (``bench/trained_models.py``, cached under
``.alpr/bench``) so that accuracy means something; ``--quick`` (CI) uses untrained models, skips accuracy and
asserts nothing about time.

    .venv/bin/python bench/edge_bench.py --json out.json   # full: 5 interleaved runs x 120 frames
    .venv/bin/python bench/edge_bench.py --quick            # smoke: 2 runs x 6 frames
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# common first: offline Ultralytics and the repository on sys.path, before Ultralytics loads
from common import int_matmul_isa, machine, paired, work_folder, write_json
from trained_models import serving_imgsz


def untrained_weights(classes: int, out: Path) -> Path:
    """An untrained YOLO11n with ``classes`` classes (quick mode: the compute is the same, accuracy is not)."""
    import yaml
    from ultralytics import YOLO

    cfg = yaml.safe_load((Path(__import__("ultralytics").__file__).parent / "cfg/models/11/yolo11.yaml").read_text())
    cfg["nc"] = classes
    cfg_path = out / f"yolo11n-{classes}.yaml"  # the "n" in the name picks the nano scale
    cfg_path.write_text(yaml.safe_dump(cfg))
    model = YOLO(str(cfg_path))
    model.model.names = {i: f"class{i}" for i in range(classes)}
    ckpt = out / f"untrained-{classes}.pt"
    model.save(str(ckpt))
    return ckpt


def gflops_at(weights: Path, shape: tuple[int, int]) -> float:
    """The network's GFLOPs for one image of ``shape`` (h, w), counted by Ultralytics/thop on the PyTorch model."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(YOLO(str(weights)).model, list(shape)))


MATMUL_CODE = """
import json, time, numpy as np
from threadpoolctl import threadpool_info
n, repeats = {n}, {repeats}
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
t = time.perf_counter()
for _ in range(repeats):
    a @ b
info = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()]
print(json.dumps({{"gflops": 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9, "blas": info}}))
"""


def matmul_gflops(n: int, threads: int, repeats: int = 5) -> tuple[float, list]:
    """FP32 matmul GFLOP/s in a fresh process with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset: on this team's
    machines they are set for old OpenBLAS builds and would slow a current numpy, understating the baseline."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({"OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)})
    out = subprocess.run([sys.executable, "-c", MATMUL_CODE.format(n=n, repeats=repeats)], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    data = json.loads(out.stdout)
    return data["gflops"], data["blas"]


def to_detections(result, model_version: str | None = None) -> list:
    """Ultralytics ``Results`` -> our :class:`Detection` list (for scoring both paths with the same code)."""
    from alpr_pipelines.edge.yolo import Detection

    boxes = result.boxes
    xyxy, conf, cls = boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(int)
    return [Detection(*map(float, b), float(c), int(k), result.names[int(k)], model_version)
            for b, c, k in zip(xyxy, conf, cls, strict=True)]


def fps_of(run: Callable[[], int]) -> float:
    started = time.perf_counter()
    frames = run()
    return frames / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run: untrained models, few frames")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--frames", type=int)
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    n_frames = args.frames or (6 if args.quick else 120)
    threads = os.cpu_count() or 2

    import cv2
    import torch
    from ultralytics import YOLO

    from alpr_pipelines.edge.backends.onnx import OnnxDetector
    from alpr_pipelines.edge.detector import YOLOv11Detector
    from alpr_pipelines.edge.frames import FrameReader
    from alpr_pipelines.edge.swap.policy import SwapPolicy
    from alpr_pipelines.edge.yolo import crop_region
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.evaluation import EVAL_CONF, score_detections
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.quantize import compare_accuracy, quantize_int8
    from alpr_pipelines.lib.synth import write_sample_clip

    torch.set_num_threads(threads)  # Ultralytics' pre/postprocessing runs in torch
    work = work_folder("alpr-bench-edge-")  # removed at exit
    if args.quick:
        weights = {"vehicle": untrained_weights(4, work), "plate": untrained_weights(1, work)}
        golden: dict[str, Path] = {}
    else:
        from trained_models import prepare  # noqa: I001

        trained = prepare()
        weights = {k: Path(trained[f"{k}_pt"]) for k in ("vehicle", "plate")}
        golden = {k: Path(trained[f"golden_{k}"]) for k in ("vehicle", "plate")}
    # What the pipeline publishes: FP32, dynamic shape, exported at the size each model serves at.
    sizes = {"vehicle": 128, "plate": 64} if args.quick else {k: serving_imgsz(k) for k in weights}
    fp32 = {k: Path(export_onnx(w, work / k, sizes[k]).path or "") for k, w in weights.items()}
    calib: dict[str, list[Path]] = {}
    for key in weights:  # each model calibrated on its own training view, as the pipeline does
        if args.quick:
            calib[key] = [work / "calib.jpg"]
            cv2.imwrite(str(calib[key][0]), np.full((384, 640, 3), 114, np.uint8))
        else:
            calib[key] = split_images(load_data_yaml(Path(trained[f"data_{key}"])), "train")
    int8 = {k: quantize_int8(p, calib[k], p.with_name("model.int8.onnx"), imgsz=[sizes[k]]) for k, p in fp32.items()}

    # --- accuracy on the golden set, each model at its serving size: Ultralytics predict (FP32) vs ours (FP32 and
    # INT8) -----------------------------------------------------------------------------------------------------
    accuracy: dict[str, dict[str, float]] = {}
    use_int8 = True
    if golden:
        for key in weights:
            images = split_images(load_data_yaml(golden[key]), "val")
            theirs_model = YOLO(str(fp32[key]), task="detect")
            size = sizes[key]
            theirs = score_detections(lambda im, m=theirs_model, sz=size: to_detections(m.predict(
                im, imgsz=sz, conf=EVAL_CONF, verbose=False, device="cpu")[0]), theirs_model.names, images)
            report = compare_accuracy(fp32[key], int8[key], images, imgsz=size)
            accuracy[key] = {"imgsz": size, "ultralytics_fp32": theirs.mAP50_95, "ultralytics_fp32_map50": theirs.mAP50,
                             "ours_fp32": report.map50_95_fp32, "ours_int8": report.map50_95_int8}
        use_int8 = all(abs(a["ours_int8"] - a["ultralytics_fp32"]) <= 0.005 for a in accuracy.values())
    ours_files = int8 if use_int8 else fp32
    IMGSZ, PLATE_IMGSZ = sizes["vehicle"], sizes["plate"]

    clip = write_sample_clip(work / "clip.avi", frames=n_frames, width=640, height=384)
    frames_in_clip = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    ours = OnnxDetector(ours_files["vehicle"], threads=threads, imgsz=IMGSZ)
    ours_fp32 = OnnxDetector(fp32["vehicle"], threads=threads, imgsz=IMGSZ)
    theirs_v = YOLO(str(fp32["vehicle"]), task="detect")
    theirs_p = YOLO(str(fp32["plate"]), task="detect")
    two_stage = YOLOv11Detector(vehicle_model_path=str(ours_files["vehicle"]),
                                plate_model_path=str(ours_files["plate"]), use_mlflow=False, imgsz=IMGSZ,
                                plate_imgsz=PLATE_IMGSZ, policy=SwapPolicy(threads=threads))

    def ours_run(det: OnnxDetector) -> Callable[[], int]:
        def run() -> int:
            with FrameReader(str(clip)) as reader:
                return sum(1 for frame in reader if det.detect(frame) is not None)
        return run

    def theirs_run() -> int:
        return sum(1 for _ in theirs_v.predict(str(clip), stream=True, imgsz=IMGSZ, conf=0.25, verbose=False,
                                               device="cpu"))

    def two_stage_ours() -> int:
        with FrameReader(str(clip)) as reader:
            return sum(1 for frame in reader if two_stage.detect(frame) is not None)

    def two_stage_theirs() -> int:
        n = 0
        for r in theirs_v.predict(str(clip), stream=True, imgsz=IMGSZ, conf=0.25, verbose=False, device="cpu"):
            frame, h, w = r.orig_img, *r.orig_shape
            # The same crops as ours: each vehicle box grown by the crop margin, the whole frame when none.
            boxes = [crop_region(*(float(v) for v in b), w, h) for b in r.boxes.xyxy.numpy()] or [(0, 0, w, h)]
            for x1, y1, x2, y2 in boxes:
                crop = frame[y1:y2, x1:x2]
                if crop.shape[0] >= 8 and crop.shape[1] >= 8:
                    theirs_p.predict(crop, imgsz=PLATE_IMGSZ, conf=0.25, verbose=False, device="cpu")
            n += 1
        return n

    # Inference alone (for efficiency): FP32 session.run at the shape a 640x384 frame is served at.
    tensor, _ = ours_fp32.prepare(np.zeros((384, 640, 3), np.uint8))
    served_shape = (int(tensor.shape[2]), int(tensor.shape[3]))
    model_gflops = gflops_at(weights["vehicle"], served_shape)

    def inference_s() -> float:
        ours_fp32.raw(tensor)
        started = time.perf_counter()
        for _ in range(20 if not args.quick else 3):
            ours_fp32.raw(tensor)
        return (time.perf_counter() - started) / (20 if not args.quick else 3)

    for fn in (ours_run(ours), ours_run(ours_fp32), theirs_run, two_stage_ours, two_stage_theirs):
        fn()  # warm-up: sessions, decoders, allocators
    samples: dict[str, list[float]] = {k: [] for k in (
        "ours_fps", "ours_fp32_fps", "ultralytics_fps", "two_stage_fps", "two_stage_ultralytics_fps",
        "inference_ms", "matmul_gflops")}
    blas: list = []
    for _ in range(runs):  # interleaved, so drift in machine load hits every side alike
        samples["ours_fps"].append(fps_of(ours_run(ours)))
        samples["ours_fp32_fps"].append(fps_of(ours_run(ours_fp32)))
        samples["ultralytics_fps"].append(fps_of(theirs_run))
        samples["two_stage_fps"].append(fps_of(two_stage_ours))
        samples["two_stage_ultralytics_fps"].append(fps_of(two_stage_theirs))
        samples["inference_ms"].append(inference_s() * 1000)
        gflops, blas = matmul_gflops(512 if args.quick else 2048, threads)
        samples["matmul_gflops"].append(gflops)
    med = {k: statistics.median(v) for k, v in samples.items()}

    throughput_ratio = paired(samples, "ours_fps", "ultralytics_fps")
    achieved = model_gflops / (med["inference_ms"] / 1000)
    efficiency = statistics.median(model_gflops / (ms / 1000) / gf for ms, gf in
                                   zip(samples["inference_ms"], samples["matmul_gflops"], strict=True))
    ours_key = "ours_int8" if use_int8 else "ours_fp32"
    acc_delta = max((abs(a[ours_key] - a["ultralytics_fp32"]) for a in accuracy.values()), default=None)
    acc_text = "; ".join(f"{key} mAP50-95 at {a['imgsz']}: ours {a[ours_key]:.4f} (FP32 {a['ours_fp32']:.4f}), "
                         f"Ultralytics {a['ultralytics_fp32']:.4f} (mAP50 {a['ultralytics_fp32_map50']:.4f})"
                         for key, a in accuracy.items()) or "accuracy not measured (untrained models)"
    precision = "INT8" if use_int8 else "FP32"

    figures = [
        {"id": "1", "name": f"edge throughput (frames/s end to end, 640x384 frames, vehicle detector at {IMGSZ})",
         "ours": med["ours_fps"],
         "ours_text": f"{med['ours_fps']:.1f} fps ({precision}, rectangular {served_shape[1]}x{served_shape[0]}, "
                      f"decode on its own thread); FP32 on the same path: {med['ours_fp32_fps']:.1f} fps. "
                      f"{acc_text}",
         "baseline_text": f"Ultralytics predict on the same FP32 ONNX (also rectangular, it is dynamic-shape): "
                          f"{med['ultralytics_fps']:.1f} fps",
         "ratio": throughput_ratio, "target": ">= 1.25x at mAP50-95 within 0.5 points",
         "met": throughput_ratio >= 1.25 and (acc_delta is None or abs(acc_delta) <= 0.005) and not args.quick,
         "accuracy": accuracy, "accuracy_delta": acc_delta,
         "limits": (f"the network: on the same path INT8 runs {paired(samples, 'ours_fps', 'ours_fp32_fps'):.2f}x FP32 "
                    f"({int_matmul_isa()}); " if use_int8 else
                    "INT8 is not used: it lost more than 0.5 points of mAP50-95 here; ")
                   + f"FP32 alone gives {paired(samples, 'ours_fp32_fps', 'ultralytics_fps'):.2f}x Ultralytics (its torch "
                   "pre/postprocessing and result objects). Left in FP32: the detection head's decoding."},
        {"id": "2", "name": "efficiency (FP32 inference GFLOP/s over FP32 matmul GFLOP/s)", "ours": efficiency,
         "ours_text": f"{achieved:.1f} GFLOP/s ({model_gflops:.2f} GFLOPs at {served_shape[1]}x{served_shape[0]} "
                      f"in {med['inference_ms']:.1f} ms)",
         "baseline_text": f"numpy {2048 if not args.quick else 512}^2 FP32 matmul: {med['matmul_gflops']:.1f} GFLOP/s "
                          f"({blas})",
         "ratio": efficiency, "target": ">= 0.5", "met": efficiency >= 0.5,
         "limits": f"the network's size: the default detector is YOLO11 at an eighth of YOLO11-L's width "
                   f"(docs/recipe.md), {model_gflops:.2f} GFLOPs a frame at {served_shape[1]}x{served_shape[0]}, "
                   "whose layers (8 to 128 channels) are too small to keep the matmul units busy, so fixed "
                   "per-layer costs (memory traffic, thread hand-offs) dominate; YOLO11n at 640x384 (3.9 GFLOPs) "
                   "reached 0.73 on the previous report's VM."},
        {"id": "3", "name": f"two-stage ALPR per stream (frames/s, vehicles at {IMGSZ}, plates in crops at "
                            f"{PLATE_IMGSZ})",
         "ours": med["two_stage_fps"],
         "ours_text": f"{med['two_stage_fps']:.1f} fps ({precision}; each vehicle's crop fitted to {PLATE_IMGSZ}, "
                      "in batches)",
         "baseline_text": f"the same two stages with Ultralytics predict: {med['two_stage_ultralytics_fps']:.1f} fps",
         "ratio": paired(samples, "two_stage_fps", "two_stage_ultralytics_fps"), "target": ">= 15 fps",
         "met": med["two_stage_fps"] >= 15 and not args.quick,
         "limits": "the two networks; a frame with more vehicles has more crops, batched into as few runs as pay."},
    ]
    result = {
        "figures": figures, "machine": machine(threads),
        "command": ".venv/bin/python bench/edge_bench.py" + (" --quick" if args.quick else ""),
        "details": {"runs": runs, "frames": frames_in_clip, "threads": threads, "imgsz": sizes,
                    "served_shape": served_shape, "precision": precision, "trained_models": not args.quick,
                    "medians": med, "samples": samples, "blas": blas},
    }
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
