import dagster as dg
import pytest

from alpr_pipelines.definitions import defs
from alpr_pipelines.lib.models import DETECTOR_SPECS, MODEL_SPECS


def test_definitions_load_with_the_whole_chain_per_model():
    repo = defs().get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "datasets/golden_set" in keys
    for key in MODEL_SPECS:  # the plate reader too: same chain, same evaluation
        assert {f"{key}/{s}" for s in ("dataset", "weights", "onnx", "onnx_int8", "registered_version",
                                       "evaluation")} <= keys
    graph = repo.asset_graph
    for key in DETECTOR_SPECS:
        assert f"{key}/tensorrt" in keys
        reg = graph.get(dg.AssetKey([key, "registered_version"]))
        assert {p.to_user_string() for p in reg.parent_keys} == {f"{key}/weights", f"{key}/onnx", f"{key}/onnx_int8",
                                                              f"{key}/tensorrt"}
    reader = graph.get(dg.AssetKey(["ocr", "registered_version"]))
    assert {p.to_user_string() for p in reader.parent_keys} == {"ocr/weights", "ocr/onnx", "ocr/onnx_int8"}
    assert "ocr/tensorrt" not in keys  # the reader runs on ONNX Runtime everywhere


def test_parity_checks_are_blocking():
    checks = list(defs().get_repository_def().asset_graph.asset_check_keys)
    assert {c.asset_key.to_user_string() for c in checks} == {f"{k}/onnx" for k in MODEL_SPECS}
    for spec in defs().asset_checks or []:
        for check_spec in spec.check_specs:
            assert check_spec.blocking


def test_jobs_exist():
    names = set(defs().get_repository_def().job_names)
    assert {"train_and_register", "train_and_register_vehicle", "train_and_register_plate",
            "train_and_register_ocr"} <= names


def test_training_uses_the_training_pool_and_retries_a_crash_but_not_an_interrupt(monkeypatch):
    from dagster._core.errors import DagsterExecutionInterruptedError

    from alpr_pipelines.defs.training.assets import preempted_pod_retry, retried_once_if_it_crashes

    for key in (["plate", "weights"], ["ocr", "weights"]):
        node = defs().get_assets_def(dg.AssetKey(key))
        assert node.op.pool == "alpr_training"
        assert node.op.retry_policy is None  # Dagster's policy would retry an interrupted training too
    monkeypatch.setenv("ALPR_EXECUTOR", "k8s")  # where a SIGTERM is a preempted pod, the policy resumes it
    assert preempted_pod_retry() == dg.RetryPolicy(max_retries=1, delay=5)
    monkeypatch.delenv("ALPR_EXECUTOR")
    assert preempted_pod_retry() is None
    with pytest.raises(dg.RetryRequested) as asked:
        with retried_once_if_it_crashes():
            raise RuntimeError("a crash mid-training")
    assert asked.value.max_retries == 1 and isinstance(asked.value.__cause__, RuntimeError)
    for stop in (dg.Failure("bad config", allow_retries=False), KeyboardInterrupt(), DagsterExecutionInterruptedError()):
        with pytest.raises(type(stop)):
            with retried_once_if_it_crashes():
                raise stop
    with pytest.raises(ConnectionError):  # a clean-up that failed during an interrupt: still not retried
        with retried_once_if_it_crashes():
            try:
                raise DagsterExecutionInterruptedError()
            except DagsterExecutionInterruptedError:
                raise ConnectionError("MLflow is away") from None
