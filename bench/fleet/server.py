"""The fleet benchmark's server side: the production profile's MLflow server on throwaway PostgreSQL databases, the
registry cache in front of it, and the registry seeded as production leaves it."""

from __future__ import annotations

import configparser
import io
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import free_port

from alpr_pipelines import stack
from alpr_pipelines.settings import load_settings
from alpr_pipelines.stack import production as prod
from alpr_pipelines.stack import registry_cache
from alpr_pipelines.stack.principals import EDGE_USER, PIPELINE_USER
from alpr_pipelines.stack.process import Service, logfile, start_all
from alpr_pipelines.stack.registry_cache import RunningCache
from fleet import (
    MODELS,
    SERVER_START_TIMEOUT_S,
)


@dataclass(frozen=True)
class FleetServer:
    """A running MLflow server of the production profile; ``None`` credentials when it runs without basic-auth."""

    uri: str
    pid: int
    command: list[str]
    auth_ini: str | None
    edge_auth: tuple[str, str] | None
    pipeline_auth: tuple[str, str] | None
    databases: tuple[str, str]
    log: Path

    @property
    def auth_cache_ttl(self) -> int | None:
        """``auth_cache_ttl_seconds`` of its ``basic_auth.ini`` (MLflow's default is 0: no cache); None without auth."""
        if self.auth_ini is None:
            return None
        ini = configparser.ConfigParser()
        ini.read_string(self.auth_ini)
        return ini.getint("mlflow", "auth_cache_ttl_seconds", fallback=0)




def _postgres(host: str, port: int):
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction block
    return conn


def create_databases(cfg: prod.ProductionConfig) -> None:
    """The backend and the auth store's databases, owned by ``mlflow`` as in the production profile."""
    conn = _postgres(cfg.pg_host, cfg.pg_port)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
        if not cur.fetchone():
            cur.execute('CREATE ROLE "mlflow" LOGIN')
        for db in (cfg.mlflow_db, cfg.auth_db):
            cur.execute(f'CREATE DATABASE "{db}" OWNER "mlflow"')
    conn.close()


def drop_databases(cfg: prod.ProductionConfig) -> None:
    conn = _postgres(cfg.pg_host, cfg.pg_port)
    with conn.cursor() as cur:
        for db in (cfg.mlflow_db, cfg.auth_db):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()


def auth_ini(cfg: prod.ProductionConfig, auth_cache_ttl: int | None) -> str:
    """The production profile's ``basic_auth.ini`` for our databases; ``auth_cache_ttl`` overrides its cache TTL."""
    text = prod.AUTH_INI.format(
        database_uri=f"postgresql+psycopg2://mlflow@{cfg.pg_host}:{cfg.pg_port}/{cfg.auth_db}")
    if auth_cache_ttl is None:
        return text
    parser = configparser.ConfigParser()
    parser.read_string(text)
    parser["mlflow"]["auth_cache_ttl_seconds"] = str(auth_cache_ttl)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def server_service(settings, cfg: prod.ProductionConfig, artifacts: Path, workers: int | None = None,
                   extra_args: list[str] | None = None, auth: bool = True) -> Service:
    """The production profile's MLflow service, with artifacts in a local folder instead of the S3 bucket.

    ``workers``, ``extra_args`` (appended to the command) and ``auth=False`` (no basic-auth app) are for
    investigation and for the unauthenticated cost baseline.
    """
    svc = next(s for s in prod.services(settings, cfg) if s.name == "mlflow")
    command = [str(artifacts) if arg == f"s3://{prod.BUCKET}" else arg for arg in svc.command]
    if not auth and "--app-name" in command:
        at = command.index("--app-name")
        del command[at:at + 2]
    command += extra_args or []
    if workers is not None:
        if "--workers" in command:
            command[command.index("--workers") + 1] = str(workers)
        else:
            command += ["--workers", str(workers)]
    return Service(svc.name, command, svc.health_url, svc.marker)


