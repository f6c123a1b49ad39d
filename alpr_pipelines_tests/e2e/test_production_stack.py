"""The original ALPR registry design's production architecture on this machine with the real pieces: PostgreSQL, an S3 server (moto), MLflow
with basic-auth, and the Dagster daemon on PostgreSQL. A new dataset version is trained, registered, promoted by the
sensor, and a running edge service (read-only principal) swaps to it; its documented commands pass."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from alpr_pipelines_tests.conftest import free_port

ALPR = str(Path(sys.executable).parent / "alpr")
ROOT = Path(__file__).resolve().parents[2]
NAME = "alpr-vehicle-detector"


def _drop_databases(names: list[str]) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()


@pytest.fixture()
def prod_stack(tmp_path):
    suffix = uuid.uuid4().hex[:8]
    dbs = {"ALPR_MLFLOW_DB": f"mlflow_db_{suffix}", "ALPR_MLFLOW_AUTH_DB": f"mlflow_auth_{suffix}",
           "ALPR_DAGSTER_DB": f"dagster_{suffix}"}
    secrets = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": uuid.uuid4().hex,
               "MLFLOW_AUTH_ADMIN_PASSWORD": uuid.uuid4().hex, "ALPR_PIPELINE_PASSWORD": uuid.uuid4().hex,
               "ALPR_EDGE_PASSWORD": uuid.uuid4().hex, "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
    env_file = tmp_path / "production.env"
    cache_port = free_port()
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**secrets, **dbs, "ALPR_S3_PORT": free_port(),
                                                            "ALPR_REGISTRY_CACHE_PORT": cache_port}.items()))
    mlflow_port = free_port()
    env = {**os.environ, "ALPR_HOME": str(tmp_path / "home"), "ALPR_MLFLOW_PORT": str(mlflow_port),
           "ALPR_DAGSTER_PORT": str(free_port())}
    for var in ("MLFLOW_TRACKING_URI", "DAGSTER_HOME", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    up = subprocess.run([ALPR, "stack", "up", "--profile", "production", "--env-file", str(env_file)], env=env,
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        edge_uri = f"http://127.0.0.1:{cache_port}"
        assert f"edge boxes: MLFLOW_TRACKING_URI={edge_uri}" in up.stdout
        yield {"uri": f"http://127.0.0.1:{mlflow_port}", "edge_uri": edge_uri, "env": env, "secrets": secrets,
               "home": tmp_path / "home", "dbs": dbs}
    finally:
        subprocess.run([ALPR, "stack", "down"], env=env, capture_output=True, timeout=120, cwd=ROOT)
        _drop_databases(list(dbs.values()))


def test_missing_env_file_is_a_clear_error(tmp_path):
    env = {**os.environ, "ALPR_HOME": str(tmp_path)}
    out = subprocess.run([ALPR, "stack", "up", "--profile", "production", "--env-file", str(tmp_path / "nope.env")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "config/production.env.example" in out.stderr
    partial = tmp_path / "p.env"
    partial.write_text("AWS_ACCESS_KEY_ID=x\nMLFLOW_AUTH_ADMIN_PASSWORD=change-me\n")
    out = subprocess.run([ALPR, "stack", "up", "--profile", "production", "--env-file", str(partial)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in out.stderr and "AWS_SECRET_ACCESS_KEY" in out.stderr


@pytest.mark.slow
def test_production_stack_end_to_end(prod_stack, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from alpr_pipelines.defs.exports.checks import parity_checks
    from alpr_pipelines.defs.presets import graph_run_config
    from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
    from alpr_pipelines.defs.resources import AlprStateResource
    from alpr_pipelines.edge.service import EdgeConfig, EdgeService
    from alpr_pipelines.lib.synth import write_sample_clip
    from alpr_pipelines_tests.conftest import graph_assets

    uri, edge_uri, secrets = prod_stack["uri"], prod_stack["edge_uri"], prod_stack["secrets"]
    pipeline_auth = ("alpr-pipeline", secrets["ALPR_PIPELINE_PASSWORD"])
    edge_auth = ("alpr-edge", secrets["ALPR_EDGE_PASSWORD"])
    # The original design's health check; the API refuses anonymous callers.
    assert requests.get(f"{uri}/health", timeout=10).text == "OK"
    assert requests.get(f"{uri}/api/2.0/mlflow/registered-models/search", timeout=10).status_code == 401

    # The pipeline principal trains and registers (artifacts go to S3 through boto3, metadata to PostgreSQL).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", pipeline_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pipeline_auth[1])
    resources = {"state": AlprStateResource(home=str(prod_stack["home"])),
                 "mlflow_registry": MlflowRegistryResource(tracking_uri=uri)}
    selection = [a.key for a in graph_assets() if a.key.path[0] in ("vehicle", "datasets") and a.key.path[-1] != "evaluation"]

    def train_register(epochs: int, seed: int) -> str:
        config = graph_run_config(train_images=96, val_images=24, epochs=epochs, imgsz=160,
                                  seed=seed, scene_size=(320, 192), models=("vehicle",), initial_stage="None")
        result = dg.materialize([*graph_assets(), *parity_checks], run_config=config, selection=selection,
                                resources=resources)
        assert result.success
        return result.output_for_node("vehicle__registered_version")["version"]

    client = MlflowClient(uri)
    # A first version goes to Production through the original design's own workflow (transition_model_version_stage).
    v1 = train_register(epochs=1, seed=11)
    client.transition_model_version_stage(NAME, v1, "Production", archive_existing_versions=True)

    # An edge service with the read-only principal follows the registry through the registry cache.
    # Long enough to outlast training v2 plus the sensor; the test stops the edge once it has swapped.
    clip = write_sample_clip(tmp_path / "clip.avi", frames=1600, width=320, height=192)
    cameras = tmp_path / "cameras.yaml"
    # This test follows the vehicle detector; the plate slot serves a local file (the edge's fallback path).
    from alpr_pipelines.lib.promotion import download_verified

    plate_fallback = download_verified(client, NAME, v1, tmp_path / "v1")["onnx"]
    cameras.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": edge_uri, "poll_interval": 1},
        "models": {"plate": {"name": "alpr-plate-detector", "fallback": str(plate_fallback)}},
        "cameras": [{"name": "gate", "source": str(clip), "fps_limit": 4}],
        "output": {"detections": str(tmp_path / "detections.jsonl")}, "http": {"port": 0},
        "cache_dir": str(tmp_path / "edge-cache"),
    }))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", edge_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", edge_auth[1])
    edge = EdgeService(EdgeConfig.load(cameras))
    assert edge.detector.vehicle.version == v1  # the sensor's next tick mirrored the stage onto the alias, or stage
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", pipeline_auth[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pipeline_auth[1])
    runner = threading.Thread(target=edge.run, kwargs={"serve_http": False})
    runner.start()
    try:
        # A new dataset version -> a better candidate -> the daemon's sensor gates and promotes it by itself.
        v2 = train_register(epochs=25, seed=12)
        client.transition_model_version_stage(NAME, v2, "Staging")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not client.get_model_version(NAME, v2).tags.get("alpr_decision"):
            time.sleep(3)
        mv = client.get_model_version(NAME, v2)
        assert mv.tags.get("alpr_decision") == "promoted", mv.tags.get("alpr_decision_reasons")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and edge.detector.vehicle.version != v2:
            time.sleep(0.5)
        assert edge.detector.vehicle.version == v2
    finally:
        edge.stop()
        runner.join(60)
    rows = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(len(rows)))  # no dropped frame across the swap
    assert rows[0]["vehicle_version"] == v1 and rows[-1]["vehicle_version"] == v2

    # The original design's REST lookups, with the edge's read-only principal.
    latest = requests.get(f"{uri}/api/2.0/mlflow/registered-models/get-latest-versions",
                          params={"name": NAME, "stages": "Production"}, auth=edge_auth, timeout=10).json()
    assert [v["version"] for v in latest["model_versions"]] == [v2]
    got = requests.get(f"{uri}/api/2.0/mlflow/registered-models/get", params={"name": NAME}, auth=edge_auth,
                       timeout=10).json()
    assert got["registered_model"]["name"] == NAME
    assert requests.get(f"{uri}/api/2.0/mlflow/experiments/search", params={"max_results": 10}, auth=edge_auth,
                        timeout=10).status_code == 200
    # Through the cache the same answer, from its entry; an anonymous caller still gets nothing.
    for _ in range(2):
        cached = requests.get(f"{edge_uri}/api/2.0/mlflow/registered-models/get-latest-versions",
                              params={"name": NAME, "stages": "Production"}, auth=edge_auth, timeout=10)
        assert cached.json() == latest
    assert cached.headers["X-Alpr-Registry-Cache"] == "HIT"
    assert requests.get(f"{edge_uri}/api/2.0/mlflow/registered-models/alias", params={"name": NAME, "alias":
                        "production"}, timeout=10).status_code == 401
    # The edge principal cannot change what the pipeline owns.
    denied = requests.post(f"{uri}/api/2.0/mlflow/model-versions/transition-stage", auth=edge_auth, timeout=10,
                           json={"name": NAME, "version": v1, "stage": "Production",
                                 "archive_existing_versions": True})
    assert denied.status_code == 403
    # The artifacts are in the S3 bucket, not on local disk.
    import boto3

    env_file_values = dict(line.split("=", 1) for line in (tmp_path / "production.env").read_text().splitlines()
                           if "=" in line)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{env_file_values['ALPR_S3_PORT']}",
                      aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alpr-mlflow-artifacts").get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("model/best.pt") for k in keys)
