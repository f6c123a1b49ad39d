"""Export assets: ONNX for every model (dynamic shape, FP32), its INT8 quantization for CPU edge boxes where it keeps
accuracy, and a TensorRT FP16 engine where CUDA and TensorRT are present."""


from pathlib import Path

import dagster as dg

from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.datasets import load_data_yaml, split_images
from alpr_pipelines.lib.exports import ExportError, ExportResult, export_onnx, export_tensorrt
from alpr_pipelines.lib.models import DETECTOR_SPECS, GPU_STEP_K8S_CONFIG, ModelSpec
from alpr_pipelines.lib.quantize import MAX_MAP_DROP, QuantizationError, build_int8


class ExportConfig(dg.Config):
    """``imgsz`` defaults to the training image size (the deployment size)."""

    imgsz: int | None = None
    simplify: bool = True
    opset: int | None = None


class Int8Config(dg.Config):
    """Static INT8 quantization, published only when mAP50-95 on the validation split drops by at most
    ``max_map_drop`` (absolute; 0.005 is half a point)."""

    enabled: bool = True
    max_map_drop: float = MAX_MAP_DROP


def _metadata(result: ExportResult) -> dict:
    if result.path is None:
        return {"status": result.skipped_reason or "skipped"}
    meta: dict = {"status": "built", "path": dg.MetadataValue.path(result.path), "sha256": result.sha256,
                  "size_mb": round((result.size_bytes or 0) / 1e6, 3)}
    for k, v in (result.details or {}).items():
        meta[k] = dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v
    return meta


def _output(result: ExportResult) -> dg.Output[dict]:
    """The asset's value, data version (the file's hash, or "skipped" when none was built) and metadata."""
    return dg.Output(result.as_dict(), data_version=dg.DataVersion(result.sha256 or "skipped"),
                     metadata=_metadata(result))


def build_export_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(key=[spec.key, "onnx"], group_name=spec.group,
              ins={"weights": dg.AssetIn([spec.key, "weights"])}, kinds={"onnx"},
              description=f"ONNX export of {spec.registered_name} with class names, imgsz and stride in its metadata.")
    def _onnx(context: dg.AssetExecutionContext, config: ExportConfig, state: AlprStateResource,
              weights: dict) -> dg.Output[dict]:
        imgsz = config.imgsz or weights["imgsz"]
        out_dir = state.path("exports", spec.key, f"{weights['training_key']}-{imgsz}")
        try:
            result = export_onnx(Path(weights["best_pt"]), out_dir, imgsz, config.simplify, config.opset)
        except ExportError as exc:
            raise dg.Failure(description=str(exc)) from exc
        return _output(result)

    @dg.asset(key=[spec.key, "onnx_int8"], group_name=spec.group,
              ins={"onnx": dg.AssetIn([spec.key, "onnx"]), "dataset": dg.AssetIn([spec.key, "dataset"])},
              kinds={"onnx"},
              description="INT8 (static, QDQ) quantization of the ONNX export for CPU edge boxes, calibrated on "
              "training images; published only when mAP50-95 on the validation split stays within 0.5 points of "
              "FP32, else 'skipped' with both scores. Edge boxes without a GPU prefer it.")
    def _onnx_int8(context: dg.AssetExecutionContext, config: Int8Config, onnx: dict,
                   dataset: dict) -> dg.Output[dict]:
        if not config.enabled:
            result = ExportResult(format="onnx_int8", path=None, skipped_reason="skipped: disabled in run config")
        else:
            splits = load_data_yaml(Path(dataset["data_yaml"]))
            try:
                result = build_int8(Path(onnx["path"]), split_images(splits, "train"), split_images(splits, "val"),
                                    config.max_map_drop)
            except QuantizationError as exc:
                raise dg.Failure(description=str(exc)) from exc
        if result.path is None:
            context.log.info(f"{spec.key} INT8 model {result.skipped_reason}")
        return _output(result)

    @dg.asset(key=[spec.key, "tensorrt"], group_name=spec.group,
              ins={"weights": dg.AssetIn([spec.key, "weights"]), "onnx": dg.AssetIn([spec.key, "onnx"])},
              kinds={"tensorrt"}, op_tags={"dagster-k8s/config": GPU_STEP_K8S_CONFIG},
              description="TensorRT FP16 engine for this machine's GPU, tagged with GPU name, compute capability and "
              "TensorRT version; 'skipped: no CUDA device' elsewhere, and the chain goes on with ONNX.")
    def _tensorrt(context: dg.AssetExecutionContext, state: AlprStateResource, weights: dict,
                  onnx: dict) -> dg.Output[dict]:
        imgsz = int(onnx["details"]["imgsz"][0])
        out_dir = state.path("exports", spec.key, f"{weights['training_key']}-{imgsz}")
        try:
            result = export_tensorrt(Path(weights["best_pt"]), out_dir, imgsz)
        except ExportError as exc:
            raise dg.Failure(description=str(exc)) from exc
        if result.path is None:
            context.log.info(f"{spec.key} TensorRT engine {result.skipped_reason}")
        return _output(result)

    return [_onnx, _onnx_int8, _tensorrt]


export_assets = [a for spec in DETECTOR_SPECS.values() for a in build_export_assets(spec)]

