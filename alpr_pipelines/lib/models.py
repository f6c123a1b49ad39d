"""The public contract of the models: registered names, descriptions and classes of the two detectors, from the
original ALPR registry design, and the plate reader beside them (the names, stages and aliases an edge box relies on
are ``edge.contract``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from alpr_pipelines.edge.contract import OCR_MODEL, PLATE_MODEL, PREVIOUS_ALIAS, STAGE_ALIASES, STAGES, VEHICLE_MODEL

__all__ = ["DETECTOR_SPECS", "GPU_STEP_K8S_CONFIG", "MODEL_SPECS", "OCR", "PLATE", "PREVIOUS_ALIAS", "STAGES",
           "STAGE_ALIASES", "TASKS", "VEHICLE", "ModelSpec", "spec_for"]

# What a GPU step (training, TensorRT build) asks Kubernetes for when runs use dagster-k8s's k8s_job_executor; other
# executors ignore this tag. Node selectors are cluster-specific: add them per deployment (docker/k8s/values.yaml).
GPU_STEP_K8S_CONFIG = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}


TASKS = ("detect", "read")  # a YOLO11 detector (Ultralytics), or the plate reader (lib.reader_model)


@dataclass(frozen=True)
class ModelSpec:
    """One model the pipeline trains and registers. ``task`` says which code trains, exports and scores it; the
    registry, the gate's bookkeeping, the sensor, rollback, status and the schedule treat every model alike."""

    key: str
    registered_name: str
    description: str
    classes: tuple[str, ...]
    # What the model sees when it serves (lib.views): whole frames, the crops of the vehicles found in them, or (the
    # reader) the crops of the plates.
    view: str = "frames"
    task: str = "detect"

    @property
    def group(self) -> str:
        """The Dagster asset group of its chain."""
        return f"{self.key}_{'detector' if self.task == 'detect' else 'reader'}"

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self.classes))


VEHICLE = ModelSpec(
    key="vehicle",
    registered_name=VEHICLE_MODEL,
    description="YOLOv11 vehicle detector trained on COCO dataset",
    classes=("car", "truck", "bus", "motorcycle"),
)
PLATE = ModelSpec(
    key="plate",
    registered_name=PLATE_MODEL,
    description="Custom YOLOv11 license plate detector",
    classes=("license_plate",),
    view="vehicle_crops",
)
OCR = ModelSpec(
    key="ocr",
    registered_name=OCR_MODEL,
    description="Plate reader: the text of a licence-plate crop (a compact CNN reading every character at once)",
    classes=(),
    view="plate_crops",
    task="read",
)
MODEL_SPECS: dict[str, ModelSpec] = {VEHICLE.key: VEHICLE, PLATE.key: PLATE, OCR.key: OCR}
DETECTOR_SPECS: dict[str, ModelSpec] = {k: s for k, s in MODEL_SPECS.items() if s.task == "detect"}


def spec_for(name: str) -> ModelSpec:
    """Find a spec by short key (``plate``) or registered name (``alpr-plate-detector``)."""
    for spec in MODEL_SPECS.values():
        if name in (spec.key, spec.registered_name):
            return spec
    known = ", ".join(f"{s.key} ({s.registered_name})" for s in MODEL_SPECS.values())
    raise ValueError(f"unknown model {name!r}; expected one of: {known}")
