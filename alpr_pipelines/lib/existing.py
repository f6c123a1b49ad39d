"""Register model files that already exist on disk (the original ALPR registry design's ``register_existing_models.py``).

Files are grouped by stem: ``yolo11n.pt`` + ``yolo11n.onnx`` + ``yolo11n.engine`` are one version. A stem with
"plate" in it is the plate detector (the original design's ``yolo11n-plate.pt``); any other is the vehicle detector. A ``.pt``
without an ``.onnx`` beside it is exported first, because every version carries ONNX for the edge. Class names are
read from the ONNX metadata and must match the detector's contract.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow import MlflowClient

from alpr_pipelines.edge.backends.onnx import OnnxDetector
from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.lib.exports import ExportError, export_onnx
from alpr_pipelines.lib.models import PLATE, VEHICLE, ModelSpec
from alpr_pipelines.lib.registry import RegisteredVersion, RegistryError, register_version
from alpr_pipelines.lib.signing import SigningKeyError, configured_signer
from alpr_pipelines.lib.training import get_or_create_experiment
from alpr_pipelines.settings import Settings
from alpr_pipelines.stack.principals import REGISTER_EXISTING_EXPERIMENT

EXPERIMENT = REGISTER_EXISTING_EXPERIMENT  # the edge principal is granted READ on it (stack.principals)
SUFFIX_ROLES = {".pt": "weights", ".onnx": "onnx", ".engine": "engine"}


class RegisterExistingError(Exception):
    """The files cannot be registered; the message names them and what to do."""


def spec_for_stem(stem: str) -> ModelSpec:
    return PLATE if "plate" in stem.lower() else VEHICLE


def discover(models_dir: Path) -> dict[str, dict[str, Path]]:
    if not models_dir.is_dir():
        raise RegisterExistingError(f"{models_dir} is not a folder; pass the folder holding .pt/.onnx/.engine files")
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for f in sorted(models_dir.iterdir()):
        if f.suffix in SUFFIX_ROLES and f.is_file():
            groups[f.stem][SUFFIX_ROLES[f.suffix]] = f.resolve()
    if not groups:
        raise RegisterExistingError(f"no .pt, .onnx or .engine files in {models_dir}")
    return dict(groups)


def register_existing(settings: Settings, models_dir: Path, stage: str = "None",
                      only: str | None = None) -> list[RegisteredVersion]:
    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        signer = configured_signer(settings)
    except SigningKeyError as exc:
        raise RegisterExistingError(str(exc)) from exc
    experiment_id = get_or_create_experiment(client, EXPERIMENT)
    out = []
    for stem, files in discover(models_dir).items():
        spec = spec_for_stem(stem)
        if only and spec.key != only:
            continue
        with tempfile.TemporaryDirectory(prefix="alpr-existing-") as tmp:
            if "onnx" not in files:
                if "weights" not in files:
                    raise RegisterExistingError(f"{stem}: an .engine alone cannot be registered; add its .pt or .onnx")
                try:
                    files["onnx"] = Path(export_onnx(files["weights"], Path(tmp), imgsz=640).path or "")
                except ExportError as exc:
                    raise RegisterExistingError(f"{stem}: {exc}") from exc
            onnx = OnnxDetector(files["onnx"], providers=["CPUExecutionProvider"])
            classes = tuple(onnx.names[i] for i in sorted(onnx.names))
            if classes != spec.classes:
                raise RegisterExistingError(
                    f"{files['onnx']} has classes {list(classes)} but {spec.registered_name} needs "
                    f"{list(spec.classes)}; rename the file (a 'plate' stem is the plate detector) or retrain"
                )
            run = client.create_run(experiment_id, tags={
                "mlflow.runName": f"register-existing-{stem}", "alpr_model": spec.registered_name,
                "alpr_source_files": ", ".join(str(p) for p in files.values()),
            })
            try:
                version = register_version(
                    client, spec, run.info.run_id, files, onnx.imgsz[0],
                    {"source": "register-existing", "source_sha256": sha256_file(next(iter(files.values())))},
                    initial_stage=stage, signer=signer,
                )
            except RegistryError as exc:
                client.set_terminated(run.info.run_id, "FAILED")
                raise RegisterExistingError(str(exc)) from exc
            client.set_terminated(run.info.run_id, "FINISHED")
            if not version.created:
                client.delete_run(run.info.run_id)  # nothing new: do not leave an empty run behind
            out.append(version)
    return out
