"""The ``alpr`` command: everything a person does outside the Dagster and MLflow UIs.

Environment: see :mod:`alpr_pipelines.settings` (``MLFLOW_TRACKING_URI``, ``ALPR_HOME``, ``DAGSTER_HOME``, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alpr_pipelines.cli.common import CliError, reap_dead_cli_runs
from alpr_pipelines.cli.demo import cmd_demo
from alpr_pipelines.cli.edge import cmd_edge
from alpr_pipelines.cli.keys import cmd_keys
from alpr_pipelines.cli.pipeline import (
    cmd_dataset,
    cmd_promote,
    cmd_register_existing,
    cmd_rollback,
    cmd_status,
    cmd_train,
)
from alpr_pipelines.cli.stack import cmd_stack
from alpr_pipelines.defs.runs import HOST_TAG, PID_TAG
from alpr_pipelines.settings import load_settings

__all__ = ["CliError", "HOST_TAG", "PID_TAG", "build_parser", "main", "reap_dead_cli_runs"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr", description="Train, gate and ship ALPR detectors and the plate reader.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="the embedded MLflow + Dagster stack on loopback")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health (up)")
    s.add_argument("--profile", choices=["embedded", "production"], default="embedded",
                   help="embedded: SQLite + local artifacts; production: PostgreSQL + S3 + MLflow auth (up)")
    s.add_argument("--env-file", type=Path, help="credentials for the production profile (config/production.env)")
    s.set_defaults(func=cmd_stack)

    t = sub.add_parser("train", help="train one model (the original design's train_with_mlflow.py)")
    t.add_argument("--data", required=True, help="Ultralytics data YAML, or 'synthetic' for generated scenes; for the "
                   "plate reader (--name ocr): 'synthetic', a labels CSV, or plate boxes with text (COCO/YOLO)")
    # Unset flags take the default recipe for --data synthetic on a CPU (lib.recipes), else the original flags:
    # --model yolo11n.yaml --epochs 100 --imgsz 640 --batch 16 --lr0 0.01 --optimizer AdamW.
    t.add_argument("--model", help="base model: a model YAML (trains from scratch) or a local .pt to fine-tune")
    t.add_argument("--epochs", type=int)
    t.add_argument("--imgsz", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--device", default="", help="CUDA device id or 'cpu' (default: CUDA 0 when present)")
    t.add_argument("--lr0", type=float)
    t.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"])
    t.add_argument("--register", action="store_true", help="register the model after training")
    t.add_argument("--stage", default="Staging", choices=["None", "Staging"], help="initial stage when registering")
    t.add_argument("--name", help="plate-detector, vehicle-detector or ocr (the plate reader); default: from the "
                   "dataset's classes")
    t.add_argument("--restart", action="store_true", help="start over if a crashed training's checkpoint is gone")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("register-existing", help="register local .pt/.onnx/.engine files as versions")
    r.add_argument("--models-dir", default="models", help="folder holding the model files (default: models)")
    r.add_argument("--model", choices=["vehicle", "plate"], help="register only this detector")
    r.add_argument("--stage", default="None", choices=["None", "Staging"])
    r.set_defaults(func=cmd_register_existing)

    d = sub.add_parser("dataset", help="validate a dataset or convert COCO annotations")
    dsub = d.add_subparsers(dest="action", required=True)
    v = dsub.add_parser("validate", help="check a data YAML as the pipeline would")
    v.add_argument("--data", required=True)
    v.add_argument("--model", help="plate or vehicle: also check the class names")
    c = dsub.add_parser("from-coco", help="convert a COCO annotation file to the vehicle classes")
    c.add_argument("--annotations", required=True)
    c.add_argument("--images", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--val-fraction", type=float, default=0.2)
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    d.set_defaults(func=cmd_dataset)

    pr = sub.add_parser("promote", help="gate a version against the champion and promote it (or force it)")
    pr.add_argument("--model", required=True, help="vehicle, plate, ocr, or the registered name")
    pr.add_argument("--version", required=True)
    pr.add_argument("--stage", default="Production", choices=["Production", "Staging"])
    pr.add_argument("--force", action="store_true", help="promote even if the gate fails (needs --reason)")
    pr.add_argument("--reason", help="why (recorded on the version)")
    pr.set_defaults(func=cmd_promote)

    rb = sub.add_parser("rollback", help="put the previous Production version back")
    rb.add_argument("--model", required=True)
    rb.add_argument("--reason")
    rb.set_defaults(func=cmd_rollback)

    ed = sub.add_parser("edge", help="run the edge detector service on the cameras of a config file")
    ed.add_argument("--config", default="config/cameras.yaml")
    ed.add_argument("--max-frames", type=int, help="stop each camera after this many frames")
    ed.add_argument("--port", type=int, help="override the /metrics and /health port")
    ed.set_defaults(func=cmd_edge)

    st = sub.add_parser("status", help="registered versions with stage, aliases, metrics and the last decision")
    st.set_defaults(func=cmd_status)

    k = sub.add_parser("keys", help="the pipeline's release key: make one, or print its public half for edge boxes")
    k.add_argument("action", choices=["generate", "show"])
    k.add_argument("--dir", type=Path, help="where the key pair lives (default $ALPR_HOME/keys)")
    k.set_defaults(func=cmd_keys)

    demo = sub.add_parser("demo", help="start the stack and train, export, register and gate every model")
    demo.add_argument("--wait", type=float, default=180.0, help="seconds to wait for the promotion decisions")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from alpr_pipelines.stack import StackError

    try:
        return int(args.func(args, load_settings()))
    except (CliError, StackError) as exc:
        print(f"alpr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
