"""The real thing: `alpr stack up` (MLflow, Dagster webserver and daemon), a newly registered candidate, and the
promotion sensor running in the daemon moves it to Production by itself."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from alpr_pipelines_tests.conftest import free_port

ALPR = str(Path(sys.executable).parent / "alpr")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_daemon_sensor_promotes_a_new_candidate(tmp_path):
    from mlflow import MlflowClient

    from alpr_pipelines.defs.exports.checks import parity_checks
    from alpr_pipelines.defs.presets import graph_run_config
    from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
    from alpr_pipelines.defs.resources import AlprStateResource
    from alpr_pipelines_tests.conftest import graph_assets

    mlflow_port = free_port()
    env = {**os.environ, "ALPR_HOME": str(tmp_path / "home"), "ALPR_MLFLOW_PORT": str(mlflow_port),
           "ALPR_DAGSTER_PORT": str(free_port())}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)
    up = subprocess.run([ALPR, "stack", "up"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        assert up.returncode == 0, up.stderr
        uri = f"http://127.0.0.1:{mlflow_port}"
        config = graph_run_config(train_images=96, val_images=24, epochs=25, imgsz=160,
                                  seed=1, scene_size=(320, 192), models=("vehicle",))
        selection = [a.key for a in graph_assets() if a.key.path[0] in ("vehicle", "datasets")
                     and a.key.path[-1] != "evaluation"]
        result = dg.materialize([*graph_assets(), *parity_checks], run_config=config, selection=selection,
                                resources={"state": AlprStateResource(home=env["ALPR_HOME"]),
                                           "mlflow_registry": MlflowRegistryResource(tracking_uri=uri)})
        assert result.success
        version = result.output_for_node("vehicle__registered_version")["version"]
        client = MlflowClient(uri)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            mv = client.get_model_version("alpr-vehicle-detector", version)
            if mv.tags.get("alpr_decision"):
                break
            time.sleep(3)
        assert mv.tags.get("alpr_decision") == "promoted", mv.tags.get("alpr_decision_reasons")
        assert mv.current_stage == "Production"
        assert client.get_model_version_by_alias("alpr-vehicle-detector", "production").version == version
        assert mv.tags["alpr_decided_by"] == "promotion sensor"
        # The run the sensor launched is in the stack's Dagster instance, keyed by (model, version).
        # The run tags the version before it ends: wait for it to finish, not just to have decided.
        instance = dg.DagsterInstance.from_config(str(Path(env["ALPR_HOME"]) / "dagster"))
        by_key = dg.RunsFilter(tags={"dagster/run_key": f"promote:alpr-vehicle-detector:{version}"})
        deadline = time.monotonic() + 60
        runs = instance.get_runs(by_key)
        while len(runs) == 1 and not runs[0].is_finished and time.monotonic() < deadline:
            time.sleep(1)
            runs = instance.get_runs(by_key)
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    finally:
        subprocess.run([ALPR, "stack", "down"], env=env, capture_output=True, timeout=120, cwd=ROOT)
