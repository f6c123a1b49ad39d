"""The load generator: simulated edge boxes polling the registry open-loop, as an edge box's pollers do."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from alpr_pipelines.edge.contract import STAGE_ALIASES
from alpr_pipelines.stack import registry_cache
from alpr_pipelines.stack.registry_cache import RunningCache
from fleet import (
    ALIAS_PATH,
    LATEST_PATH,
    MAX_IN_FLIGHT,
    MODELS,
    SERVER_IDLE_PCT,
    STAGE,
    TARGET_P99_MS,
    log,
)
from fleet.cpu import CpuMonitor, CpuSnapshot
from fleet.server import FleetServer


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


def loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # installed with uvicorn[standard]; a cheaper event loop keeps the generator out of the way

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def raise_fd_limit() -> int:
    """Open-file limit up to the hard limit: an overloaded step keeps thousands of connections open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