@contextmanager
def fleet_server(auth: bool = True, auth_cache_ttl: int | None = None, workers: int | None = None,
                 extra_args: list[str] | None = None) -> Iterator[FleetServer]:
    """Start the production profile's MLflow server on throwaway databases; stop it by PID and drop them after.

    Started and stopped through :mod:`alpr_pipelines.stack` (log and pidfile in a temporary ``ALPR_HOME``; the
    process group is stopped by PID, only if its command line is still ours).

    Environment:
        ALPR_POSTGRES_HOST / ALPR_POSTGRES_PORT: where PostgreSQL runs (default 127.0.0.1:5432).
    """
    suffix = uuid.uuid4().hex[:8]
    secrets = {key: uuid.uuid4().hex for key in prod.REQUIRED_KEYS}
    cfg = prod.ProductionConfig(env=secrets, pg_host=os.environ.get("ALPR_POSTGRES_HOST", "127.0.0.1"),
                                pg_port=int(os.environ.get("ALPR_POSTGRES_PORT", "5432")), s3_port=0,
                                mlflow_db=f"alpr_fleet_{suffix}", auth_db=f"alpr_fleet_auth_{suffix}")
    home = Path(tempfile.mkdtemp(prefix="alpr-fleet-"))
    port = free_port()
    settings = load_settings({"ALPR_HOME": str(home), "ALPR_MLFLOW_PORT": str(port),
                              "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    ini = auth_ini(cfg, auth_cache_ttl)
    (settings.stack_dir / "mlflow").mkdir(parents=True)
    (settings.stack_dir / "mlflow" / "basic_auth.ini").write_text(ini)  # where service_env points the server
    svc = server_service(settings, cfg, home / "artifacts", workers, extra_args, auth)
    env = {k: v for k, v in prod.stack_environment(settings, cfg).items()
           if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    created = False
    try:
        create_databases(cfg)
        created = True
        pid = start_all(settings, [svc], env, SERVER_START_TIMEOUT_S)[0].pid  # recorded: stack.down stops it by PID
        assert pid is not None
        if auth:
            prod.ensure_principals(settings, cfg)
        yield FleetServer(uri=settings.mlflow_tracking_uri, pid=pid, command=svc.command,
                          auth_ini=ini if auth else None,
                          edge_auth=(EDGE_USER, secrets["ALPR_EDGE_PASSWORD"]) if auth else None,
                          pipeline_auth=(PIPELINE_USER, secrets["ALPR_PIPELINE_PASSWORD"]) if auth else None,
                          databases=(cfg.mlflow_db, cfg.auth_db), log=logfile(settings, svc.name))
    finally:
        try:
            stack.down(settings)
        finally:
            if created:
                drop_databases(cfg)
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def cache_in_front(server: FleetServer, ttl: str = registry_cache.DEFAULT_TTL) -> Iterator[RunningCache]:
    """The production profile's registry cache in front of ``server``; stopped by PID after, its files removed."""
    home = Path(tempfile.mkdtemp(prefix="alpr-fleet-cache-"))
    try:
        with registry_cache.running(server.uri, home / "registry-cache", ttl) as cache:
            yield cache
    finally:
        shutil.rmtree(home, ignore_errors=True)


def server_log_errors(log: Path, top: int = 6) -> list[dict[str, Any]]:
    """The most frequent error lines of the server's log (digits folded, so one message counts once)."""
    if not log.is_file():
        return []
    pattern = re.compile(r"\b(ERROR|CRITICAL)\b|\w+(Error|Exception): ")
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if pattern.search(line):
            message = re.sub(r"^\S+ \S+ (ERROR|CRITICAL) ", "", line.strip())  # "2026/01/01 10:00:00 ERROR ..."
            counts[re.sub(r"\d+", "N", message)[:240]] += 1
    return [{"count": n, "message": m} for m, n in counts.most_common(top)]


def seed_registry(server: FleetServer, versions: int = 3) -> dict[str, str]:
    """Register ``versions`` versions of each detector as production does; returns model -> production version.

    Stages and aliases go through :func:`alpr_pipelines.lib.registry.set_stage`, as promotion does: all but the last
    version are promoted in turn (the one before the champion holds ``previous``), the last is a Staging candidate.
    No training: each version's source is an empty run, since an alias lookup never reads artifacts.
    """
    from mlflow import MlflowClient

    from alpr_pipelines.lib.models import spec_for
    from alpr_pipelines.lib.registry import set_stage

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(var, None)
    if server.pipeline_auth is not None:  # MlflowClient reads the principal from the environment only
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.pipeline_auth
    client = MlflowClient(server.uri)
    production: dict[str, str] = {}
    # MLflow prints "View run ..." links to stdout; our stdout carries only the JSON result.
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; production keeps them beside aliases
        # With auth, `stack.principals` made the experiment and the models already (owned by the pipeline).
        found = client.get_experiment_by_name("alpr-training")
        experiment = found.experiment_id if found else client.create_experiment("alpr-training")
        for name in MODELS:
            if server.pipeline_auth is None:
                client.create_registered_model(name, description=spec_for(name).description)
            for n in range(1, versions + 1):
                run = client.create_run(experiment, tags={"alpr_bench": "fleet"})
                client.set_terminated(run.info.run_id)
                mv = client.create_model_version(name, f"runs:/{run.info.run_id}/detector/{n}", run.info.run_id)
                stage = "Staging" if n == versions else "Production"
                set_stage(client, name, mv.version, stage, archive_existing=stage == "Production")
                if stage == "Production":
                    production[name] = str(mv.version)
    return production


def password_check_cost() -> dict[str, Any]:
    """What one basic-auth password check costs: MLflow's user store hashes with werkzeug's default method."""
    from werkzeug.security import check_password_hash, generate_password_hash

    pwhash = generate_password_hash(uuid.uuid4().hex)
    times = []
    for _ in range(3):
        started = time.process_time()
        check_password_hash(pwhash, "not the password")
        times.append(time.process_time() - started)
    return {"method": pwhash.split("$", 1)[0], "verify_cpu_ms": round(1000 * float(np.median(times)), 1)}


def postgres_version() -> str:
    conn = _postgres(os.environ.get("ALPR_POSTGRES_HOST", "127.0.0.1"), int(os.environ.get("ALPR_POSTGRES_PORT", "5432")))
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_setting('max_connections')")
        version, max_connections = cur.fetchone() or ("?", "?")
    conn.close()
    return f"PostgreSQL {version} (max_connections {max_connections})"


def nginx_version() -> str:
    import subprocess

    out = subprocess.run([registry_cache.nginx_binary(), "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")
