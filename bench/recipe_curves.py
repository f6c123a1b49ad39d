"""Learning curves behind the default recipe (``lib.recipes``): the recipe beside one change at a time.

Each variant trains one model on the recipe's synthetic data (``SYNTHETIC_DATA``, the model's view) and records,
per epoch, the training seconds so far and mAP50 / mAP50-95 on the validation split (Ultralytics' validator, as the
training logs them); the final weights are then exported and scored on the golden set and its shift split by the
promotion gate's evaluator. ``docs/recipe.md`` keeps the results and the decisions they led to.

    .venv/bin/python bench/recipe_curves.py --model plate --json out.json               # every plate variant
    .venv/bin/python bench/recipe_curves.py --model vehicle --variants recipe yolo11n   # some
    .venv/bin/python bench/recipe_curves.py --quick                                      # smoke: tiny, one epoch
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import machine, write_json  # first: offline Ultralytics, the repository on sys.path

# name -> (what it changes, TrainingParams overrides, train on every core)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "recipe": ("the default recipe", {}, True),
    "yolo11n": ("YOLO11n's width (a quarter of YOLO11-L's) instead of an eighth", {"model": "yolo11n.yaml"}, True),
    "nbs64": ("Ultralytics' nominal batch of 64: one optimizer step every four batches of 16", {"nbs": 64}, True),
    "one_thread": ("Ultralytics' thread count: cpu_count - 1 (one on 2 cores)", {}, False),
    "no_mosaic": ("no mosaic augmentation", {"augmentation": {"mosaic": 0.0}}, True),
    "default_loss_gains": ("Ultralytics' loss weights (box 7.5, dfl 1.5)", {"loss_gains": {}}, True),
    "scale_aug_025": ("scale augmentation 0.25 instead of 0.5", {"augmentation": {"scale": 0.25}}, True),
    "epochs4": ("4 epochs (the plate recipe trains 6)", {"epochs": 4}, True),
}


def train_curve(params, data_yaml: Path, work: Path, all_cores: bool) -> list[dict[str, float]]:
    """Train with ``params``; return per-epoch training seconds and validation mAP50, mAP50-95."""
    from ultralytics import YOLO

    from alpr_pipelines.lib.training import alpr_trainer, ultralytics_args

    curve: list[dict[str, float]] = []
    state = {"t": 0.0, "in_epoch": False}
    yolo = YOLO(params.model)
    yolo.add_callback("on_train_start", lambda trainer: state.update(t=time.perf_counter()))
    yolo.add_callback("on_train_epoch_start", lambda trainer: state.update(in_epoch=True))

    def on_fit_epoch_end(trainer) -> None:
        if state["in_epoch"]:  # an epoch, not the final validation of best.pt (the same event)
            state["in_epoch"] = False
            m = trainer.metrics or {}
            curve.append({"epoch": trainer.epoch + 1, "seconds": round(time.perf_counter() - state["t"], 1),
                          "mAP50": round(float(m.get("metrics/mAP50(B)", 0.0)), 4),
                          "mAP50-95": round(float(m.get("metrics/mAP50-95(B)", 0.0)), 4)})
            print(f"  {curve[-1]}", flush=True)

    yolo.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    yolo.train(trainer=alpr_trainer(all_cores=all_cores), data=str(data_yaml), device="cpu", project=str(work),
               name="train", exist_ok=True, plots=False, verbose=False, **ultralytics_args(params))
    return curve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["plate", "vehicle"], default="plate")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny data, one epoch")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()

    from alpr_pipelines.lib.datasets import synthetic_key, write_synthetic_views
    from alpr_pipelines.lib.evaluation import evaluate_onnx
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.golden import GoldenSpec, write_golden
    from alpr_pipelines.lib.models import DETECTOR_SPECS
    from alpr_pipelines.lib.recipes import CPU_RECIPES, SYNTHETIC_DATA
    from alpr_pipelines.settings import load_settings

    recipe, data, golden_spec = CPU_RECIPES[args.model], SYNTHETIC_DATA, GoldenSpec()
    if args.quick:
        recipe = replace(recipe, epochs=1, imgsz=64, workers=0)
        data = replace(data, train_scenes=8, val_scenes=4, width=256, height=160)
        golden_spec = GoldenSpec(scenes=4, width=256, height=160)
    home = load_settings().home / "bench"
    views = write_synthetic_views(home / "recipe-data" / synthetic_key(0, data.train_scenes, data.val_scenes, data.width, data.height),
                                  DETECTOR_SPECS.values(), 0, {"train": data.train_scenes, "val": data.val_scenes},
                                  data.width, data.height)
    golden = write_golden(home / "golden", golden_spec)[args.model]
    results = {}
    for name in args.variants:
        what, overrides, all_cores = VARIANTS[name]
        # A variant's augmentation adds to the recipe's; any other field replaces it.
        merged = {**overrides, "augmentation": {**recipe.augmentation, **overrides.get("augmentation", {})}}
        params = replace(recipe, **merged)
        print(f"{args.model} / {name}: {what}", flush=True)
        work = Path(tempfile.mkdtemp(prefix=f"alpr-bench-curve-{name}-"))
        try:
            curve = train_curve(params, views[args.model], work, all_cores)
            onnx = Path(export_onnx(work / "train" / "weights" / "best.pt", work / "onnx", params.imgsz).path or "")
            scores = evaluate_onnx(onnx, golden.data_yaml, golden.key, imgsz=params.imgsz,
                                   shift_yaml=golden.shift_yaml)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results[name] = {"what": what, "curve": curve, "golden_mAP50": round(scores.mAP50, 4),
                         "golden_mAP50-95": round(scores.mAP50_95, 4),
                         "golden_per_class_ap50": {k: round(v, 4) for k, v in scores.per_class_ap50.items()},
                         "shift_mAP50": round(scores.shift_mAP50 or 0.0, 4),
                         "shift_mAP50-95": round(scores.shift_mAP50_95 or 0.0, 4)}
        print(f"  golden mAP50 {scores.mAP50:.4f}, mAP50-95 {scores.mAP50_95:.4f}; shift mAP50 "
              f"{scores.shift_mAP50:.4f}", flush=True)
    write_json({"figures": [], "model": args.model, "recipe": repr(recipe), "train_scenes": data.train_scenes,
                "machine": machine(), "variants": results,
                "command": f".venv/bin/python bench/recipe_curves.py --model {args.model}"
                           + (" --quick" if args.quick else "")}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
