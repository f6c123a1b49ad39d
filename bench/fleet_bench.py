"""Figure 6, the registry under a fleet: simulated edge devices polling a real MLflow server on PostgreSQL, through
the registry cache (ours) and directly (the baseline), side by side in one run.

The server is the production profile's ``mlflow server`` command (``alpr_pipelines.stack.production``): the
basic-auth app with its ``basic_auth.ini``, the PostgreSQL backend store, artifacts served by the server (to a
temporary folder here instead of S3: an alias lookup never touches artifacts). Its stores live in throwaway databases
(``alpr_fleet_<suffix>``, ``alpr_fleet_auth_<suffix>``), dropped at the end even on failure. In front of it runs the
production profile's registry cache (nginx with ``alpr_pipelines/stack/nginx/registry-cache.conf.template``,
:mod:`alpr_pipelines.stack.registry_cache`). The registry is seeded as production leaves it: both detectors with three
versions each, the champion in Production holding ``production``, the one before it ``previous`` (Archived), the
newest in Staging holding ``candidate``.

Each simulated device does what an edge box does: one :class:`~alpr_pipelines.edge.detector.RegistryPoller` per model,
each calling :meth:`~alpr_pipelines.edge.loader.MLflowModelLoader.current_version` every interval, i.e. the
``production`` alias lookup as the read-only principal ``alpr-edge``, and ``get-latest-versions`` only when the alias
is missing. Each poll opens a new connection, as a box's does: its interval (10 s) is longer than the server's
keep-alive (uvicorn's 5 s), so the pooled connection is gone by the next poll.

The load is open-loop: every poll has a scheduled time (a random phase per device and model, then every interval) and
its latency counts from that time, so a server that falls behind shows up as latency, not as fewer requests (no
coordinated omission). Errors: any status but 200, a wrong version, a timeout (5 s), a connection error.

Two ladders, the baseline first: the fleet polling MLflow directly, then the same fleet polling through the cache.
Each grows the fleet step by step (a warm-up, then a measured window) until a size misses the target (p99 over
250 ms or any error); a missed size is run once more, since this machine is shared and a neighbour's burst can sink
one window, and it breaks only when both runs miss. The gap between the last good and the first bad size is then
bisected. Before each step the bench waits for the server to work off the previous step and for the machine to be
quiet (both bounded), and the generator runs at a higher priority than the server (real devices do not share its
CPU). Per step, psutil reads the CPU of the MLflow server's processes, of PostgreSQL's backends for our databases, of
nginx, of the generator and of everything else, so the report says what limits the figure; the cached steps also
count how the cache answered (``X-Alpr-Registry-Cache``: HIT, or MISS/EXPIRED when MLflow was asked). First, a fresh
server takes three bursts of 40 concurrent lookups (what a restart under a fleet costs), and the full run measures
what one direct lookup costs on an idle server, with and without the basic-auth app.

    .venv/bin/python bench/fleet_bench.py            # full: both ladders at a 10 s interval, ~20 minutes
    .venv/bin/python bench/fleet_bench.py --quick    # CI smoke: 20 devices at 1 s for ~5 s each way; asserts nothing
                                                     # about time

Environment:
    ALPR_POSTGRES_HOST / ALPR_POSTGRES_PORT: the PostgreSQL server (default 127.0.0.1:5432, superuser ``postgres``
        without a password, as on this team's machines).

Needs nginx (``apt-get install nginx-light``) for the registry cache.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import configparser
import io
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from alpr_pipelines import stack
from alpr_pipelines.edge.contract import PLATE_MODEL, STAGE_ALIASES, VEHICLE_MODEL
from alpr_pipelines.settings import load_settings
from alpr_pipelines.stack import production as prod
from alpr_pipelines.stack import registry_cache
from alpr_pipelines.stack.process import Service, logfile, start_all
from alpr_pipelines.stack.registry_cache import RunningCache

ROOT = Path(__file__).resolve().parents[1]
MODELS = (VEHICLE_MODEL, PLATE_MODEL)
STAGE = "Production"  # what an edge box follows by default (MLFLOW_MODEL_STAGE)
ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"
LATEST_PATH = "/api/2.0/mlflow/registered-models/get-latest-versions"
TARGET_DEVICES, TARGET_INTERVAL_S, TARGET_P99_MS = 1000, 10.0, 250.0
# The baseline (devices polling MLflow directly) breaks between 100 and 250 on this machine; the registry cache
# is taken from there to where the load generator itself gives out.
DIRECT_FLEETS = (25, 50, 100, 250, 500, 1000)
CACHE_FLEETS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
MAX_IN_FLIGHT = 15000  # below the open-file limit; a poll beyond it is counted as an error, never silently dropped
SERVER_START_TIMEOUT_S = 180.0
SERVER_IDLE_PCT = 15.0  # % of a core: an MLflow server with no requests uses ~2%
COLD_BURST = 40  # concurrent lookups that warm a fresh server (its workers' credential caches and connection pools)


# ----------------------------------------------------------------------------------------------------------- server


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            prod.ensure_users(settings, cfg)
        yield FleetServer(uri=settings.mlflow_tracking_uri, pid=pid, command=svc.command,
                          auth_ini=ini if auth else None,
                          edge_auth=(prod.EDGE_USER, secrets["ALPR_EDGE_PASSWORD"]) if auth else None,
                          pipeline_auth=(prod.PIPELINE_USER, secrets["ALPR_PIPELINE_PASSWORD"]) if auth else None,
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
        experiment = client.create_experiment("alpr-training")
        for name in MODELS:
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


# ----------------------------------------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    processes: dict[int, tuple[str, float, float]]  # pid -> (group, cpu seconds, create time)
    roles: dict[int, str]  # pid of a server process -> its role
    system_busy: float  # CPU seconds of the whole machine, all cores


JOB_ROLES = ("job consumers (huey)", "job runner")


def server_role(cmdline: str) -> str:
    """What a process of the MLflow server's tree does, from its command line."""
    if "spawn_main" in cmdline:
        return "uvicorn workers"
    if "huey" in cmdline:
        return "job consumers (huey)"
    if "_job_runner" in cmdline:
        return "job runner"
    if "gunicorn" in cmdline:
        return "gunicorn master and workers"
    if "uvicorn" in cmdline:
        return "uvicorn supervisor"
    return "mlflow server command"


