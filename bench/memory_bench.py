"""Figure 7, memory: peak resident memory of the edge service with both models loaded, and of a training run, each
beside its Ultralytics counterpart, every one in a fresh process.

- Edge: ``alpr edge`` (ONNX Runtime, no torch) serving vehicle and plate models at 640 over the sample clip, against
  a script that does the same two stages with Ultralytics predict on the same ONNX files (what a team deploys when
  it keeps Ultralytics on the box; it pulls in torch). Target: the edge under 600 MB.
- Training: our training (``alpr_pipelines.lib.training.train``, MLflow logging included) against the ``yolo train``
  CLI, same data and settings. Both the largest single process (its kernel-kept peak, ``VmHWM``) and the peak of the
  whole process tree (sampled every 0.1 s) are reported: dataloader workers would be processes of their own, though
  on the CPU Ultralytics starts none (it sets ``workers=0`` there), so here the two agree.

    .venv/bin/python bench/memory_bench.py --json out.json
    .venv/bin/python bench/memory_bench.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, machine, work_folder, write_json  # sets offline Ultralytics, puts the repo on sys.path
from trained_models import serving_imgsz

EDGE_LIMIT_MB = 600
BIN = Path(sys.executable).parent

ULTRALYTICS_EDGE = """
import sys
from ultralytics import YOLO
vehicle, plate, clip = YOLO(sys.argv[1], task="detect"), YOLO(sys.argv[2], task="detect"), sys.argv[3]
imgsz, plate_imgsz = int(sys.argv[4]), int(sys.argv[5])
for r in vehicle.predict(clip, stream=True, imgsz=imgsz, conf=0.25, verbose=False, device="cpu"):
    h, w = r.orig_shape
    for x1, y1, x2, y2 in [tuple(int(v) for v in b) for b in r.boxes.xyxy.numpy()] or [(0, 0, w, h)]:
        crop = r.orig_img[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
        if crop.shape[0] >= 8 and crop.shape[1] >= 8:
            plate.predict(crop, imgsz=plate_imgsz, conf=0.25, verbose=False, device="cpu")
"""

OUR_TRAINING = """
import sys
from pathlib import Path
from mlflow import MlflowClient
from alpr_pipelines.lib.datasets import validate_dataset
from alpr_pipelines.lib.models import VEHICLE
from alpr_pipelines.lib.training import TrainingParams, train
data, work, epochs, imgsz, batch, workers = Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:7])
client = MlflowClient(f"sqlite:///{work}/mlflow.db")
train(VEHICLE, data, validate_dataset(data).fingerprint,
      TrainingParams(epochs=epochs, imgsz=imgsz, batch=batch, workers=workers, device="cpu"), client, "memory",
      work / "train")
