"""Jobs a person can launch from the Dagster UI with config (the sensor launches promote_version too)."""

import dagster as dg

from alpr_pipelines.defs.promotion.ops import gate_and_promote, rollback_production


@dg.job(description="Gate one registered version against the champion and promote or reject it. Config: model, "
        "version, optional stage (Production|Staging), force + reason, policy overrides.",
        tags={"alpr/kind": "promotion"})
def promote_version():
    gate_and_promote()


@dg.job(description="Put the 'previous' version back into Production (config: model, optional reason).",
        tags={"alpr/kind": "promotion"})
def rollback_model():
    rollback_production()


promotion_jobs = [promote_version, rollback_model]
