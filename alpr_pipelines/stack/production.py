"""The production-like stack on one machine, without Docker: the original ALPR registry design's architecture
(docker-compose of PostgreSQL, MinIO, MLflow and the Dagster services) with local processes.

- PostgreSQL (already running, ``ALPR_POSTGRES_HOST``/``ALPR_POSTGRES_PORT``, default 127.0.0.1:5432): databases
  ``mlflow_db`` (user ``mlflow``, as in the original ALPR registry design), ``mlflow_auth`` (MLflow's user store) and ``dagster``; the env
  file may rename them (``ALPR_MLFLOW_DB``, ``ALPR_MLFLOW_AUTH_DB``, ``ALPR_DAGSTER_DB``).
- An S3-compatible server on loopback (moto's server mode, ``ALPR_S3_PORT``, default 9000) with the bucket
  ``alpr-mlflow-artifacts``; MLflow reaches it through ``MLFLOW_S3_ENDPOINT_URL`` with boto3.
- ``mlflow server`` with the PostgreSQL backend, S3 artifacts served through the server (edge boxes hold no storage
  credentials) and its basic-auth app. Principals: ``admin``, ``alpr-pipeline`` (may write: training, registration,
  promotion) and ``alpr-edge`` (read-only, for edge devices).
- The registry cache (nginx, :mod:`alpr_pipelines.stack.registry_cache`, ``ALPR_REGISTRY_CACHE_PORT``, default 5080) in
  front of MLflow: edge boxes point ``MLFLOW_TRACKING_URI`` at it, so a fleet's version polls cost MLflow one lookup
  per model and second instead of one per box and poll. ``ALPR_REGISTRY_CACHE=off`` leaves it out;
  ``ALPR_REGISTRY_CACHE_TTL`` (default 1s) sets how long an answer is kept.
- Dagster webserver and daemon with their instance on PostgreSQL (dagster-postgres).

Every credential comes from an env file the user writes from ``config/production.env.example``
(``alpr stack up --profile production --env-file config/production.env``); a missing file or key is a clear error
before anything starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alpr_pipelines.settings import Settings
from alpr_pipelines.stack import registry_cache
from alpr_pipelines.stack.embedded import workspace_file
from alpr_pipelines.stack.principals import (
    PIPELINE_USER,
    REGISTER_EXISTING_EXPERIMENT,
    Principals,
    PrincipalsError,
    ensure_ownership,
    ensure_users,
)
from alpr_pipelines.stack.process import Service, ServiceStatus, StackError, bin_path, start_all

BUCKET = "alpr-mlflow-artifacts"
REQUIRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD", "ALPR_PIPELINE_PASSWORD",
                 "ALPR_EDGE_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")

DAGSTER_POSTGRES_YAML = """\
# Written by `alpr stack up --profile production`: the Dagster instance on PostgreSQL.
telemetry:
  enabled: false
storage:
  postgres:
    postgres_db:
      username: dagster
      password: ""
      hostname: {host}
      db_name: {db}
      port: {port}
concurrency:
  pools:
    default_limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""

AUTH_INI = """\
# Written by `alpr stack up --profile production`. The admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD.
# Nobody reads what they were not granted: alpr-pipeline owns what it creates, alpr-edge has READ grants
# (alpr_pipelines/stack/principals.py), and only alpr-pipeline and admins create models (stack/mlflow_auth.py).
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = {database_uri}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Every request carries the password, and checking it costs a deliberately slow hash (werkzeug's scrypt, ~0.15 s of CPU):
# without this cache a fleet of edge boxes polling every 10 s saturates 2 cores at about 25 devices (bench/fleet_bench.py).
# A good credential is remembered for 60 s per worker; a password change or user deletion reaches the other workers
# within that time.
auth_cache_ttl_seconds = 60
"""


@dataclass(frozen=True)
class ProductionConfig:
    env: dict[str, str]
    pg_host: str
    pg_port: int
    s3_port: int
    mlflow_db: str = "mlflow_db"
    auth_db: str = "mlflow_auth"
    dagster_db: str = "dagster"
    cache_enabled: bool = True
    cache_port: int = 5080
    cache_ttl: str = registry_cache.DEFAULT_TTL

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"


