"""The plate reader (``alpr-plate-ocr``): plate crops with text -> training -> ONNX (+ parity) -> registry."""

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's definitions (imported when called, so importing the package loads nothing)."""
    from alpr_pipelines.defs.reader.assets import reader_assets
    from alpr_pipelines.defs.reader.checks import reader_parity_check

    return dg.Definitions(assets=reader_assets, asset_checks=[reader_parity_check])
