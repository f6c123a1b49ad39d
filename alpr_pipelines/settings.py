"""Every environment-dependent value, read in one place and only when asked for (never at import).

Environment variables (the original ALPR registry design's names first):
    MLFLOW_TRACKING_URI: MLflow server URL (default http://127.0.0.1:5000, the embedded stack).
    MLFLOW_S3_ENDPOINT_URL: S3 endpoint for artifacts when the server proxies none (unset on the embedded stack).
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: S3 credentials (unset on the embedded stack: the MLflow server serves
        artifacts itself, so clients hold no storage credentials).
    MLFLOW_EXPERIMENT_NAME: experiment for training runs (default ``alpr-training``).
    ALPR_HOME: state folder for datasets, training runs, exports and the embedded stack (default ``./.alpr``).
    ALPR_MLFLOW_HOST / ALPR_MLFLOW_PORT: where ``alpr stack up`` binds MLflow (default 127.0.0.1:5000).
    ALPR_DAGSTER_HOST / ALPR_DAGSTER_PORT: where ``alpr stack up`` binds the Dagster webserver (default 127.0.0.1:3000).
    DAGSTER_HOME: Dagster instance folder (default ``$ALPR_HOME/dagster``).
    ALPR_RETRAIN_CRON / ALPR_RETRAIN_TIMEZONE: the retraining schedule (default ``0 3 * * 1``, weekly, in ``UTC``).
    ALPR_RETRAIN_RUN_CONFIG: a YAML run config for scheduled retraining (default: the assets' defaults).
    ALPR_RETRAIN_FORCE: "1" retrains on every tick even when data and config are unchanged.
    ALPR_GATE_POLICY: a YAML file of promotion-gate overrides per model, e.g. ``plate: {min_map50: 0.85}``
        (fields of ``lib.gate.GatePolicy``); read by every promotion run, the sensor's included.
    ALPR_SYSTEM_FONTS: "0" draws training plates in the shipped fonts only (default: this machine's fonts too).
    ALPR_SIGNING_KEY_FILE: the pipeline's Ed25519 release key (PEM); new versions' manifests are signed with it
        (default ``$ALPR_HOME/keys/signing.pem`` when present: the embedded stack makes it on first ``stack up``).
    ALPR_EXECUTOR: "k8s" runs each step as its own Kubernetes pod (dagster-k8s's k8s_job_executor), so training
        steps alone ask for a GPU; unset: Dagster's default executor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXPERIMENT = "alpr-training"


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :func:`load_settings`."""

    home: Path
    mlflow_tracking_uri: str
    mlflow_experiment: str
    mlflow_host: str
    mlflow_port: int
    dagster_host: str
    dagster_port: int
    dagster_home: Path
    s3_endpoint_url: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    retrain_cron: str = "0 3 * * 1"
    retrain_timezone: str = "UTC"
    retrain_run_config: Path | None = None
    retrain_force: bool = False
    executor: str = "default"
    gate_policy_file: Path | None = None
    system_fonts: bool = True
    signing_key_file: Path | None = None

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def training_dir(self) -> Path:
        return self.home / "training"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"


def _int_env(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a port number; set it to an integer such as {default}") from exc


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment). See the module docstring for variables."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("ALPR_HOME") or Path.cwd() / ".alpr").expanduser().resolve()
    mlflow_host = env.get("ALPR_MLFLOW_HOST", "127.0.0.1")
    mlflow_port = _int_env(env, "ALPR_MLFLOW_PORT", 5000)
    return Settings(
        home=home,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"http://{mlflow_host}:{mlflow_port}",
        mlflow_experiment=env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
        mlflow_host=mlflow_host,
        mlflow_port=mlflow_port,
        dagster_host=env.get("ALPR_DAGSTER_HOST", "127.0.0.1"),
        dagster_port=_int_env(env, "ALPR_DAGSTER_PORT", 3000),
        dagster_home=Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().resolve(),
        s3_endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        retrain_cron=env.get("ALPR_RETRAIN_CRON") or "0 3 * * 1",
        retrain_timezone=env.get("ALPR_RETRAIN_TIMEZONE") or "UTC",
        retrain_run_config=Path(env["ALPR_RETRAIN_RUN_CONFIG"]).expanduser() if env.get("ALPR_RETRAIN_RUN_CONFIG")
        else None,
        retrain_force=env.get("ALPR_RETRAIN_FORCE", "").lower() in ("1", "true", "yes"),
        executor=env.get("ALPR_EXECUTOR") or "default",
        gate_policy_file=Path(env["ALPR_GATE_POLICY"]).expanduser() if env.get("ALPR_GATE_POLICY") else None,
        system_fonts=env.get("ALPR_SYSTEM_FONTS", "1") != "0",
        signing_key_file=Path(env["ALPR_SIGNING_KEY_FILE"]).expanduser() if env.get("ALPR_SIGNING_KEY_FILE")
        else None,
    )
