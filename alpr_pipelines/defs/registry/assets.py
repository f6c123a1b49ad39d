"""Registration: a new MLflow Model Registry version per trained, exported and parity-checked model."""


from pathlib import Path
from typing import Literal

import dagster as dg

from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.lib.models import DETECTOR_SPECS, ModelSpec
from alpr_pipelines.lib.promotion import PARITY_TAG
from alpr_pipelines.lib.registry import RegistryError, register_version
from alpr_pipelines.lib.signing import SigningKeyError, configured_signer
from alpr_pipelines.settings import load_settings


class RegisterConfig(dg.Config):
    """``initial_stage`` None or Staging (the original design's ``--stage``); Staging also sets the ``candidate`` alias."""

    initial_stage: Literal["None", "Staging"] = "Staging"


def register_and_describe(context: dg.AssetExecutionContext, config: RegisterConfig,
                          mlflow_registry: MlflowRegistryResource, spec: ModelSpec, weights: dict,
                          files: dict[str, Path], imgsz: int, provenance: dict,
                          version_tags: dict[str, str]) -> dg.Output[dict]:
    """Register ``files`` as a version of ``spec`` (signed when a release key is configured) and describe it for the
    Dagster UI; shared by every model's registration asset."""
    provenance = {"dataset_fingerprint": weights["dataset_fingerprint"], "dagster_run_id": context.run.run_id,
                  "training_key": weights["training_key"], **provenance}
    # This step runs only after the blocking ONNX parity check passed: recorded for the promotion gate.
    version_tags = {PARITY_TAG: "passed", **{f"train_{k}": f"{v:.5f}" for k, v in weights["final_metrics"].items()},
                    **version_tags}
    try:
        version = register_version(
            mlflow_registry.get_client(), spec, weights["run_id"], files, imgsz, provenance, config.initial_stage,
            version_tags, signer=configured_signer(load_settings()),
        )
    except (RegistryError, SigningKeyError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    verb = "registered new" if version.created else "found existing"
    context.log.info(f"{verb} {spec.registered_name} version {version.version} ({version.stage}, {version.aliases})")
    return dg.Output(
        version.as_dict(),
        data_version=dg.DataVersion(f"{spec.registered_name}/{version.version}"),
        metadata={
            "model": spec.registered_name,
            "version": version.version,
            "stage": version.stage,
            "aliases": ", ".join(version.aliases) or "-",
            "created": version.created,
            "mlflow_version": dg.MetadataValue.url(mlflow_registry.version_url(spec.registered_name, version.version)),
            "files": ", ".join(sorted(files)),
        },
    )


def build_registration_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.key, "registered_version"],
        group_name=spec.group,
        ins={
            "weights": dg.AssetIn([spec.key, "weights"]),
            "onnx": dg.AssetIn([spec.key, "onnx"]),
            "onnx_int8": dg.AssetIn([spec.key, "onnx_int8"]),
            "tensorrt": dg.AssetIn([spec.key, "tensorrt"]),
        },
        kinds={"mlflow"},
        description=f"A version of {spec.registered_name} in the MLflow Model Registry: .pt, .onnx, the INT8 .onnx "
        "when it kept accuracy, the TensorRT engine when built, and a manifest of sha256 hashes and provenance. "
        "Rerunning never duplicates a version.",
    )
    def _registered(context: dg.AssetExecutionContext, config: RegisterConfig, mlflow_registry: MlflowRegistryResource,
                    weights: dict, onnx: dict, onnx_int8: dict, tensorrt: dict) -> dg.Output[dict]:
        files = {"weights": Path(weights["best_pt"]), "onnx": Path(onnx["path"])}
        if onnx_int8.get("path"):
            files["onnx_int8"] = Path(onnx_int8["path"])
        if tensorrt.get("path"):
            files["engine"] = Path(tensorrt["path"])
        provenance = {"tensorrt": tensorrt.get("skipped_reason") or "built",
                      "int8": onnx_int8.get("details") or onnx_int8.get("skipped_reason")}
        version_tags = {f"engine_{k}": str(v) for k, v in (tensorrt.get("details") or {}).items()}
        return register_and_describe(context, config, mlflow_registry, spec, weights, files,
                                     int(onnx["details"]["imgsz"][0]), provenance, version_tags)

    return _registered


registration_assets = [build_registration_asset(spec) for spec in DETECTOR_SPECS.values()]
