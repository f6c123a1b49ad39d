"""The promotion operations as Dagster ops, shared by the sensor's runs, the UI jobs and the `alpr` command."""

from pathlib import Path
from typing import Literal

import dagster as dg

from alpr_pipelines.defs.datasets.assets import (
    GOLDEN_HEIGHT,
    GOLDEN_IMAGES,
    GOLDEN_SEED,
    GOLDEN_WIDTH,
    GoldenSetConfig,
    write_golden_views,
)
from alpr_pipelines.defs.promotion.gate import DEFAULT_POLICIES, GatePolicy, decide
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.datasets import validate_dataset
from alpr_pipelines.lib.evaluation import EvaluationError
from alpr_pipelines.lib.models import STAGE_ALIASES, ModelSpec, spec_for
from alpr_pipelines.lib.promotion import (
    PARITY_TAG,
    DecisionRecord,
    PromotionError,
    evaluate_version,
    now_iso,
    promote_to_production,
    record_decision,
    reject,
    rollback,
    verify_agreement,
)
from alpr_pipelines.lib.registry import alias_version, set_stage

PROMOTION_POOL = "alpr_promotion"  # limit 1 (dagster.yaml): promotions are serialized


class GoldenConfig(dg.Config):
    """The frozen golden set the evaluations use (the same defaults as the golden_set asset)."""

    golden_seed: int = GOLDEN_SEED
    golden_images: int = GOLDEN_IMAGES
    golden_width: int = GOLDEN_WIDTH
    golden_height: int = GOLDEN_HEIGHT


def golden_for(spec: ModelSpec, cfg: GoldenConfig, state: AlprStateResource) -> tuple[Path, str]:
    """The golden set's data YAML and fingerprint for ``spec``, generating it if absent (it is deterministic)."""
    golden = GoldenSetConfig(seed=cfg.golden_seed, images=cfg.golden_images, width=cfg.golden_width,
                             height=cfg.golden_height)
    views = write_golden_views(golden, state)
    return views[spec.key], validate_dataset(views[spec.key], spec.names, required_splits=("val",)).fingerprint


class PromoteConfig(GoldenConfig):
    """Gate and promote one version. Unset policy fields take the model's defaults (gate.DEFAULT_POLICIES)."""

    model: str
    version: str
    stage: Literal["Production", "Staging"] = "Production"
    force: bool = False
    reason: str | None = None
    decided_by: str = "promotion sensor"
    min_map50_95: float | None = None
    max_regression: float | None = None
    latency_budget_ms_p95: float | None = None
    require_parity: bool | None = None

    def policy(self, spec: ModelSpec) -> GatePolicy:
        base = DEFAULT_POLICIES[spec.key].as_dict()
        overrides = {k: getattr(self, k) for k in base if getattr(self, k) is not None}
        return GatePolicy(**{**base, **overrides})


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


def run_promotion(context: dg.OpExecutionContext, config: PromoteConfig, mlflow_registry: MlflowRegistryResource,
                  state: AlprStateResource) -> dict:
    spec = spec_for(config.model)
    name, version = spec.registered_name, str(config.version)
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
        raise dg.Failure("a forced promotion needs a reason (--reason TEXT)", allow_retries=False)
    golden_yaml, golden_fp = golden_for(spec, config, state)
    work = state.path("evaluations")
    champion_version = alias_version(client, name, STAGE_ALIASES["Production"])
    try:
        candidate, cached = evaluate_version(client, name, version, golden_yaml, golden_fp, work)
        champion = None
        if champion_version is not None:
            champion, _ = evaluate_version(client, name, champion_version, golden_yaml, golden_fp, work)
    except (EvaluationError, PromotionError) as exc:
        # A failed evaluation is an error, never a score of 0: nothing is decided or changed.
        raise dg.Failure(description=f"evaluation of {name} failed, nothing was promoted: {exc}",
                         allow_retries=False) from exc
    policy = config.policy(spec)
    parity = {"passed": True, "failed": False}.get(mv.tags.get(PARITY_TAG, ""))
    decision = decide(candidate.headline(), champion.headline() if champion else None, parity, policy)
    verdict = decision.verdict
    reasons = list(decision.reasons)
    if config.force and not decision.promote:
        verdict = "forced"
        reasons.append(f"FORCED by {config.decided_by}: {config.reason}")
    record = DecisionRecord(
        name=name, version=version, verdict=verdict, reasons=reasons, candidate=candidate.headline(),
        champion=champion.headline() if champion else None, champion_version=champion_version,
        decided_by=config.decided_by, dagster_run_id=context.run.run_id, time=now_iso(),
    )
    for line in reasons:
        context.log.info(f"{name} v{version}: {line}")
    if decision.promote or config.force:
        try:
            aliases = promote_to_production(client, name, version)
        except PromotionError as exc:
            raise dg.Failure(description=str(exc)) from exc
        context.log.info(f"{name} v{version} promoted to Production; aliases {aliases}")
    else:
        reject(client, name, version)
        context.log.info(f"{name} v{version} rejected; it stays out of Production")
    record_decision(client, record)
    _observe(context, spec, record)
    return record.as_dict()


@dg.op(pool=PROMOTION_POOL, description="Evaluate a version and the champion on the golden set, apply the gate, "
       "then promote (production alias + Production stage) or reject, recording the decision.")
def gate_and_promote(context: dg.OpExecutionContext, config: PromoteConfig, mlflow_registry: MlflowRegistryResource,
                     state: AlprStateResource) -> dict:
    return run_promotion(context, config, mlflow_registry, state)


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
