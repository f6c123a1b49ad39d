"""Exports: ONNX with its blocking parity check, INT8, TensorRT."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.exports.assets import export_assets
    from alpr_pipelines.defs.exports.checks import parity_checks

    return dg.Definitions(assets=export_assets, asset_checks=parity_checks)
