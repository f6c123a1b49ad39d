"""`materialize()` of the whole graph on a tiny generated dataset, against a real `mlflow server`."""

from pathlib import Path

import dagster as dg
import pytest

from alpr_pipelines.defs.exports.checks import parity_checks
from alpr_pipelines.defs.presets import tiny_run_config
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines_tests.conftest import copy_dataset, graph_assets, graph_checks


def _resources(home: Path, uri: str, experiment: str) -> dict:
    return {"state": AlprStateResource(home=str(home)),
            "mlflow_registry": MlflowRegistryResource(tracking_uri=uri, experiment_name=experiment)}


def _versions(client, name):
    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except Exception:  # noqa: BLE001 - model not created yet
        return []


@pytest.fixture(scope="module")
def graph_run(mlflow_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([*graph_assets(), *graph_checks()], run_config=tiny_run_config(), instance=instance,
                            resources=_resources(home, mlflow_server.uri, "materialize-tests"))
    return result, home, instance


def test_whole_graph_registers_both_detectors(graph_run, mlflow_client):
    result, home, instance = graph_run
    assert result.success
    for key, name in (("vehicle", "alpr-vehicle-detector"), ("plate", "alpr-plate-detector")):
        version = result.output_for_node(f"{key}__registered_version")
        assert version["name"] == name and version["stage"] == "Staging" and version["aliases"] == ["candidate"]
        mv = mlflow_client.get_model_version(name, version["version"])
        assert mv.tags["dagster_run_id"] == result.run_id
        assert mv.tags["tensorrt"] == "skipped: no CUDA device"
        weights = result.output_for_node(f"{key}__weights")
        assert mlflow_client.get_run(weights["run_id"]).data.tags["dagster_run_id"] == result.run_id
    checks = {e.asset_check_key.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"vehicle/onnx": True, "plate/onnx": True, "ocr/onnx": True}
    # The data version of a dataset is its content fingerprint; metadata carries counts and a mosaic.
    mat = instance.get_latest_materialization_event(dg.AssetKey(["plate", "dataset"])).asset_materialization
    assert mat.tags["dagster/data_version"] == result.output_for_node("plate__dataset")["fingerprint"][:32]
    assert mat.metadata["sample_mosaic"].value.startswith("![sample mosaic](data:image/jpeg;base64,")
    trt = instance.get_latest_materialization_event(dg.AssetKey(["plate", "tensorrt"])).asset_materialization
    assert trt.metadata["status"].value == "skipped: no CUDA device"
    epochs = instance.get_latest_materialization_event(dg.AssetKey(["plate", "weights"])).asset_materialization
    assert len(epochs.metadata["epochs"].value.records) == 1 and "mAP50-95" in epochs.metadata
    assert epochs.metadata["learning_curve"].value.startswith("![learning curve](data:image/png;base64,")
    # The evaluation shows each class's AP on the golden set, and the held-out shift split's scores beside it.
    evaluation = instance.get_latest_materialization_event(dg.AssetKey(["vehicle", "evaluation"])).asset_materialization
    rows = evaluation.metadata["per_class_ap"].value.records
    classes = [r.data["class"] for r in rows]  # the classes the (tiny) golden set holds, in the model's order
    assert classes and classes == [c for c in ("car", "truck", "bus", "motorcycle") if c in classes]
    assert {"AP50", "AP50-95"} <= set(rows[0].data) and "shift_mAP50" in evaluation.metadata


def test_the_plate_reader_is_trained_logged_and_registered_like_the_detectors(graph_run, mlflow_client):
    result, home, instance = graph_run
    version = result.output_for_node("ocr__registered_version")
    assert version["name"] == "alpr-plate-ocr" and version["stage"] == "Staging" and version["aliases"] == ["candidate"]
    mv = mlflow_client.get_model_version("alpr-plate-ocr", version["version"])
    assert mv.tags["alpr_parity"] == "passed" and mv.tags["max_length"] == "10" and "0123456789" in mv.tags["alphabet"]
    weights = result.output_for_node("ocr__weights")
    run = mlflow_client.get_run(weights["run_id"])
    assert run.data.tags["dagster_run_id"] == result.run_id and run.data.params["head"] == "ctc"
    for metric in ("exact_match", "cer", "loss", "val_loss"):
        assert [m.step for m in mlflow_client.get_metric_history(weights["run_id"], metric)] == [1]
    logged = {f.path for d in ("model", "plots", "config") for f in mlflow_client.list_artifacts(weights["run_id"], d)}
    assert {"model/best.pt", "model/last.pt", "plots/learning_curve.png", "config/args.yaml"} <= logged
    evaluation = result.output_for_node("ocr__evaluation")
    assert set(evaluation["candidate"]) >= {"exact_match", "cer", "latency_ms_p95", "shift_exact_match"}
    candidate = evaluation["candidate"]
    bands = candidate["by_plate_width"]  # exact match by plate width: each golden crop in one band, narrowest first
    order = ["under 60 px", "60-100 px", "100-130 px", "130 px and over"]
    assert [b["band"] for b in bands] == [band for band in order if band in {b["band"] for b in bands}]
    assert sum(b["plates"] for b in bands) == candidate["images"]
    assert sum(b["read"] for b in bands) == round(candidate["exact_match"] * candidate["images"])
    assert candidate["exact_match_wide_plates"] == next((b["exact_match"] for b in bands
                                                         if b["band"] == "130 px and over"), None)
    wide_tag = mlflow_client.get_model_version("alpr-plate-ocr", version["version"]).tags.get(
        "eval_exact_match_wide_plates")
    assert wide_tag == (None if candidate["exact_match_wide_plates"] is None
                        else f"{candidate['exact_match_wide_plates']:.5f}")
    shown = instance.get_latest_materialization_event(dg.AssetKey(["ocr", "evaluation"])).asset_materialization
    assert [r.data["plate width"] for r in shown.metadata["exact_match_by_plate_width"].value.records] == [
        b["band"] for b in bands]
    int8 = instance.get_latest_materialization_event(dg.AssetKey(["ocr", "onnx_int8"])).asset_materialization
    assert "fp32_exact_match" in int8.metadata  # built or skipped, it says how both scored


def test_rerun_reuses_training_and_registers_nothing_new(graph_run, mlflow_server, mlflow_client):
    result, home, instance = graph_run
    before = {n: len(_versions(mlflow_client, n)) for n in ("alpr-vehicle-detector", "alpr-plate-detector",
                                                            "alpr-plate-ocr")}
    again = dg.materialize([*graph_assets(), *graph_checks()], run_config=tiny_run_config(), instance=instance,
                           resources=_resources(home, mlflow_server.uri, "materialize-tests"))
    assert again.success
    for key in ("vehicle", "plate", "ocr"):
        assert again.output_for_node(f"{key}__weights")["reused"]
        assert again.output_for_node(f"{key}__weights")["run_id"] == result.output_for_node(f"{key}__weights")["run_id"]
        assert not again.output_for_node(f"{key}__registered_version")["created"]
    after = {n: len(_versions(mlflow_client, n)) for n in before}
    assert after == before


def test_bad_dataset_stops_the_chain(mlflow_server, mlflow_client, tiny_views, tmp_path):
    broken = copy_dataset(tiny_views["plate"], tmp_path / "broken").parent
    bad_label = sorted((broken / "labels" / "train").glob("*.txt"))[0]
    bad_label.write_text("0 0.5 0.5 3.0 0.2\n")
    experiment = "bad-dataset-tests"
    config = tiny_run_config(models=("plate",))
    config["ops"]["plate__dataset"] = {"config": {"source": "yaml", "data_yaml": str(broken / "data.yaml")}}
    before = len(_versions(mlflow_client, "alpr-plate-detector"))
    plate_assets = [a for a in graph_assets() if any(k.path[0] in ("plate", "datasets") for k in a.keys)]
    result = dg.materialize([*plate_assets, *parity_checks[1:]], run_config=config, raise_on_error=False,
                            resources=_resources(tmp_path / "home", mlflow_server.uri, experiment),
                            selection=[a.key for a in plate_assets])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "plate__dataset"
    assert str(bad_label) in failure.event_specific_data.error.message
    ran = {e.step_key for e in result.all_events if e.is_step_success}
    assert not ran & {"plate__weights", "plate__onnx", "plate__registered_version"}
    assert len(_versions(mlflow_client, "alpr-plate-detector")) == before
    assert mlflow_client.get_experiment_by_name(experiment) is None  # not even an MLflow run was started


def _train_the_plate_detector(tmp_path, tracking_uri: str, experiment: str, epochs: int) -> dg.ExecuteInProcessResult:
    """Materialize the golden set, the plate dataset and the plate detector's weights alone (seed 7)."""
    config = tiny_run_config(models=("plate",), epochs=epochs, seed=7)
    del config["ops"]["plate__registered_version"]
    keys = [["datasets", "golden_set"], ["plate", "dataset"], ["plate", "weights"]]
    return dg.materialize([*graph_assets(), *graph_checks()], run_config=config,
                          selection=[dg.AssetKey(k) for k in keys],
                          resources=_resources(tmp_path / "home", tracking_uri, experiment))


def test_retried_training_step_continues_the_same_mlflow_run(mlflow_server, mlflow_client, tiny_views, tmp_path,
                                                             monkeypatch):
    """A step that crashes mid-training is retried once and resumes the same MLflow run."""
    import alpr_pipelines.defs.training.assets as training_assets

    real_train = training_assets.train
    attempts = {"n": 0}

    def crash_once(*args, **kwargs):
        attempts["n"] += 1
        if attempts["n"] == 1:
            def crash(e):
                if e.epoch == 2:
                    raise RuntimeError("simulated crash in epoch 2")

            kwargs["on_epoch"] = crash
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training_assets, "train", crash_once)
    experiment = "retry-tests"
    result = _train_the_plate_detector(tmp_path, mlflow_server.uri, experiment, epochs=3)
    assert result.success and attempts["n"] == 2
    assert any(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)
    exp = mlflow_client.get_experiment_by_name(experiment)
    (run,) = mlflow_client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id == result.output_for_node("plate__weights")["run_id"]
    assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "mAP50-95")] == [1, 2, 3]


