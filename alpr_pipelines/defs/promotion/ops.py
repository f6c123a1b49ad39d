"""The promotion operations as Dagster ops, shared by the sensor's runs, the UI jobs and the `alpr` command."""

from typing import Literal

import dagster as dg
import yaml

from alpr_pipelines.defs.golden import GoldenSetConfig
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.defs.runs import process_tags
from alpr_pipelines.lib.evaluation import EvaluationError
from alpr_pipelines.lib.gate import DEFAULT_POLICIES, GatePolicy
from alpr_pipelines.lib.models import STAGE_ALIASES, ModelSpec, spec_for
from alpr_pipelines.lib.promotion import (
    MAX_ATTEMPTS,
    DecisionRecord,
    PromotionError,
    apply_decision,
    judge_candidate,
    now_iso,
    record_decision,
    record_failed_attempt,
    rollback,
    verify_agreement,
)
from alpr_pipelines.lib.registry import set_stage
from alpr_pipelines.settings import Settings, load_settings

PROMOTION_POOL = "alpr_promotion"  # limit 1 (dagster.yaml): promotions are serialized


class PromoteConfig(dg.Config):
    """Gate and promote one version on ``golden`` (the golden_set asset's defaults). Unset policy fields take the
    model's defaults (``lib.gate.DEFAULT_POLICIES``), then ``ALPR_GATE_POLICY``'s."""

    model: str
    version: str
    stage: Literal["Production", "Staging"] = "Production"
    force: bool = False
    reason: str | None = None
    decided_by: str = "promotion sensor"
    golden: GoldenSetConfig = GoldenSetConfig()
    min_map50: float | None = None
    min_map50_95: float | None = None
    min_class_ap50: float | None = None
    min_exact_match: float | None = None
    max_cer: float | None = None
    max_regression: float | None = None
    latency_budget_ms_p95: float | None = None
    require_parity: bool | None = None

    def policy(self, spec: ModelSpec, settings: Settings) -> GatePolicy:
        """The model's default policy, then ``ALPR_GATE_POLICY``'s overrides for it, then this run's."""
        policy = DEFAULT_POLICIES[spec.key]
        if settings.gate_policy_file is not None:
            path = settings.gate_policy_file
            if not path.is_file():
                raise dg.Failure(f"ALPR_GATE_POLICY={path} does not exist; point it at a YAML file or unset it",
                                 allow_retries=False)
            try:
                overrides = (yaml.safe_load(path.read_text()) or {}).get(spec.key) or {}
                policy = policy.with_overrides(overrides, f"ALPR_GATE_POLICY={path} ({spec.key})")
            except (yaml.YAMLError, AttributeError, ValueError) as exc:
                raise dg.Failure(f"ALPR_GATE_POLICY={path} is not a policy file: {exc}", allow_retries=False) from exc
        run = {k: getattr(self, k) for k in policy.as_dict() if getattr(self, k, None) is not None}
        return policy.with_overrides(run, "promote_version run config")


def _observe(context: dg.OpExecutionContext, spec: ModelSpec, record: DecisionRecord) -> None:
    """The decision as an event on the model's registered_version asset, so the Dagster UI shows it."""
    context.log_event(dg.AssetObservation(
        asset_key=dg.AssetKey([spec.key, "registered_version"]),
        description=f"{spec.registered_name} v{record.version}: {record.verdict}",
        metadata={
            "decision": record.verdict,
            "version": record.version,
            "champion_version": record.champion_version or "-",
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in record.reasons)),
            "candidate": dg.MetadataValue.json(record.candidate),
            "champion": dg.MetadataValue.json(record.champion or {}),
            "decided_by": record.decided_by,
        },
    ))


@dg.op(pool=PROMOTION_POOL, description="Evaluate a version and the champion on the golden set, apply the gate, "
       "then promote (production alias + Production stage) or reject, recording the decision.")