class CpuMonitor:
    """CPU seconds per group of processes between two snapshots: the MLflow server's request-serving processes and
    its background job executor, PostgreSQL (its backends serving our databases, and the rest of it), the registry
    cache's nginx processes (when ``cache_pid`` is given), the load generator (this process), and the whole machine."""

    def __init__(self, server_pid: int, databases: tuple[str, ...], cache_pid: int | None = None):
        self.server_pid, self.databases, self.cache_pid = server_pid, databases, cache_pid
        self.me = psutil.Process()

    @staticmethod
    def _tree(pid: int | None) -> set[int]:
        if pid is None:
            return set()
        try:
            root = psutil.Process(pid)
            return {root.pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.Error:
            return set()

    def _group(self, proc: psutil.Process, server_tree: set[int], cache_tree: set[int]) -> str | None:
        if proc.pid == self.me.pid:
            return "generator"
        if proc.pid in server_tree:
            return "server"
        if proc.pid in cache_tree:
            return "cache"
        try:
            if proc.username() != "postgres" and not proc.name().startswith("postgres"):
                return None
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            return None
        # A backend's title: "postgres: 15/main: mlflow alpr_fleet_1a2b3c4d 127.0.0.1(40170) idle"
        return "postgres_ours" if any(f" {db} " in cmdline for db in self.databases) else "postgres_other"

    def snapshot(self) -> CpuSnapshot:
        server_tree, cache_tree = self._tree(self.server_pid), self._tree(self.cache_pid)
        processes: dict[int, tuple[str, float, float]] = {}
        roles: dict[int, str] = {}
        for proc in psutil.process_iter():
            group = self._group(proc, server_tree, cache_tree)
            if group is None:
                continue
            try:
                t = proc.cpu_times()
                if group == "server":
                    roles[proc.pid] = server_role(" ".join(proc.cmdline()))
                    if roles[proc.pid] in JOB_ROLES:  # MLflow's background job executor, not request serving
                        group = "server_jobs"
                processes[proc.pid] = (group, t.user + t.system, proc.create_time())
            except psutil.Error:
                continue
        sys_t = psutil.cpu_times()
        busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
        return CpuSnapshot(time.monotonic(), processes, roles, busy)

    @staticmethod
    def usage(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, Any]:
        """Percent of one core per group over the window (the machine has ``machine_capacity_pct``)."""
        wall = max(end.at - start.at, 1e-9)
        groups = {"server": 0.0, "server_jobs": 0.0, "postgres_ours": 0.0, "postgres_other": 0.0, "cache": 0.0,
                  "generator": 0.0}
        server_roles: dict[str, float] = {}
        for pid, (group, cpu, created) in end.processes.items():
            before = start.processes.get(pid)
            used = cpu - before[1] if before is not None and before[2] == created else cpu
            groups[group] += used
            if group.startswith("server"):
                role = end.roles.get(pid, "other")
                server_roles[role] = server_roles.get(role, 0.0) + used
        ours = sum(groups.values()) - groups["postgres_other"]
        system = end.system_busy - start.system_busy
        return {**{f"{k}_pct": round(100 * v / wall, 1) for k, v in groups.items()},
                "others_pct": round(100 * max(system - ours, 0.0) / wall, 1),
                "machine_busy_pct": round(100 * system / wall, 1),
                "machine_capacity_pct": 100 * (psutil.cpu_count() or 1),
                "server_roles_pct": {k: round(100 * v / wall, 1) for k, v in sorted(server_roles.items())},
                "window_s": round(wall, 2), "cpu_s": {k: round(v, 3) for k, v in groups.items()}}


# ----------------------------------------------------------------------------------------------------------- load


@dataclass
class StepResult:
    devices: int
    attempt: int  # 2 when the size is run again after a miss
    interval_s: float
    measured_s: float
    offered_lookups_per_s: float
    achieved_lookups_per_s: float  # answered correctly
    lookups: int
    errors: int  # over the whole step, warm-up included
    error_kinds: dict[str, int]
    fallbacks: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    dispatch_lag_p99_ms: float  # how late the generator sent polls: a busy generator shows here, not as latency only
    max_in_flight: int
    cpu: dict[str, Any] = field(default_factory=dict)
    cpu_ms_per_lookup: float | None = None  # request-serving server processes, their PostgreSQL backends, the cache
    cache_status: dict[str, int] = field(default_factory=dict)  # X-Alpr-Registry-Cache of the answers (cached ladder)
    met: bool = False
    before_step: dict[str, float] = field(default_factory=dict)  # the wait for an idle server and a quiet machine


class Fleet:
    """The pollers of simulated edge boxes against one server, on one asyncio event loop."""

    def __init__(self, server: FleetServer, expected: dict[str, str], timeout: float = 5.0, keep_alive: bool = False,
                 via: RunningCache | None = None):
        base = (via.url if via is not None else server.uri).rstrip("/")
        self.expected, self.timeout, self.keep_alive = expected, timeout, keep_alive
        self.cache_status: Counter[str] = Counter()  # how the registry cache answered (HIT, UPDATING, MISS, ...)
        self.headers: dict[str, str] = {}
        if server.edge_auth is not None:
            token = base64.b64encode(":".join(server.edge_auth).encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        alias = STAGE_ALIASES[STAGE]
        self.urls = {name: (f"{base}{ALIAS_PATH}?name={name}&alias={alias}",
                            f"{base}{LATEST_PATH}?name={name}&stages={STAGE}") for name in MODELS}

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, force_close=not self.keep_alive, ttl_dns_cache=None)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                     headers=self.headers)

    async def current_version(self, session: aiohttp.ClientSession, name: str) -> tuple[str | None, bool]:
        """The requests of one ``MLflowModelLoader.current_version``; returns (error kind or None, fallback used)."""
        alias_url, latest_url = self.urls[name]
        async with session.get(alias_url) as resp:
            status = resp.status
            self.cache_status[resp.headers.get(registry_cache.HEADER, "-")] += 1
            body = await resp.json(content_type=None) if status in (200, 400, 404) else None
        mv = (body or {}).get("model_version") if status == 200 else None
        fallback = False
        if mv is None:
            missing = status == 404 or (status == 400 and (body or {}).get("error_code") in (
                "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"))
            if not missing:
                return f"HTTP {status}", False
            fallback = True
            async with session.get(latest_url) as resp:
                self.cache_status[resp.headers.get(registry_cache.HEADER, "-")] += 1
                if resp.status != 200:
                    return f"HTTP {resp.status} (get-latest-versions)", True
                latest = (await resp.json(content_type=None)).get("model_versions", [])
            mv = latest[0] if latest else None
        if mv is None or str(mv.get("version")) != self.expected[name]:
            return "wrong version", fallback
        return None, fallback

    async def guarded(self, session: aiohttp.ClientSession, name: str) -> tuple[str | None, bool]:
        try:
            return await self.current_version(session, name)
        except TimeoutError:
            return "timeout", False
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"connection: {type(exc).__name__}", False

    async def sequential(self, lookups: int, monitor: CpuMonitor) -> dict[str, Any]:
        """One poll at a time on an otherwise idle server: unloaded latency and CPU per lookup."""
        loop = asyncio.get_running_loop()
        latencies, errors = [], 0
        async with self.session() as session:
            for name in MODELS * 5:  # warm every worker's pools and credential cache
                await self.guarded(session, name)
            before = monitor.snapshot()
            for i in range(lookups):
                started = loop.time()
                kind, _ = await self.guarded(session, MODELS[i % len(MODELS)])
                latencies.append(loop.time() - started)
                errors += kind is not None
            cpu = CpuMonitor.usage(before, monitor.snapshot())
        lat_ms = np.array(latencies) * 1000
        return {"lookups": lookups, "errors": errors, "p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
                "p99_ms": round(float(np.percentile(lat_ms, 99)), 1),
                "server_cpu_ms_per_lookup": round(1000 * cpu["cpu_s"]["server"] / lookups, 2),
                "postgres_cpu_ms_per_lookup": round(1000 * cpu["cpu_s"]["postgres_ours"] / lookups, 2),
                "server_roles_pct": cpu["server_roles_pct"]}

    async def burst(self, lookups: int, monitor: CpuMonitor) -> dict[str, Any]:
        """``lookups`` polls at once; the first burst on a fresh server is what a restart under a fleet looks like."""
        loop = asyncio.get_running_loop()
        before, started = monitor.snapshot(), loop.time()
        async with self.session() as session:
            results = await asyncio.gather(*(self.guarded(session, MODELS[i % len(MODELS)]) for i in range(lookups)))
        wall = loop.time() - started
        cpu = CpuMonitor.usage(before, monitor.snapshot())
        return {"lookups": lookups, "wall_s": round(wall, 2), "errors": sum(kind is not None for kind, _ in results),
                "server_cpu_s": cpu["cpu_s"]["server"]}

    async def run_step(self, devices: int, interval: float, warmup: float, measure: float,
                       monitor: CpuMonitor | None = None, attempt: int = 1) -> StepResult:
        """Open-loop polls of ``devices`` devices for ``warmup + measure`` seconds; stats over the measured window.

        Errors count over the whole step, warm-up included: a failed poll fails a device whenever it happens.
        """
        loop = asyncio.get_running_loop()
        rng = random.Random(devices * 10 + attempt)
        start = loop.time() + 0.2
        measure_from, end = start + warmup, start + warmup + measure
        phases = [(rng.uniform(0, interval), name) for _ in range(devices) for name in MODELS]
        polls_each = int((warmup + measure) / interval) + 1
        schedule = sorted((start + phase + k * interval, name) for phase, name in phases for k in range(polls_each))
        schedule = [(t, name) for t, name in schedule if t < end]
        latencies: list[float] = []
        lags: list[float] = []
        errors: dict[str, int] = {}
        self.cache_status.clear()
        ok = fallbacks = in_flight = max_in_flight = 0
        snapshots: dict[str, CpuSnapshot] = {}
        if monitor is not None:
            loop.call_at(measure_from, lambda: snapshots.__setitem__("start", monitor.snapshot()))
            loop.call_at(end, lambda: snapshots.__setitem__("end", monitor.snapshot()))

        async with self.session() as session:

            async def poll(scheduled: float, name: str) -> None:
                nonlocal ok, fallbacks, in_flight
                lag = loop.time() - scheduled
                try:
                    kind, fell_back = await self.guarded(session, name)
                finally:
                    in_flight -= 1
                fallbacks += fell_back
                if kind is not None:
                    errors[kind] = errors.get(kind, 0) + 1
                if scheduled >= measure_from:
                    latencies.append(loop.time() - scheduled)
                    lags.append(lag)
                    ok += kind is None

            tasks: set[asyncio.Task] = set()
            i = 0
            while i < len(schedule):
                now = loop.time()
                if schedule[i][0] > now:
                    await asyncio.sleep(schedule[i][0] - now)
                    now = loop.time()
                while i < len(schedule) and schedule[i][0] <= now:  # everything due: one wake-up sends a batch
                    scheduled, name = schedule[i]
                    i += 1
                    if in_flight >= MAX_IN_FLIGHT:
                        kind = "generator: too many polls in flight"
                        errors[kind] = errors.get(kind, 0) + 1
                        continue
                    in_flight += 1
                    max_in_flight = max(max_in_flight, in_flight)
                    task = loop.create_task(poll(scheduled, name))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if loop.time() < end:
                await asyncio.sleep(end - loop.time())
            if tasks:
                await asyncio.wait(tasks)

        lat_ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
        offered = sum(1 for t, _ in schedule if t >= measure_from)
        error_count = sum(errors.values())
        p99 = float(np.percentile(lat_ms, 99))
        result = StepResult(
            devices=devices, attempt=attempt, interval_s=interval, measured_s=measure,
            offered_lookups_per_s=round(offered / measure, 1), achieved_lookups_per_s=round(ok / measure, 1),
            lookups=len(latencies), errors=error_count, error_kinds=errors, fallbacks=fallbacks,
            p50_ms=round(float(np.percentile(lat_ms, 50)), 1), p95_ms=round(float(np.percentile(lat_ms, 95)), 1),
            p99_ms=round(p99, 1), max_ms=round(float(lat_ms.max()), 1),
            dispatch_lag_p99_ms=round(float(np.percentile(np.array(lags or [0.0]) * 1000, 99)), 1),
            max_in_flight=max_in_flight, met=p99 <= TARGET_P99_MS and error_count == 0 and bool(latencies),
            cache_status={k: v for k, v in self.cache_status.items() if k != "-"})
        if monitor is not None and "start" in snapshots and "end" in snapshots:
            result.cpu = CpuMonitor.usage(snapshots["start"], snapshots["end"])
            used = result.cpu["cpu_s"]
            if latencies:
                registry_side = used["server"] + used["postgres_ours"] + used["cache"]
                result.cpu_ms_per_lookup = round(1000 * registry_side / len(latencies), 2)
        return result


