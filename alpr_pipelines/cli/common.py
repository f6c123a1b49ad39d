"""Shared pieces of the `alpr` commands: errors, the Dagster instance, running jobs in-process, tables."""

from __future__ import annotations

import os
import time
from typing import Any

from alpr_pipelines.defs.runs import process_tags
from alpr_pipelines.settings import Settings


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------------------------- helpers


def dagster_instance(settings: Settings):
    """The persistent Dagster instance of the embedded stack, so CLI runs show up in the Dagster UI."""
    from dagster import DagsterInstance

    from alpr_pipelines.stack.embedded import ensure_dagster_home

    ensure_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return DagsterInstance.get()


def quiet_logs(run_config: dict[str, Any]) -> dict[str, Any]:
    return {**run_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}}


def reap_dead_cli_runs(instance) -> list[str]:
    """Mark failed the runs of `alpr` commands (and promotion runs) whose process died (``defs.runs``): without
    this, a run killed while holding the ``alpr_training`` slot would block every later training."""
    from alpr_pipelines.defs.runs import reap_dead_runs

    return reap_dead_runs(instance, quiet_s=0.0, worker_pids=False)  # only runs an `alpr` process tagged


def run_job(settings: Settings, job_name: str, run_config: dict, asset_selection=None):

    from alpr_pipelines.definitions import defs

    instance = dagster_instance(settings)
    for run_id in reap_dead_cli_runs(instance):
        print(f"marked run {run_id} failed: its alpr process is gone (its pool slots are free again)")
    job = defs().get_job_def(job_name)
    result = job.execute_in_process(run_config=quiet_logs(run_config), instance=instance,
                                    asset_selection=asset_selection, raise_on_error=False,
                                    tags=process_tags())
    if not result.success:
        failures = []
        for event in result.all_events:
            if event.is_step_failure:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None and error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                    failures.append(f"{event.step_key}: stopped by an interrupt (Ctrl-C or SIGTERM); not retried")
                else:
                    failures.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
        raise CliError(f"run {result.run_id} failed:\n  " + "\n  ".join(failures or ["see the Dagster UI"]))
    return result


def require_mlflow(settings: Settings) -> None:
    from urllib.error import URLError
    from urllib.request import urlopen

    url = settings.mlflow_tracking_uri.rstrip("/") + "/health"
    try:
        with urlopen(url, timeout=5):
            return
    except (URLError, OSError) as exc:
        raise CliError(
            f"MLflow is not reachable at {settings.mlflow_tracking_uri} ({exc}). Start the embedded stack with "
            "`alpr stack up`, or point MLFLOW_TRACKING_URI at your server."
        ) from exc


def versions_table(settings: Settings, names: list[str] | None = None) -> list[dict[str, Any]]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from alpr_pipelines.lib.gate import DEFAULT_POLICIES
    from alpr_pipelines.lib.models import MODEL_SPECS

    client = MlflowClient(settings.mlflow_tracking_uri)
    rows = []
    for spec in MODEL_SPECS.values():
        if names and spec.registered_name not in names:
            continue
        score = DEFAULT_POLICIES[spec.key].score
        try:
            aliases_of = client.get_registered_model(spec.registered_name).aliases
        except MlflowException:
            continue  # not registered yet
        for mv in sorted(client.search_model_versions(f"name = '{spec.registered_name}'"), key=lambda v: int(v.version)):
            aliases = sorted(a for a, v in aliases_of.items() if str(v) == str(mv.version))
            rows.append({
                "model": spec.registered_name,
                "version": mv.version,
                "stage": mv.current_stage,
                "aliases": ",".join(aliases) or "-",
                "score": score,  # what the gate compares: mAP50-95 for a detector, exact_match for the reader
                "train": mv.tags.get(f"train_{score}", "-"),
                "golden": mv.tags.get(f"eval_{score}", "-"),
                "shift": mv.tags.get(f"eval_shift_{score}", "-"),
                "p95 ms": mv.tags.get("eval_latency_ms_p95", "-"),
                "decision": mv.tags.get("alpr_decision", "-"),
                "decided by": mv.tags.get("alpr_decided_by", "-"),
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(mv.creation_timestamp / 1000)),
            })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


# --------------------------------------------------------------------------------------------- commands


