"""Training: one Ultralytics training per model, one MLflow run per training."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.training.assets import training_assets

    return dg.Definitions(assets=training_assets)