async def settle(monitor: CpuMonitor, max_others_pct: float, others_timeout: float,
                 server_timeout: float = 300.0) -> dict[str, float]:
    """Before a step: wait until the server has worked off the previous step's backlog, then for a quiet machine.

    An overloaded MLflow server goes on serving requests whose clients gave up long ago, so a step would otherwise
    start on a server still busy with the one before. The server counts as idle when its processes use under
    ``SERVER_IDLE_PCT`` of a core over 2 s (up to ``server_timeout``); the machine as quiet when other
    processes use under ``max_others_pct`` (up to ``others_timeout`` more: this machine is shared, and a
    neighbour's burst would otherwise decide where the fleet breaks).
    """
    started = time.monotonic()
    server_idle_after: float | None = None
    while True:
        before = monitor.snapshot()
        await asyncio.sleep(2.0)
        usage = CpuMonitor.usage(before, monitor.snapshot())
        waited = time.monotonic() - started
        if server_idle_after is None:
            busy = usage["server_pct"] + usage["server_jobs_pct"]  # a fresh server's job consumers start up slowly
            if busy > SERVER_IDLE_PCT and waited < server_timeout:
                continue
            server_idle_after = waited
        if usage["others_pct"] <= max_others_pct or waited - server_idle_after >= others_timeout:
            return {"server_busy_s": round(server_idle_after, 1), "waited_s": round(waited, 1),
                    "server_pct": usage["server_pct"], "others_pct": usage["others_pct"]}


