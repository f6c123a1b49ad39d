"""The ``alpr`` command: everything a person does outside the Dagster and MLflow UIs.

Environment: see :mod:`alpr_pipelines.settings` (``MLFLOW_TRACKING_URI``, ``ALPR_HOME``, ``DAGSTER_HOME``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from alpr_pipelines.settings import Settings, load_settings


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------------------------- helpers


def _instance(settings: Settings):
    """The persistent Dagster instance of the embedded stack, so CLI runs show up in the Dagster UI."""
    from dagster import DagsterInstance

    from alpr_pipelines.lib.stack import _ensure_dagster_home

    _ensure_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return DagsterInstance.get()


def _quiet_logs(run_config: dict[str, Any]) -> dict[str, Any]:
    return {**run_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}}


PID_TAG, HOST_TAG = "alpr/pid", "alpr/host"


def reap_dead_cli_runs(instance) -> list[str]:
    """Mark failed the in-process runs of `alpr` commands that died (killed, power cut), and free their pool slots.

    Without this, a run killed while holding the ``alpr_training`` slot would block every later training.
    Only runs started on this host, whose recorded process no longer exists, are touched.
    """
    import socket

    from dagster import DagsterRunStatus, RunsFilter

    reaped = []
    host = socket.gethostname()
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])):
        pid, run_host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if pid is None or run_host != host or Path(f"/proc/{pid}").exists():
            continue
        instance.report_run_failed(run)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def _run_job(settings: Settings, job_name: str, run_config: dict, asset_selection=None):
    import socket

    from alpr_pipelines.definitions import defs

    instance = _instance(settings)
    for run_id in reap_dead_cli_runs(instance):
        print(f"marked run {run_id} failed: its alpr process is gone (its pool slots are free again)")
    job = defs.get_job_def(job_name)
    result = job.execute_in_process(run_config=_quiet_logs(run_config), instance=instance,
                                    asset_selection=asset_selection, raise_on_error=False,
                                    tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()})
    if not result.success:
        failures = []
        for event in result.all_events:
            if event.is_step_failure:
                error = getattr(event.event_specific_data, "error", None)
                failures.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
        raise CliError(f"run {result.run_id} failed:\n  " + "\n  ".join(failures or ["see the Dagster UI"]))
    return result


def _require_mlflow(settings: Settings) -> None:
    from urllib.error import URLError
    from urllib.request import urlopen

    url = settings.mlflow_tracking_uri.rstrip("/") + "/health"
    try:
        with urlopen(url, timeout=5):
            return
    except (URLError, OSError) as exc:
        raise CliError(
            f"MLflow is not reachable at {settings.mlflow_tracking_uri} ({exc}). Start the embedded stack with "
            "`alpr stack up`, or point MLFLOW_TRACKING_URI at your server."
        ) from exc


def versions_table(settings: Settings, names: list[str] | None = None) -> list[dict[str, Any]]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from alpr_pipelines.lib.models import MODEL_SPECS

    client = MlflowClient(settings.mlflow_tracking_uri)
    rows = []
    for spec in MODEL_SPECS.values():
        if names and spec.registered_name not in names:
            continue
        try:
            aliases_of = client.get_registered_model(spec.registered_name).aliases
        except MlflowException:
            continue  # not registered yet
        for mv in sorted(client.search_model_versions(f"name = '{spec.registered_name}'"), key=lambda v: int(v.version)):
            aliases = sorted(a for a, v in aliases_of.items() if str(v) == str(mv.version))
            rows.append({
                "model": spec.registered_name,
                "version": mv.version,
                "stage": mv.current_stage,
                "aliases": ",".join(aliases) or "-",
                "train mAP50-95": mv.tags.get("train_mAP50-95", "-"),
                "golden mAP50-95": mv.tags.get("eval_mAP50-95", "-"),
                "p95 ms": mv.tags.get("eval_latency_ms_p95", "-"),
                "decision": mv.tags.get("alpr_decision", "-"),
                "decided by": mv.tags.get("alpr_decided_by", "-"),
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(mv.creation_timestamp / 1000)),
            })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


# --------------------------------------------------------------------------------------------- commands


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib import stack

    if args.action == "up":
        statuses = stack.up(settings, timeout=args.timeout)
    elif args.action == "down":
        stopped = stack.down(settings)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
        return 0
    else:
        statuses = stack.status(settings)
    for s in statuses:
        state = "healthy" if s.healthy else ("running" if s.running else "stopped")
        print(f"{s.name:18} {state:8} pid={s.pid or '-':<8} {s.url or ''}")
    if args.action == "status" and not all(s.healthy for s in statuses):
        return 1
    return 0


def _spec_from_args(name: str | None, data: str) -> Any:
    from alpr_pipelines.lib.datasets import load_data_yaml
    from alpr_pipelines.lib.models import PLATE, VEHICLE, spec_for

    if name:
        lowered = name.lower()
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
    _require_mlflow(settings)
    dataset_cfg: dict[str, Any] = {"source": "synthetic"} if args.data == "synthetic" else {
        "source": "yaml", "data_yaml": str(Path(args.data).resolve())}
    train_cfg = {"model": args.model, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                 "device": args.device, "lr0": args.lr0, "optimizer": args.optimizer, "restart": args.restart}
    ops: dict[str, Any] = {
        f"{spec.key}__dataset": {"config": dataset_cfg},
        f"{spec.key}__weights": {"config": train_cfg},
    }
    keys = [["datasets", "golden_set"], *[[spec.key, s] for s in ("dataset", "weights", "onnx", "tensorrt")]]
    if args.register:
        if args.stage not in ("None", "Staging"):
            raise CliError(f"--stage must be None or Staging at registration, got {args.stage}; use `alpr promote`")
        ops[f"{spec.key}__registered_version"] = {"config": {"initial_stage": args.stage}}
        keys.append([spec.key, "registered_version"])
    result = _run_job(settings, f"train_and_register_{spec.key}", {"ops": ops},
                      asset_selection=[dg.AssetKey(k) for k in keys])
    weights = result.output_for_node(f"{spec.key}__weights")
    print(f"MLflow run: {weights['run_id']} ({'reused' if weights['reused'] else 'trained'})")
    print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in weights["final_metrics"].items()))
    if args.register:
        version = result.output_for_node(f"{spec.key}__registered_version")
        print(f"registered {version['name']} version {version['version']} ({version['stage']}; "
              f"aliases {', '.join(version['aliases']) or '-'})")
    return 0


def cmd_register_existing(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.existing import RegisterExistingError, register_existing

    _require_mlflow(settings)
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
            path = convert_coco(Path(args.annotations), Path(args.images), Path(args.out), args.val_fraction)
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

    _require_mlflow(settings)
    if args.force and not args.reason:
        raise CliError("--force needs --reason TEXT: every forced promotion says why")
    spec = spec_for(args.model)
    config: dict[str, Any] = {"model": spec.key, "version": str(args.version), "stage": args.stage,
                              "force": args.force, "decided_by": f"alpr promote ({_person()})"}
    if args.reason:
        config["reason"] = args.reason
    result = _run_job(settings, "promote_version", {"ops": {"gate_and_promote": {"config": config}}})
    record = result.output_for_node("gate_and_promote")
    print(f"{spec.registered_name} v{args.version}: {record['verdict']}")
    for reason in record.get("reasons", []):
        print(f"  {reason}")
    return 0 if record["verdict"] != "rejected" else 1


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib.models import spec_for

    _require_mlflow(settings)
    spec = spec_for(args.model)
    config: dict[str, Any] = {"model": spec.key, "decided_by": f"alpr rollback ({_person()})"}
    if args.reason:
        config["reason"] = args.reason
    result = _run_job(settings, "rollback_model", {"ops": {"rollback_production": {"config": config}}})
    out = result.output_for_node("rollback_production")
    print(f"{spec.registered_name}: Production v{out['demoted']} -> v{out['restored']}")
    return 0


def cmd_edge(args: argparse.Namespace, settings: Settings) -> int:
    """The edge service; imports only the edge runtime (no dagster, torch or ultralytics)."""
    import logging

    from alpr_pipelines.edge.loader import ModelLoadError
    from alpr_pipelines.edge.service import ConfigError, EdgeConfig, EdgeService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = EdgeConfig.load(args.config)
        if args.port is not None:
            config.http_port = args.port
        service = EdgeService(config)
    except (ConfigError, ModelLoadError) as exc:
        raise CliError(str(exc)) from exc
    serving = [f"{s.name} v{s.version}" if s.version else f"{s.name} ({s.metadata.get('source')})"
               for s in service.detector.slots()]
    print("edge: serving " + ", ".join(serving), file=sys.stderr)
    try:
        frames = service.run(max_frames=args.max_frames)
    except KeyboardInterrupt:
        service.stop()
        frames = dict(service.frames_by_camera)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    summary = {"frames": frames, "versions": {k: sorted(v) for k, v in service.versions_seen.items()}}
    print(json.dumps(summary), file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    _require_mlflow(settings)
    print_table(versions_table(settings))
    return 0


def _wait_for_decisions(settings: Settings, versions: list[dict], timeout: float) -> None:
    """Wait for the promotion sensor (in the Dagster daemon) to decide on each registered candidate."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    pending = {(v["name"], v["version"]) for v in versions}
    if timeout <= 0 or not pending:
        return
    print(f"waiting up to {timeout:.0f}s for the promotion sensor to gate the candidates...")
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, version in sorted(pending):
            tags = client.get_model_version(name, version).tags
            if tags.get("alpr_decision"):
                print(f"  {name} v{version}: {tags['alpr_decision']} ({tags.get('alpr_decided_by', '?')})")
                for reason in tags.get("alpr_decision_reasons", "").split("; "):
                    print(f"    {reason}")
                pending.discard((name, version))
        time.sleep(2)
    for name, version in sorted(pending):
        print(f"  {name} v{version}: no decision yet; the sensor runs in the Dagster daemon (see the Dagster UI)")


