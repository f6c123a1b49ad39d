"""Datasets: the synthetic scenes and user data each model trains on, and the frozen golden set."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.datasets.assets import dataset_assets, golden_set

    return dg.Definitions(assets=[golden_set, *dataset_assets])