async def ladder(fleet: Fleet, fleets: list[int], interval: float, warmup: float, measure: float, refine: int,
                 retries: int, deadline: float, monitor: CpuMonitor, quiet_pct: float,
                 quiet_wait: float) -> list[StepResult]:
    """Grow the fleet until a size misses the target (``retries`` more runs, all missing), then bisect the gap."""
    steps: list[StepResult] = []

    async def size_met(devices: int) -> bool:
        for attempt in range(1, retries + 2):
            quiet = await settle(monitor, quiet_pct, quiet_wait) if quiet_wait > 0 else {}
            result = await fleet.run_step(devices, interval, warmup, measure, monitor, attempt)
            result.before_step = quiet
            log(step_line(result))
            steps.append(result)
            if result.met:
                return True
        return False

    last_good, first_bad = 0, None
    for devices in fleets:
        if time.monotonic() > deadline:
            log("time bound reached; no larger fleet is tried")
            break
        if await size_met(devices):
            last_good = devices
        else:
            first_bad = devices
            break
    for _ in range(refine):
        if first_bad is None or time.monotonic() > deadline:
            break
        mid = round((last_good + first_bad) / 2 / 25) * 25  # sizes in steps of 25 devices
        if mid <= last_good or mid >= first_bad:
            break
        if await size_met(mid):
            last_good = mid
        else:
            first_bad = mid
    return steps