def _switch(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise StackError(f"{name}={env[name]!r}: use on or off")


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{name}={raw!r} is not a port number; set it to an integer such as {default}")
    return int(raw)


def load_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines; raise naming the file and every missing key."""
    if not path.is_file():
        raise StackError(
            f"env file {path} does not exist. Copy config/production.env.example to {path} and set every value "
            "(nothing secret is kept in the repository)."
        )
    values: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise StackError(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip('"').strip("'")
    missing = [k for k in REQUIRED_KEYS if not values.get(k) or values[k] == "change-me"]
    if missing:
        raise StackError(f"{path} lacks values for {', '.join(missing)} (see config/production.env.example)")
    return values


def production_config(env_file: Path) -> ProductionConfig:
    """The env file's configuration, every value checked before anything starts.

    Raises:
        StackError: the file is missing, lacks a value, holds a malformed one, or asks for the registry cache on a
            machine without nginx.
    """
    env = load_env_file(env_file)
    cache = _switch(env, "ALPR_REGISTRY_CACHE", True)
    if cache:
        registry_cache.nginx_binary()  # fail before anything starts, with the way out in the message
    return ProductionConfig(env=env, pg_host=env.get("ALPR_POSTGRES_HOST", "127.0.0.1"),
                            pg_port=_port(env, "ALPR_POSTGRES_PORT", 5432), s3_port=_port(env, "ALPR_S3_PORT", 9000),
                            mlflow_db=env.get("ALPR_MLFLOW_DB", "mlflow_db"),
                            auth_db=env.get("ALPR_MLFLOW_AUTH_DB", "mlflow_auth"),
                            dagster_db=env.get("ALPR_DAGSTER_DB", "dagster"), cache_enabled=cache,
                            cache_port=_port(env, "ALPR_REGISTRY_CACHE_PORT", 5080),
                            cache_ttl=registry_cache.check_ttl(env.get("ALPR_REGISTRY_CACHE_TTL")
                                                               or registry_cache.DEFAULT_TTL))


def _cache_dir(settings: Settings) -> Path:
    return settings.stack_dir / "registry-cache"


def ensure_databases(cfg: ProductionConfig) -> None:
    """Create the roles and databases if absent (connects as the ``postgres`` superuser)."""
    import psycopg2

    try:
        conn = psycopg2.connect(host=cfg.pg_host, port=cfg.pg_port, user="postgres", dbname="postgres")
    except psycopg2.OperationalError as exc:
        raise StackError(f"cannot reach PostgreSQL at {cfg.pg_host}:{cfg.pg_port} as postgres: {exc}") from exc
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction block
    with conn.cursor() as cur:
        for role in ("mlflow", "dagster"):
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if not cur.fetchone():
                cur.execute(f'CREATE ROLE "{role}" LOGIN')
        for db, owner in ((cfg.mlflow_db, "mlflow"), (cfg.auth_db, "mlflow"), (cfg.dagster_db, "dagster")):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{db}" OWNER "{owner}"')
    conn.close()


def ensure_bucket(cfg: ProductionConfig) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=cfg.s3_endpoint, aws_access_key_id=cfg.env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=cfg.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)


def service_env(settings: Settings, cfg: ProductionConfig) -> dict[str, str]:
    """Environment of the stack's processes: the pipeline principal for Dagster, S3 access for MLflow."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_ACCESS_KEY_ID": cfg.env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": cfg.env["AWS_SECRET_ACCESS_KEY"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": cfg.env["MLFLOW_AUTH_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": cfg.env["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "MLFLOW_AUTH_CONFIG_PATH": str(settings.stack_dir / "mlflow" / "basic_auth.ini"),
        "MLFLOW_TRACKING_USERNAME": PIPELINE_USER,
        "MLFLOW_TRACKING_PASSWORD": cfg.env["ALPR_PIPELINE_PASSWORD"],
        # Promotions from the sensor, the UI and `alpr promote` share this lock whatever their DAGSTER_HOME.
        "ALPR_PROMOTION_LOCK_URL": f"postgresql://dagster@{cfg.pg_host}:{cfg.pg_port}/{cfg.dagster_db}",
    }


