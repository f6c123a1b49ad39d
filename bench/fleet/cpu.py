"""Who uses the CPU during a fleet step: the MLflow server's processes by role, PostgreSQL's backends for our
databases, nginx, the load generator and everything else (psutil)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil


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