def _demo_edge(settings: Settings) -> None:
    """The edge service on the sample clip, following the registry's Production versions."""
    import yaml

    from alpr_pipelines.edge.loader import ModelLoadError
    from alpr_pipelines.edge.service import EdgeConfig, EdgeService
    from alpr_pipelines.lib.synth import write_sample_clip

    clip = settings.home / "clips" / "sample.avi"
    if not clip.is_file():
        write_sample_clip(clip, frames=60, width=640, height=384)
    edge_dir = settings.home / "edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    config_path = edge_dir / "cameras.yaml"
    config_path.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": settings.mlflow_tracking_uri, "stage": "Production", "poll_interval": 10},
        "cameras": [{"name": "sample", "source": str(clip), "fps_limit": 0}],
        "output": {"detections": str(edge_dir / "detections.jsonl")},
        "http": {"host": "127.0.0.1", "port": 0},
        "cache_dir": str(edge_dir / "cache"),
    }))
    print(f"\nedge: `alpr edge --config {config_path}` on the sample clip {clip} ...")
    try:
        service = EdgeService(EdgeConfig.load(config_path))
    except ModelLoadError as exc:
        print(f"edge: not started: {exc}")
        return
    started = time.monotonic()
    frames = service.run(serve_http=False)["sample"]
    elapsed = time.monotonic() - started
    lines = (edge_dir / "detections.jsonl").read_text().splitlines()[-frames:]
    results = [json.loads(line) for line in lines]
    print(f"edge: {frames} frames in {elapsed:.1f}s ({frames / elapsed:.1f} fps), "
          f"{sum(len(r['vehicles']) for r in results)} vehicles, {sum(len(r['plates']) for r in results)} plates; "
          f"versions used: " + ", ".join(f"{k} v{'/'.join(sorted(v))}" for k, v in service.versions_seen.items()))
    print(f"edge: detections in {edge_dir / 'detections.jsonl'}")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.defs.presets import demo_run_config
    from alpr_pipelines.lib import stack

    started = time.monotonic()
    print(f"state folder: {settings.home}")
    print("starting the embedded stack (MLflow, Dagster webserver and daemon)...")
    stack.up(settings)
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    print("materializing datasets -> training -> exports -> registry for both detectors...")
    result = _run_job(settings, "train_and_register", demo_run_config())
    print(f"\nDagster run {result.run_id} succeeded in {time.monotonic() - started:.0f}s.")
    registered = [result.output_for_node(f"{key}__registered_version") for key in ("vehicle", "plate")]
    for v in registered:
        print(f"{v['name']} version {v['version']}: {'new' if v['created'] else 'unchanged, reused'}")
    _wait_for_decisions(settings, registered, timeout=args.wait)
    print()
    print_table(versions_table(settings))
    _demo_edge(settings)
    print(f"\nDagster UI: http://{settings.dagster_host}:{settings.dagster_port}/asset-groups"
          f"\nMLflow UI:  {settings.mlflow_tracking_uri}/#/models"
          "\nStop the stack with `alpr stack down`.")
    return 0


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr", description="Train, gate and ship ALPR detectors.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="the embedded MLflow + Dagster stack on loopback")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health (up)")
    s.set_defaults(func=cmd_stack)

    t = sub.add_parser("train", help="train one detector (the seed's train_with_mlflow.py)")
    t.add_argument("--data", required=True, help="Ultralytics data YAML, or 'synthetic' for generated scenes")
    t.add_argument("--model", default="yolo11n.yaml", help="base model: yolo11n.yaml (scratch) or a local .pt")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--imgsz", type=int, default=640)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--device", default="", help="CUDA device id or 'cpu' (default: CUDA 0 when present)")
    t.add_argument("--lr0", type=float, default=0.01)
    t.add_argument("--optimizer", default="AdamW", choices=["SGD", "Adam", "AdamW"])
    t.add_argument("--register", action="store_true", help="register the model after training")
    t.add_argument("--stage", default="Staging", choices=["None", "Staging"], help="initial stage when registering")
    t.add_argument("--name", help="plate-detector or vehicle-detector (default: from the dataset's classes)")
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
    d.set_defaults(func=cmd_dataset)

    pr = sub.add_parser("promote", help="gate a version against the champion and promote it (or force it)")
    pr.add_argument("--model", required=True, help="plate, vehicle, or the registered name")
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

    demo = sub.add_parser("demo", help="start the stack and train, export, register and gate both detectors")
    demo.add_argument("--wait", type=float, default=180.0, help="seconds to wait for the promotion decisions")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from alpr_pipelines.lib.stack import StackError

    try:
        return int(args.func(args, load_settings()))
    except (CliError, StackError) as exc:
        print(f"alpr: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
