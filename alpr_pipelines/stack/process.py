"""Local services as supervised processes: start, wait for health, stop, each by the PID it was started with.

A service is a command line, a health URL and a marker word of its command line. ``start_all`` starts those not
already running, one at a time and each healthy before the next; logs go to ``$ALPR_HOME/stack/logs/<name>.log``
and PIDs to ``$ALPR_HOME/stack/run/<name>.pid``. ``stop_all`` signals only a process whose command line still
carries the marker (PIDs get reused). Which services run is a profile's business (``stack.embedded``,
``stack.production``); this module knows none of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from alpr_pipelines.settings import Settings


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


def bin_path(name: str) -> str:
    """An executable from this environment's bin folder (the venv), falling back to PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed in this environment; run `pip install -e .` (or `make demo`)")
    return found


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.stack_dir / "run" / f"{name}.pid"


def logfile(settings: Settings, name: str) -> Path:
    """Where the service ``name`` logs."""
    return settings.stack_dir / "logs" / f"{name}.log"


def _start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22): with the PID, it names one
    process, where a PID alone may since belong to another."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _our_pid(settings: Settings, service: Service) -> int | None:
    """The PID in the pidfile, if that process is alive and still the one we started (same start time and command
    line)."""
    pidfile = _pidfile(settings, service.name)
    try:
        fields = pidfile.read_text().split()
        pid, started = int(fields[0]), (fields[1] if len(fields) > 1 else None)
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if started is not None and _start_time(pid) != started:
        return None  # the PID was reused by another process
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


def recorded_services(settings: Settings) -> list[Service]:
    """The services the last :func:`start_all` was given (any profile's), or none if it never ran here."""
    record = settings.stack_dir / "services.json"
    if record.is_file():
        return [Service(d["name"], d["command"], d["health_url"], d["marker"]) for d in json.loads(record.read_text())]
    return []


def _record_services(settings: Settings, svcs: list[Service]) -> None:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "services.json").write_text(json.dumps([asdict(s) for s in svcs], indent=1))


def status(settings: Settings, svcs: list[Service]) -> list[ServiceStatus]:
    out = []
    for svc in svcs:
        pid = _our_pid(settings, svc)
        out.append(ServiceStatus(svc.name, pid, pid is not None, pid is not None and _healthy(svc.health_url),
                                 svc.health_url.rsplit("/", 1)[0] if svc.health_url else None))
    return out


def start_all(settings: Settings, svcs: list[Service], env: dict[str, str], timeout: float = 120.0,
              only: list[str] | None = None,
              after_healthy: dict[str, Callable[[], None]] | None = None) -> list[ServiceStatus]:
    """Start each of ``svcs`` (those in ``only``, if given) not already running, in order, each healthy before the
    next; ``after_healthy`` runs a step once the named service is healthy (creating a bucket or users, say).

    Raises:
        StackError: a port is taken by another program, or a service exits or stays unhealthy past ``timeout``
            (the message points at its log).
    """
    _record_services(settings, svcs)
    chosen = [s for s in svcs if only is None or s.name in only]
    deadline = time.monotonic() + timeout
    # One at a time, each healthy before the next: the Dagster webserver and daemon must not both create the
    # instance's SQLite schema at once (alembic then records two heads and the instance will not open).
    for svc in chosen:
        proc = _start(settings, svc, env) if _our_pid(settings, svc) is None else None
        _wait_healthy(settings, svc, proc, deadline, timeout)
        if after_healthy and svc.name in after_healthy:
            after_healthy[svc.name]()
    return status(settings, chosen)


def _start(settings: Settings, svc: Service, env: dict[str, str]) -> subprocess.Popen:
    if svc.health_url:
        host, port = svc.health_url.split("//")[1].split("/")[0].rsplit(":", 1)
        if _port_in_use(host, int(port)):
            raise StackError(
                f"cannot start {svc.name}: {host}:{port} is already in use by another program. Stop it, or pick "
                "another port (ALPR_MLFLOW_PORT / ALPR_DAGSTER_PORT / ALPR_S3_PORT / ALPR_REGISTRY_CACHE_PORT)."
            )
    log = logfile(settings, svc.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _pidfile(settings, svc.name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(svc.command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd(),
                                start_new_session=True)
    _pidfile(settings, svc.name).write_text(f"{proc.pid} {_start_time(proc.pid) or ''}".strip())
    return proc


def _wait_healthy(settings: Settings, svc: Service, proc: subprocess.Popen | None, deadline: float,
                  timeout: float) -> None:
    while True:
        # A process we just started is watched through its handle: until it has exec'd, /proc still shows our own
        # command line, and the pidfile check would take it for someone else's process.
        alive = proc.poll() is None if proc is not None else _our_pid(settings, svc) is not None
        if not alive:
            raise StackError(f"{svc.name} exited during start-up; see {logfile(settings, svc.name)}")
        if _healthy(svc.health_url):
            return
        if time.monotonic() > deadline:
            raise StackError(f"{svc.name} not healthy after {timeout:.0f}s; see {logfile(settings, svc.name)}")
        time.sleep(0.5)


def stop_all(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Stop the recorded services by PID (SIGTERM to the process group, SIGKILL after ``timeout``); return those
    stopped."""
    stopped = []
    for svc in reversed(recorded_services(settings)):
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
