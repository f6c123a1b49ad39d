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


def reap_dead_runs(instance: Any, quiet_s: float | None = None) -> list[str]:
    """Mark failed the STARTED/STARTING runs of this host whose recorded process no longer exists and that have not
    changed for ``quiet_s`` (default :data:`QUIET_S`); free their pool slots. Returns their run ids. (Dagster is imported here, not at the
    module's import: the ``alpr`` command reads the tags without it.)"""
    import dagster as dg

    quiet = QUIET_S if quiet_s is None else quiet_s
    host = socket.gethostname()
    reaped = []
    now = time.time()
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                              dg.DagsterRunStatus.STARTING]))
    local_launcher = type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    for record in records:
        run = record.dagster_run
        pid, run_host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid is None and local_launcher:  # died before its op tagged it: the worker the daemon started
            pid, run_host = _worker_pid(instance, run.run_id), host
        if pid is None or run_host != host or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        if now - record.update_timestamp.timestamp() < quiet:
            continue
        instance.report_run_failed(run)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped
