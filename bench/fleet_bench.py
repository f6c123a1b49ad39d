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

Each simulated device does what an edge box does: one :class:`~alpr_pipelines.edge.swap.poller.RegistryPoller` per model,
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
import json
import shlex
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from common import machine  # first: offline Ultralytics, the repository on sys.path
from fleet import (
    ALIAS_PATH,
    CACHE_FLEETS,
    COLD_BURST,
    DIRECT_FLEETS,
    LATEST_PATH,
    MODELS,
    ROOT,
    TARGET_INTERVAL_S,
    log,
)
from fleet.cpu import CpuMonitor
from fleet.load import Fleet, StepResult, generator_priority, ladder, loop_factory, raise_fd_limit, settle
from fleet.report import cpu_ceiling_devices, figure
from fleet.server import (
    cache_in_front,
    fleet_server,
    nginx_version,
    password_check_cost,
    postgres_version,
    seed_registry,
    server_log_errors,
)

from alpr_pipelines.stack import registry_cache
from alpr_pipelines.stack.principals import EDGE_USER


def unauthenticated_cost(lookups: int, quiet_pct: float, quiet_wait: float) -> dict[str, Any]:
    """The same server without the basic-auth app, seeded alike, polled one lookup at a time (a cost baseline)."""
    with fleet_server(auth=False) as plain:
        expected = seed_registry(plain)
        monitor = CpuMonitor(plain.pid, plain.databases)
        with asyncio.Runner(loop_factory=loop_factory) as runner, generator_priority():
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
        with asyncio.Runner(loop_factory=loop_factory) as runner, generator_priority() as niceness:
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
                     "fallback_when_alias_missing": LATEST_PATH, "principal": EDGE_USER,
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
