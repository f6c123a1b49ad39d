"""Registration against a real `mlflow server`: pyfunc versions, idempotency, stages and aliases in agreement."""

import json

import mlflow
import pandas as pd
import pytest
import requests

from alpr_pipelines.lib.datasets import load_data_yaml, split_images, validate_dataset
from alpr_pipelines.lib.exports import export_onnx, sha256_file
from alpr_pipelines.lib.models import PLATE
from alpr_pipelines.lib.registry import (
    RegistryError,
    alias_version,
    register_version,
    set_stage,
)
from alpr_pipelines.lib.training import TrainingParams, train


@pytest.fixture(scope="module")
def trained(mlflow_server, tiny_views, tmp_path_factory):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    work = tmp_path_factory.mktemp("reg")
    fp = validate_dataset(tiny_views["plate"]).fingerprint
    result = train(PLATE, tiny_views["plate"], fp, TrainingParams(epochs=1, imgsz=64, batch=4, workers=0), client,
                   "registry-tests", work)
    onnx = export_onnx(result.best_pt, work / "export", 64)
    return result, onnx, fp


def _fresh_model(client, name_suffix):
    """Each test registers under its own model name so versions do not interfere."""
    from dataclasses import replace

    return replace(PLATE, registered_name=f"{PLATE.registered_name}-{name_suffix}")