def services(settings: Settings, cfg: ProductionConfig) -> list[Service]:
    pg = f"{cfg.pg_host}:{cfg.pg_port}"
    workspace = str(workspace_file(settings))
    cache = ([registry_cache.service(_cache_dir(settings), settings.mlflow_host, cfg.cache_port)]
             if cfg.cache_enabled else [])
    return [
        Service("s3", [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(cfg.s3_port)],
                f"{cfg.s3_endpoint}/moto-api/", "moto_server"),
        Service(
            "mlflow",
            [bin_path("mlflow"), "server", "--app-name", "alpr-auth", "--host", settings.mlflow_host, "--port",
             str(settings.mlflow_port), "--backend-store-uri", f"postgresql+psycopg2://mlflow@{pg}/{cfg.mlflow_db}",
             "--artifacts-destination", f"s3://{BUCKET}", "--serve-artifacts"],
            f"http://{settings.mlflow_host}:{settings.mlflow_port}/health",
            "mlflow",
        ),
        *cache,
        Service("dagster-webserver", [bin_path("dagster-webserver"), "-h", settings.dagster_host, "-p",
                                      str(settings.dagster_port), "-w", workspace],
                f"http://{settings.dagster_host}:{settings.dagster_port}/server_info", "dagster-webserver"),
        Service("dagster-daemon", [bin_path("dagster-daemon"), "run", "-w", workspace], None, "dagster-daemon"),
    ]


def prepare(settings: Settings, cfg: ProductionConfig) -> None:
    """Everything before the processes start: databases, config files."""
    ensure_databases(cfg)
    (settings.stack_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "mlflow" / "basic_auth.ini").write_text(
        AUTH_INI.format(database_uri=f"postgresql+psycopg2://mlflow@{cfg.pg_host}:{cfg.pg_port}/{cfg.auth_db}"))
    if cfg.cache_enabled:
        # MLflow bound to every interface is still reached on loopback from the cache beside it.
        upstream = "127.0.0.1" if settings.mlflow_host in ("0.0.0.0", "::", "") else settings.mlflow_host
        registry_cache.write_config(_cache_dir(settings), f"{upstream}:{settings.mlflow_port}", settings.mlflow_host,
                                    cfg.cache_port, cfg.cache_ttl)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    cfg_file = settings.dagster_home / "dagster.yaml"
    if not cfg_file.exists():
        cfg_file.write_text(DAGSTER_POSTGRES_YAML.format(host=cfg.pg_host, port=cfg.pg_port, db=cfg.dagster_db))


def ensure_principals(settings: Settings, cfg: ProductionConfig) -> None:
    """Users, owned models and experiment, the edge's READ grants (``stack.principals``); needs MLflow up."""
    from alpr_pipelines.edge.contract import MODEL_NAMES

    p = Principals(settings.mlflow_tracking_uri, cfg.env["MLFLOW_AUTH_ADMIN_PASSWORD"],
                   cfg.env["ALPR_PIPELINE_PASSWORD"], cfg.env["ALPR_EDGE_PASSWORD"])
    try:
        ensure_users(p)
        ensure_ownership(p, MODEL_NAMES, [settings.mlflow_experiment, REGISTER_EXISTING_EXPERIMENT])
    except PrincipalsError as exc:
        raise StackError(str(exc)) from exc


def stack_environment(settings: Settings, cfg: ProductionConfig) -> dict[str, str]:
    return {**os.environ, **service_env(settings, cfg), "ALPR_HOME": str(settings.home),
            "DAGSTER_HOME": str(settings.dagster_home), "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def up(settings: Settings, env_file: Path, timeout: float = 120.0, only: list[str] | None = None) -> list[ServiceStatus]:
    """Start the production profile from ``env_file`` (databases and bucket created, MLflow users made, once their
    services are healthy).

    Raises:
        StackError: the env file is missing or incomplete, or a service does not come up (see ``start_all``).
    """
    cfg = production_config(env_file)
    prepare(settings, cfg)
    return start_all(settings, services(settings, cfg), stack_environment(settings, cfg), timeout, only,
                     after_healthy={"s3": lambda: ensure_bucket(cfg), "mlflow": lambda: ensure_principals(settings, cfg)})
