"""The promotion sensor with build_sensor_context, against its own real `mlflow server` (fixed model names)."""

import json

import dagster as dg
import pytest

from alpr_pipelines.defs.promotion.sensors import promotion_sensor, run_key
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource


@pytest.fixture(scope="module")
def registry(module_mlflow_server):
    return module_mlflow_server


def _new_version(client, name: str, stage: str = "Staging") -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException:
        pass
    exp = client.get_experiment_by_name("sensor") or client.get_experiment(client.create_experiment("sensor"))
    run = client.create_run(exp.experiment_id)
    mv = client.create_model_version(name, source=f"runs:/{run.info.run_id}/detector", run_id=run.info.run_id)
    if stage != "None":
        client.transition_model_version_stage(name, mv.version, stage)
    return str(mv.version)


def _tick(registry, cursor):
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"mlflow_registry": MlflowRegistryResource(tracking_uri=registry.uri)})
    result = promotion_sensor(context)
    return result, context.cursor if result.cursor is None else result.cursor


def test_sensor_ticks(registry):
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    # First tick, nothing registered at all.
    result, cursor = _tick(registry, None)
    assert not result.run_requests and result.skip_reason is not None
    # One new candidate.
    v1 = _new_version(client, "alpr-plate-detector")
    result, cursor = _tick(registry, cursor)
    assert [r.run_key for r in result.run_requests] == [run_key("alpr-plate-detector", v1)]
    request = result.run_requests[0]
    assert request.run_config["ops"]["gate_and_promote"]["config"] == {"model": "plate", "version": v1}
    assert json.loads(cursor) == {"plate": int(v1)}
    # Nothing new: same cursor, no runs.
    result, cursor2 = _tick(registry, cursor)
    assert not result.run_requests and cursor2 == cursor
    # Several new, across both models; a version registered with stage None is no candidate.
    v2 = _new_version(client, "alpr-plate-detector")
    v3 = _new_version(client, "alpr-plate-detector")
    _new_version(client, "alpr-plate-detector", stage="None")
    w1 = _new_version(client, "alpr-vehicle-detector")
    result, cursor = _tick(registry, cursor)
    assert sorted(r.run_key for r in result.run_requests) == sorted([
        run_key("alpr-plate-detector", v2), run_key("alpr-plate-detector", v3), run_key("alpr-vehicle-detector", w1)])
    assert json.loads(cursor) == {"plate": int(v3), "vehicle": int(w1)}
    # A lost cursor (restarted daemon) re-requests, but with the same run keys, which Dagster launches only once.
    result, _ = _tick(registry, None)
    assert {r.run_key for r in result.run_requests} >= {run_key("alpr-plate-detector", v2)}
    # A decided version is no longer a candidate, even with a lost cursor.
    client.set_model_version_tag("alpr-plate-detector", v1, "alpr_decision", "rejected")
    result, _ = _tick(registry, None)
    assert run_key("alpr-plate-detector", v1) not in {r.run_key for r in result.run_requests}



def test_a_failed_promotion_run_is_followed_by_one_more(registry):
    """The op records a failed attempt on the version; the next tick asks for the next attempt (its own run key), and
    none once the version is decided."""
    from mlflow import MlflowClient

    from alpr_pipelines.lib.promotion import ATTEMPTS_TAG, DECISION_TAG

    client = MlflowClient(registry.uri)
    _, cursor = _tick(registry, None)
    v = _new_version(client, "alpr-vehicle-detector")
    result, cursor = _tick(registry, cursor)
    assert [r.run_key for r in result.run_requests] == [run_key("alpr-vehicle-detector", v)]
    client.set_model_version_tag("alpr-vehicle-detector", v, ATTEMPTS_TAG, "1")
    result, cursor = _tick(registry, cursor)
    assert [r.run_key for r in result.run_requests] == [run_key("alpr-vehicle-detector", v, 2)]
    assert result.run_requests[0].tags["alpr/attempt"] == "2"
    client.set_model_version_tag("alpr-vehicle-detector", v, DECISION_TAG, "rejected")
    result, cursor = _tick(registry, cursor)
    assert not result.run_requests


def test_a_promotion_run_whose_process_died_is_recorded_and_retried(registry):
    """The daemon (and the run it started) killed mid-promotion: the run stays STARTED and records nothing. The next
    tick marks it failed, records the lost attempt on the version, and asks for the next one."""
    import socket
    import subprocess
    import sys

    from mlflow import MlflowClient

    from alpr_pipelines.defs.promotion.jobs import promote_version
    from alpr_pipelines.defs.runs import HOST_TAG, PID_TAG
    from alpr_pipelines.lib.promotion import ATTEMPTS_TAG, ERROR_TAG

    client = MlflowClient(registry.uri)
    _, cursor = _tick(registry, None)
    v = _new_version(client, "alpr-vehicle-detector")
    result, cursor = _tick(registry, cursor)
    assert [r.run_key for r in result.run_requests] == [run_key("alpr-vehicle-detector", v)]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    instance = dg.DagsterInstance.ephemeral()
    request = result.run_requests[0]
    run = instance.create_run_for_job(promote_version, run_config=request.run_config, tags={
        **request.tags, PID_TAG: str(dead.pid), HOST_TAG: socket.gethostname()})
    instance.handle_run_event(run.run_id, dg.DagsterEvent(event_type_value="PIPELINE_START",
                                                          job_name="promote_version", message="started"))
    from alpr_pipelines.defs import runs

    quiet = runs.QUIET_S
    runs.QUIET_S = 0.0  # the run's last event is fresh in this test
    try:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "mlflow_registry": MlflowRegistryResource(tracking_uri=registry.uri)})
        result = promotion_sensor(context)
    finally:
        runs.QUIET_S = quiet
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    tags = client.get_model_version("alpr-vehicle-detector", v).tags
    assert tags[ATTEMPTS_TAG] == "1" and "without recording a result (its process died" in tags[ERROR_TAG]
    assert [r.run_key for r in result.run_requests] == [run_key("alpr-vehicle-detector", v, 2)]
