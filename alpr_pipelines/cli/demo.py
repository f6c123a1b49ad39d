"""`alpr demo`: the stack, the whole chain with the default recipe, the gate, and the edge on a sample clip scored
against the boxes and plate texts the generator drew."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from alpr_pipelines.cli.common import print_table, run_job, versions_table
from alpr_pipelines.settings import Settings

CLIP_FRAMES, CLIP_WIDTH, CLIP_HEIGHT = 60, 640, 384


def width_line(tags: dict[str, str]) -> str | None:
    """A reader version's golden exact match by plate width (its evaluation, cached on the version) as one line;
    None for a detector, a version not evaluated, or a tag this release cannot read."""
    from alpr_pipelines.lib.promotion import EVAL_TAG

    try:
        bands = json.loads(tags.get(EVAL_TAG) or "{}").get("by_plate_width") or []
        parts = [f"{row['band']} {row['exact_match']:.2f} ({row['read']}/{row['plates']})" for row in bands]
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    return ("golden plates read exactly, by plate width: " + "; ".join(parts)) if parts else None


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
                if line := width_line(tags):
                    print(f"    {line}")
                pending.discard((name, version))
        time.sleep(2)
    for name, version in sorted(pending):
        print(f"  {name} v{version}: no decision yet; the sensor runs in the Dagster daemon (see the Dagster UI)")


def _demo_edge(settings: Settings) -> None:
    """The edge service on the sample clip, following the registry's Production versions; then its detections
    against the clip's known boxes, and an annotated strip of frames to look at."""
    import yaml

    from alpr_pipelines.edge.loader import ModelLoadError
    from alpr_pipelines.edge.service import EdgeConfig, EdgeService
    from alpr_pipelines.lib.signing import PUBLIC_NAME
    from alpr_pipelines.lib.synth import GENERATOR_VERSION, write_sample_clip

    clip = settings.home / "clips" / "sample.avi"
    made_by = clip.with_suffix(".generator")  # the clip's truth is recomputed: it must come from this generator
    if not clip.is_file() or not made_by.is_file() or made_by.read_text() != GENERATOR_VERSION:
        write_sample_clip(clip, frames=CLIP_FRAMES, width=CLIP_WIDTH, height=CLIP_HEIGHT)
        made_by.write_text(GENERATOR_VERSION)
    edge_dir = settings.home / "edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    config_path = edge_dir / "cameras.yaml"
    public_key = settings.keys_dir / PUBLIC_NAME  # the stack's release key: the edge loads only what it signed
    config_path.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": settings.mlflow_tracking_uri, "stage": "Production", "poll_interval": 10,
                     **({"trusted_keys": [str(public_key)]} if public_key.is_file() else {})},
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
    if frames == 0:
        print(f"edge: the sample clip {clip} gave no frames; nothing to score")
        return
    lines = (edge_dir / "detections.jsonl").read_text().splitlines()[-frames:]
    results = [json.loads(line) for line in lines]
    print(f"edge: {frames} frames in {elapsed:.1f}s ({frames / elapsed:.1f} fps), "
          f"{sum(len(r['vehicles']) for r in results)} vehicles, {sum(len(r['plates']) for r in results)} plates; "
          f"versions used: " + ", ".join(f"{k} v{'/'.join(sorted(v))}" for k, v in service.versions_seen.items()))
    print(f"edge: detections in {edge_dir / 'detections.jsonl'}")
    for line in clip_report(results):
        print(f"edge: {line}")
    print(f"edge: {reading_report(results)}")
    print(f"edge: annotated frames (white: the clip's true boxes) in {annotated_strip(clip, results, edge_dir)}")


def clip_report(results: list[dict]) -> list[str]:
    """Precision and recall of the edge's detections on the sample clip against the boxes the generator drew
    (IoU >= 0.5; a vehicle must also have the right class)."""
    from alpr_pipelines.lib.evaluation import Agreement, agreement
    from alpr_pipelines.lib.synth import clip_scene

    totals = {"plates": Agreement(0, 0, 0), "vehicles": Agreement(0, 0, 0)}
    for r in results:
        truth = clip_scene(0, int(r["frame"]), CLIP_WIDTH, CLIP_HEIGHT)
        for kind, boxes in (("plates", truth.plates), ("vehicles", truth.vehicles)):
            totals[kind] += agreement([(d["class"], d["box"]) for d in r[kind]],
                                      [(b.cls, [b.x1, b.y1, b.x2, b.y2]) for b in boxes])
    return [f"{kind}: recall {a.recall:.2f}, precision {a.precision:.2f} ({a.matched} of {a.truth} found, "
            f"{a.detected} reported)" for kind, a in totals.items()]