@contextmanager
def generator_priority(niceness: int = -10) -> Iterator[int]:
    """Run the load generator ahead of other processes (needs root; else unchanged), restored afterwards.

    Real devices do not share the server's CPU: on this 2-core machine the generator must not queue behind the
    server's threads, or its own delay would be reported as the registry's latency. Set after the server has
    started, so that the server does not inherit it.
    """
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        pass
    try:
        yield os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)  # raising the nice value back needs no privilege


def _loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # installed with uvicorn[standard]; a cheaper event loop keeps the generator out of the way

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# ----------------------------------------------------------------------------------------------------------- report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def step_line(r: StepResult) -> str:
    cpu = r.cpu
    return (f"{r.devices:>6} devices{'' if r.attempt == 1 else ' (again)'}  {r.offered_lookups_per_s:>6.1f}/s offered"
            f"  {r.achieved_lookups_per_s:>6.1f}/s ok  p50 {r.p50_ms:>7.1f}  p95 {r.p95_ms:>7.1f}  p99 {r.p99_ms:>7.1f}"
            f"  max {r.max_ms:>7.1f} ms  errors {r.errors}  lag99 {r.dispatch_lag_p99_ms:.0f} ms"
            + (f"  cpu% server {cpu['server_pct']:.0f} pg {cpu['postgres_ours_pct']:.0f}"
               + (f" cache {cpu['cache_pct']:.0f}" if r.cache_status else "") + f" gen {cpu['generator_pct']:.0f}"
               + (f" jobs {cpu['server_jobs_pct']:.0f}" if cpu["server_jobs_pct"] >= 1 else "")
               + f" others {cpu['others_pct']:.0f} busy {cpu['machine_busy_pct']:.0f}/{cpu['machine_capacity_pct']}"
               if cpu else "")
            + f"  {'met' if r.met else 'MISSED'}")


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


def cpu_ceiling_devices(cpu_ms_per_lookup: float | None, interval: float) -> int | None:
    """The fleet whose lookups would keep every core of this machine busy with nothing else running."""
    if not cpu_ms_per_lookup:
        return None
    lookups_per_s = (psutil.cpu_count() or 1) * 1000 / cpu_ms_per_lookup
    return int(lookups_per_s * interval / len(MODELS))


def verdicts(steps: list[StepResult]) -> dict[int, StepResult]:
    """Per fleet size, the run that decides it: the first that met the target, else the last that missed."""
    out: dict[int, StepResult] = {}
    for s in steps:
        if s.devices not in out or not out[s.devices].met:
            out[s.devices] = s
    return out


