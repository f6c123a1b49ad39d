"""Registry: a new MLflow Model Registry version per trained and checked model."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.registry.assets import registration_assets

    return dg.Definitions(assets=registration_assets)
