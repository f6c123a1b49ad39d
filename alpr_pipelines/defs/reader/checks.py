"""The reader's export check: ONNX Runtime must read what PyTorch reads before anything is registered (blocking)."""

from pathlib import Path

import dagster as dg

from alpr_pipelines.defs.datasets.assets import GOLDEN_KEY
from alpr_pipelines.lib.models import OCR
from alpr_pipelines.lib.reader_data import load_split_crops, validate_reader_dataset
from alpr_pipelines.lib.reader_model import PARITY_MAX_LOGIT_DIFF, reader_parity

PARITY_CROPS = 64


@dg.asset_check(
    asset=dg.AssetKey([OCR.key, "onnx"]),
    name="onnx_matches_pytorch",
    blocking=True,
    additional_ins={"weights": dg.AssetIn([OCR.key, "weights"]), "golden": dg.AssetIn(GOLDEN_KEY)},
    description=f"The same text from PyTorch and ONNX Runtime on {PARITY_CROPS} golden plate crops, every logit "
    f"within {PARITY_MAX_LOGIT_DIFF}.",
)
def reader_parity_check(onnx: dict, weights: dict, golden: dict) -> dg.AssetCheckResult:
    samples = validate_reader_dataset(Path(golden[OCR.key]["data_yaml"]), ("val",)).splits["val"][:PARITY_CROPS]
    report = reader_parity(Path(weights["best_pt"]), Path(onnx["path"]), load_split_crops(samples))
    return dg.AssetCheckResult(
        passed=report.passed, severity=dg.AssetCheckSeverity.ERROR,
        description=None if report.passed else "ONNX Runtime reads differently from PyTorch beyond tolerance",
        metadata=report.as_dict())
