"""The plate reader's chain: its dataset of plate crops, the training (one MLflow run), the ONNX export and its INT8
copy, and the registered version of ``alpr-plate-ocr``. Its evaluation is every model's (``defs.promotion``)."""

from pathlib import Path

import dagster as dg

from alpr_pipelines.defs.datasets.assets import GOLDEN_KEY
from alpr_pipelines.defs.reader.config import ReaderDatasetConfig, ReaderTrainConfig
from alpr_pipelines.defs.registry.assets import RegisterConfig, register_and_describe
from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.defs.training.assets import preempted_pod_retry, retried_once_if_it_crashes, training_metadata
from alpr_pipelines.lib.datasets import DatasetError
from alpr_pipelines.lib.exports import ExportError, ExportResult
from alpr_pipelines.lib.models import GPU_STEP_K8S_CONFIG, OCR
from alpr_pipelines.lib.reader_data import (
    ReaderDataset,
    check_reader_disjoint,
    import_boxes_with_text,
    import_labelled_crops,
    load_split_crops,
    validate_reader_dataset,
    write_synthetic_reader_dataset,
)
from alpr_pipelines.lib.reader_model import export_reader_onnx, quantize_reader_int8, train_reader
from alpr_pipelines.lib.training import EpochProgress, TrainingError

GROUP = OCR.group


def resolve_reader_dataset(config: ReaderDatasetConfig, state: AlprStateResource) -> Path:
    """The root of the reader dataset ``config`` names, made (or reused) under the state folder.

    Raises:
        DatasetError: the config lacks what its source needs, or the data fails validation.
    """
    if config.source == "synthetic":
        if config.train_plates < 1 or config.val_plates < 1:
            raise DatasetError("synthetic reader datasets need train_plates and val_plates of at least 1")
        return write_synthetic_reader_dataset(state.path("datasets", "reader"), config.seed, config.train_plates,
                                              config.val_plates)
    if not 0 < config.val_share < 1:
        raise DatasetError(f"val_share must be between 0 and 1, got {config.val_share}")
    if config.source == "csv":
        if not (config.labels_csv and config.images_dir):
            raise DatasetError("source 'csv' needs labels_csv (rows image,text[,top_line]) and images_dir (the crops' "
                               "folder)")
        return import_labelled_crops(Path(config.images_dir).expanduser(), Path(config.labels_csv).expanduser(),
                                     state.path("datasets", "reader-user"), config.val_share)
    if not config.boxes:
        raise DatasetError("source 'boxes' needs boxes: a COCO JSON file, or a folder of images with YOLO labels "
                           "ending in the plate's text")
    return import_boxes_with_text(Path(config.boxes).expanduser(), state.path("datasets", "reader-user"),
                                  config.val_share)


@dg.asset(key=[OCR.key, "dataset"], group_name=GROUP, ins={"golden": dg.AssetIn(GOLDEN_KEY)}, kinds={"python"},
          description="Validated plate crops with their text for alpr-plate-ocr (synthetic, or the user's CSV, COCO "
          "or YOLO data): no unreadable image, empty or over-long text or character outside the alphabet, and no "
          "golden crop. Alphabet and maximum length are part of it; its fingerprint is the data version.")
def reader_dataset(context: dg.AssetExecutionContext, config: ReaderDatasetConfig, state: AlprStateResource,
                   golden: dict) -> dg.Output[dict]:
    try:
        root = resolve_reader_dataset(config, state)
        dataset = validate_reader_dataset(root)
        for split in ("data_yaml", "shift_yaml"):
            check_reader_disjoint(dataset, Path(golden[OCR.key][split]))
    except DatasetError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    lengths: dict[int, int] = {}
    for s in dataset.splits["train"]:
        lengths[len(s.text)] = lengths.get(len(s.text), 0) + 1
    context.log.info(f"reader dataset {root}: {dataset.counts()}, fingerprint {dataset.fingerprint[:12]}")
    return dg.Output(dataset.as_dict(), data_version=dg.DataVersion(dataset.fingerprint[:32]), metadata={
        "root": dg.MetadataValue.path(str(root)), "fingerprint": dataset.fingerprint, "alphabet": dataset.alphabet,
        "max_length": dataset.max_length, "train_plates": len(dataset.splits["train"]),
        "val_plates": len(dataset.splits["val"]),
        "text_lengths": dg.MetadataValue.json({str(k): v for k, v in sorted(lengths.items())})})


def _dataset(value: dict) -> ReaderDataset:
    try:
        return validate_reader_dataset(Path(value["root"]))
    except DatasetError as exc:
        raise dg.Failure(description=f"the reader dataset changed since it was validated: {exc}",
                         allow_retries=False) from exc


@dg.asset(key=[OCR.key, "weights"], group_name=GROUP, ins={"dataset": dg.AssetIn([OCR.key, "dataset"])},
          kinds={"pytorch", "mlflow"}, tags={"alpr/training": "true"}, pool="alpr_training",
          op_tags={"dagster-k8s/config": GPU_STEP_K8S_CONFIG}, retry_policy=preempted_pod_retry(),
          description="The plate reader trained from scratch (PyTorch, CPU or CUDA) and logged to MLflow: params, "
          "exact match, CER and losses per epoch, model/best.pt, model/last.pt, plots/, config/args.yaml. "
          "Unchanged dataset and config reuse the finished run; a crashed one resumes from last.pt.")
