"""`alpr stack up | status | down` for real: MLflow server, Dagster webserver and daemon on loopback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alpr_pipelines_tests.conftest import free_port

ALPR = str(Path(sys.executable).parent / "alpr")


@pytest.fixture()
def stack_env(tmp_path):
    env = {**os.environ, "ALPR_HOME": str(tmp_path / "home"), "ALPR_MLFLOW_PORT": str(free_port()),
           "ALPR_DAGSTER_PORT": str(free_port())}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)
    yield env
    subprocess.run([ALPR, "stack", "down"], env=env, capture_output=True, timeout=120)


def alpr(env, *args, timeout=240):
    return subprocess.run([ALPR, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])


def test_up_is_idempotent_and_down_stops_by_pid(stack_env):
    first = alpr(stack_env, "stack", "up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("healthy") == 3
    pids = {line.split()[0]: line.split("pid=")[1].split()[0] for line in first.stdout.splitlines()}
    second = alpr(stack_env, "stack", "up")
    assert second.returncode == 0
    assert {line.split()[0]: line.split("pid=")[1].split()[0] for line in second.stdout.splitlines()} == pids
    status = alpr(stack_env, "stack", "status")
    assert status.returncode == 0 and f"127.0.0.1:{stack_env['ALPR_MLFLOW_PORT']}" in status.stdout
    home = Path(stack_env["ALPR_HOME"])
    assert (home / "stack" / "logs" / "mlflow.log").is_file()
    assert (home / "dagster" / "dagster.yaml").is_file()
    down = alpr(stack_env, "stack", "down")
    assert "dagster-daemon" in down.stdout and "mlflow" in down.stdout
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    after = alpr(stack_env, "stack", "status")
    assert after.returncode == 1 and after.stdout.count("stopped") == 3


def test_port_taken_by_another_program_is_a_clear_error(stack_env):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["ALPR_MLFLOW_PORT"])))
        blocker.listen()
        out = alpr(stack_env, "stack", "up", timeout=60)
    assert out.returncode == 2
    assert f"127.0.0.1:{stack_env['ALPR_MLFLOW_PORT']} is already in use" in out.stderr
