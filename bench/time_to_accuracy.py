"""Time to accuracy: wall time for the default plate recipe to reach mAP50 0.90 on the golden set, beside
``yolo train model=yolo11n.yaml`` with Ultralytics' defaults on the same images, cores and image size, in one run.

Both trainings see the recipe's plate dataset (``lib.recipes.SYNTHETIC_DATA``, the plate view of its scenes) at the
recipe's image size. The recipe trains with the pipeline's trainer (``lib.training.alpr_trainer``: every core), the
baseline with Ultralytics' thread count, as ``yolo train`` runs (on a CPU: ``cpu_count - 1`` threads); neither logs
through Ultralytics' MLflow callback. After every epoch the clock stops, the epoch's weights are exported and scored on the golden
set's plate split by the promotion gate's own evaluator (``lib.evaluation.evaluate_onnx``), and the clock starts
again: the reported time is training time alone (Ultralytics' own per-epoch validation included, as both pay it).
The recipe trains its full schedule; the baseline stops once it reaches the target, or at 3x the recipe's time.

Target: the recipe reaches mAP50 0.90 in <= 0.5x the baseline's time, or the baseline does not reach it within 3x.
Training is deterministic (seeded), so the scores per epoch repeat from run to run; the times carry the machine's
noise, which is why both sides run back to back.

    .venv/bin/python bench/time_to_accuracy.py --json out.json     # full: about 15-20 minutes
    .venv/bin/python bench/time_to_accuracy.py --quick             # smoke: tiny data, one epoch each
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

TARGET = 0.90
BASELINE_BUDGET = 3.0  # the baseline may train this many times the recipe's time


def train_with_golden_curve(model: str, train_args: dict[str, Any], golden_yaml: Path, imgsz: int, work: Path,
                            trainer: Any = None, budget_s: float | None = None,
                            stop_at: float | None = None) -> list[dict[str, float]]:
    """Train with Ultralytics (``trainer``: its own by default), scoring each epoch's weights on the golden set with
    the clock stopped; stop at ``stop_at`` mAP50 or after ``budget_s`` seconds of training. Returns the curve."""
    from ultralytics import YOLO

    from alpr_pipelines.lib.evaluation import evaluate_onnx
    from alpr_pipelines.lib.exports import export_onnx

    curve: list[dict[str, float]] = []
    clock = {"elapsed": 0.0, "since": 0.0, "in_epoch": False}

    def on_train_start(trainer) -> None:
        clock["since"] = time.perf_counter()

    def on_fit_epoch_end(trainer) -> None:
        clock["elapsed"] += time.perf_counter() - clock["since"]
        if clock["in_epoch"] and Path(trainer.last).is_file():  # an epoch, not the final validation of best.pt
            clock["in_epoch"] = False
            snapshot = work / f"epoch{trainer.epoch + 1}.pt"
            shutil.copyfile(trainer.last, snapshot)
            onnx = Path(export_onnx(snapshot, work / f"epoch{trainer.epoch + 1}", imgsz).path or "")
            score = evaluate_onnx(onnx, golden_yaml, "bench", imgsz=imgsz)
            curve.append({"epoch": trainer.epoch + 1, "seconds": round(clock["elapsed"], 1),
                          "mAP50": round(score.mAP50, 4), "mAP50-95": round(score.mAP50_95, 4)})
            print(f"  epoch {curve[-1]['epoch']}: {curve[-1]['seconds']:.0f} s, golden mAP50 {score.mAP50:.4f}, "
                  f"mAP50-95 {score.mAP50_95:.4f}", flush=True)
            if (stop_at is not None and score.mAP50 >= stop_at) or (budget_s is not None and
                                                                    clock["elapsed"] >= budget_s):
                trainer.stop = True
        clock["since"] = time.perf_counter()

    yolo = YOLO(model)
    yolo.add_callback("on_train_start", on_train_start)
    yolo.add_callback("on_train_epoch_start", lambda trainer: clock.update(in_epoch=True))
    yolo.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    yolo.train(trainer=trainer, project=str(work), name="train", exist_ok=True, device="cpu", verbose=False,
               plots=False, **train_args)
    return curve


def time_to(curve: list[dict[str, float]], target: float) -> float | None:
    return next((point["seconds"] for point in curve if point["mAP50"] >= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny data, one epoch each")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()

    from alpr_pipelines.lib.datasets import synthetic_key, write_synthetic_views
    from alpr_pipelines.lib.golden import GoldenSpec, write_golden
    from alpr_pipelines.lib.models import DETECTOR_SPECS
    from alpr_pipelines.lib.recipes import CPU_RECIPES, SYNTHETIC_DATA
    from alpr_pipelines.lib.training import alpr_trainer, ultralytics_args
    from alpr_pipelines.settings import load_settings

    recipe = CPU_RECIPES["plate"]
    data_spec, golden_spec = SYNTHETIC_DATA, GoldenSpec()
    if args.quick:
        recipe = replace(recipe, epochs=1, imgsz=64, workers=0)
        data_spec = replace(data_spec, train_scenes=8, val_scenes=4, width=256, height=160)
        golden_spec = GoldenSpec(scenes=4, width=256, height=160)
    home = load_settings().home / "bench"
    views = write_synthetic_views(home / "recipe-data" / synthetic_key(0, data_spec.train_scenes, data_spec.val_scenes,
                                                                        data_spec.width, data_spec.height),
                                  DETECTOR_SPECS.values(), 0, {"train": data_spec.train_scenes,
                                                            "val": data_spec.val_scenes},
                                  data_spec.width, data_spec.height)
    golden = write_golden(home / "golden", golden_spec)["plate"].data_yaml
    work = Path(tempfile.mkdtemp(prefix="alpr-bench-tta-"))
    try:
        print(f"recipe: {Path(recipe.model).name}, {recipe.epochs} epochs at {recipe.imgsz}", flush=True)
        ours = train_with_golden_curve(recipe.model, {"data": str(views["plate"]), **ultralytics_args(recipe)},
                                       golden, recipe.imgsz, work / "recipe", trainer=alpr_trainer())
        ours_time = time_to(ours, TARGET)
        ours_total = ours[-1]["seconds"] if ours else 0.0
        budget = BASELINE_BUDGET * (ours_time or ours_total)
        print(f"baseline: yolo11n.yaml, Ultralytics' defaults at {recipe.imgsz}, until mAP50 {TARGET} or "
              f"{budget:.0f} s", flush=True)
        baseline_args: dict[str, Any] = {"data": str(views["plate"]), "imgsz": recipe.imgsz}
        if args.quick:
            baseline_args.update(epochs=1, workers=0)
        theirs = train_with_golden_curve("yolo11n.yaml", baseline_args, golden, recipe.imgsz, work / "baseline",
                                         trainer=alpr_trainer(all_cores=False), budget_s=budget, stop_at=TARGET)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    theirs_time = time_to(theirs, TARGET)
    theirs_total = theirs[-1]["seconds"] if theirs else 0.0
    ratio: float | None = None
    if theirs_time is not None:
        baseline_text = f"reached mAP50 {TARGET} after {theirs_time:.0f} s"
        if ours_time is not None:
            ratio = ours_time / theirs_time
        met = ratio is not None and ratio <= 0.5
    else:
        best = max((p["mAP50"] for p in theirs), default=0.0)
        baseline_text = f"did not reach mAP50 {TARGET} in {theirs_total:.0f} s (best {best:.4f})"
        if ours_time is not None and theirs_total:
            ratio = ours_time / theirs_total  # at most this: the baseline would need longer still
        met = ours_time is not None and theirs_total >= budget
    figure = {
        "id": "8", "name": f"time to accuracy (plate detector to golden mAP50 {TARGET}, training wall time)",
        "ours": ours_time,
        "ours_text": (f"{ours_time:.0f} s" if ours_time is not None else f"not reached in {ours_total:.0f} s")
        + f" ({Path(recipe.model).name}, {recipe.epochs} epochs at {recipe.imgsz}, batch {recipe.batch}, nbs "
          f"{recipe.nbs}); final golden mAP50 {ours[-1]['mAP50'] if ours else 0:.4f}",
        "baseline_text": f"yolo11n.yaml with Ultralytics' defaults at {recipe.imgsz}: {baseline_text}",
        "ratio": ratio, "target": f"<= 0.5x, or the baseline not there within {BASELINE_BUDGET:.0f}x",
        "met": met and not args.quick,
        "limits": "a from-scratch training on 2 CPU cores; the scores per epoch are deterministic, the seconds are "
                  "this run's.",
    }
    write_json({"figures": [figure], "machine": machine(),
                "command": ".venv/bin/python bench/time_to_accuracy.py" + (" --quick" if args.quick else ""),
                "details": {"recipe_curve": ours, "baseline_curve": theirs, "train_scenes": data_spec.train_scenes,
                            "golden_scenes": golden_spec.scenes}}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