"""


def peak_rss_kb(pid: int) -> int:
    """The kernel's own peak RSS of process ``pid`` (``VmHWM``), 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 1800) -> dict[str, float]:
    """Run ``cmd``; peak RSS of its largest process and of its whole process tree at any moment, both sampled every
    0.1 s: the tree as the sum of its processes' RSS, each process as its kernel-kept peak (``VmHWM``), which only
    its last 0.1 s can hide. Not ``ru_maxrss`` from ``wait4``: Linux keeps in it the memory a child had before its
    ``exec``, which after Python's vfork is this benchmark's own (measured: every child read ~1 GB, the size of
    this process with torch loaded)."""
    import psutil

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        tree_peak = largest_kb = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal tree_peak, largest_kb
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    tree = []
                # Each process's own peak first: it survives a sibling that exits while the sum is taken.
                largest_kb = max([largest_kb, *(peak_rss_kb(p.pid) for p in tree)])
                try:
                    tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        deadline = started + timeout
        try:
            while True:
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    raise RuntimeError(f"{' '.join(cmd[:3])} ran past {timeout:.0f} s")
                time.sleep(0.05)
        finally:
            stop.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {err.read()[-2000:]}")
    return {"largest_process_mb": largest_kb / 1024, "tree_peak_mb": tree_peak / 1024 ** 2,
            "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()

    from alpr_pipelines.lib.datasets import write_synthetic_views
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.models import DETECTOR_SPECS
    from alpr_pipelines.lib.synth import write_sample_clip

    work = work_folder("alpr-bench-memory-")  # removed at exit
    sizes = {"vehicle": 320, "plate": 128} if args.quick else {k: serving_imgsz(k) for k in ("vehicle", "plate")}
    if args.quick:
        from edge_bench import untrained_weights

        weights = {"vehicle": untrained_weights(4, work), "plate": untrained_weights(1, work)}
    else:
        from trained_models import prepare

        trained = prepare()
        weights = {k: Path(trained[f"{k}_pt"]) for k in ("vehicle", "plate")}
    onnx = {k: Path(export_onnx(w, work / "export" / k, sizes[k]).path or "") for k, w in weights.items()}
    clip = write_sample_clip(work / "clip.avi", frames=10 if args.quick else 120, width=640, height=384)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    config = {"registry": {"enabled": False},
              "models": {"vehicle": {"fallback": str(onnx["vehicle"]), "imgsz": sizes["vehicle"]},
                         "plate": {"fallback": str(onnx["plate"]), "imgsz": sizes["plate"]}},
              "cameras": [{"name": "bench", "source": str(clip)}], "output": {"detections": str(work / "d.jsonl")},
              "http": {"port": 0}}
    cfg = work / "cameras.yaml"
    cfg.write_text(json.dumps(config))
    edge = measure([str(BIN / "alpr"), "edge", "--config", str(cfg)], env, work)
    edge_theirs = measure([sys.executable, "-c", ULTRALYTICS_EDGE, str(onnx["vehicle"]), str(onnx["plate"]),
                           str(clip), str(sizes["vehicle"]), str(sizes["plate"])], env, work)

    counts = {"train": 16, "val": 4} if args.quick else {"train": 160, "val": 40}
    epochs, train_imgsz, batch, workers = (1, 128, 8, 2) if args.quick else (2, 320, 16, 2)
    data = write_synthetic_views(work / "data", [DETECTOR_SPECS["vehicle"]], 0, counts)["vehicle"]
    training = measure([sys.executable, "-c", OUR_TRAINING, str(data), str(work), str(epochs), str(train_imgsz),
                        str(batch), str(workers)], env, work)
    yolo_env = {**env, "YOLO_CONFIG_DIR": str(work / "yolo-config")}
    subprocess.run([str(BIN / "yolo"), "settings", "mlflow=False"], env=yolo_env, check=True, capture_output=True)
    training_theirs = measure([str(BIN / "yolo"), "train", "model=yolo11n.yaml", f"data={data}", f"epochs={epochs}",
                               f"imgsz={train_imgsz}", f"batch={batch}", f"workers={workers}", "device=cpu",
                               "optimizer=AdamW", "lr0=0.01", "seed=0", f"project={work / 'yolo-runs'}",
                               "name=train", "plots=False"], yolo_env, work)

    def mb(d: dict[str, float]) -> float:
        """The tree's peak: its sampled sum can miss a spike between samples, and it is never below the peak of
        its largest process, which the kernel keeps."""
        return max(d["tree_peak_mb"], d["largest_process_mb"])

    edge_met = mb(edge) < EDGE_LIMIT_MB
    figure = {
        "id": "7", "name": "memory (peak RSS, process tree)", "ours": mb(edge),
        "ours_text": f"edge with the models at {sizes['vehicle']} and {sizes['plate']}: {mb(edge):.0f} MB; training ({epochs} epochs at "
                     f"{train_imgsz}, batch {batch}, no dataloader workers on the CPU): {mb(training):.0f} MB tree, "
                     f"{training['largest_process_mb']:.0f} MB largest process",
        "baseline_text": f"Ultralytics predict, same two stages and files: {mb(edge_theirs):.0f} MB; `yolo train`, "
                         f"same settings: {mb(training_theirs):.0f} MB tree, "
                         f"{training_theirs['largest_process_mb']:.0f} MB largest process",
        "ratio": mb(edge) / mb(edge_theirs), "target": f"edge < {EDGE_LIMIT_MB} MB", "met": edge_met,
        "limits": "the edge: ONNX Runtime's arenas and OpenCV's decoder (no torch); training: PyTorch, the "
                  "model, its optimizer state and the batch (on the CPU Ultralytics loads data in the training process)."
    }
    result = {"figures": [figure], "machine": machine(),
              "command": ".venv/bin/python bench/memory_bench.py" + (" --quick" if args.quick else ""),
              "details": {"edge": edge, "edge_ultralytics": edge_theirs, "training": training,
                          "training_ultralytics": training_theirs, "imgsz": sizes,
                          "training_settings": {"epochs": epochs, "imgsz": train_imgsz, "batch": batch,
                                                "workers": workers, **counts}}}
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
