"""Export checks: ONNX Runtime must agree with PyTorch before anything is registered (blocking)."""


from pathlib import Path

import dagster as dg

from alpr_pipelines.lib.datasets import load_data_yaml, split_images
from alpr_pipelines.lib.exports import onnx_parity
from alpr_pipelines.lib.models import DETECTOR_SPECS, ModelSpec

PARITY_IMAGES = 8


def build_parity_check(spec: ModelSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey([spec.key, "onnx"]),
        name="onnx_matches_pytorch",
        blocking=True,
        additional_ins={"weights": dg.AssetIn([spec.key, "weights"]), "golden": dg.AssetIn(["datasets", "golden_set"])},
        description="Same raw outputs and detections from PyTorch and ONNX Runtime on golden images, within "
        "|score| <= 1e-3, |box| <= 0.5 px, matched boxes IoU >= 0.95.",
    )
    def _parity(onnx: dict, weights: dict, golden: dict) -> dg.AssetCheckResult:
        images = split_images(load_data_yaml(Path(golden[spec.key]["data_yaml"])), "val")[:PARITY_IMAGES]
        report = onnx_parity(Path(weights["best_pt"]), Path(onnx["path"]), images)
        return dg.AssetCheckResult(
            passed=report.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if report.passed else "ONNX Runtime disagrees with PyTorch beyond tolerance",
            metadata={k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in report.as_dict().items()},
        )

    return _parity


parity_checks = [build_parity_check(spec) for spec in DETECTOR_SPECS.values()]
