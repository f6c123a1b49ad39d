"""Runs whose process died: found by the process each one records, and marked failed so nothing waits on them.

A run records ``alpr/pid`` and ``alpr/host`` (the ``alpr`` command's in-process runs at launch, a promotion run from
its op); a run launched by this host's daemon that died before its op started is known by the worker PID Dagster
logs when it starts the process. When that process is gone (SIGKILL, an OOM kill, a daemon killed with its children) Dagster itself never
notices with the default run launcher, and the run stays STARTED: its pool slot stays taken, and a promotion it was
making is neither decided nor retried. :func:`reap_dead_runs` marks such runs failed and frees their slots; the
promotion sensor then records the lost attempt on the version and starts the next one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

PID_TAG, HOST_TAG = "alpr/pid", "alpr/host"
QUIET_S = 60.0  # a run whose process just ended may still be writing its last events


def process_tags() -> dict[str, str]:
    """The tags that name this process, for :func:`reap_dead_runs`."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _worker_pid(instance: Any, run_id: str) -> str | None:
    """The run worker's PID from Dagster's "Started process for run (pid: N)" event, where this host launched it."""
    import dagster as dg

    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None and entry.message.startswith("Started process for run"):
            return str(getattr(pid, "text", pid))
    return None


def _alive(pid: str | None) -> bool:
    return pid is not None and pid.isdigit() and Path(f"/proc/{pid}").exists()


def _last_event_time(instance: Any, run_id: str) -> float | None:
    records = instance.get_records_for_run(run_id, ascending=False, limit=1).records
    return records[0].event_log_entry.timestamp if records else None


def reap_dead_runs(instance: Any, quiet_s: float | None = None, worker_pids: bool = True) -> list[str]:
    """Mark failed the STARTED/STARTING runs of this host whose processes are gone (the one the run tagged, and the
    worker Dagster logged when ``worker_pids``) and that logged nothing for ``quiet_s`` (default :data:`QUIET_S`);
    free their pool slots. Returns their run ids. (Dagster is imported here, not at the module's import: the ``alpr``
    command reads the tags without it.)"""
    import dagster as dg

    quiet = QUIET_S if quiet_s is None else quiet_s
    host = socket.gethostname()
    reaped = []
    now = time.time()
    local_launcher = worker_pids and type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                          dg.DagsterRunStatus.STARTING])):
        tagged = run.tags.get(PID_TAG) if run.tags.get(HOST_TAG) == host else None
        worker = _worker_pid(instance, run.run_id) if local_launcher else None
        if tagged is None and worker is None:
            continue  # not known to be this host's
        if _alive(tagged) or _alive(worker):
            continue
        last = _last_event_time(instance, run.run_id)
        if last is not None and now - last < quiet:
            continue
        instance.report_run_failed(run)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped
