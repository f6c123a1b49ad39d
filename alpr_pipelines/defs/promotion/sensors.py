"""The promotion sensor: new candidates in the registry -> one promotion run per (model, version)."""

import json

import dagster as dg
from mlflow.exceptions import MlflowException

from alpr_pipelines.defs.promotion.jobs import promote_version
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.runs import reap_dead_runs
from alpr_pipelines.lib.models import MODEL_SPECS, STAGE_ALIASES
from alpr_pipelines.lib.promotion import ATTEMPTS_TAG, candidates, record_failed_attempt, retries_due
from alpr_pipelines.lib.registry import alias_version, reconcile_aliases


def run_key(model: str, version: str, attempt: int = 1) -> str:
    """Stable per (model, version, attempt): a retried tick or a restarted daemon never launches the same promotion
    twice; a run that ended in an error (recorded on the version) is followed by one more, up to MAX_ATTEMPTS."""
    return f"promote:{model}:{version}" + (f":attempt-{attempt}" if attempt > 1 else "")


ACTIVE = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def record_lost_runs(instance: dg.DagsterInstance, client, model_key: str, name: str, undecided: list[str]) -> None:
    """A candidate whose last promotion run ended without recording anything (its process died: reaped by
    ``defs.runs``, or failed by Dagster's run monitoring while starting) gets that attempt recorded, so it is retried
    (``retries_due``) or, at the last attempt, rejected: never pending and invisible."""
    for version in undecided:
        runs = instance.get_runs(dg.RunsFilter(tags={"alpr/model": model_key, "alpr/version": version}))
        if not runs or any(r.status in ACTIVE for r in runs):
            continue
        def attempt_of(run: dg.DagsterRun) -> int:
            raw = run.tags.get("alpr/attempt", "1")
            return int(raw) if raw.isdigit() else 1

        latest = max(runs, key=attempt_of)
        attempt = attempt_of(latest)
        recorded = int(client.get_model_version(name, version).tags.get(ATTEMPTS_TAG) or 0)
        if latest.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) and recorded < attempt:
            record_failed_attempt(client, name, version, f"promotion run {latest.run_id} ended "
                                  f"{latest.status.value} without recording a result (its process died, or it was cancelled)",
                                  "promotion sensor", latest.run_id)


@dg.sensor(job=promote_version, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the registry for versions in Staging or holding the 'candidate' alias; launches one "
           "gate-and-promote run per new (model, version), and one more after a run that ended in an error, up to 3. Cursor: the newest version seen per model. Each tick also "
           "points the stage aliases at the stages, so direct stage transitions are respected.")
def promotion_sensor(context: dg.SensorEvaluationContext, mlflow_registry: MlflowRegistryResource):
    cursor: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    client = mlflow_registry.get_client()
    # Which models exist: with MLflow's auth app on, asking for a missing model answers "permission denied", not
    # "does not exist", so we never ask about one that is not there.
    existing = {m.name for m in client.search_registered_models()}
    requests = []
    failures = []
    try:
        for run_id in reap_dead_runs(context.instance):  # runs whose process died: marked failed, recorded below
            context.log.warning(f"run {run_id} lost its process; marked failed")
    except Exception as exc:  # noqa: BLE001 - the instance's storage is busy: next tick; candidates go on
        context.log.error(f"could not check for runs whose process died: {exc}")
    for spec in MODEL_SPECS.values():
        if spec.registered_name not in existing:
            continue
        try:
            # Stage changes made with the original design's MlflowClient workflow are mirrored onto the aliases each tick.
            before = {a: alias_version(client, spec.registered_name, a) for a in STAGE_ALIASES.values()}
            after = reconcile_aliases(client, spec.registered_name)
            if {a: after.get(a) for a in before} != before:
                context.log.info(f"{spec.registered_name}: aliases follow the stages again: {before} -> {after}")
            undecided = candidates(client, spec.registered_name)  # listed once for the three uses below
            pending = [(v, 1) for v in undecided if int(v) > cursor.get(spec.key, 0)]
            record_lost_runs(context.instance, client, spec.key, spec.registered_name, undecided)
            pending += retries_due(client, spec.registered_name, undecided)
        except MlflowException as exc:
            # One model's trouble must not hold up the other's promotions: report it, go on, fail the tick after.
            failures.append(f"{spec.registered_name}: {exc}")
            continue
        for version, attempt in pending:
            requests.append(dg.RunRequest(
                run_key=run_key(spec.registered_name, version, attempt),
                run_config={"ops": {"gate_and_promote": {"config": {"model": spec.key, "version": version}}}},
                tags={"alpr/model": spec.key, "alpr/version": version, "alpr/attempt": str(attempt)},
            ))
            cursor[spec.key] = max(cursor.get(spec.key, 0), int(version))
    new_cursor = json.dumps(cursor, sort_keys=True)
    if failures and not requests:
        raise RuntimeError("promotion sensor could not read the registry: " + "; ".join(failures))
    for failure in failures:
        context.log.error(failure)
    if not requests:
        return dg.SensorResult(skip_reason="no new candidates", cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