def test_register_is_a_pyfunc_version_that_predicts(mlflow_server, mlflow_client, trained, tiny_views):
    result, onnx, fp = trained
    spec = _fresh_model(mlflow_client, "pyfunc")
    files = {"weights": result.best_pt, "onnx": onnx.path and __import__("pathlib").Path(onnx.path)}
    v = register_version(mlflow_client, spec, result.run_id, files, 64, {"dataset_fingerprint": fp,
                         "dagster_run_id": "d1"}, initial_stage="None")
    assert v.created and v.stage == "None" and v.aliases == []
    model = mlflow_client.get_registered_model(spec.registered_name)
    assert model.description == PLATE.description
    mlflow.set_tracking_uri(mlflow_server.uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{spec.registered_name}/{v.version}")
    image = split_images(load_data_yaml(tiny_views["plate"]), "val")[0].read_bytes()
    out = loaded.predict(pd.DataFrame({"image": [image]}), params={"conf": 0.0})
    assert list(out.columns) == ["image_index", "x1", "y1", "x2", "y2", "confidence", "class_id", "class_name"]
    assert len(out) > 0 and set(out["class_name"]) == {"license_plate"}
    # The manifest travels with the version and hashes every file in it.
    local = mlflow.artifacts.download_artifacts(f"models:/{spec.registered_name}/{v.version}")
    manifest = json.loads(next(__import__("pathlib").Path(local).rglob("manifest.json")).read_text())
    assert manifest["dataset_fingerprint"] == fp and manifest["dagster_run_id"] == "d1"
    assert manifest["mlflow_run_id"] == result.run_id and manifest["classes"] == ["license_plate"]
    onnx_copy = next(__import__("pathlib").Path(local).rglob("model.onnx"))
    assert sha256_file(onnx_copy) == manifest["files"]["onnx"]["sha256"]

    # Loading checks the files against the manifest the registry recorded, as the edge does.
    from alpr_pipelines.edge.trust import UntrustedVersion

    with open(onnx_copy, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UntrustedVersion, match="onnx file model.onnx does not match"):
        mlflow.pyfunc.load_model(local)
    manifest_copy = next(__import__("pathlib").Path(local).rglob("manifest.json"))
    manifest_copy.write_text(json.dumps({**manifest, "files": {}}))
    with pytest.raises(UntrustedVersion, match="not registered by the pipeline"):
        mlflow.pyfunc.load_model(local)


def test_rerun_never_duplicates_and_staging_sets_candidate(mlflow_client, trained):
    from pathlib import Path

    result, onnx, fp = trained
    spec = _fresh_model(mlflow_client, "idem")
    files = {"weights": result.best_pt, "onnx": Path(onnx.path)}
    first = register_version(mlflow_client, spec, result.run_id, files, 64, {}, initial_stage="Staging")
    second = register_version(mlflow_client, spec, result.run_id, files, 64, {}, initial_stage="Staging")
    assert first.version == second.version and not second.created
    assert len(mlflow_client.search_model_versions(f"name = '{spec.registered_name}'")) == 1
    assert second.stage == "Staging" and second.aliases == ["candidate"]
    # A decision moved it out of Staging: registering the same content again must not put it back.
    set_stage(mlflow_client, spec.registered_name, first.version, "None")
    third = register_version(mlflow_client, spec, result.run_id, files, 64, {}, initial_stage="Staging")
    assert third.version == first.version and third.stage == "None" and third.aliases == []


def test_stage_and_alias_agree_through_rest(mlflow_server, mlflow_client, trained, tmp_path):
    from pathlib import Path

    result, onnx, fp = trained
    spec = _fresh_model(mlflow_client, "stages")
    versions = []
    for i in range(2):
        weights = tmp_path / f"w{i}.pt"
        weights.write_bytes(result.best_pt.read_bytes() + bytes([i]))  # distinct content, distinct version
        versions.append(register_version(mlflow_client, spec, result.run_id, {"weights": weights,
                                                                              "onnx": Path(onnx.path)}, 64, {}))
    name = spec.registered_name
    set_stage(mlflow_client, name, versions[0].version, "Production", archive_existing=True)
    assert alias_version(mlflow_client, name, "production") == versions[0].version
    set_stage(mlflow_client, name, versions[1].version, "Production", archive_existing=True)
    assert alias_version(mlflow_client, name, "production") == versions[1].version
    assert alias_version(mlflow_client, name, "previous") == versions[0].version
    assert mlflow_client.get_model_version(name, versions[0].version).current_stage == "Archived"
    rest = requests.get(f"{mlflow_server.uri}/api/2.0/mlflow/registered-models/get-latest-versions",
                        params={"name": name, "stages": "Production"}, timeout=10).json()
    assert [v["version"] for v in rest["model_versions"]] == [versions[1].version]
    # A person using the original design's workflow directly: reconcile brings the aliases back in line.
    mlflow_client.transition_model_version_stage(name, versions[0].version, "Staging")
    from alpr_pipelines.lib.registry import reconcile_aliases

    assert reconcile_aliases(mlflow_client, name) == {"candidate": versions[0].version,
                                                      "production": versions[1].version}


def test_refuses_missing_files_and_bad_stage(mlflow_client, trained, tmp_path):
    result, onnx, fp = trained
    with pytest.raises(RegistryError, match="files missing"):
        register_version(mlflow_client, PLATE, result.run_id, {"weights": tmp_path / "nope.pt"}, 64, {})
    with pytest.raises(RegistryError, match="initial stage must be None or Staging"):
        register_version(mlflow_client, PLATE, result.run_id, {"weights": result.best_pt}, 64, {},
                         initial_stage="Production")


def test_mlflow_models_serve_answers_with_boxes(mlflow_server, mlflow_client, trained, tiny_views, tmp_path):
    """`mlflow models serve` on a registered version (local env) predicts boxes over HTTP."""
    import base64
    import os
    import subprocess
    import sys
    from pathlib import Path

    from alpr_pipelines_tests.conftest import free_port, wait_http

    result, onnx, fp = trained
    spec = _fresh_model(mlflow_client, "serve")
    v = register_version(mlflow_client, spec, result.run_id, {"weights": result.best_pt, "onnx": Path(onnx.path)},
                         64, {})
    port = free_port()
    log = tmp_path / "serve.log"
    # `mlflow models serve` execs uvicorn by name: the environment's bin folder must be on PATH, as in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                 f"models:/{spec.registered_name}/{v.version}", "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 180, proc, log)
        image = split_images(load_data_yaml(tiny_views["plate"]), "val")[0].read_bytes()
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]},
                "params": {"conf": 0.0}}
        resp = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        rows = resp.json()["predictions"]
        assert rows and rows[0]["class_name"] == "license_plate" and {"x1", "y2", "confidence"} <= set(rows[0])
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
