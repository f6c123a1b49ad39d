"""A candidate is scored in a child process (lib.isolation): the same numbers as in-process scoring, and a model that
outlives the timeout or the memory cap is stopped and reported as unusable, never a hang or a crash of the run."""

import os
import subprocess
from pathlib import Path

import pytest

from alpr_pipelines.lib.evaluation import ModelUnusable, evaluate_onnx
from alpr_pipelines.lib.exports import export_onnx
from alpr_pipelines.lib.isolation import EvaluationLimits, evaluate_onnx_isolated


@pytest.fixture(scope="module")
def onnx_model(untrained_checkpoint, tmp_path_factory) -> Path:
    return Path(export_onnx(untrained_checkpoint, tmp_path_factory.mktemp("limits"), 64).path or "")


def test_the_child_scores_what_the_parent_would(onnx_model, tiny_views):
    golden = tiny_views["plate"]
    here = evaluate_onnx(onnx_model, golden, "k")
    there = evaluate_onnx_isolated(onnx_model, golden, "k", limits=EvaluationLimits())
    assert (there.mAP50, there.mAP50_95, there.images, there.per_class_ap50) == \
        (here.mAP50, here.mAP50_95, here.images, here.per_class_ap50)


def test_a_model_past_the_timeout_is_stopped_with_its_reason(onnx_model, tiny_views):
    with pytest.raises(ModelUnusable, match=r"longer than 0.5 s .*ALPR_EVAL_TIMEOUT_S"):
        evaluate_onnx_isolated(onnx_model, tiny_views["plate"], "k", limits=EvaluationLimits(timeout_s=0.5))
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "alpr_pipelines.lib.isolation"],
                              capture_output=True, text=True)
    assert children.stdout.strip() == "", "the timed-out child is still running"


def test_a_model_over_the_memory_cap_is_stopped_with_its_reason(onnx_model, tiny_views):
    with pytest.raises(ModelUnusable, match="ALPR_EVAL_MEMORY_MB"):
        evaluate_onnx_isolated(onnx_model, tiny_views["plate"], "k", limits=EvaluationLimits(memory_mb=300))


@pytest.mark.parametrize("var,value", [("ALPR_EVAL_TIMEOUT_S", "soon"), ("ALPR_EVAL_MEMORY_MB", "0"),
                                       ("ALPR_EVAL_MAX_DOWNLOAD_MB", "-5"), ("ALPR_EVAL_TIMEOUT_S", "nan"),
                                       ("ALPR_EVAL_TIMEOUT_S", "inf")])
def test_limits_from_the_environment_are_checked(var, value):
    with pytest.raises(ValueError, match=var):
        EvaluationLimits.from_env({var: value})
    assert EvaluationLimits.from_env({"ALPR_EVAL_TIMEOUT_S": "30"}).timeout_s == 30.0
