"""`alpr stack` and `alpr demo`: the embedded stack and the end-to-end demo."""

from __future__ import annotations

import argparse
import json
import os
import time

from alpr_pipelines.cli.common import _run_job, print_table, versions_table
from alpr_pipelines.settings import Settings


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines.lib import stack

    if args.action == "up":
        statuses = stack.up(settings, timeout=args.timeout, profile=args.profile, env_file=args.env_file)
    elif args.action == "down":
        stopped = stack.down(settings)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
        return 0
    else:
        statuses = stack.status(settings)
    for s in statuses:
        state = "healthy" if s.healthy else ("running" if s.running else "stopped")
        print(f"{s.name:18} {state:8} pid={s.pid or '-':<8} {s.url or ''}")
    cache = next((s for s in statuses if s.name == "registry-cache" and s.healthy), None)
    if args.action == "up" and cache is not None:
        print(f"edge boxes: MLFLOW_TRACKING_URI={cache.url} (the registry cache in front of MLflow), "
              "MLFLOW_TRACKING_USERNAME=alpr-edge")
    if args.action == "status" and not all(s.healthy for s in statuses):
        return 1
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


