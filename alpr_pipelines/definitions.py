"""The code location: each domain's definitions merged, plus global policy (resources, the asset jobs, the
retraining schedule, the executor).

``dagster dev`` in the repository root finds ``defs`` through ``[tool.dagster]`` in pyproject.toml; ``workspace.yaml``
loads the same module. ``defs`` is built when Dagster loads the location (``@dg.definitions``), not at import, so the
environment (``settings``) is read then.
"""

import warnings

import dagster as dg

from alpr_pipelines.defs import datasets, exports, promotion, reader, registry, training
from alpr_pipelines.defs.promotion.schedules import build_retraining_schedule
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.models import MODEL_SPECS
from alpr_pipelines.settings import Settings, load_settings

# Data versions on outputs are how datasets and trainings report their fingerprints; the beta notice is noise.
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)  # raised inside dagster

train_and_register = dg.define_asset_job(
    "train_and_register",
    selection=dg.AssetSelection.all(),
    description="Datasets -> training -> ONNX/TensorRT -> registry, for every model.",
)
per_model_jobs = [
    dg.define_asset_job(
        f"train_and_register_{spec.key}",
        selection=dg.AssetSelection.groups("datasets") | dg.AssetSelection.groups(spec.group),
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


@dg.definitions
def defs() -> dg.Definitions:
    """Every domain's definitions, the jobs over them, the schedule and the executor the environment asks for."""
    settings = load_settings()
    return dg.Definitions.merge(
        *(domain.definitions() for domain in (datasets, training, exports, registry, reader, promotion)),
        dg.Definitions(
            jobs=[train_and_register, *per_model_jobs],
            schedules=[build_retraining_schedule(train_and_register, settings)],
            resources={"state": AlprStateResource(), "mlflow_registry": MlflowRegistryResource()},
            executor=executor_for(settings),
        ),
    )
