"""Our ONNX export against Ultralytics' stock export of the same weights: the edge's frames per second with each.

Our export traces the head's box decoding (DFL) as reductions over its bins (``exports.dfl_as_reductions``) where
Ultralytics' exporter traces a softmax along a middle axis, which ONNX Runtime transposes there and back. Both files
are served by the same code (``OnnxDetector.detect``: letterbox, inference, decoding, NMS) on the same clip, at the
same size and thread count, in FP32 and as INT8 copies quantized the same way, interleaved round by round; reported
as paired ratios (ours over stock), with the largest difference between the two FP32 files' raw outputs on a frame.
Not a figure of issue 6: it measures one change that figures 1-3 contain on both sides (the baseline of figure 1
runs the file the registry publishes, which is ours).

    .venv/bin/python bench/dfl_bench.py --json out.json    # the bench's trained vehicle detector, 9 rounds x 120 frames
    .venv/bin/python bench/dfl_bench.py --quick             # smoke: untrained, 2 rounds x 6 frames
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# common first: offline Ultralytics and the repository on sys.path, before Ultralytics loads
from common import int_matmul_isa, machine, paired, write_json

IMGSZ = 640


def stock_export(weights: Path, out_dir: Path, imgsz: int) -> Path:
    """Ultralytics' own ONNX export, with the arguments ``exports.export_onnx`` gives it and nothing of ours."""
    from ultralytics import YOLO

    out_dir.mkdir(parents=True, exist_ok=True)
    src = shutil.copyfile(weights, out_dir / "best.pt")  # Ultralytics writes beside its input
    produced = YOLO(str(src)).export(format="onnx", imgsz=imgsz, simplify=True, dynamic=True, half=False,
                                     device="cpu")
    return Path(produced)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run: untrained model, few frames")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--frames", type=int)
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 9)
    n_frames = args.frames or (6 if args.quick else 120)
    threads = os.cpu_count() or 2

    import cv2

    from alpr_pipelines.edge.backends.onnx import OnnxDetector
    from alpr_pipelines.edge.frames import FrameReader
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.quantize import quantize_int8
    from alpr_pipelines.lib.synth import write_sample_clip

    with tempfile.TemporaryDirectory(prefix="alpr-bench-dfl-") as tmp:  # removed on failure too
        work = Path(tmp)
        if args.quick:
            from edge_bench import untrained_weights

            weights = untrained_weights(4, work)
            calib = [work / "calib.jpg"]
            cv2.imwrite(str(calib[0]), np.full((384, 640, 3), 114, np.uint8))
            calib_sizes = [128, IMGSZ]
        else:
            from trained_models import prepare, serving_imgsz

            trained = prepare()
            weights = Path(trained["vehicle_pt"])
            calib = split_images(load_data_yaml(Path(trained["data_vehicle"])), "train")
            calib_sizes = [serving_imgsz("vehicle"), IMGSZ]
        files = {"ours_fp32": Path(export_onnx(weights, work / "ours", IMGSZ).path or ""),
                 "stock_fp32": stock_export(weights, work / "stock", IMGSZ)}
        for side in ("ours", "stock"):
            fp32 = files[f"{side}_fp32"]
            files[f"{side}_int8"] = quantize_int8(fp32, calib, fp32.with_name(f"{side}.int8.onnx"), imgsz=calib_sizes)

        clip = write_sample_clip(work / "clip.avi", frames=n_frames, width=640, height=384)
        detectors = {k: OnnxDetector(p, threads=threads, imgsz=IMGSZ) for k, p in files.items()}
        frame = np.ascontiguousarray(cv2.VideoCapture(str(clip)).read()[1])
        tensor, _ = detectors["ours_fp32"].prepare(frame)
        raw_diff = np.abs(detectors["ours_fp32"].raw(tensor) - detectors["stock_fp32"].raw(tensor))

        def fps(det: OnnxDetector) -> float:
            with FrameReader(str(clip)) as reader:
                started = time.perf_counter()
                frames = sum(1 for f in reader if det.detect(f) is not None)
                return frames / (time.perf_counter() - started)

        for det in detectors.values():
            fps(det)  # warm-up: sessions, decoder, allocators
        samples: dict[str, list[float]] = {k: [] for k in detectors}
        for _ in range(runs):  # interleaved, so drift in machine load hits every file alike
            for k, det in detectors.items():
                samples[k].append(fps(det))

        ratios = {p: paired(samples, f"ours_{p}", f"stock_{p}") for p in ("fp32", "int8")}
        result = {
            "figures": [], "machine": machine(threads), "int_matmul": int_matmul_isa(),
            "command": ".venv/bin/python bench/dfl_bench.py" + (" --quick" if args.quick else ""),
            "details": {"runs": runs, "frames": n_frames, "threads": threads, "imgsz": IMGSZ,
                        "trained_model": not args.quick, "medians_fps": {k: statistics.median(v) for k, v in samples.items()},
                        "samples_fps": samples, "ratios": ratios,
                        # rows 0-3: box centre and size in network-input pixels; the rest: class scores in [0, 1]
                        "max_box_diff_px": float(raw_diff[:4].max()), "max_score_diff": float(raw_diff[4:].max())},
        }
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
