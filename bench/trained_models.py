"""Trained detectors for the accuracy side of the benchmarks, built once and cached.

Accuracy parity (figure 1) means nothing on weights that detect nothing, and nothing can be downloaded, so this
trains both detectors with the default synthetic recipe, what ``make demo`` trains (``lib.recipes``: the same
scenes, views, architecture and schedule), and renders the golden set (``lib.golden``). Everything lands under
``.alpr/bench/models`` (``ALPR_HOME``) and is reused by later runs; ``--retrain`` builds it again.

    .venv/bin/python bench/trained_models.py            # prints the paths as JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import common  # noqa: F401 - first: offline Ultralytics, the repository on sys.path


def _recipe():
    from alpr_pipelines.lib.recipes import CPU_RECIPES, SYNTHETIC_DATA

    return CPU_RECIPES, SYNTHETIC_DATA


def serving_imgsz(key: str) -> int:
    """The size the recipe trains ``key`` at, which is the size the edge serves it at."""
    return _recipe()[0][key].imgsz


def cache_dir() -> Path:
    from alpr_pipelines.settings import load_settings

    return load_settings().home / "bench" / "models"


def prepare(retrain: bool = False) -> dict[str, str]:
    """Return {"vehicle_pt", "plate_pt", "golden_vehicle", "golden_plate", "data_vehicle", "data_plate"}: paths of
    trained weights, the golden set's data YAMLs (each model's view of the golden scenes) and the training data's."""
    out = cache_dir()
    done = out / "models.json"
    recipes, data = _recipe()
    from alpr_pipelines.lib.synth import GENERATOR_VERSION

    stamp = json.dumps({k: repr(v) for k, v in recipes.items()} | {"data": repr(data), "generator": GENERATOR_VERSION},
                       sort_keys=True)
    if done.is_file() and not retrain:
        cached = json.loads(done.read_text())
        if cached.get("recipe") == stamp and all(Path(p).exists() for k, p in cached["paths"].items()):
            return cached["paths"]
    from mlflow import MlflowClient

    from alpr_pipelines.lib.datasets import synthetic_key, validate_dataset, write_synthetic_views
    from alpr_pipelines.lib.golden import write_golden
    from alpr_pipelines.lib.models import DETECTOR_SPECS
    from alpr_pipelines.lib.training import train

    out.mkdir(parents=True, exist_ok=True)
    views = write_synthetic_views(out / "data" / synthetic_key(0, data.train_scenes, data.val_scenes, data.width,
                                                               data.height), DETECTOR_SPECS.values(), 0,
                                  {"train": data.train_scenes, "val": data.val_scenes}, data.width, data.height)
    golden = write_golden(out / "golden")
    paths: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="alpr-bench-mlflow-") as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        for key, spec in DETECTOR_SPECS.items():
            fingerprint = validate_dataset(views[key]).fingerprint
            result = train(spec, views[key], fingerprint, recipes[key], client, "bench", out / "train")
            final = out / f"{key}.pt"
            final.write_bytes(Path(result.best_pt).read_bytes())
            paths[f"{key}_pt"] = str(final)
            paths[f"golden_{key}"] = str(golden[key].data_yaml)
            paths[f"data_{key}"] = str(views[key])
    done.write_text(json.dumps({"recipe": stamp, "paths": paths}, indent=2))
    return paths


def prepare_reader(retrain: bool = False) -> dict[str, str]:
    """The plate reader trained with its recipe (``lib.recipes.READER_RECIPE`` on ``READER_DATA``'s synthetic crops,
    what ``make demo`` trains), exported to ONNX, with its INT8 copy when it keeps accuracy; cached like the
    detectors. Returns {"onnx", "onnx_int8" (or ""), "golden", "shift", "best_pt"}."""
    from alpr_pipelines.lib.recipes import READER_DATA, READER_RECIPE
    from alpr_pipelines.lib.synth import GENERATOR_VERSION

    out = cache_dir() / "reader"
    done = out / "reader.json"
    stamp = json.dumps({"recipe": repr(READER_RECIPE), "data": repr(READER_DATA), "generator": GENERATOR_VERSION})
    if done.is_file() and not retrain:
        cached = json.loads(done.read_text())
        if cached.get("recipe") == stamp and all(not p or Path(p).exists() for p in cached["paths"].values()):
            return cached["paths"]
    from mlflow import MlflowClient

    from alpr_pipelines.lib.golden import write_golden
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_data import load_split_crops, validate_reader_dataset, write_synthetic_reader_dataset
    from alpr_pipelines.lib.reader_model import export_reader_onnx, quantize_reader_int8, train_reader

    out.mkdir(parents=True, exist_ok=True)
    data = validate_reader_dataset(write_synthetic_reader_dataset(out / "data", 0, READER_DATA.train_plates,
                                                                  READER_DATA.val_plates))
    golden = write_golden(cache_dir() / "golden")[OCR.key]
    with tempfile.TemporaryDirectory(prefix="alpr-bench-mlflow-") as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        result = train_reader(OCR, data, READER_RECIPE, client, "bench", out / "train")
    best = out / "reader.pt"
    best.write_bytes(Path(result.best_pt).read_bytes())
    onnx = export_reader_onnx(best, out / "onnx")
    int8 = quantize_reader_int8(Path(str(onnx.path)), load_split_crops(data.splits["train"][:512]),
                                load_split_crops(data.splits["val"]), [s.text for s in data.splits["val"]],
                                out / "onnx")
    paths = {"onnx": str(onnx.path), "onnx_int8": str(int8.path or ""), "golden": str(golden.data_yaml),
             "shift": str(golden.shift_yaml), "best_pt": str(best)}
    done.write_text(json.dumps({"recipe": stamp, "paths": paths}, indent=2))
    return paths


def quantized(onnx: dict[str, Path]) -> dict[str, Path]:
    """INT8 copies (``model.int8.onnx`` beside each) of the trained detectors' ONNX exports, each calibrated on its
    own view's training images as the pipeline calibrates; what the edge serves."""
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.quantize import quantize_int8

    trained = prepare()
    return {k: quantize_int8(p, split_images(load_data_yaml(Path(trained[f"data_{k}"])), "train"),
                             p.with_name("model.int8.onnx")) for k, p in onnx.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    print(json.dumps(prepare(args.retrain), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