def reader_weights(context: dg.AssetExecutionContext, config: ReaderTrainConfig, state: AlprStateResource,
                   mlflow_registry: MlflowRegistryResource, dataset: dict) -> dg.Output[dict]:
    with retried_once_if_it_crashes():  # a crash is retried once; config errors and interrupts are not
        try:
            params = config.to_params()
            progress = EpochProgress(OCR.key, config.epochs)
            result = train_reader(OCR, _dataset(dataset), params, mlflow_registry.get_client(),
                                  mlflow_registry.experiment(), state.path("training"),
                                  dagster_run_id=context.run.run_id, restart=config.restart,
                                  force_nonce=context.run.run_id if config.force else "",
                                  on_epoch=lambda e: context.log.info(progress.line(e)))
        except (TrainingError, ValueError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
    return dg.Output({**result.as_dict(), "dataset_fingerprint": dataset["fingerprint"]},
                     data_version=dg.DataVersion(result.training_key),
                     metadata=training_metadata(context, result, mlflow_registry))


def _output(result: ExportResult) -> dg.Output[dict]:
    meta: dict = {"status": result.skipped_reason or "built"}
    if result.path is not None:
        meta.update({"path": dg.MetadataValue.path(result.path), "sha256": result.sha256,
                     "size_mb": round((result.size_bytes or 0) / 1e6, 3)})
    meta.update({k: v if isinstance(v, (int, float, str)) else dg.MetadataValue.json(v)
                 for k, v in (result.details or {}).items()})
    return dg.Output(result.as_dict(), data_version=dg.DataVersion(result.sha256 or "skipped"), metadata=meta)


@dg.asset(key=[OCR.key, "onnx"], group_name=GROUP, ins={"weights": dg.AssetIn([OCR.key, "weights"])},
          kinds={"onnx"}, description="ONNX export of the plate reader (dynamic batch, FP32) with its alphabet, "
          "maximum length, input size and head in the file's metadata.")
def reader_onnx(state: AlprStateResource, weights: dict) -> dg.Output[dict]:
    try:
        result = export_reader_onnx(Path(weights["best_pt"]), state.path("exports", OCR.key, weights["training_key"]))
    except ExportError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return _output(result)


@dg.asset(key=[OCR.key, "onnx_int8"], group_name=GROUP,
          ins={"onnx": dg.AssetIn([OCR.key, "onnx"]), "dataset": dg.AssetIn([OCR.key, "dataset"])}, kinds={"onnx"},
          description="INT8 (static, QDQ) copy of the reader, calibrated on training crops; published only when "
          "its exact match on the validation crops stays within 0.5 points of FP32, else 'skipped' with both.")
def reader_onnx_int8(context: dg.AssetExecutionContext, onnx: dict, dataset: dict) -> dg.Output[dict]:
    data = _dataset(dataset)
    try:
        result = quantize_reader_int8(Path(onnx["path"]), load_split_crops(data.splits["train"][:512]),
                                      load_split_crops(data.splits["val"]), [s.text for s in data.splits["val"]],
                                      Path(onnx["path"]).parent)
    except (ExportError, DatasetError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    if result.path is None:
        context.log.info(f"reader INT8 {result.skipped_reason}")
    return _output(result)


@dg.asset(key=[OCR.key, "registered_version"], group_name=GROUP,
          ins={"weights": dg.AssetIn([OCR.key, "weights"]), "onnx": dg.AssetIn([OCR.key, "onnx"]),
               "onnx_int8": dg.AssetIn([OCR.key, "onnx_int8"])}, kinds={"mlflow"},
          description="A version of alpr-plate-ocr in the MLflow Model Registry: best.pt, the ONNX reader, its INT8 "
          "copy when it kept accuracy, and a signed manifest of sha256 hashes, alphabet and provenance; the pyfunc "
          "reads plate images into text and confidence. Rerunning never duplicates a version.")
def reader_registered_version(context: dg.AssetExecutionContext, config: RegisterConfig,
                              mlflow_registry: MlflowRegistryResource, weights: dict, onnx: dict,
                              onnx_int8: dict) -> dg.Output[dict]:
    files = {"weights": Path(weights["best_pt"]), "onnx": Path(onnx["path"])}
    if onnx_int8.get("path"):
        files["onnx_int8"] = Path(onnx_int8["path"])
    details = onnx["details"]
    provenance = {"alphabet": details["alphabet"], "max_length": details["max_length"], "head": details["head"],
                  "input_size": "x".join(str(v) for v in details["input"]),
                  "int8": onnx_int8.get("details") or onnx_int8.get("skipped_reason")}
    return register_and_describe(context, config, mlflow_registry, OCR, weights, files, int(details["input"][1]),
                                 provenance, {})


reader_assets = [reader_dataset, reader_weights, reader_onnx, reader_onnx_int8, reader_registered_version]
