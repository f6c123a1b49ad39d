"""Training assets: one Ultralytics YOLO11 training per model, one MLflow run per training."""


from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from alpr_pipelines.defs.metadata import image_markdown
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.defs.training.config import TrainConfig
from alpr_pipelines.lib.models import DETECTOR_SPECS, GPU_STEP_K8S_CONFIG, ModelSpec
from alpr_pipelines.lib.training import (
    EPOCH_METRICS,
    EpochMetrics,
    EpochProgress,
    TrainingError,
    TrainingResult,
    train,
)
from alpr_pipelines.settings import load_settings


def epochs_table(epochs: list[EpochMetrics]) -> dg.MetadataValue:
    """Each epoch's logged metrics as a table (a detector's EPOCH_METRICS, or whatever the model logs)."""
    logged = {name for e in epochs for name in e.values}
    names = [n for n in EPOCH_METRICS if n in logged] + sorted(logged - set(EPOCH_METRICS)) or list(EPOCH_METRICS)
    columns = [dg.TableColumn("epoch", "int"), *[dg.TableColumn(name, "float") for name in names]]
    rows = [dg.TableRecord({"epoch": e.epoch, **{k: round(v, 5) for k, v in e.values.items()}}) for e in epochs]
    return dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=columns))


def training_metadata(context: dg.AssetExecutionContext, result: TrainingResult,
                      mlflow_registry: MlflowRegistryResource) -> dict:
    """What a weights asset shows of its training (every model's): the MLflow run, reuse, epochs, final metrics,
    speed and the learning curve; a reused training is said in the log."""
    if result.reused:
        context.log.info(f"dataset and config unchanged: reusing finished MLflow run {result.run_id}")
    metadata: dict = {
        "mlflow_run_id": result.run_id,
        "mlflow_run": dg.MetadataValue.url(mlflow_registry.run_url(result.experiment_id, result.run_id)),
        "training_key": result.training_key,
        "reused_previous_training": result.reused,
        "best_pt": dg.MetadataValue.path(str(result.best_pt)),
        "epochs": epochs_table(result.epochs),
        **{k: float(v) for k, v in result.final_metrics.items()},
    }
    if result.images_per_second is not None:
        metadata["train_images_per_second"] = round(result.images_per_second, 2)
    if result.learning_curve is not None:
        metadata["learning_curve"] = image_markdown(result.learning_curve, "learning curve")
    return metadata


@contextmanager
def retried_once_if_it_crashes(seconds_to_wait: float = 5.0) -> Iterator[None]:
    """An exception from the training (not a ``dg.Failure``: bad config, a lost checkpoint) asks Dagster for one
    retry, which resumes the same MLflow run from last.pt (a crash before the first epoch ended left none: the retry
    starts afresh in a new run); an interrupt (Ctrl-C, SIGTERM) is not retried, so stopping a run stops it (Dagster's
    ``RetryPolicy`` retries interrupts too: :func:`preempted_pod_retry`)."""
    try:
        yield
    except (dg.Failure, dg.DagsterError):
        raise
    except Exception as exc:
        if exc.__context__ is not None and not isinstance(exc.__context__, Exception):
            raise  # raised while an interrupt was being handled (say, MLflow away when the run is marked FAILED)
        raise dg.RetryRequested(max_retries=1, seconds_to_wait=seconds_to_wait) from exc


def preempted_pod_retry() -> dg.RetryPolicy | None:
    """On Kubernetes (``ALPR_EXECUTOR=k8s``) a training step's pod may be preempted (SIGTERM) or evicted: Dagster's
    ``RetryPolicy`` runs it again in a new pod, resuming from last.pt. Elsewhere a SIGTERM or Ctrl-C is a person
    stopping the run, which that policy would retry too, so there is none (a crash is still retried once:
    :func:`retried_once_if_it_crashes`)."""
    return dg.RetryPolicy(max_retries=1, delay=5) if load_settings().executor == "k8s" else None


def build_training_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.key, "weights"],
        group_name=spec.group,
        ins={"dataset": dg.AssetIn([spec.key, "dataset"])},
        kinds={"pytorch", "mlflow"},
        tags={"alpr/training": "true"},
        op_tags={"dagster-k8s/config": GPU_STEP_K8S_CONFIG},
        pool="alpr_training",
        retry_policy=preempted_pod_retry(),
        description=f"YOLO11 weights for {spec.registered_name}, trained with Ultralytics and logged to MLflow. "
        "Unchanged dataset and config reuse the finished run instead of retraining.",
    )
    def _weights(context: dg.AssetExecutionContext, config: TrainConfig, state: AlprStateResource,
                 mlflow_registry: MlflowRegistryResource, dataset: dict) -> dg.Output[dict]:
        progress = EpochProgress(spec.key, config.epochs)
        with retried_once_if_it_crashes():  # a crash is retried once; config errors and interrupts are not
            try:
                result = train(
                    spec,
                    Path(dataset["data_yaml"]),
                    dataset["fingerprint"],
                    config.to_params(run_id=context.run.run_id),
                    mlflow_registry.get_client(),
                    mlflow_registry.experiment(),
                    state.path("training"),
                    dagster_run_id=context.run.run_id,
                    restart=config.restart,
                    on_epoch=lambda e: context.log.info(progress.line(e)),
                )
            except TrainingError as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
        metadata = training_metadata(context, result, mlflow_registry)
        return dg.Output(
            {**result.as_dict(), "imgsz": config.imgsz, "dataset_fingerprint": dataset["fingerprint"]},
            data_version=dg.DataVersion(result.training_key),
            metadata=metadata,
        )

    return _weights


training_assets = [build_training_asset(spec) for spec in DETECTOR_SPECS.values()]