def limits_text(decisive: StepResult | None, broke: bool, server: FleetServer, password_check: dict[str, Any],
                costs: dict[str, Any], cold: list[dict[str, Any]]) -> str:
    """What limits the figure: the CPU cost of a lookup, and the CPU split at the breaking (or the last) step."""
    if decisive is None or not decisive.cpu:
        return "not measured"
    cores = (psutil.cpu_count() or 1)
    idle_auth, idle_plain = costs.get("basic_auth"), costs.get("no_auth")
    per_lookup = (idle_auth["server_cpu_ms_per_lookup"] + idle_auth["postgres_cpu_ms_per_lookup"] if idle_auth
                  else decisive.cpu_ms_per_lookup)
    if idle_auth:
        cost = (f"A lookup costs {idle_auth['server_cpu_ms_per_lookup']} ms of CPU in MLflow's workers and "
                f"{idle_auth['postgres_cpu_ms_per_lookup']} ms in PostgreSQL on an idle server")
        if idle_plain:
            cost += f" ({idle_plain['server_cpu_ms_per_lookup']} ms in the workers without the basic-auth app)"
    else:
        cost = f"A lookup costs {decisive.cpu_ms_per_lookup} ms of server and database CPU under load"
    cost += (f", so {cores} cores with nothing else running carry at most ~"
             f"{cpu_ceiling_devices(per_lookup, decisive.interval_s)} devices")
    ttl = server.auth_cache_ttl
    if ttl == 0:
        cost += (f"; without its credential cache, basic-auth re-verifies the edge password on every request "
                 f"({password_check['method']}, {password_check['verify_cpu_ms']:.0f} ms of CPU each)")
    cpu = decisive.cpu
    at = (f"At {decisive.devices} devices{'' if broke else ' (the largest tried)'} the server's workers used "
          f"{cpu['server_pct']:.0f}% of a core, PostgreSQL {cpu['postgres_ours_pct']:.0f}%, the load generator "
          f"{cpu['generator_pct']:.0f}% (p99 dispatch lag {decisive.dispatch_lag_p99_ms:.0f} ms), other processes on "
          f"this shared machine {cpu['others_pct']:.0f}%")
    answered = decisive.achieved_lookups_per_s * decisive.measured_s
    if broke and idle_auth and answered:
        per_answer = 1000 * cpu["cpu_s"]["server"] / answered
        times_idle = per_answer / idle_auth["server_cpu_ms_per_lookup"]
        at += (f"; it answered {decisive.achieved_lookups_per_s:.0f} of {decisive.offered_lookups_per_s:.0f} "
               f"lookups/s at {per_answer:.0f} ms of worker CPU each, {times_idle:.1f}x the idle cost")
        if ttl and len(cold) >= 2 and times_idle >= 1.5:
            warm = min(b["server_cpu_s"] for b in cold)
            at += (f": requests queued in a worker's threads check the password together whenever its {ttl} s "
                   f"credential cache is empty ({COLD_BURST} concurrent lookups cost {cold[0]['server_cpu_s']:.1f} s "
                   f"of CPU on a fresh server, {warm:.1f} s warm), so past saturation it collapses into timeouts "
                   "instead of slowing down")
    return f"{cost}. {at}."


@dataclass(frozen=True)
class LadderVerdict:
    largest: StepResult | None  # the largest size that met the target
    breaking: StepResult | None  # the smallest size above it that missed every run
    decisive: StepResult | None  # the breaking step, else the largest size tried
    at_target: StepResult | None  # the run that decided TARGET_DEVICES, when tried


def verdict(steps: list[StepResult]) -> LadderVerdict:
    by_size = verdicts(steps)
    good = [s for s in by_size.values() if s.met]
    largest = max(good, key=lambda s: s.devices) if good else None
    breaking = min((s for s in by_size.values() if not s.met and (largest is None or s.devices > largest.devices)),
                   key=lambda s: s.devices, default=None)
    decisive = breaking or (max(by_size.values(), key=lambda s: s.devices) if by_size else None)
    return LadderVerdict(largest, breaking, decisive, by_size.get(TARGET_DEVICES))


def mlflow_share(step: StepResult) -> float | None:
    """The share of a cached step's lookups that MLflow answered (a miss or an expired entry refreshed)."""
    total = sum(step.cache_status.values())
    return (step.cache_status.get("MISS", 0) + step.cache_status.get("EXPIRED", 0)) / total if total else None


def ladder_text(v: LadderVerdict) -> str:
    largest, breaking = v.largest, v.breaking
    parts = [f"{largest.devices} devices met the target (p99 {largest.p99_ms:.0f} ms, 0 errors, "
             f"{largest.achieved_lookups_per_s:.0f} lookups/s)" if largest else "no fleet size met the target"]
    if largest is not None and (share := mlflow_share(largest)) is not None:
        parts[0] += f", {100 * share:.2g}% of them answered by MLflow"
    if v.at_target is not None and v.at_target is not largest:
        parts.append(f"{TARGET_DEVICES} devices: p99 {v.at_target.p99_ms:.0f} ms, {v.at_target.errors} errors")
    if breaking:
        parts.append(f"breaks at {breaking.devices} devices: p99 {breaking.p99_ms:.0f} ms, {breaking.errors} errors "
                     f"({breaking.offered_lookups_per_s:.0f} lookups/s offered, {breaking.achieved_lookups_per_s:.0f}"
                     " answered)")
    elif v.decisive is not None:
        parts.append(f"did not break within the sizes tried (up to {v.decisive.devices})")
    return "; ".join(parts)


def cache_limits_text(v: LadderVerdict, cache: RunningCache) -> str:
    """What limits the cached fleet: where the CPU went at the breaking (or the largest) step."""
    step = v.decisive
    if step is None or not step.cpu:
        return "not measured"
    cpu = step.cpu
    text = (f"Through the registry cache ({cache.ttl} entries) a lookup costs {step.cpu_ms_per_lookup} ms of CPU on "
            f"the registry side (nginx, MLflow and PostgreSQL together) at {step.devices} devices, "
            f"{'where it broke' if v.breaking else 'the largest size tried'}. There nginx used "
            f"{cpu['cache_pct']:.0f}% of a core, "
            f"MLflow {cpu['server_pct']:.0f}%, PostgreSQL {cpu['postgres_ours_pct']:.0f}%, the load generator "
            f"{cpu['generator_pct']:.0f}% (p99 dispatch lag {step.dispatch_lag_p99_ms:.0f} ms), other processes "
            f"{cpu['others_pct']:.0f}%, of the machine's {cpu['machine_capacity_pct']}%")
    if v.breaking and cpu["generator_pct"] >= max(cpu["cache_pct"], cpu["server_pct"]):
        text += ("; the simulated fleet itself (one Python process opening a connection per poll) is what gives out "
                 "first, not the registry")
    return text + "."


