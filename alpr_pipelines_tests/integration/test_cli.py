"""The `alpr` command as a person runs it, in a subprocess, against a real `mlflow server`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alpr_pipelines_tests.conftest import copy_dataset

ALPR = str(Path(sys.executable).parent / "alpr")


def run_alpr(*args: str, env_extra: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([ALPR, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture()
def cli_env(mlflow_server, tmp_path):
    return {"MLFLOW_TRACKING_URI": mlflow_server.uri, "ALPR_HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(tmp_path / "dagster"), "MLFLOW_EXPERIMENT_NAME": "cli-tests"}


def test_train_with_the_seed_flags_registers(cli_env, tiny_views, mlflow_client, tmp_path):
    out = run_alpr("train", "--data", str(tiny_views["plate"]), "--epochs", "1", "--imgsz", "64", "--batch", "4",
                   "--device", "cpu", "--lr0", "0.01", "--optimizer", "AdamW", "--name", "plate-detector",
                   "--register", "--stage", "None", env_extra=cli_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered alpr-plate-detector version" in out.stdout
    version = out.stdout.split("registered alpr-plate-detector version ")[1].split()[0]
    mv = mlflow_client.get_model_version("alpr-plate-detector", version)
    assert mv.current_stage == "None"
    run = mlflow_client.get_run(mv.run_id)
    assert run.data.params["epochs"] == "1" and run.data.params["learning_rate"] == "0.01"
    assert "dagster_run_id" in run.data.tags  # it ran through the same Dagster assets
    # The same run shows in the instance the Dagster UI reads.
    assert any((Path(cli_env["DAGSTER_HOME"]) / "history").rglob("*.db")) or any(
        Path(cli_env["DAGSTER_HOME"]).rglob("*.db"))

    # register-existing: the trained weights as a local file, exported to ONNX on the way.
    models = tmp_path / "models"
    models.mkdir()
    best = next(Path(cli_env["ALPR_HOME"]).rglob("best.pt"))
    shutil.copyfile(best, models / "yolo11n-plate.pt")
    reg = run_alpr("register-existing", "--models-dir", str(models), "--stage", "Staging", env_extra=cli_env)
    assert reg.returncode == 0, reg.stderr[-3000:]
    assert "alpr-plate-detector version" in reg.stdout and "(Staging; aliases candidate)" in reg.stdout
    again = run_alpr("register-existing", "--models-dir", str(models), env_extra=cli_env)
    assert "(already registered)" in again.stdout

    status = run_alpr("status", env_extra=cli_env)
    assert status.returncode == 0 and "alpr-plate-detector" in status.stdout and "candidate" in status.stdout


def test_register_existing_refuses_wrong_classes(cli_env, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.txt").write_text("nothing here")
    out = run_alpr("register-existing", "--models-dir", str(models), env_extra=cli_env)
    assert out.returncode == 2 and "no .pt, .onnx or .engine files" in out.stderr


def test_missing_base_weights_fail_before_any_work(cli_env, tiny_views, tmp_path):
    out = run_alpr("train", "--data", str(tiny_views["plate"]), "--model", "yolo11n.pt", "--epochs", "1",
                   env_extra=cli_env, cwd=tmp_path)
    assert out.returncode == 2
    assert "yolo11n.pt not found. Nothing is downloaded" in out.stderr


def test_dataset_validate_names_bad_files(tiny_views, tmp_path):
    broken = copy_dataset(tiny_views["vehicle"], tmp_path / "d").parent
    bad = sorted((broken / "labels" / "val").glob("*.txt"))[0]
    bad.write_text("9 0.5 0.5 0.1 0.1\n")
    out = run_alpr("dataset", "validate", "--data", str(broken / "data.yaml"), "--model", "vehicle")
    assert out.returncode == 2 and f"{bad}:1" in out.stderr and "unknown class" in out.stderr
    ok = run_alpr("dataset", "validate", "--data", str(tiny_views["vehicle"]), "--model", "vehicle")
    assert ok.returncode == 0 and '"fingerprint"' in ok.stdout


def test_unreachable_mlflow_is_a_clear_error(tiny_views, tmp_path):
    out = run_alpr("train", "--data", str(tiny_views["plate"]), "--epochs", "1",
                   env_extra={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "ALPR_HOME": str(tmp_path)})
    assert out.returncode == 2 and "MLflow is not reachable at http://127.0.0.1:9" in out.stderr
    assert "alpr stack up" in out.stderr


def test_a_killed_cli_run_does_not_block_later_trainings(tmp_path):
    """A run whose `alpr` process died keeps no pool slot: the next command marks it failed and frees the slot."""
    import socket

    import dagster as dg

    from alpr_pipelines.cli import HOST_TAG, PID_TAG, reap_dead_cli_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    instance = dg.DagsterInstance.ephemeral()
    instance.event_log_storage.set_concurrency_slots("alpr_training", 1)

    @dg.op(pool="alpr_training")
    def hold():
        pass

    @dg.job
    def holder():
        hold()

    run = instance.create_run_for_job(holder, tags={PID_TAG: str(dead.pid), HOST_TAG: socket.gethostname()})
    instance.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value="PIPELINE_START", job_name="holder", message="started"))
    assert instance.event_log_storage.claim_concurrency_slot("alpr_training", run.run_id, "hold").is_claimed
    alive = instance.create_run_for_job(holder, tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})
    instance.handle_run_event(alive.run_id, dg.DagsterEvent(
        event_type_value="PIPELINE_START", job_name="holder", message="started"))
    assert reap_dead_cli_runs(instance) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    info = instance.event_log_storage.get_concurrency_info("alpr_training")
    assert info.active_slot_count == 0
