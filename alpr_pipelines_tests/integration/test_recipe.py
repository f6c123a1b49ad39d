"""The default synthetic recipe (lib.recipes) produces detectors that work.

Fast: the plate recipe on a tiny budget learns something a location prior cannot guess. Slow: the full recipe, as
`make demo` trains it, meets the golden-set thresholds (docs/recipe.md).
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from alpr_pipelines.edge.yolo import Detection
from alpr_pipelines.lib.datasets import (
    label_path,
    load_data_yaml,
    split_images,
    validate_dataset,
    write_synthetic_views,
)
from alpr_pipelines.lib.evaluation import evaluate_onnx, score_detections
from alpr_pipelines.lib.exports import export_onnx
from alpr_pipelines.lib.models import DETECTOR_SPECS, PLATE
from alpr_pipelines.lib.recipes import CPU_RECIPES
from alpr_pipelines.lib.training import train


def location_prior(train_images: list[Path]):
    """A detector that knows where plates usually are and nothing else: the mean training box, in every image."""
    boxes = np.array([[float(v) for v in line.split()[1:]] for image in train_images
                      for line in label_path(image).read_text().splitlines() if line.strip()])
    cx, cy, w, h = boxes.mean(0)

    def detect(image: np.ndarray) -> list[Detection]:
        ih, iw = image.shape[:2]
        return [Detection((cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih, 1.0, 0,
                          "license_plate")]

    return detect


def test_plate_recipe_on_a_tiny_budget_beats_the_location_prior(mlflow_client, tmp_path, unique_experiment):
    views = write_synthetic_views(tmp_path / "data", DETECTOR_SPECS.values(), seed=5, counts={"train": 120, "val": 16})
    data = views["plate"]
    splits = load_data_yaml(data)
    # A few hundred crops, 160 optimizer steps (batch 8): about a minute on 2 cores.
    params = replace(CPU_RECIPES["plate"], epochs=4, imgsz=128, batch=8, nbs=8, workers=0)
    result = train(PLATE, data, validate_dataset(data).fingerprint, params, mlflow_client, unique_experiment,
                   tmp_path / "train")
    onnx = Path(export_onnx(result.best_pt, tmp_path / "onnx", params.imgsz).path or "")
    val = split_images(splits, "val")
    chance = score_detections(location_prior(split_images(splits, "train")), PLATE.names, val)
    trained = evaluate_onnx(onnx, data, "tiny")
    assert trained.mAP50 > chance.mAP50 + 0.1, (trained.mAP50, chance.mAP50)


@pytest.mark.slow
@pytest.mark.timeout(5400)  # the suite's 10 minutes would cut the training short
def test_the_default_recipe_meets_the_golden_thresholds(mlflow_server, tmp_path):
    """The whole graph with the default synthetic recipe, as `make demo` runs it (40 to 60 minutes on 2 cores): both
    detectors work on the golden set and its held-out shift split, and the default gate would promote all three
    models (the reader's issue-18 target is the test below)."""
    import dagster as dg

    from alpr_pipelines.defs.presets import recipe_run_config
    from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
    from alpr_pipelines.defs.resources import AlprStateResource
    from alpr_pipelines.lib.gate import DEFAULT_POLICIES, decide
    from alpr_pipelines_tests.conftest import graph_assets, graph_checks

    result = dg.materialize([*graph_assets(), *graph_checks()], run_config=recipe_run_config(),
                            resources={"state": AlprStateResource(home=str(tmp_path / "home")),
                                       "mlflow_registry": MlflowRegistryResource(tracking_uri=mlflow_server.uri,
                                                                                 experiment_name="recipe")})
    assert result.success
    plate = result.output_for_node("plate__evaluation")["candidate"]
    vehicle = result.output_for_node("vehicle__evaluation")["candidate"]
    assert plate["mAP50"] >= 0.90 and plate["mAP50_95"] >= 0.60, plate
    assert plate["shift_mAP50"] >= 0.80, plate
    assert vehicle["mAP50"] >= 0.85, vehicle
    assert min(vehicle["per_class_ap50"].values()) >= 0.70, vehicle["per_class_ap50"]
    for key, scores in (("plate", plate), ("vehicle", vehicle)):
        headline = {"mAP50": scores["mAP50"], "mAP50-95": scores["mAP50_95"],
                    "latency_ms_p95": scores["latency_ms_p95"],
                    **{f"AP50/{c}": ap for c, ap in scores["per_class_ap50"].items()}}
        assert decide(headline, None, True, DEFAULT_POLICIES[key]).promote, (key, scores)
    reader = result.output_for_node("ocr__evaluation")["candidate"]
    headline = {k: reader[k] for k in ("exact_match", "cer", "latency_ms_p95")}
    assert decide(headline, None, True, DEFAULT_POLICIES["ocr"]).promote, reader


@pytest.mark.slow
@pytest.mark.timeout(5400)  # the suite's 10 minutes would cut the training short (and count as the expected failure)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason="issue 18's target, 95% of the golden plates read exactly, is not met by the "
                   "default recipe yet (0.89 to 0.91 each plate read once, 0.905 in one training read as the edge "
                   "reads: docs/decisions.md, 'Plate reader'); strict, so meeting it fails this marker and it must go")
def test_the_reader_reads_95_percent_of_the_golden_plates_exactly(mlflow_server, tmp_path):
    """The plate reader's recipe alone (lib.recipes: its synthetic crops and training), scored by the gate's
    evaluator on the golden plate crops, against the issue's target."""
    from mlflow import MlflowClient

    from alpr_pipelines.lib.golden import write_golden
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_data import validate_reader_dataset, write_synthetic_reader_dataset
    from alpr_pipelines.lib.reader_eval import evaluate_reader_onnx
    from alpr_pipelines.lib.reader_model import export_reader_onnx, train_reader
    from alpr_pipelines.lib.recipes import READER_DATA, READER_RECIPE

    data = validate_reader_dataset(write_synthetic_reader_dataset(tmp_path / "data", 0, READER_DATA.train_plates,
                                                                  READER_DATA.val_plates))
    result = train_reader(OCR, data, READER_RECIPE, MlflowClient(mlflow_server.uri), "reader-recipe", tmp_path)
    onnx = export_reader_onnx(result.best_pt, tmp_path / "onnx")
    golden = write_golden(tmp_path / "golden")[OCR.key]
    scores = evaluate_reader_onnx(Path(str(onnx.path)), golden.data_yaml, golden.key)
    assert scores.exact_match >= 0.95 and scores.cer <= 0.02, scores