def figure(direct: list[StepResult], cached: list[StepResult], server: FleetServer, cache: RunningCache,
           password_check: dict[str, Any], costs: dict[str, Any], cold: list[dict[str, Any]]) -> dict[str, Any]:
    """Figure 6: the fleet through the registry cache (ours) against the same fleet polling MLflow directly."""
    ours_v, base_v = verdict(cached), verdict(direct)
    ours = ours_v.largest.devices if ours_v.largest else 0
    base = base_v.largest.devices if base_v.largest else 0
    return {
        "id": "6", "name": "the registry under a fleet", "ours": ours,
        "ours_text": (f"through the registry cache (nginx, {cache.ttl} entries) in front of the same MLflow: "
                      + ladder_text(ours_v)),
        "baseline_text": ("the fleet polling MLflow directly (basic-auth, PostgreSQL, as edge boxes did before): "
                          + ladder_text(base_v)),
        "ratio": round(ours / base, 1) if base else None, "target": ">= 1000 devices",
        "met": ours >= TARGET_DEVICES,
        "limits": (cache_limits_text(ours_v, cache) + " Without the cache: "
                   + limits_text(base_v.decisive, base_v.breaking is not None, server, password_check, costs, cold)),
    }


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")


def postgres_version() -> str:
    conn = _postgres(os.environ.get("ALPR_POSTGRES_HOST", "127.0.0.1"), int(os.environ.get("ALPR_POSTGRES_PORT", "5432")))
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_setting('max_connections')")
        version, max_connections = cur.fetchone() or ("?", "?")
    conn.close()
    return f"PostgreSQL {version} (max_connections {max_connections})"


# ----------------------------------------------------------------------------------------------------------- main


