"""Gated promotion against a real `mlflow server`: a trained model is promoted, an untrained one is rejected with
its reasons, a rollback restores the previous version in both alias and stage, and the original design's stage API agrees."""

import json

import dagster as dg
import pytest
import requests

from alpr_pipelines.definitions import defs
from alpr_pipelines.defs.presets import graph_run_config
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines_tests.conftest import graph_assets, graph_checks

NAME = "alpr-vehicle-detector"
# Small enough for the default test run, big enough that a trained vehicle model beats an untrained one clearly.
GOLDEN = {"scenes": 24, "width": 320, "height": 192}
# These tests exercise the promotion machinery on models trained for seconds, far below the default floors (which
# reject them, as test_an_untrained_model_is_rejected_by_the_default_gate shows): an operator lowers the floors
# through the run config, as the job allows. The default floors meet real models in the slow recipe test.
LOW_FLOORS = {"min_map50": 0.05, "min_map50_95": 0.01, "min_class_ap50": 0.0}


@pytest.fixture(scope="module")
def registry(module_mlflow_server):
    return module_mlflow_server


@pytest.fixture(scope="module")
def env(registry, tmp_path_factory):
    home = tmp_path_factory.mktemp("promotion-home")
    resources = {"state": AlprStateResource(home=str(home)),
                 "mlflow_registry": MlflowRegistryResource(tracking_uri=registry.uri, experiment_name="promotion")}
    return resources, dg.DagsterInstance.ephemeral()


def _train_and_register(env, epochs: int, seed: int) -> str:
    resources, instance = env
    config = graph_run_config(train_images=96, val_images=24, golden_scenes=GOLDEN["scenes"], epochs=epochs,
                              imgsz=160, batch=16, seed=seed, scene_size=(320, 192), models=("vehicle",))
    selection = [a.key for a in graph_assets() if a.key.path[0] in ("vehicle", "datasets")
                 and a.key.path[-1] != "evaluation"]
    result = dg.materialize([*graph_assets(), *graph_checks()], run_config=config, instance=instance,
                            resources=resources, selection=selection)
    assert result.success
    return result.output_for_node("vehicle__registered_version")["version"]


def _promote(env, version: str, **extra) -> dict:
    resources, instance = env
    job = defs().get_job_def("promote_version")
    config = {"model": "vehicle", "version": version, "golden": GOLDEN, **extra}
    result = job.execute_in_process(run_config={"ops": {"gate_and_promote": {"config": config}}}, instance=instance,
                                    resources=resources)
    return result.output_for_node("gate_and_promote")


def _latest_production_rest(registry) -> list[str]:
    body = requests.get(f"{registry.uri}/api/2.0/mlflow/registered-models/get-latest-versions",
                        params={"name": NAME, "stages": "Production"}, timeout=10).json()
    return [v["version"] for v in body.get("model_versions", [])]


def test_good_promoted_bad_rejected_rollback(env, registry):
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    good = _train_and_register(env, epochs=25, seed=1)
    first = _promote(env, good, **LOW_FLOORS)
    assert first["verdict"] == "promoted", first["reasons"]
    assert any("first model" in r for r in first["reasons"])
    assert client.get_model_version_by_alias(NAME, "production").version == good
    assert _latest_production_rest(registry) == [good]

    bad = _train_and_register(env, epochs=1, seed=2)  # deliberately undertrained
    decision = _promote(env, bad, **LOW_FLOORS)
    assert decision["verdict"] == "rejected"
    failed = [r for r in decision["reasons"] if r.startswith("FAIL")]
    assert failed and any("floor" in r or "champion" in r for r in failed)
    mv = client.get_model_version(NAME, bad)
    assert mv.tags["alpr_decision"] == "rejected" and mv.current_stage != "Production"
    recorded = json.loads(mv.tags["alpr_decision_metrics"])
    assert recorded["champion_version"] == good and recorded["champion"]["mAP50-95"] > recorded["candidate"]["mAP50-95"]
    assert mv.tags["alpr_decided_by"] == "promotion sensor" and mv.tags["alpr_decision_run_id"]
    assert client.get_model_version_by_alias(NAME, "production").version == good  # the champion stays

    # Forced promotion of the bad one (a person overrides the gate, with a reason), then roll it back.
    forced = _promote(env, bad, force=True, reason="field test", decided_by="tester")
    assert forced["verdict"] == "forced" and any("FORCED by tester: field test" in r for r in forced["reasons"])
    assert _latest_production_rest(registry) == [bad]
    assert client.get_model_version_by_alias(NAME, "previous").version == good
    assert client.get_model_version(NAME, good).current_stage == "Archived"

    resources, instance = env
    result = defs().get_job_def("rollback_model").execute_in_process(
        run_config={"ops": {"rollback_production": {"config": {"model": "vehicle"}}}}, instance=instance,
        resources=resources)
    assert result.output_for_node("rollback_production") == {"demoted": bad, "restored": good}
    assert client.get_model_version_by_alias(NAME, "production").version == good
    assert _latest_production_rest(registry) == [good]
    assert client.get_model_version(NAME, bad).current_stage == "Archived"

    # The decision shows in Dagster as an observation on the model's registered_version asset.
    events = instance.fetch_observations(dg.AssetKey(["vehicle", "registered_version"]), limit=10).records
    assert {e.asset_observation.metadata["decision"].value for e in events} >= {"promoted", "rejected", "forced"}


