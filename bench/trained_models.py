"""Trained detectors for the accuracy side of the edge benchmarks, built once and cached.

Accuracy parity (figure 1) means nothing on untrained weights, and nothing can be downloaded, so this trains both
detectors with the demo's settings (seeded synthetic scenes, 160 train / 40 val images, 12 epochs at 320 px) and
renders a golden set from the scene stream training never draws from. Everything lands under
``.alpr/bench/models`` (``ALPR_HOME``) and is reused by later runs; ``--retrain`` builds it again.

    .venv/bin/python bench/trained_models.py            # prints the paths as JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import common  # noqa: F401 - first: offline Ultralytics, the repository on sys.path

TRAIN_IMAGES, VAL_IMAGES, GOLDEN_IMAGES = 160, 40, 100
EPOCHS, TRAIN_IMGSZ, BATCH, SEED = 12, 320, 16, 0


def cache_dir() -> Path:
    from alpr_pipelines.settings import load_settings

    return load_settings().home / "bench" / "models"


def prepare(retrain: bool = False) -> dict[str, str]:
    """Return {"vehicle_pt", "plate_pt", "golden_vehicle", "golden_plate"}: paths of trained weights and the golden
    sets' data YAMLs (one per model; both views of the same golden scenes)."""
    out = cache_dir()
    done = out / "models.json"
    if done.is_file() and not retrain:
        paths = json.loads(done.read_text())
        if all(Path(p).exists() for p in paths.values()):
            return paths
    from mlflow import MlflowClient

    from alpr_pipelines.lib.datasets import validate_dataset, write_synthetic_views
    from alpr_pipelines.lib.models import MODEL_SPECS
    from alpr_pipelines.lib.training import TrainingParams, train

    out.mkdir(parents=True, exist_ok=True)
    views = write_synthetic_views(out / "data", MODEL_SPECS.values(), SEED,
                                  {"train": TRAIN_IMAGES, "val": VAL_IMAGES})
    # The golden set's own stream and seed (defs/datasets/assets.py), never drawn from by training.
    golden = write_synthetic_views(out / "golden", MODEL_SPECS.values(), 20241101, {"val": GOLDEN_IMAGES},
                                   purpose="golden")
    paths: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="alpr-bench-mlflow-") as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        for key, spec in MODEL_SPECS.items():
            fingerprint = validate_dataset(views[key]).fingerprint
            result = train(spec, views[key], fingerprint,
                           TrainingParams(epochs=EPOCHS, imgsz=TRAIN_IMGSZ, batch=BATCH, seed=SEED, device="cpu"),
                           client, "bench", out / "train")
            final = out / f"{key}.pt"
            final.write_bytes(Path(result.best_pt).read_bytes())
            paths[f"{key}_pt"] = str(final)
            paths[f"golden_{key}"] = str(golden[key])
    done.write_text(json.dumps(paths, indent=2))
    return paths


def quantized(onnx: dict[str, Path]) -> dict[str, Path]:
    """INT8 copies (``model.int8.onnx`` beside each) of the trained detectors' ONNX exports, calibrated on the
    vehicle view's training images as the pipeline calibrates; what the edge serves."""
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.quantize import quantize_int8

    calib = split_images(load_data_yaml(cache_dir() / "data" / "vehicle" / "data.yaml"), "train")
    return {k: quantize_int8(p, calib, p.with_name("model.int8.onnx")) for k, p in onnx.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    print(json.dumps(prepare(args.retrain), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
