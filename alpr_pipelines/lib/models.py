"""The public contract of the detectors: registered names, descriptions and classes, from the original ALPR registry
design (the names, stages and aliases an edge box relies on are ``edge.contract``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from alpr_pipelines.edge.contract import PLATE_MODEL, PREVIOUS_ALIAS, STAGE_ALIASES, STAGES, VEHICLE_MODEL

__all__ = ["GPU_STEP_K8S_CONFIG", "MODEL_SPECS", "PLATE", "PREVIOUS_ALIAS", "STAGES", "STAGE_ALIASES", "VEHICLE", "ModelSpec", "spec_for"]

# What a GPU step (training, TensorRT build) asks Kubernetes for when runs use dagster-k8s's k8s_job_executor; other
# executors ignore this tag. Node selectors are cluster-specific: add them per deployment (docker/k8s/values.yaml).
GPU_STEP_K8S_CONFIG = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}


@dataclass(frozen=True)
class ModelSpec:
    """One detector the pipeline trains and registers."""

    key: str
    registered_name: str
    description: str
    classes: tuple[str, ...]
    # What the model sees when it serves (lib.views): whole frames, or the crops of the vehicles found in them.
    view: str = "frames"

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
MODEL_SPECS: dict[str, ModelSpec] = {VEHICLE.key: VEHICLE, PLATE.key: PLATE}


def spec_for(name: str) -> ModelSpec:
    """Find a spec by short key (``plate``) or registered name (``alpr-plate-detector``)."""
    for spec in MODEL_SPECS.values():
        if name in (spec.key, spec.registered_name):
            return spec
    known = ", ".join(f"{s.key} ({s.registered_name})" for s in MODEL_SPECS.values())
    raise ValueError(f"unknown model {name!r}; expected one of: {known}")
