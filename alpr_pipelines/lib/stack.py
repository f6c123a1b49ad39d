"""The embedded default stack: an MLflow server and Dagster (webserver + daemon) as local processes.

``up`` is idempotent (a service already running and healthy is left alone), waits for health, logs each service to
``$ALPR_HOME/stack/logs/<name>.log`` and records its PID in ``$ALPR_HOME/stack/run/<name>.pid``. ``down`` stops by PID,
and only a process whose command line is the one we started (PIDs get reused).

MLflow: SQLite backend store, local artifact store served by the server itself (``--serve-artifacts``), so clients
need no storage credentials. Dagster: instance folder ``$DAGSTER_HOME`` (default ``$ALPR_HOME/dagster``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from alpr_pipelines.settings import Settings

DAGSTER_YAML = """\
# Written by `alpr stack up`; edit freely, it is not overwritten.
telemetry:
  enabled: false
concurrency:
  pools:
    # Trainings share the pool "alpr_training": one at a time, so two never fight over the same cores or GPU.
    default_limit: 1
"""


class StackError(Exception):
    """A service cannot be started or stopped; the message says which and what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str | None
    marker: str  # a word of the command line that identifies our process


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    url: str | None


def _bin(name: str) -> str:
    """An executable from this environment's bin folder (the venv), falling back to PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed in this environment; run `pip install -e .` (or `make demo`)")
    return found


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
    mlflow_dir = settings.stack_dir / "mlflow"
    workspace = str(workspace_file(settings))
    return [
        Service(
            "mlflow",
            [_bin("mlflow"), "server", "--host", settings.mlflow_host, "--port", str(settings.mlflow_port),
             "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
             "--artifacts-destination", str(mlflow_dir / "artifacts"), "--serve-artifacts"],
            f"http://{settings.mlflow_host}:{settings.mlflow_port}/health",
            "mlflow",
        ),
        Service(
            "dagster-webserver",
            [_bin("dagster-webserver"), "-h", settings.dagster_host, "-p", str(settings.dagster_port), "-w", workspace],
            f"http://{settings.dagster_host}:{settings.dagster_port}/server_info",
            "dagster-webserver",
        ),
        Service("dagster-daemon", [_bin("dagster-daemon"), "run", "-w", workspace], None, "dagster-daemon"),
    ]


def service_env(settings: Settings) -> dict[str, str]:
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


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.stack_dir / "run" / f"{name}.pid"


def _logfile(settings: Settings, name: str) -> Path:
    return settings.stack_dir / "logs" / f"{name}.log"


def _our_pid(settings: Settings, service: Service) -> int | None:
    """The PID in the pidfile, if that process is alive and still the one we started."""
    pidfile = _pidfile(settings, service.name)
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return None
    if service.marker not in cmdline:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    # A zombie (exited, not yet reaped) is not running.
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return None
    except (FileNotFoundError, IndexError):
        return None
    return pid


def _healthy(url: str | None, timeout: float = 2.0) -> bool:
    if url is None:
        return True
    try:
        with urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (URLError, OSError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _recorded_services(settings: Settings) -> list[Service]:
    """The services the last ``up`` started (either profile), else the embedded ones."""
    import json

    record = settings.stack_dir / "services.json"
    if record.is_file():
        return [Service(d["name"], d["command"], d["health_url"], d["marker"]) for d in json.loads(record.read_text())]
    return services(settings)


def _record_services(settings: Settings, svcs: list[Service]) -> None:
    import json
    from dataclasses import asdict

    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "services.json").write_text(json.dumps([asdict(s) for s in svcs], indent=1))


def status(settings: Settings) -> list[ServiceStatus]:
    out = []
    for svc in _recorded_services(settings):
        pid = _our_pid(settings, svc)
        out.append(ServiceStatus(svc.name, pid, pid is not None, pid is not None and _healthy(svc.health_url),
                                 svc.health_url.rsplit("/", 1)[0] if svc.health_url else None))
    return out


def _ensure_dagster_home(settings: Settings) -> None:
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    cfg = settings.dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)


def up(settings: Settings, timeout: float = 120.0, only: list[str] | None = None, profile: str = "embedded",
       env_file: Path | None = None) -> list[ServiceStatus]:
    """Start every service not already running, then wait until all are healthy.

    ``profile`` "embedded" (SQLite, local artifacts, no auth) or "production" (PostgreSQL, S3, MLflow auth; needs
    ``env_file``, see :mod:`alpr_pipelines.lib.stack_production`).

    Raises:
        StackError: a port is taken by another program, a service exits or stays unhealthy past ``timeout`` (the
            message points at its log), or the production env file is missing or incomplete.
    """
    hooks: dict = {}
    if profile == "production":
        from alpr_pipelines.lib import stack_production as prod

        if env_file is None:
            raise StackError("the production profile needs --env-file (copy config/production.env.example)")
        cfg = prod.production_config(env_file)
        prod.prepare(settings, cfg)
        env = prod.stack_environment(settings, cfg)
        all_services = prod.services(settings, cfg)
        hooks = {"s3": lambda: prod.ensure_bucket(cfg), "mlflow": lambda: prod.ensure_users(settings, cfg)}
    elif profile == "embedded":
        _ensure_dagster_home(settings)
        (settings.stack_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        env = service_env(settings)
        all_services = services(settings)
    else:
        raise StackError(f"unknown profile {profile!r}; use embedded or production")
    _record_services(settings, all_services)
    chosen = [s for s in all_services if only is None or s.name in only]
    deadline = time.monotonic() + timeout
    # One at a time, each healthy before the next: the Dagster webserver and daemon must not both create the
    # instance's SQLite schema at once (alembic then records two heads and the instance will not open).
    for svc in chosen:
        proc = _start(settings, svc, env) if _our_pid(settings, svc) is None else None
        _wait_healthy(settings, svc, proc, deadline, timeout)
        if svc.name in hooks:
            hooks[svc.name]()
    return [s for s in status(settings) if only is None or s.name in only]


def _start(settings: Settings, svc: Service, env: dict[str, str]) -> subprocess.Popen:
    if svc.health_url:
        host, port = svc.health_url.split("//")[1].split("/")[0].rsplit(":", 1)
        if _port_in_use(host, int(port)):
            raise StackError(
                f"cannot start {svc.name}: {host}:{port} is already in use by another program. Stop it, or pick "
                "another port (ALPR_MLFLOW_PORT / ALPR_DAGSTER_PORT / ALPR_S3_PORT / ALPR_REGISTRY_CACHE_PORT)."
            )
    log = _logfile(settings, svc.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pidfile(settings, svc.name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(svc.command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd(),
                                start_new_session=True)
    _pidfile(settings, svc.name).write_text(str(proc.pid))
    return proc


def _wait_healthy(settings: Settings, svc: Service, proc: subprocess.Popen | None, deadline: float,
                  timeout: float) -> None:
    while True:
        # A process we just started is watched through its handle: until it has exec'd, /proc still shows our own
        # command line, and the pidfile check would take it for someone else's process.
        alive = proc.poll() is None if proc is not None else _our_pid(settings, svc) is not None
        if not alive:
            raise StackError(f"{svc.name} exited during start-up; see {_logfile(settings, svc.name)}")
        if _healthy(svc.health_url):
            return
        if time.monotonic() > deadline:
            raise StackError(f"{svc.name} not healthy after {timeout:.0f}s; see {_logfile(settings, svc.name)}")
        time.sleep(0.5)


def down(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Stop our services by PID (SIGTERM to the process group, SIGKILL after ``timeout``); return those stopped."""
    stopped = []
    for svc in reversed(_recorded_services(settings)):
        pid = _our_pid(settings, svc)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while _our_pid(settings, svc) is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if _our_pid(settings, svc) is not None:
                os.killpg(pid, signal.SIGKILL)
            stopped.append(svc.name)
        _pidfile(settings, svc.name).unlink(missing_ok=True)
    return stopped
