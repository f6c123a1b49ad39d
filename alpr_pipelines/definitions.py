"""The code location: each domain's definitions, plus global policy (resources, jobs).

``dagster dev`` in the repository root finds this through ``[tool.dagster]`` in pyproject.toml; ``workspace.yaml``
loads the same module.
"""


import warnings

import dagster as dg

from alpr_pipelines.defs.datasets.assets import dataset_assets, golden_set
from alpr_pipelines.defs.exports.assets import export_assets
from alpr_pipelines.defs.exports.checks import parity_checks
from alpr_pipelines.defs.promotion.assets import evaluation_assets
from alpr_pipelines.defs.promotion.jobs import promotion_jobs
from alpr_pipelines.defs.promotion.schedules import build_retraining_schedule
from alpr_pipelines.defs.promotion.sensors import promotion_sensor
from alpr_pipelines.defs.registry.assets import registration_assets
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.defs.training.assets import training_assets
from alpr_pipelines.lib.models import MODEL_SPECS
from alpr_pipelines.settings import Settings, load_settings

# Data versions on outputs are how datasets and trainings report their fingerprints; the beta notice is noise.
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)  # raised inside dagster

ALL_ASSETS = [golden_set, *dataset_assets, *training_assets, *export_assets, *registration_assets, *evaluation_assets]
SHARED = dg.AssetSelection.groups("datasets")

train_and_register = dg.define_asset_job(
    "train_and_register",
    selection=dg.AssetSelection.all(),
    description="Datasets -> training -> ONNX/TensorRT -> registry, for both detectors.",
)
per_model_jobs = [
    dg.define_asset_job(
        f"train_and_register_{spec.key}",
        selection=SHARED | dg.AssetSelection.groups(f"{spec.key}_detector"),
        description=f"Datasets -> training -> exports -> registry for {spec.registered_name} only.",
    )
    for spec in MODEL_SPECS.values()
]

def executor_for(settings: Settings) -> dg.ExecutorDefinition | None:
    """``ALPR_EXECUTOR=k8s``: one Kubernetes pod per step (GPU steps carry their own ``dagster-k8s/config``)."""
    if settings.executor == "default":
        return None
    if settings.executor != "k8s":
        raise ValueError(f"ALPR_EXECUTOR={settings.executor!r} is unknown; use k8s, or leave it unset")
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as exc:
        raise ImportError("ALPR_EXECUTOR=k8s needs dagster-k8s: pip install 'alpr-pipelines[k8s]'") from exc
    return k8s_job_executor


defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=parity_checks,
    jobs=[train_and_register, *per_model_jobs, *promotion_jobs],
    sensors=[promotion_sensor],
    schedules=[build_retraining_schedule(train_and_register)],
    resources={"state": AlprStateResource(), "mlflow_registry": MlflowRegistryResource()},
    executor=executor_for(load_settings()),
)