def clip_readings(results: list[dict]) -> Iterator[tuple[int, list, dict[int, str | None]]]:
    """Per frame of the edge's results on the clip: its index, the clip's plates wide enough to read
    (``edge.reader.MIN_READ_WIDTH``), and the edge's text for each of them it detected (IoU >= 0.5), by plate."""
    import numpy as np

    from alpr_pipelines.edge.reader import MIN_READ_WIDTH
    from alpr_pipelines.lib.evaluation import match_boxes
    from alpr_pipelines.lib.synth import clip_scene

    for r in results:
        index = int(r["frame"])
        truth = [b for b in clip_scene(0, index, CLIP_WIDTH, CLIP_HEIGHT).plates if b.x2 - b.x1 >= MIN_READ_WIDTH]
        read: dict[int, str | None] = {}
        if truth and r["plates"]:
            pairs = match_boxes(np.array([[b.x1, b.y1, b.x2, b.y2] for b in truth]),
                                np.array([d["box"] for d in r["plates"]], float))
            read = {t: r["plates"][d].get("text") for t, d in pairs}
        yield index, truth, read


def reading_report(results: list[dict]) -> str:
    """How many of the clip's plates wide enough to read (``edge.reader.MIN_READ_WIDTH``) were detected (IoU >= 0.5)
    and read exactly, and where the rest were lost: read otherwise (the reader, or a box that cut the plate) or not
    detected (the plate detector), e.g. "plates read exactly: 0.91 (182/200; ...); 12 detected and read otherwise,
    6 not detected"."""
    from alpr_pipelines.edge.reader import MIN_READ_WIDTH
    from alpr_pipelines.lib.reader_data import normalize_text

    if not any("reader_version" in r for r in results):
        return "plates read: no plate reader served the clip (alpr-plate-ocr has no Production version)"
    exact = detected = total = 0
    for _, truth, read in clip_readings(results):
        total += len(truth)
        detected += len(read)
        exact += sum(text == normalize_text(truth[t].text) for t, text in read.items())
    if not total:
        return "plates read exactly: no plate in the clip is wide enough to read"
    return (f"plates read exactly: {exact / total:.2f} ({exact}/{total}; plates at least {MIN_READ_WIDTH} px wide); "
            f"{detected - exact} detected and read otherwise, {total - detected} not detected")


def annotated_strip(clip: Path, results: list[dict], out_dir: Path, every: int = 12) -> Path:
    """Every ``every``-th frame of the clip with the true boxes (thin, white) and the edge's detections (vehicles
    green, plates red, with confidence), tiled two across into one JPEG."""
    import cv2
    import numpy as np

    from alpr_pipelines.lib.synth import clip_scene

    tiles = []
    for r in results[::every]:
        truth = clip_scene(0, int(r["frame"]), CLIP_WIDTH, CLIP_HEIGHT)
        image = truth.image.copy()
        for b in truth.vehicles + truth.plates:
            cv2.rectangle(image, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (255, 255, 255), 1)
        for kind, colour in (("vehicles", (0, 200, 0)), ("plates", (0, 0, 255))):
            for d in r[kind]:
                x1, y1, x2, y2 = (int(v) for v in d["box"])
                cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
                cv2.putText(image, f"{d['class']} {d['confidence']:.2f}", (x1, max(10, y1 - 3)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
        tiles.append(image)
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + 2]) for i in range(0, len(tiles), 2)])
    path = out_dir / "annotated_strip.jpg"
    cv2.imwrite(str(path), grid, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from alpr_pipelines import stack
    from alpr_pipelines.defs.presets import recipe_run_config
    from alpr_pipelines.lib.models import MODEL_SPECS

    started = time.monotonic()
    print(f"state folder: {settings.home}")
    print("starting the embedded stack (MLflow, Dagster webserver and daemon)...")
    stack.up(settings)
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    print("materializing datasets -> training -> exports -> registry for both detectors and the plate reader...")
    result = run_job(settings, "train_and_register", recipe_run_config())
    print(f"\nDagster run {result.run_id} succeeded in {time.monotonic() - started:.0f}s.")
    registered = [result.output_for_node(f"{key}__registered_version") for key in MODEL_SPECS]
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