def test_an_interrupted_training_is_not_retried(mlflow_server, mlflow_client, tiny_views, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM mid-training (Dagster raises an interrupt in the step) stops the run: no retry starts the
    training again after a person stopped it, and the MLflow run is left FAILED to resume from last.pt."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    import alpr_pipelines.defs.training.assets as training_assets

    real_train = training_assets.train
    attempts = {"n": 0}

    def interrupted(*args, **kwargs):
        attempts["n"] += 1

        def stop(e):
            if e.epoch == 1:
                raise DagsterExecutionInterruptedError()

        return real_train(*args, **{**kwargs, "on_epoch": stop})

    monkeypatch.setattr(training_assets, "train", interrupted)
    experiment = "interrupt-tests"
    with pytest.raises(DagsterExecutionInterruptedError):
        _train_the_plate_detector(tmp_path, mlflow_server.uri, experiment, epochs=2)
    assert attempts["n"] == 1
    (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED"


def test_the_reader_is_gated_promoted_and_read_through_the_edge(graph_run, mlflow_server, mlflow_client, tmp_path,
                                                                caplog):
    """The tiny reader of the graph run: the gate rejects it on its own numbers (it reads nothing yet), a forced
    promotion makes it Production, and the edge's third stage, which started without a reader and said so, swaps
    it in through its poller and reads plates of a frame with it."""
    import logging

    import cv2
    import numpy as np

    from alpr_pipelines.definitions import defs
    from alpr_pipelines.edge.detector import FrameResult, YOLOv11Detector
    from alpr_pipelines.edge.loader import MLflowModelLoader
    from alpr_pipelines.edge.reading import attach_reader
    from alpr_pipelines.edge.swap.poller import RegistryPoller
    from alpr_pipelines.edge.yolo import Detection
    from alpr_pipelines.lib.reader_data import validate_reader_dataset

    result, home, instance = graph_run
    version = result.output_for_node("ocr__registered_version")["version"]
    resources = _resources(home, mlflow_server.uri, "materialize-tests")
    golden = {"scenes": 4, "width": 256, "height": 160, "plates": 16, "shift_plates": 16}  # tiny_run_config's

    loader = MLflowModelLoader(tracking_uri=mlflow_server.uri, cache_dir=str(tmp_path / "edge-cache"))
    detector = YOLOv11Detector(vehicle_model_path=result.output_for_node("vehicle__onnx")["path"],
                               plate_model_path=result.output_for_node("plate__onnx")["path"], loader=loader)
    with caplog.at_level(logging.WARNING, logger="alpr_pipelines.edge.reading"):
        stage = attach_reader(detector)
    assert stage.slot.model is None and "plates are reported without text" in caplog.text
    assert [s.name for s in detector.slots()] == ["alpr-vehicle-detector", "alpr-plate-detector", "alpr-plate-ocr"]

    def promote(**extra) -> dict:
        job = defs().get_job_def("promote_version")
        config = {"model": "ocr", "version": version, "golden": golden, **extra}
        run = job.execute_in_process(run_config={"ops": {"gate_and_promote": {"config": config}}},
                                     instance=instance, resources=resources)
        return run.output_for_node("gate_and_promote")

    decision = promote()
    assert decision["verdict"] == "rejected", decision
    assert any(r.startswith("FAIL exact_match") for r in decision["reasons"]), decision["reasons"]
    assert not any("mAP" in r for r in decision["reasons"])
    forced = promote(force=True, reason="integration test of the reader's delivery")
    assert forced["verdict"] == "forced"
    mv = mlflow_client.get_model_version("alpr-plate-ocr", version)
    assert mv.current_stage == "Production" and "production" in mv.aliases

    assert RegistryPoller(loader, stage.slot, detector.policy).poll_once()  # hot swap into the empty slot
    assert stage.slot.version == version
    fetched = list((loader.store / "alpr-plate-ocr").rglob("*.onnx"))
    assert fetched and not [p for p in fetched if ".box-" in p.name]  # its slot loads the file: no copy made
    crops = validate_reader_dataset(Path(result.output_for_node("datasets__golden_set")["ocr"]["data_yaml"]),
                                    ("val",)).splits["val"][:2]
    frame = np.zeros((160, 400, 3), np.uint8)
    plates = []
    for i, sample in enumerate(crops):
        crop = cv2.resize(cv2.imread(str(sample.image)), (120, 36))
        frame[20 + 70 * i: 56 + 70 * i, 40:160] = crop
        plates.append(Detection(45, 23 + 70 * i, 155, 53 + 70 * i, 0.9, 0, "license_plate"))
    read = detector.stages[0](frame, FrameResult([], plates, "1", "1", 0.0))
    assert read.reader_version == version and len(read.texts or []) == 2
    assert all(t.text is not None and 0.0 <= (t.confidence or 0.0) <= 1.0 for t in read.texts or [])
    # The version is an MLflow pyfunc model too: plate images in, text and confidence out, one row per image.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pyfunc.load_model(f"models:/alpr-plate-ocr/{version}")
    out = model.predict(pd.DataFrame({"image": [s.image.read_bytes() for s in crops]}))
    assert list(out.columns) == ["image_index", "text", "confidence"] and list(out["image_index"]) == [0, 1]