def raise_fd_limit() -> int:
    """Open-file limit up to the hard limit: an overloaded step keeps thousands of connections open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def unauthenticated_cost(lookups: int, quiet_pct: float, quiet_wait: float) -> dict[str, Any]:
    """The same server without the basic-auth app, seeded alike, polled one lookup at a time (a cost baseline)."""
    with fleet_server(auth=False) as plain:
        expected = seed_registry(plain)
        monitor = CpuMonitor(plain.pid, plain.databases)
        with asyncio.Runner(loop_factory=_loop_factory) as runner, generator_priority():
            runner.run(settle(monitor, quiet_pct, quiet_wait))
            return runner.run(Fleet(plain, expected).sequential(lookups, monitor))


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        direct_fleets, cached_fleets = [20], [20]
        interval, warmup, measure, refine, retries = 1.0, 1.0, 4.0, 0, 0
    else:
        direct_fleets = [int(x) for x in args.direct_fleets.split(",")] if args.direct_fleets else list(DIRECT_FLEETS)
        cached_fleets = [int(x) for x in args.fleets.split(",")] if args.fleets else list(CACHE_FLEETS)
        interval, warmup, measure, refine, retries = args.interval, args.warmup, args.measure, args.refine, args.retries
    quiet_wait = 0.0 if args.quick else args.quiet_wait
    fd_limit = raise_fd_limit()
    started = time.monotonic()
    costs: dict[str, Any] = {}
    with fleet_server(auth_cache_ttl=args.auth_cache_ttl, workers=args.workers,
                      extra_args=shlex.split(args.server_args)) as server, \
            cache_in_front(server, args.cache_ttl) as cache:
        log(f"MLflow server up at {server.uri} (pid {server.pid}), registry cache at {cache.url} (pid {cache.pid}) "
            f"after {time.monotonic() - started:.0f}s")
        expected = seed_registry(server)
        log(f"seeded: production versions {expected}")
        direct_fleet = Fleet(server, expected, timeout=args.timeout, keep_alive=args.keep_alive)
        cached_fleet = Fleet(server, expected, timeout=args.timeout, keep_alive=args.keep_alive, via=cache)
        monitor = CpuMonitor(server.pid, server.databases, cache.pid)
        with asyncio.Runner(loop_factory=_loop_factory) as runner, generator_priority() as niceness:
            loop_name = type(runner.get_loop()).__module__
            # Cold start: every worker's credential cache is empty, and each request that arrives before the first
            # check of its worker is done pays a full password check of its own. Measured, then out of the way.
            cold = [runner.run(direct_fleet.burst(COLD_BURST, monitor)) for _ in range(3)]
            log(f"cold-start bursts of {COLD_BURST} concurrent lookups: {cold}")
            if not args.quick:
                runner.run(settle(monitor, args.quiet_pct, args.quiet_wait))
                costs["basic_auth"] = runner.run(direct_fleet.sequential(args.cost_lookups, monitor))
                log(f"idle cost with basic-auth: {costs['basic_auth']}")
            log("the baseline: the fleet polls MLflow directly")
            direct = runner.run(ladder(direct_fleet, direct_fleets, interval, warmup, measure, refine, retries,
                                       time.monotonic() + args.max_minutes * 60, monitor, args.quiet_pct, quiet_wait))
            log(f"ours: the fleet polls through the registry cache ({cache.ttl} entries)")
            cached = runner.run(ladder(cached_fleet, cached_fleets, interval, warmup, measure, refine, retries,
                                       time.monotonic() + args.max_minutes * 60, monitor, args.quiet_pct, quiet_wait))
        log_errors = server_log_errors(server.log)
    if not args.quick and not args.skip_baseline:
        costs["no_auth"] = unauthenticated_cost(args.cost_lookups, args.quiet_pct, args.quiet_wait)
        log(f"idle cost without basic-auth: {costs['no_auth']}")
    wall = time.monotonic() - started
    password_check = password_check_cost()
    fig = figure(direct, cached, server, cache, password_check, costs, cold)
    met = [s for s in direct if s.met and s.cpu_ms_per_lookup]
    loaded_cost = max(met, key=lambda s: s.devices).cpu_ms_per_lookup if met else None
    import mlflow

    def ordered(steps: list[StepResult]) -> list[dict[str, Any]]:
        return [asdict(s) for s in sorted(steps, key=lambda s: (s.devices, s.attempt))]

    return {
        "figures": [fig],
        "details": {
            "direct_steps": ordered(direct),
            "cached_steps": ordered(cached),
            "order_run": {"direct": [s.devices for s in direct], "cached": [s.devices for s in cached]},
            "direct_cpu_ms_per_lookup_at_largest_fleet_met": loaded_cost,
            "direct_cpu_ceiling_devices": cpu_ceiling_devices(loaded_cost, interval),
            "idle_cost_per_lookup": costs,
            "cold_start_bursts": cold,
            "server_log_errors": log_errors,
            "poll": {"interval_s": interval, "models_per_device": len(MODELS), "request": ALIAS_PATH,
                     "fallback_when_alias_missing": LATEST_PATH, "principal": prod.EDGE_USER,
                     "new_connection_per_poll": not args.keep_alive, "timeout_s": args.timeout, "warmup_s": warmup,
                     "measured_s": measure, "retries_of_a_missed_size": retries,
                     "schedule": "open loop: random phase per device and model, latency from the scheduled time"},
            "server": {"command": server.command, "auth": "basic-auth app (production profile)",
                       "auth_cache_ttl_seconds": server.auth_cache_ttl, "password_check": password_check,
                       "workers": args.workers or "MLflow's default (4)", "extra_args": args.server_args,
                       "mlflow": mlflow.__version__,
                       "postgres": postgres_version()},
            "registry_cache": {"command": cache.command, "ttl": cache.ttl, "nginx": nginx_version(),
                               "config": str(registry_cache.TEMPLATE.relative_to(ROOT))},
            "generator": {"client": f"aiohttp {aiohttp.__version__}", "event_loop": loop_name, "niceness": niceness,
                          "open_files_limit": fd_limit},
            "wall_s": round(wall, 1),
        },
        "machine": machine(),
        "command": " ".join([".venv/bin/python bench/fleet_bench.py", *sys.argv[1:]]),
    }


def nginx_version() -> str:
    import subprocess

    out = subprocess.run([registry_cache.nginx_binary(), "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds like Ctrl-C: the server stops, the databases are dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 devices at 1 s for ~5 s")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    parser.add_argument("--fleets", help="comma-separated fleet sizes through the registry cache "
                        f"(default {','.join(map(str, CACHE_FLEETS))})")
    parser.add_argument("--direct-fleets", help="comma-separated fleet sizes polling MLflow directly "
                        f"(default {','.join(map(str, DIRECT_FLEETS))})")
    parser.add_argument("--cache-ttl", default=registry_cache.DEFAULT_TTL,
                        help="the registry cache's entry lifetime, as ALPR_REGISTRY_CACHE_TTL (default 1s)")
    parser.add_argument("--interval", type=float, default=TARGET_INTERVAL_S, help="poll interval, seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per step before measuring")
    parser.add_argument("--measure", type=float, default=30.0, help="measured seconds per step")
    parser.add_argument("--retries", type=int, default=1, help="runs of a missed size before it counts as broken")
    parser.add_argument("--quiet-pct", type=float, default=30.0,
                        help="before each step, wait until other processes use less than this %% of a core")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="longest wait for a quiet machine, seconds")
    parser.add_argument("--refine", type=int, default=2, help="bisections between the last good and first bad size")
    parser.add_argument("--timeout", type=float, default=5.0, help="a poll slower than this is an error")
    parser.add_argument("--max-minutes", type=float, default=12.0,
                        help="per ladder (direct, cached): no new fleet size starts after this")
    parser.add_argument("--cost-lookups", type=int, default=300, help="sequential lookups of the idle-cost probes")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the idle-cost probe without basic-auth")
    parser.add_argument("--workers", type=int, help="override the server's worker count (investigation)")
    parser.add_argument("--server-args", default="",
                        help="appended to the mlflow server command, e.g. \"--gunicorn-opts='-k sync'\" (investigation)")
    parser.add_argument("--auth-cache-ttl", type=int,
                        help="override basic_auth.ini's auth_cache_ttl_seconds (investigation; 0 turns it off)")
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse connections between polls (a box does not: see the module docstring)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
