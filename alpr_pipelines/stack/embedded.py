"""The embedded default stack: an MLflow server and Dagster (webserver + daemon) as local processes.

MLflow: SQLite backend store, local artifact store served by the server itself (``--serve-artifacts``), so clients
need no storage credentials. Dagster: instance folder ``$DAGSTER_HOME`` (default ``$ALPR_HOME/dagster``).
"""

from __future__ import annotations

import os
from pathlib import Path

from alpr_pipelines.lib.signing import ensure_key_pair
from alpr_pipelines.settings import Settings
from alpr_pipelines.stack.process import Service, ServiceStatus, bin_path, start_all

DAGSTER_YAML = """\
# Written by `alpr stack up`; edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  pools:
    # Trainings share the pool "alpr_training": one at a time, so two never fight over the same cores or GPU.
    default_limit: 1
# A run whose process died while starting is marked failed after 180 s instead of holding its pool's queue; one that
# died later is found by the promotion sensor (alpr_pipelines/defs/runs.py).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""


def workspace_file(settings: Settings) -> Path:
    """The repository's workspace.yaml when run from a checkout, else one written into the stack folder."""
    local = Path.cwd() / "workspace.yaml"
    if local.is_file():
        return local
    generated = settings.stack_dir / "workspace.yaml"
    generated.parent.mkdir(parents=True, exist_ok=True)
    generated.write_text(
        "load_from:\n  - python_module:\n      module_name: alpr_pipelines.definitions\n"
        "      location_name: alpr_pipelines\n"
    )
    return generated


def services(settings: Settings) -> list[Service]:
    """MLflow (SQLite backend, artifacts served by the server), the Dagster webserver and the daemon."""
    mlflow_dir = settings.stack_dir / "mlflow"
    workspace = str(workspace_file(settings))
    return [
        Service(
            "mlflow",
            [bin_path("mlflow"), "server", "--host", settings.mlflow_host, "--port", str(settings.mlflow_port),
             "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
             "--artifacts-destination", str(mlflow_dir / "artifacts"), "--serve-artifacts"],
            f"http://{settings.mlflow_host}:{settings.mlflow_port}/health",
            "mlflow",
        ),
        Service(
            "dagster-webserver",
            [bin_path("dagster-webserver"), "-h", settings.dagster_host, "-p", str(settings.dagster_port), "-w", workspace],
            f"http://{settings.dagster_host}:{settings.dagster_port}/server_info",
            "dagster-webserver",
        ),
        Service("dagster-daemon", [bin_path("dagster-daemon"), "run", "-w", workspace], None, "dagster-daemon"),
    ]


def service_env(settings: Settings) -> dict[str, str]:
    """The services' environment: the state folders, the tracking URI, Ultralytics offline."""
    env = dict(os.environ)
    env.update({
        "ALPR_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.dagster_home),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "YOLO_OFFLINE": env.get("YOLO_OFFLINE", "1"),
        "YOLO_AUTOINSTALL": env.get("YOLO_AUTOINSTALL", "false"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": env.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
        # MLflow 3's server otherwise starts a pool of job consumers (GenAI scorers, trace roll-ups; about 300 MB
        # each) that this registry never uses: on a 2-core box they cost seconds of CPU at start and ~2 GB of memory.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    })
    return env


def ensure_dagster_home(settings: Settings) -> None:
    """The Dagster instance folder, with our dagster.yaml (pools, no telemetry) unless one is there already."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    cfg = settings.dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)


def up(settings: Settings, timeout: float = 120.0, only: list[str] | None = None) -> list[ServiceStatus]:
    """Start the embedded stack (see :func:`stack.process.start_all`)."""
    ensure_dagster_home(settings)
    if settings.signing_key_file is None:
        ensure_key_pair(settings.keys_dir)  # the demo's release key: versions are signed from the first one
    (settings.stack_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    return start_all(settings, services(settings), service_env(settings), timeout, only)