def gate_and_promote(context: dg.OpExecutionContext, config: PromoteConfig, mlflow_registry: MlflowRegistryResource,
                     state: AlprStateResource) -> dict:
    spec = spec_for(config.model)
    name, version = spec.registered_name, str(config.version)
    # Which process makes this promotion: should it die, the sensor finds the run by it (``defs.runs``).
    context.instance.add_run_tags(context.run_id, process_tags())
    client = mlflow_registry.get_client()
    mv = client.get_model_version(name, version)
    if config.stage == "Staging":
        set_stage(client, name, version, "Staging")
        context.log.info(f"{name} v{version} is now Staging ({STAGE_ALIASES['Staging']})")
        return {"name": name, "version": version, "verdict": "staged"}
    if mv.current_stage == "Production":
        context.log.info(f"{name} v{version} is already in Production; nothing to do")
        return {"name": name, "version": version, "verdict": "already-production"}
    if config.force and not config.reason:
        raise dg.Failure(description="a forced promotion needs a reason (--reason TEXT)", allow_retries=False)
    try:
        return _judge_and_apply(context, config, client, spec, version, state)
    except Exception as exc:
        # Recorded on the version; the sensor runs it again up to MAX_ATTEMPTS, then records a rejection.
        error = f"{type(exc).__name__}: {getattr(exc, 'description', None) or exc}"
        try:
            attempts = record_failed_attempt(client, name, version, error, config.decided_by, context.run.run_id)
            context.log.error(f"{name} v{version}: promotion attempt {attempts} of {MAX_ATTEMPTS} ended in {error}")
        except Exception as record_exc:  # noqa: BLE001 - the registry itself is away: the original error matters
            context.log.error(f"{name} v{version}: could not record the failed attempt: {record_exc}")
        raise


def _judge_and_apply(context: dg.OpExecutionContext, config: PromoteConfig, client, spec: ModelSpec, version: str,
                     state: AlprStateResource) -> dict:
    """Judge ``version`` against the champion and apply the decision (``lib.promotion``)."""
    name = spec.registered_name
    try:
        record, promote = judge_candidate(client, spec, version, config.golden.splits(state)[spec.key],
                                          config.policy(spec, load_settings()), state.path("evaluations"),
                                          config.decided_by, context.run.run_id, config.force, config.reason)
    except (EvaluationError, PromotionError) as exc:
        # A failed evaluation is an error, never a score of 0: nothing is decided or changed here (the caller records
        # the failed attempt; an unusable candidate was already rejected by judge_candidate).
        raise dg.Failure(description=f"{name} v{version}: nothing was promoted: {exc}", allow_retries=False) from exc
    for line in record.reasons:
        context.log.info(f"{name} v{version}: {line}")
    try:
        aliases = apply_decision(client, record, promote)
    except PromotionError as exc:  # a concurrent change raced this one: a retry decides again
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"{name} v{version} " + (f"promoted to Production; aliases {aliases}" if promote
                                              else "rejected; it stays out of Production"))
    _observe(context, spec, record)
    return record.as_dict()


class RollbackConfig(dg.Config):
    model: str
    decided_by: str = "rollback job"
    reason: str | None = None


@dg.op(pool=PROMOTION_POOL, description="Production goes back to the version holding the 'previous' alias.")
def rollback_production(context: dg.OpExecutionContext, config: RollbackConfig,
                        mlflow_registry: MlflowRegistryResource) -> dict:
    spec = spec_for(config.model)
    client = mlflow_registry.get_client()
    try:
        demoted, restored = rollback(client, spec.registered_name)
        verify_agreement(client, spec.registered_name, expect_production=restored)
    except PromotionError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    reasons = [f"rollback from v{demoted} to v{restored}" + (f": {config.reason}" if config.reason else "")]
    record = DecisionRecord(name=spec.registered_name, version=restored, verdict="rolled-back-to", reasons=reasons,
                            candidate={}, champion=None, champion_version=demoted, decided_by=config.decided_by,
                            dagster_run_id=context.run.run_id, time=now_iso())
    record_decision(client, record)
    _observe(context, spec, record)
    context.log.info(reasons[0])
    return {"demoted": demoted, "restored": restored}
