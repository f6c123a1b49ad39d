"""`alpr train`, `register-existing`, `dataset`, `promote`, `rollback`, `status`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alpr_pipelines.cli.common import CliError, print_table, require_mlflow, run_job, versions_table
from alpr_pipelines.settings import Settings


def _spec_from_args(name: str | None, data: str) -> Any:
    from alpr_pipelines.lib.datasets import load_data_yaml
    from alpr_pipelines.lib.models import PLATE, VEHICLE, spec_for

    if name:
        lowered = name.lower()
        if "ocr" in lowered or "reader" in lowered:
            return spec_for("ocr")
        if "plate" in lowered:
            return PLATE
        if "vehicle" in lowered:
            return VEHICLE
        return spec_for(name)
    if data == "synthetic":
        raise CliError("with --data synthetic, say which detector with --name plate-detector or --name vehicle-detector")
    names = load_data_yaml(Path(data))["names"]
    return PLATE if list(names.values()) == ["license_plate"] else VEHICLE


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    import dagster as dg

    from alpr_pipelines.lib.datasets import DatasetError

    try:
        spec = _spec_from_args(args.name, args.data)
    except (DatasetError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    require_mlflow(settings)
    from alpr_pipelines.defs.presets import recipe_run_config, train_config
    from alpr_pipelines.lib.recipes import training_defaults

    synthetic = args.data == "synthetic"
    if spec.task == "read":
        dataset_cfg, train_cfg = _reader_config(args)
        exports: tuple[str, ...] = ("dataset", "weights", "onnx", "onnx_int8")
    else:
        dataset_cfg = (recipe_run_config()["ops"][f"{spec.key}__dataset"]["config"] if synthetic
                       else {"source": "yaml", "data_yaml": str(Path(args.data).resolve())})
        train_cfg = train_config(training_defaults(spec.key, synthetic, args.device))
        flags = {"model": args.model, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                 "lr0": args.lr0, "optimizer": args.optimizer}
        train_cfg.update({k: v for k, v in flags.items() if v is not None})
        train_cfg.update({"device": args.device})
        exports = ("dataset", "weights", "onnx", "onnx_int8", "tensorrt")
    train_cfg["restart"] = args.restart
    ops: dict[str, Any] = {
        f"{spec.key}__dataset": {"config": dataset_cfg},
        f"{spec.key}__weights": {"config": train_cfg},
    }
    keys = [["datasets", "golden_set"], *[[spec.key, s] for s in exports]]
    if args.register:
        if args.stage not in ("None", "Staging"):
            raise CliError(f"--stage must be None or Staging at registration, got {args.stage}; use `alpr promote`")
        ops[f"{spec.key}__registered_version"] = {"config": {"initial_stage": args.stage}}
        keys.append([spec.key, "registered_version"])
    result = run_job(settings, f"train_and_register_{spec.key}", {"ops": ops},
                      asset_selection=[dg.AssetKey(k) for k in keys])
    weights = result.output_for_node(f"{spec.key}__weights")
    print(f"MLflow run: {weights['run_id']} ({'reused' if weights['reused'] else 'trained'})")
    print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in weights["final_metrics"].items()))
    if args.register:
        version = result.output_for_node(f"{spec.key}__registered_version")
        print(f"registered {version['name']} version {version['version']} ({version['stage']}; "
              f"aliases {', '.join(version['aliases']) or '-'})")
    return 0


def _reader_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plate reader's dataset and training config for `alpr train --name ocr`: ``--data synthetic``, a labels
    CSV (its crops beside it), a COCO JSON of plate boxes with text, or a folder of images with YOLO labels ending in
    the text; ``--epochs``, ``--batch`` and ``--lr0`` override the reader's recipe."""
    from alpr_pipelines.defs.presets import recipe_run_config

    recipe = recipe_run_config()["ops"]
    data = Path(args.data).expanduser().resolve()
    if args.data == "synthetic":
        dataset_cfg = recipe["ocr__dataset"]["config"]
    elif data.suffix.lower() == ".csv":
        dataset_cfg = {"source": "csv", "labels_csv": str(data), "images_dir": str(data.parent)}
    elif data.suffix.lower() == ".json" or data.is_dir():
        dataset_cfg = {"source": "boxes", "boxes": str(data)}
    else:
        raise CliError(f"--data {args.data}: the plate reader takes 'synthetic', a labels CSV (image,text[,top_line]), "
                       "a COCO JSON of plate boxes with text, or a folder of images with YOLO labels ending in the text")
    unused = [flag for flag in ("model", "imgsz", "optimizer") if getattr(args, flag) is not None]
    if unused:
        raise CliError(f"--{', --'.join(unused)} are detector flags; the plate reader's size and optimizer are its "
                       "recipe's (docs/decisions.md, 'Plate reader')")
    train_cfg = dict(recipe["ocr__weights"]["config"])
    train_cfg.update({k: v for k, v in (("epochs", args.epochs), ("batch", args.batch), ("lr", args.lr0))
                      if v is not None})
    train_cfg["device"] = args.device
    return dataset_cfg, train_cfg


def cmd_register_existing(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.existing import RegisterExistingError, register_existing

    require_mlflow(settings)
    try:
        registered = register_existing(settings, Path(args.models_dir), stage=args.stage, only=args.model)
    except RegisterExistingError as exc:
        raise CliError(str(exc)) from exc
    for v in registered:
        print(f"{v.name} version {v.version} ({v.stage}; aliases {', '.join(v.aliases) or '-'})"
              f"{'' if v.created else ' (already registered)'}")
    return 0


def cmd_dataset(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.coco import convert_coco
    from alpr_pipelines.lib.datasets import DatasetError, validate_dataset
    from alpr_pipelines.lib.models import spec_for

    try:
        if args.action == "validate":
            expected = spec_for(args.model).names if args.model else None
            summary = validate_dataset(Path(args.data), expected)
            print(json.dumps(summary.as_dict(), indent=2))
        else:
            path = convert_coco(Path(args.annotations), Path(args.images), Path(args.out), args.val_fraction,
                                overwrite=args.overwrite)
            summary = validate_dataset(path)
            print(f"wrote {path}: {summary.images}")
    except (DatasetError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    return 0


def _person() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown user"


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.models import spec_for

    require_mlflow(settings)
    if args.force and not args.reason:
        raise CliError("--force needs --reason TEXT: every forced promotion says why")
    spec = spec_for(args.model)
    config: dict[str, Any] = {"model": spec.key, "version": str(args.version), "stage": args.stage,
                              "force": args.force, "decided_by": f"alpr promote ({_person()})"}
    if args.reason:
        config["reason"] = args.reason
    result = run_job(settings, "promote_version", {"ops": {"gate_and_promote": {"config": config}}})
    record = result.output_for_node("gate_and_promote")
    print(f"{spec.registered_name} v{args.version}: {record['verdict']}")
    for reason in record.get("reasons", []):
        print(f"  {reason}")
    return 0 if record["verdict"] != "rejected" else 1


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.models import spec_for

    require_mlflow(settings)
    spec = spec_for(args.model)
    config: dict[str, Any] = {"model": spec.key, "decided_by": f"alpr rollback ({_person()})"}
    if args.reason:
        config["reason"] = args.reason
    result = run_job(settings, "rollback_model", {"ops": {"rollback_production": {"config": config}}})
    out = result.output_for_node("rollback_production")
    print(f"{spec.registered_name}: Production v{out['demoted']} -> v{out['restored']}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    require_mlflow(settings)
    print_table(versions_table(settings))
    return 0