def test_seed_stage_transition_is_respected(env, registry):
    """Someone uses MlflowClient.transition_model_version_stage directly: the next promotion sees it, and afterwards
    the REST get-latest-versions and the production alias name the same version."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    champion = client.get_model_version_by_alias(NAME, "production").version
    others = [v.version for v in client.search_model_versions(f"name = '{NAME}'") if v.version != champion]
    client.transition_model_version_stage(NAME, others[0], "Production", archive_existing_versions=True)
    # The next sensor tick reconciles the aliases with what the person did.
    from alpr_pipelines.defs.promotion.sensors import promotion_sensor

    resources, instance = env
    context = dg.build_sensor_context(instance=instance, resources={"mlflow_registry": resources["mlflow_registry"]})
    promotion_sensor(context)
    assert client.get_model_version_by_alias(NAME, "production").version == others[0]
    assert _latest_production_rest(registry) == [others[0]]
    assert client.get_model_version_by_alias(NAME, "previous").version == champion


def test_people_use_the_alpr_command(env, registry, tmp_path):
    """`alpr promote` (gate and forced), `alpr rollback` and `alpr status`, as a person runs them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlflow import MlflowClient

    resources, _ = env
    alpr = str(Path(sys.executable).parent / "alpr")
    cli_env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri, "DAGSTER_HOME": str(tmp_path / "dagster"),
               "ALPR_HOME": resources["state"].home}

    def run(*args):
        return subprocess.run([alpr, *args], capture_output=True, text=True, env=cli_env, timeout=600)

    client = MlflowClient(registry.uri)
    champion = client.get_model_version_by_alias(NAME, "production").version
    other = next(v.version for v in client.search_model_versions(f"name = '{NAME}'") if v.version != champion)
    refused = run("promote", "--model", "vehicle", "--version", other, "--force")
    assert refused.returncode == 2 and "--force needs --reason" in refused.stderr
    forced = run("promote", "--model", NAME, "--version", other, "--force", "--reason", "hotfix")
    assert forced.returncode in (0, 1), forced.stderr[-2000:]
    assert client.get_model_version_by_alias(NAME, "production").version == other
    back = run("rollback", "--model", "vehicle", "--reason", "hotfix reverted")
    assert back.returncode == 0, back.stderr[-2000:]
    assert f"Production v{other} -> v{champion}" in back.stdout
    status = run("status")
    assert status.returncode == 0
    row = next(line for line in status.stdout.splitlines() if line.startswith(NAME) and f" {champion} " in line)
    assert "Production" in row and "production" in row and "rolled-back-to" in row


def test_an_untrained_model_is_rejected_by_the_default_gate(env, registry, tmp_path):
    """A randomly initialised YOLO11n, registered the original design's way (`alpr register-existing`) as a
    candidate, meets the default policy: rejected, with a failing reason for each floor it misses."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from mlflow import MlflowClient
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", nc=4, verbose=False)
    model.names = {0: "car", 1: "truck", 2: "bus", 3: "motorcycle"}
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"model": model, "train_args": {"imgsz": 320}, "epoch": -1, "optimizer": None}, models / "yolo11n.pt")
    resources, _ = env
    cli_env = {**os.environ, "MLFLOW_TRACKING_URI": registry.uri, "DAGSTER_HOME": str(tmp_path / "dagster"),
               "ALPR_HOME": resources["state"].home}
    alpr = str(Path(sys.executable).parent / "alpr")
    registered = subprocess.run([alpr, "register-existing", "--models-dir", str(models), "--stage", "Staging"],
                                capture_output=True, text=True, env=cli_env, timeout=600)
    assert registered.returncode == 0, registered.stderr[-2000:]
    version = registered.stdout.split(" version ")[1].split()[0]
    decision = _promote(env, version)
    assert decision["verdict"] == "rejected"
    failed = [r for r in decision["reasons"] if r.startswith("FAIL")]
    assert any(r.startswith("FAIL mAP50 ") and "vs floor 0.8000" in r for r in failed), failed
    assert any("mAP50-95" in r and "vs floor" in r for r in failed)
    assert any("weakest class" in r for r in failed)
    mv = MlflowClient(registry.uri).get_model_version(NAME, version)
    assert mv.tags["alpr_decision"] == "rejected" and mv.current_stage != "Production"
