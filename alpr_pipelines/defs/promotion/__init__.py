"""Promotion: evaluation on the golden set, the gate, the promotion sensor and the jobs people launch."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.promotion.assets import evaluation_assets
    from alpr_pipelines.defs.promotion.jobs import promotion_jobs
    from alpr_pipelines.defs.promotion.sensors import promotion_sensor

    return dg.Definitions(assets=evaluation_assets, jobs=promotion_jobs, sensors=[promotion_sensor])
