"""Dataset assets: synthetic scenes, the frozen golden set, and one validated training dataset per model."""


import hashlib
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from alpr_pipelines.defs.golden import GoldenSetConfig
from alpr_pipelines.defs.metadata import image_markdown
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.coco import convert_coco
from alpr_pipelines.lib.datasets import (
    DatasetError,
    check_disjoint,
    sample_mosaic,
    synthetic_key,
    validate_dataset,
    write_synthetic_views,
)
from alpr_pipelines.lib.golden import golden_dir
from alpr_pipelines.lib.models import DETECTOR_SPECS, MODEL_SPECS, ModelSpec

GOLDEN_KEY = dg.AssetKey(["datasets", "golden_set"])
@dg.asset(key=GOLDEN_KEY, group_name="datasets", kinds={"python"},
          description="Frozen golden evaluation set, disjoint from every training scene: each detector's view of the "
          "golden scenes and the plate reader's crops of golden plates, and a held-out 'shift' split whose plates "
          "use formats, colours and a font training never sees.")
def golden_set(context: dg.AssetExecutionContext, config: GoldenSetConfig, state: AlprStateResource) -> dg.Output[dict]:
    try:
        splits = config.splits(state)
    except DatasetError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    metadata: dict[str, Any] = {}
    for key, split in splits.items():
        metadata[f"{key}_fingerprint"] = split.fingerprint
        metadata[f"{key}_shift_fingerprint"] = split.shift_fingerprint
        if MODEL_SPECS[key].task == "read":
            metadata[f"{key}_plate_crops"] = config.plates
            metadata[f"{key}_shift_plate_crops"] = config.shift_plates
            continue
        summary = validate_dataset(split.data_yaml, MODEL_SPECS[key].names, required_splits=("val",))
        metadata[f"{key}_images"] = summary.images.get("val", 0)
        metadata[f"{key}_instances"] = dg.MetadataValue.json(summary.instances.get("val", {}))
    combined = hashlib.sha256("".join(s.key for s in splits.values()).encode()).hexdigest()
    return dg.Output({key: split.as_dict() for key, split in splits.items()},
                     data_version=dg.DataVersion(combined[:32]),
                     metadata={"path": dg.MetadataValue.path(str(golden_dir(state.path("datasets", "golden"),
                                                                            config.spec()))),
                               "scenes": config.scenes, **metadata})


class DatasetConfig(dg.Config):
    """Where a model's training data comes from.

    - ``synthetic`` (default): generated road scenes (``seed``, ``train_images`` and ``val_images`` scenes of
      ``width`` x ``height``); each model's dataset is its view of the same scenes (``lib.views``: the frames for
      the vehicle detector, one crop per vehicle for the plate detector), rendered once;
    - ``yaml``: any Ultralytics data YAML at ``data_yaml`` (the original design's ``--data plates.yaml``);
    - ``coco``: a COCO annotation file (``coco_annotations``) and its images folder (``coco_images``), converted to
      the vehicle classes (vehicle model only).
    """

    source: Literal["synthetic", "yaml", "coco"] = "synthetic"
    seed: int = 0
    train_images: int = 400
    val_images: int = 100
    width: int = 640
    height: int = 384
    data_yaml: str | None = None
    coco_annotations: str | None = None
    coco_images: str | None = None
    val_fraction: float = 0.2


def resolve_data_yaml(spec: ModelSpec, config: DatasetConfig, state: AlprStateResource) -> Path:
    if config.source == "synthetic":
        if config.train_images < 1 or config.val_images < 1:
            raise DatasetError("synthetic datasets need train_images and val_images of at least 1")
        key = synthetic_key(config.seed, config.train_images, config.val_images, config.width, config.height)
        views = write_synthetic_views(state.path("datasets", "synthetic") / key,
                                      DETECTOR_SPECS.values(), config.seed,
                                      {"train": config.train_images, "val": config.val_images},
                                      config.width, config.height)
        return views[spec.key]
    if config.source == "yaml":
        if not config.data_yaml:
            raise DatasetError("source 'yaml' needs data_yaml: the path of an Ultralytics data YAML")
        return Path(config.data_yaml).expanduser().resolve()
    if spec.key != "vehicle":
        raise DatasetError(f"COCO conversion yields vehicle classes; the {spec.key} model needs source synthetic or yaml")
    if not (config.coco_annotations and config.coco_images):
        raise DatasetError("source 'coco' needs coco_annotations (instances_*.json) and coco_images (its image folder)")
    ann = Path(config.coco_annotations).expanduser().resolve()
    digest = hashlib.sha256(f"{ann}:{ann.stat().st_mtime_ns if ann.exists() else 0}:{config.val_fraction}".encode())
    return convert_coco(ann, Path(config.coco_images).expanduser(),
                        state.path("datasets", "coco") / digest.hexdigest()[:16], config.val_fraction,
                        overwrite=True)  # the pipeline's own folder, keyed by the annotations it converts


def build_dataset_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.key, "dataset"],
        group_name=spec.group,
        ins={"golden": dg.AssetIn(GOLDEN_KEY)},
        kinds={"yolo"},
        description=f"Validated YOLO dataset for {spec.registered_name} ({', '.join(spec.classes)}). Its content "
        "fingerprint is the data version: training reruns only when it changes.",
    )
    def _dataset(context: dg.AssetExecutionContext, config: DatasetConfig, state: AlprStateResource,
                 golden: dict) -> dg.Output[dict]:
        try:
            data_yaml = resolve_data_yaml(spec, config, state)
            summary = validate_dataset(data_yaml, spec.names)
            for split in ("data_yaml", "shift_yaml"):
                check_disjoint(data_yaml, Path(golden[spec.key][split]))
        except DatasetError as exc:
            # Failing here stops the chain: nothing downstream trains or registers.
            raise dg.Failure(description=str(exc), allow_retries=False,
                             metadata={"data_yaml": str(config.data_yaml or config.source)}) from exc
        mosaic = sample_mosaic(data_yaml, state.path("datasets", "mosaics") / f"{spec.key}-{summary.fingerprint[:16]}.jpg")
        rows = [dg.TableRecord({"split": split, "images": summary.images[split], **counts})
                for split, counts in summary.instances.items()]
        table = dg.MetadataValue.table(rows, schema=dg.TableSchema(
            columns=[dg.TableColumn("split", "string"), dg.TableColumn("images", "int"),
                     *[dg.TableColumn(c, "int") for c in spec.classes]]))
        context.log.info(f"{spec.key} dataset {data_yaml}: {summary.images}, fingerprint {summary.fingerprint[:12]}")
        return dg.Output(
            summary.as_dict(),
            data_version=dg.DataVersion(summary.fingerprint[:32]),
            metadata={
                "fingerprint": summary.fingerprint,
                "data_yaml": dg.MetadataValue.path(str(data_yaml)),
                "counts": table,
                "train_images": summary.images.get("train", 0),
                "val_images": summary.images.get("val", 0),
                "sample_mosaic": image_markdown(mosaic, "sample mosaic"),
                "sample_mosaic_path": dg.MetadataValue.path(str(mosaic)),
            },
        )

    return _dataset


dataset_assets = [build_dataset_asset(spec) for spec in DETECTOR_SPECS.values()]

