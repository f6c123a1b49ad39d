"""How long a frame waits behind a new version's session creation: the piece taken in arrival order (the baseline,
as ``with turns:`` around a frame is) against at a frame's end (``FrameTurns.loading_turn``, what the poller does), paired.

A camera clip is served two-stage at 15 fps (the bench's trained detectors, INT8 as the edge serves them, 640) while sessions of the vehicle
detector are created over and over, alternately under each policy, at random moments. For each creation the
longest wait of a frame that asked for its turn meanwhile is kept. Reported: median and p90 of those waits per
policy, how many creations a frame waited behind at all, and the ratios. Not part of figure 4 (which counts everything a swap does); it isolates the one
piece a frame waits longest for.

    .venv/bin/python bench/turns_bench.py --json out.json      # 40 creations under each policy
    .venv/bin/python bench/turns_bench.py --quick              # smoke: 4 each, untrained models
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
from common import machine, work_folder, write_json  # first: offline Ultralytics and the repository on sys.path
from trained_models import serving_imgsz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--creations", type=int, help="per policy (default 40, --quick 4)")
    parser.add_argument("--camera-fps", type=float, default=15.0)
    args = parser.parse_args()
    per_policy = args.creations or (4 if args.quick else 40)

    from alpr_pipelines.edge.backends.box_optimized import optimized_for_this_box
    from alpr_pipelines.edge.detector import YOLOv11Detector, load_backend
    from alpr_pipelines.edge.frames import FrameReader
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.synth import write_sample_clip

    work = work_folder("alpr-bench-turns-")  # removed at exit
    # The sizes the recipe trains and the edge serves at (vehicles, plates).
    sizes = {"vehicle": 320, "plate": 128} if args.quick else {k: serving_imgsz(k) for k in ("vehicle", "plate")}
    imgsz = sizes["vehicle"]
    if args.quick:
        from edge_bench import untrained_weights

        weights = {"vehicle": untrained_weights(4, work), "plate": untrained_weights(1, work)}
    else:
        from trained_models import prepare

        trained = prepare()
        weights = {k: Path(trained[f"{k}_pt"]) for k in ("vehicle", "plate")}
    onnx = {k: Path(export_onnx(w, work / k, sizes[k]).path or "") for k, w in weights.items()}
    if not args.quick:  # INT8, as the edge serves them (figure 1): the frames, and so the gaps between them
        from trained_models import quantized

        onnx = quantized(onnx)
    optimized = optimized_for_this_box(onnx["vehicle"])
    clip = write_sample_clip(work / "clip.avi", frames=int(args.camera_fps * (20 + per_policy * 2.5)), width=640,
                             height=384)
    detector = YOLOv11Detector(vehicle_model_path=str(onnx["vehicle"]), plate_model_path=str(onnx["plate"]),
                               use_mlflow=False, imgsz=imgsz, plate_imgsz=sizes["plate"])
    turns = detector.policy.turns
    stop = threading.Event()
    asked: list[tuple[float, float]] = []  # (when a frame asked for its turn, how long it waited), monotonic

    def frame_loop() -> None:
        gap, due = 1 / args.camera_fps, time.monotonic()
        with FrameReader(str(clip)) as reader:
            while not stop.is_set():
                frame = reader.read()
                if frame is None:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                due = max(due + gap, time.monotonic())
                start = time.monotonic()
                with turns:
                    waited = time.monotonic() - start
                    detector._detect(frame, time.perf_counter())
                asked.append((start, waited * 1000))

    loop = threading.Thread(target=frame_loop, name="frames", daemon=True)
    loop.start()
    time.sleep(2)  # steady state
    rng = np.random.default_rng(0)
    waits: dict[str, list[float]] = {"arrival order": [], "at a frame's end": []}
    kept: list[object] = []  # the last sessions stay alive, as a slot's current and previous do
    for i in range(2 * per_policy):
        policy = "at a frame's end" if i % 2 == 0 else "arrival order"
        time.sleep(0.4 + rng.random() * 0.4)  # the poller asks at any moment of the frame period
        start = time.monotonic()
        with turns.loading_turn() if policy == "at a frame's end" else turns:
            model = load_backend(onnx["vehicle"], str(i), None, imgsz, optimized)
        end = time.monotonic()
        kept = [*kept[-1:], model]
        time.sleep(0.2)  # the frame behind it has had its turn
        behind = [w for t, w in list(asked) if start - 0.1 <= t <= end]
        waits[policy].append(max(behind, default=0.0))
        if not loop.is_alive():
            raise RuntimeError(f"the clip ended after {i} creations; make it longer")
    stop.set()
    loop.join(10)

    # "waited": creations a frame waited behind at all (over 1 ms); where a creation fits in the camera's gap the
    # median is 0 and says nothing of the rest, so the mean and p90 are kept beside it.
    summary = {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "max_ms": float(max(v)),
                   "mean_ms": float(np.mean(v)), "waited": sum(w > 1.0 for w in v), "n": len(v)}
               for k, v in waits.items()}
    result = {"machine": machine(), "command": ".venv/bin/python bench/turns_bench.py" + (" --quick" * args.quick),
              "camera_fps": args.camera_fps, "imgsz": sizes, "precision": "fp32" if args.quick else "int8",
              "waits": summary, "figures": []}
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
