"""The `alpr` command as a person runs it, in a subprocess, against a real `mlflow server`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    broken = tmp_path / "d"
    shutil.copytree(tiny_views["vehicle"].parent, broken)
    (broken / "data.yaml").write_text((broken / "data.yaml").read_text().replace(
        str(tiny_views["vehicle"].parent), str(broken)))
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
