"""The edge runtime against a real `mlflow server`: loader sources and fallbacks, verified cache, hot swap."""

import contextlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from alpr_pipelines.edge.detector import YOLOv11Detector
from alpr_pipelines.edge.loader import IntegrityError, MLflowModelLoader, ModelLoadError
from alpr_pipelines.edge.service import EdgeConfig, EdgeService
from alpr_pipelines.edge.swap.policy import SwapPolicy
from alpr_pipelines.edge.swap.poller import RegistryPoller
from alpr_pipelines.edge.swap.prefetch import SpareFetcher
from alpr_pipelines.edge.swap.turns import FrameTurns
from alpr_pipelines.lib.datasets import validate_dataset
from alpr_pipelines.lib.exports import export_onnx
from alpr_pipelines.lib.models import PLATE, VEHICLE
from alpr_pipelines.lib.registry import register_version, set_stage
from alpr_pipelines.lib.synth import write_sample_clip
from alpr_pipelines.lib.training import TrainingParams, train
from alpr_pipelines_tests.conftest import registry_cache_in_front


@pytest.fixture(scope="module")
def registry(module_mlflow_server):
    return module_mlflow_server


@pytest.fixture(scope="module")
def models(registry, tiny_views, tmp_path_factory):
    """Both detectors, tiny-trained, each registered twice (v1 Production, v2 not yet promoted)."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    work = tmp_path_factory.mktemp("edge-models")
    out = {}
    for spec in (VEHICLE, PLATE):
        fp = validate_dataset(tiny_views[spec.key]).fingerprint
        result = train(spec, tiny_views[spec.key], fp, TrainingParams(epochs=1, imgsz=64, batch=4, workers=0), client,
                       "edge-tests", work)
        onnx = Path(export_onnx(result.best_pt, work / spec.key, 64).path or "")
        versions = []
        for i in range(2):
            weights = work / f"{spec.key}-{i}.pt"
            weights.write_bytes(result.best_pt.read_bytes() + bytes([i]))  # distinct content -> distinct version
            versions.append(register_version(client, spec, result.run_id, {"weights": weights, "onnx": onnx}, 64,
                                             {}).version)
        set_stage(client, spec.registered_name, versions[0], "Production", archive_existing=True)
        out[spec.key] = {"versions": versions, "onnx": onnx}
    return out


def test_loader_resolves_alias_and_verifies(registry, models, tmp_path):
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    assert loader._mlflow_connected
    path, meta = loader.get_model_path("alpr-plate-detector", fallback_filename="yolo11n-plate.onnx")
    assert meta["source"] == "mlflow" and meta["version"] == models["plate"]["versions"][0]
    assert meta["alias"] == "production" and meta["stage"] == "Production"
    assert Path(path).suffix == ".onnx" and Path(path).is_relative_to(tmp_path / "cache")
    names = {m["name"] for m in loader.list_models()}
    assert {"alpr-plate-detector", "alpr-vehicle-detector"} <= names


def test_stage_without_alias_is_found_the_seeds_way(registry, models, tmp_path):
    """A version put in Production with the original design's transition_model_version_stage only (no alias yet)."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    spec = replace(PLATE, registered_name="alpr-plate-detector-stage-only")
    run_id = client.get_model_version("alpr-plate-detector", models["plate"]["versions"][0]).run_id
    v = register_version(client, spec, run_id, {"onnx": models["plate"]["onnx"]}, 64, {})
    client.transition_model_version_stage(spec.registered_name, v.version, "Production")
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    remote = loader.current_version(spec.registered_name)
    assert remote is not None and remote.version == v.version and remote.via == "stage:Production"


def test_stage_selected_by_env(registry, models, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    set_stage(MlflowClient(registry.uri), "alpr-plate-detector", models["plate"]["versions"][1], "Staging")
    monkeypatch.setenv("MLFLOW_MODEL_STAGE", "Staging")
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    _, meta = loader.get_model_path("alpr-plate-detector")
    assert meta["version"] == models["plate"]["versions"][1] and meta["alias"] == "candidate"
    monkeypatch.setenv("MLFLOW_MODEL_STAGE", "Archived")
    with pytest.raises(ValueError, match="MLFLOW_MODEL_STAGE"):
        MLflowModelLoader(tracking_uri=registry.uri)


class _Unreachable(requests.Session):
    """The registry's address, with the registry away."""

    def request(self, *args, **kwargs):
        raise requests.ConnectionError("connection refused (test)")


def test_registry_away_falls_back_to_cache_then_local(registry, models, tmp_path):
    cache = tmp_path / "cache"
    MLflowModelLoader(tracking_uri=registry.uri, cache_dir=cache).get_model_path("alpr-vehicle-detector")
    away = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=cache, timeout=1, session=_Unreachable())
    assert not away._mlflow_connected
    path, meta = away.get_model_path("alpr-vehicle-detector", fallback_filename="missing.onnx")
    assert meta["source"] == "cache" and meta["version"] == models["vehicle"]["versions"][0]
    # The cache is keyed by registry: another registry (whose version numbers may repeat) never serves these files.
    other = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=cache, timeout=1)
    with pytest.raises(ModelLoadError, match="no verified cached version"):
        other.get_model_path("alpr-vehicle-detector")
    # A fresh box with the registry away: the local file.
    local = tmp_path / "models" / "yolo11n.onnx"
    local.parent.mkdir()
    local.write_bytes(models["vehicle"]["onnx"].read_bytes())
    fresh = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=tmp_path / "empty", timeout=1,
                              models_dir=local.parent)
    path, meta = fresh.get_model_path("alpr-vehicle-detector", fallback_filename="yolo11n.onnx")
    assert meta["source"] == "local" and path == str(local)
    # Nothing anywhere: a clear error naming each place it looked.
    with pytest.raises(ModelLoadError, match="no verified cached version; no local file"):
        fresh.get_model_path("alpr-vehicle-detector", fallback_filename="nope.onnx")


def test_pt_files_are_refused(tmp_path):
    pt = tmp_path / "yolo11n.pt"
    pt.write_bytes(b"pickle")
    loader = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=tmp_path / "c", timeout=1)
    with pytest.raises(ModelLoadError, match="never unpickles"):
        loader.get_model_path("alpr-plate-detector", fallback_filename=str(pt))
    with pytest.raises(ModelLoadError, match="never"):
        YOLOv11Detector(vehicle_model_path=str(pt), plate_model_path=str(pt), use_mlflow=False)


class _Interrupted(requests.RequestException):
    pass


def test_interrupted_download_is_never_loaded(registry, models, tmp_path, monkeypatch):
    """Cut the model download at a random point: nothing lands in the cache, the next try succeeds."""
    import random

    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    remote = loader.current_version("alpr-plate-detector")
    real_get = loader.http.get
    cut_at = random.Random(7).randint(1, models["plate"]["onnx"].stat().st_size - 1)

    class Cut:
        def __init__(self, resp):
            self.resp, self.headers = resp, resp.headers

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.resp.close()

        def raise_for_status(self):
            self.resp.raise_for_status()

        def iter_content(self, size):
            sent = 0
            for chunk in self.resp.iter_content(size):
                if sent + len(chunk) >= cut_at:
                    yield chunk[: cut_at - sent]
                    raise _Interrupted(f"connection lost after {cut_at} bytes")
                sent += len(chunk)
                yield chunk

    def flaky_get(url, *args, **kwargs):
        resp = real_get(url, *args, **kwargs)
        return Cut(resp) if url.endswith("model.onnx") else resp

    monkeypatch.setattr(loader.http, "get", flaky_get)
    with pytest.raises(_Interrupted):
        loader.fetch(remote)
    vdir = loader.store / "alpr-plate-detector" / remote.version
    assert not (vdir / "model.onnx").exists()
    assert not list(vdir.glob("*partial*"))
    assert loader.cached("alpr-plate-detector") is None
    monkeypatch.setattr(loader.http, "get", real_get)
    path, _ = loader.fetch(remote)
    assert path.is_file()


def test_sha256_mismatch_is_rejected(registry, models, tmp_path):
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    remote = loader.current_version("alpr-plate-detector")
    vdir = loader.store / "alpr-plate-detector" / remote.version
    loader.fetch(remote)
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["files"]["onnx"]["sha256"] = "0" * 64  # a cached manifest altered on disk ...
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    (vdir / "model.onnx").unlink()
    path, manifest = loader.fetch(remote)  # ... is not the registry's: fetched again, and the model verifies
    assert manifest["files"]["onnx"]["sha256"] != "0" * 64 and path.is_file()
    # A model altered in the artifact store (a corrupted or tampered transfer) never lands in the cache.
    path.unlink()
    folder = remote.source.split("/", 2)[2]  # this version's own copy in the store (others hold the same bytes)
    stored = next(registry.root.rglob(f"{remote.run_id}/artifacts/{folder}/artifacts/model.onnx"))
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        with pytest.raises(IntegrityError, match="does not match"):
            loader.fetch(remote)
    finally:
        stored.write_bytes(original)
    assert not (vdir / "model.onnx").exists()
    # A cached file altered on disk after verification is not used either.
    ok = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache2")
    path, _ = ok.get_model_path("alpr-plate-detector")
    Path(path).write_bytes(b"bit rot")
    assert ok.cached("alpr-plate-detector") is None


def _serving_one_version(registry, models, tmp_path, name: str):
    """A vehicle detector registered as ``name`` with one good version in Production, and a detector serving it."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    spec = replace(VEHICLE, registered_name=name)
    run_id = client.get_model_version("alpr-vehicle-detector", models["vehicle"]["versions"][0]).run_id
    good = register_version(client, spec, run_id, {"onnx": models["vehicle"]["onnx"]}, 64, {})
    set_stage(client, spec.registered_name, good.version, "Production")
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    detector = YOLOv11Detector(loader=loader, vehicle_model_name=spec.registered_name)
    return client, spec, run_id, good, loader, detector


def test_bad_new_version_keeps_the_old_one_serving(registry, models, tmp_path):
    client, spec, run_id, good, loader, detector = _serving_one_version(registry, models, tmp_path, "alpr-vehicle-detector-broken")
    assert detector.vehicle.version == good.version
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx model")
    bad = register_version(client, spec, run_id, {"onnx": garbage}, 64, {})
    set_stage(client, spec.registered_name, bad.version, "Production", archive_existing=True)
    events = []
    poller = RegistryPoller(loader, detector.vehicle, detector.policy, on_event=lambda kind, data: events.append(kind))
    assert poller.poll_once() is False
    assert "swap_failed" in events and detector.vehicle.version == good.version
    assert poller.stats.failed_swaps == 1


def test_a_version_whose_outputs_do_not_fit_its_class_names_never_serves(registry, models, tmp_path):
    """On the CPU a new version proves itself with one run on its smallest input before it serves (no full-size
    warm-up: its first frame plans the shape); a network that answers with other rows than its metadata's class
    names need is turned away there, and the serving version stays."""
    import onnx
    client, spec, run_id, good, loader, detector = _serving_one_version(registry, models, tmp_path, "alpr-vehicle-detector-misnamed")
    assert detector.vehicle.model.first_run_costly is False  # a dynamic-shape model on the CPU provider
    misnamed = onnx.load(str(models["vehicle"]["onnx"]))
    names = next(p for p in misnamed.metadata_props if p.key == "names")
    names.value = "{0: 'car', 1: 'truck', 2: 'bus', 3: 'motorcycle', 4: 'bicycle', 5: 'van'}"
    path = tmp_path / "misnamed" / "model.onnx"
    path.parent.mkdir()
    onnx.save(misnamed, str(path))
    bad = register_version(client, spec, run_id, {"onnx": path}, 64, {})
    set_stage(client, spec.registered_name, bad.version, "Production", archive_existing=True)
    events: list[tuple[str, dict]] = []
    poller = RegistryPoller(loader, detector.vehicle, detector.policy, on_event=lambda kind, data: events.append((kind, data)))
    try:
        assert poller.poll_once() is False
    finally:
        detector.policy.close()
    failed = [data for kind, data in events if kind == "swap_failed"]
    assert failed and "class scores per anchor" in failed[0]["error"]
    assert detector.vehicle.version == good.version


def test_poller_backs_off_while_the_registry_is_away(tmp_path):
    loader = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=tmp_path, timeout=0.5)
    from alpr_pipelines.edge.detector import ModelSlot

    poller = RegistryPoller(loader, ModelSlot("alpr-plate-detector"), SwapPolicy(), interval=2.0, jitter=0.0,
                            max_backoff=30.0)
    assert poller.next_delay() == 2.0
    delays = []
    for _ in range(5):
        poller.poll_once()
        delays.append(poller.next_delay())
    assert delays == [4.0, 8.0, 16.0, 30.0, 30.0] and not poller.stats.reachable


def test_hot_swap_during_a_stream(registry, models, tmp_path):
    """Promote a new version while frames flow: every frame is processed, frames after the swap carry it."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.uri)
    set_stage(client, "alpr-plate-detector", models["plate"]["versions"][0], "Production", archive_existing=True)
    clip = write_sample_clip(tmp_path / "clip.avi", frames=80, width=256, height=160)
    config = tmp_path / "cameras.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": registry.uri, "poll_interval": 0.3},
        "cameras": [{"name": "cam", "source": str(clip), "fps_limit": 20}],
        "output": {"detections": str(tmp_path / "out.jsonl")},
        "http": {"port": 0},
        "cache_dir": str(tmp_path / "cache"),
    }))
    service = EdgeService(EdgeConfig.load(config))
    port = service.start_http()
    old, new = models["plate"]["versions"]
    assert service.detector.plate.version == old

    seen_health = []

    def promote_soon():
        time.sleep(1.0)
        set_stage(client, "alpr-plate-detector", new, "Production", archive_existing=True)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # /health answers while frames flow, and shows the swap
            seen_health.append(requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json())
            if seen_health[-1]["models"]["alpr-plate-detector"]["version"] == new:
                break
            time.sleep(0.2)

    promoter = threading.Thread(target=promote_soon)
    promoter.start()
    frames = service.run(serve_http=False)
    promoter.join()
    assert frames == {"cam": 80}
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(80))  # no frame dropped
    versions = [r["plate_version"] for r in rows]
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}
    assert 0 < first_new < 80
    assert seen_health[0]["models"]["alpr-plate-detector"]["loaded"]
    assert seen_health[-1]["models"]["alpr-plate-detector"]["version"] == new


def _policies() -> dict[int, tuple[int, int]]:
    """This process's threads: native id -> (scheduling policy, real-time priority), from /proc."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = int(fields[38]), int(fields[37])  # stat fields 41 (policy) and 40 (rt_priority)
    return out


def test_frames_and_the_new_versions_threads_run_at_the_realtime_priority(registry, models, tmp_path):
    """realtime_priority: the frame loop, and the pool threads of a session created during a swap, at SCHED_FIFO;
    the poller and the rest of the process at their own priority."""
    import os

    from mlflow import MlflowClient

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        pytest.skip(f"this process may not use SCHED_FIFO ({exc}); it needs CAP_SYS_NICE or an rtprio limit")
    client = MlflowClient(registry.uri)
    old, new = models["plate"]["versions"]
    set_stage(client, "alpr-plate-detector", old, "Production", archive_existing=True)
    clip = write_sample_clip(tmp_path / "clip.avi", frames=60, width=256, height=160)
    config = tmp_path / "cameras.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": registry.uri, "poll_interval": 0.3},
        "cameras": [{"name": "cam", "source": str(clip), "fps_limit": 20}],
        "output": {"detections": str(tmp_path / "out.jsonl")},
        "cache_dir": str(tmp_path / "cache"),
        "realtime_priority": 3,
    }))
    service = EdgeService(EdgeConfig.load(config))
    seen: dict[str, object] = {}

    def promote_and_look() -> None:
        time.sleep(0.5)
        seen["python"] = {t.name: t.native_id for t in threading.enumerate()}
        seen["before"] = _policies()
        set_stage(client, "alpr-plate-detector", new, "Production", archive_existing=True)
        deadline = time.monotonic() + 20
        while service.detector.plate.version != new and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["after"] = _policies()
        seen["python_after"] = {t.native_id for t in threading.enumerate()}

    looker = threading.Thread(target=promote_and_look)
    looker.start()
    frames = service.run(serve_http=False)
    looker.join()
    assert frames == {"cam": 60}
    assert service.detector.plate.version == new, "the swap happened within the clip"
    python, before, after = seen["python"], seen["before"], seen["after"]
    fifo = (os.SCHED_FIFO, 3)
    assert before[python["camera-cam"]] == fifo  # the frame loop
    for name in ("MainThread", "poller-alpr-plate-detector", "poller-alpr-vehicle-detector"):
        assert before[python[name]][0] == os.SCHED_OTHER, name
    started = set(after) - set(before) - set(python.values()) - seen["python_after"]
    assert started, "the new version's session started pool threads"
    assert {after[tid] for tid in started} == {fifo}, "they serve at the frames' priority"
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_metrics_and_health_endpoints(registry, models, tmp_path):
    clip = write_sample_clip(tmp_path / "clip.avi", frames=5, width=256, height=160)
    config = tmp_path / "cameras.yaml"
    config.write_text(yaml.safe_dump({
        "registry": {"tracking_uri": registry.uri, "poll_interval": 5},
        "cameras": [{"name": "cam", "source": "clip.avi"}],
        "output": {"detections": "out.jsonl", "annotated_dir": "annotated"}, "http": {"port": 0}, "cache_dir": "cache",
    }))
    service = EdgeService(EdgeConfig.load(config))
    service.run(serve_http=False)
    port = service.start_http()  # run() stops its server at the end; serve again to read the final numbers
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in ("alpr_inference_latency_seconds", "alpr_detection_confidence", "alpr_model_version_info",
                 "alpr_model_swaps_total", "alpr_registry_poll_errors_total", "alpr_frames_total"):
        assert name in metrics
    assert 'alpr_frames_total{camera="cam"} 5.0' in metrics
    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    assert health["status"] == "ok" and all(m["loaded"] for m in health["models"].values())
    service.stop()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5 and clip.is_file()
    assert len(list((tmp_path / "annotated" / "cam").glob("*.jpg"))) == 5


def test_config_errors_are_clear(tmp_path):
    from alpr_pipelines.edge.service import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        EdgeConfig.load(tmp_path / "none.yaml")
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"cameras": [{"name": "x"}]}))
    with pytest.raises(ConfigError, match="has no 'source'"):
        EdgeConfig.load(bad)


def test_int8_version_is_what_a_cpu_box_loads(registry, models, tiny_views, tmp_path):
    """The pipeline's INT8 file, kept when accuracy holds, is what the loader picks on a CPU-only box; pinning
    fp32 (ALPR_EDGE_PRECISION) gets the FP32 file of the same version."""
    from mlflow import MlflowClient

    from alpr_pipelines.edge.backends.onnx import OnnxDetector
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.quantize import build_int8

    client = MlflowClient(registry.uri)
    onnx = models["plate"]["onnx"]
    splits = load_data_yaml(tiny_views["plate"])
    result = build_int8(onnx, split_images(splits, "train"), split_images(splits, "val"))
    assert result.path is not None and result.details["accepted"], result
    assert abs(result.details["drop"]) <= result.details["max_drop"] or result.details["drop"] < 0
    spec = replace(PLATE, registered_name="alpr-plate-detector-int8")
    run_id = client.get_model_version("alpr-plate-detector", models["plate"]["versions"][0]).run_id
    v = register_version(client, spec, run_id, {"onnx": onnx, "onnx_int8": Path(result.path)}, 64, {})
    set_stage(client, spec.registered_name, v.version, "Production", archive_existing=True)

    path, meta = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "a").get_model_path(
        spec.registered_name)
    assert Path(path).name == "model.int8.onnx" and meta["version"] == v.version
    detector = OnnxDetector(path, providers=["CPUExecutionProvider"])
    assert detector.precision == "int8" and detector.dynamic
    pinned, _ = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "b",
                                  precision="fp32").get_model_path(spec.registered_name)
    assert Path(pinned).name == "model.onnx"


def test_int8_that_loses_accuracy_is_not_published(models, tiny_views):
    from alpr_pipelines.lib.datasets import load_data_yaml, split_images
    from alpr_pipelines.lib.quantize import build_int8

    splits = load_data_yaml(tiny_views["plate"])
    result = build_int8(models["plate"]["onnx"], split_images(splits, "train"), split_images(splits, "val"),
                        max_drop=-1.0)  # an impossible bar: every INT8 model "loses" accuracy
    assert result.path is None and "keep the FP32 model" in (result.skipped_reason or "")
    assert result.details is not None and result.details["accepted"] is False


def test_crops_in_one_batch_match_one_by_one(models):
    """detect_many (one batched run, each crop fitted to the model's size as detect fits it, then padded) finds
    exactly what per-crop detection finds when the crops share a shape, and boxes of mixed-size crops stay inside
    their own crop."""

    from alpr_pipelines.edge.backends.onnx import OnnxDetector
    from alpr_pipelines.lib.synth import generate_scene

    det = OnnxDetector(models["plate"]["onnx"], providers=["CPUExecutionProvider"])
    assert det.dynamic
    frame = generate_scene(0, "clip", 0, 640, 384).image
    same = [frame[0:128, 0:224], frame[100:228, 300:524], frame[256:384, 416:640]]
    batched = det.detect_many(same, conf=0.01)
    single = [det.detect(c, conf=0.01) for c in same]
    for b, s in zip(batched, single, strict=True):
        assert len(b) == len(s)
        assert np.allclose([[d.x1, d.y1, d.x2, d.y2, d.confidence] for d in b],
                           [[d.x1, d.y1, d.x2, d.y2, d.confidence] for d in s], atol=0.01)
    mixed = [frame[10:150, 20:260], frame[100:300, 300:620], frame[200:260, 0:90]]
    for crop, dets in zip(mixed, det.detect_many(mixed, conf=0.01), strict=True):
        for d in dets:
            assert 0 <= d.x1 <= d.x2 <= crop.shape[1] and 0 <= d.y1 <= d.y2 <= crop.shape[0]


def test_loader_through_the_registry_cache_gets_the_same_verified_files(registry, models, tmp_path):
    """Edge boxes point MLFLOW_TRACKING_URI at the registry cache: the lookups are cached, the manifest and model
    downloads stream through it, and the result is what MLflow itself gives."""
    with registry_cache_in_front(registry.uri, tmp_path / "rc") as uri:
        through = MLflowModelLoader(tracking_uri=uri, cache_dir=tmp_path / "through")
        assert through._mlflow_connected
        path, meta = through.get_model_path("alpr-vehicle-detector")
    direct_path, direct_meta = MLflowModelLoader(tracking_uri=registry.uri,
                                                 cache_dir=tmp_path / "direct").get_model_path("alpr-vehicle-detector")
    assert meta["source"] == "mlflow" and (meta["version"], meta["sha256"]) == (direct_meta["version"],
                                                                                direct_meta["sha256"])
    assert Path(path).read_bytes() == Path(direct_path).read_bytes()


def test_box_optimized_copy_detects_the_same_and_is_made_once(models, tmp_path):
    import shutil

    from alpr_pipelines.edge.backends.box_optimized import optimized_for_this_box
    from alpr_pipelines.edge.backends.onnx import OnnxDetector

    onnx = shutil.copy(models["vehicle"]["onnx"], tmp_path / "model.onnx")
    optimized = optimized_for_this_box(onnx)
    assert optimized is not None and optimized.parent == tmp_path and ".box-" in optimized.name
    frame = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    plain, fast = OnnxDetector(onnx), OnnxDetector(onnx, optimized=optimized)
    assert fast.names == plain.names and fast.stride == plain.stride and fast.dynamic == plain.dynamic
    tensor, _ = plain.prepare(frame)
    assert np.allclose(plain.raw(tensor), fast.raw(tensor), atol=1e-4)
    made = optimized.stat().st_mtime_ns
    assert optimized_for_this_box(onnx) == optimized and optimized.stat().st_mtime_ns == made  # reused
    optimized.write_bytes(b"altered on disk")
    again = optimized_for_this_box(onnx)
    assert again == optimized and again.read_bytes() != b"altered on disk"  # made again, never loaded altered
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert optimized_for_this_box(garbage) is None and not list(tmp_path.glob("*garbage*box*"))


def test_prefetch_child_fetches_verifies_and_optimizes(registry, models, tmp_path):
    from dataclasses import replace as dc_replace

    from alpr_pipelines.edge.integrity import sha256_file
    from alpr_pipelines.edge.swap.prefetch import fetch_prepared

    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    remote = loader.current_version("alpr-plate-detector")
    path, _, optimized = fetch_prepared(loader, remote, optimize=False)  # a slot that loads the file itself
    assert optimized is None and not list(path.parent.glob("*.box-*"))
    path, manifest, optimized = fetch_prepared(loader, remote)
    assert path.is_relative_to(loader.store / "alpr-plate-detector" / remote.version)
    assert sha256_file(path) == manifest["files"]["onnx"]["sha256"]
    assert optimized is not None and optimized.parent == path.parent  # pruned with the version
    assert loader.fetch(remote) == (path, manifest)  # the same verified cache the edge process reads
    with pytest.raises(ModelLoadError, match="not a runs:/ URI"):
        fetch_prepared(loader, dc_replace(remote, source="s3://elsewhere/model"))


def test_prefetch_takes_turns_with_frames_that_keep_the_cores_busy(registry, models, tmp_path):
    """A box kept busy by its frames leaves a lowest-priority child no idle cores; the poller's slices do."""
    import threading

    from alpr_pipelines.edge.swap.prefetch import SLICE_S, fetch_prepared

    class CountingTurns(FrameTurns):
        def __init__(self) -> None:
            super().__init__()
            self.taken: dict[str, int] = {}

        def count(self) -> None:
            name = threading.current_thread().name
            self.taken[name] = self.taken.get(name, 0) + 1

        def __enter__(self) -> None:
            super().__enter__()
            self.count()

        @contextlib.contextmanager
        def loading_turn(self):
            with super().loading_turn():
                self.count()
                yield

    turns, stop = CountingTurns(), threading.Event()
    a = np.random.default_rng(0).random((384, 384), dtype=np.float32)

    def frames() -> None:  # both cores busy (BLAS threads) during every frame, frames back to back
        while not stop.is_set():
            with turns:
                deadline = time.perf_counter() + 3 * SLICE_S
                while time.perf_counter() < deadline:
                    a @ a

    loop = threading.Thread(target=frames, name="frame-loop", daemon=True)
    loop.start()
    try:
        loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
        remote = loader.current_version("alpr-vehicle-detector")
        path, _, optimized = fetch_prepared(loader, remote, turns=turns)
    finally:
        stop.set()
        loop.join(10)
    assert path.is_file() and optimized is not None and path.is_relative_to(tmp_path / "cache")
    assert turns.taken.get("frame-loop", 0) > 0 and turns.taken.get(threading.current_thread().name, 0) > 0


def test_prefetch_spare_is_used_once_and_ends_with_close(registry, models, tmp_path):
    """A spare child imports ahead and serves one fetch; a closed Spare starts no more, and its waiting child exits."""
    from alpr_pipelines.edge.swap.prefetch import fetch_prepared

    spare = SpareFetcher()
    spare.ready()
    child = spare.take()
    assert child is not None and spare.take() is None
    loader = MLflowModelLoader(tracking_uri=registry.uri, cache_dir=tmp_path / "cache")
    remote = loader.current_version("alpr-plate-detector")
    path, _, _ = fetch_prepared(loader, remote, child=child)
    assert path.is_file() and child.returncode == 0  # used up by the fetch
    spare.ready()
    assert spare._child is None  # two fetches took from it and neither is over: none starts during a swap
    spare.done()
    spare.ready()
    assert spare._child is None  # one is still under way
    spare.done()
    spare.ready()
    waiting = spare._child
    assert waiting is not None and waiting.poll() is None
    spare.close()
    assert waiting.returncode == 0  # told to end (stdin closed), not killed
    spare.ready()
    assert spare.take() is None


def test_an_unsigned_version_is_refused_counted_and_the_signed_one_keeps_serving(registry, models, tmp_path):
    """A box with trusted keys serves a signed version; the registry then names an unsigned one: the poller refuses
    it before loading anything, ``/metrics`` counts the refusal, and the signed version serves on."""
    from mlflow import MlflowClient

    from alpr_pipelines.lib.signing import generate_key_pair, load_signing_key

    client = MlflowClient(registry.uri)
    spec = replace(VEHICLE, registered_name="alpr-vehicle-detector-signed")
    run_id = client.get_model_version("alpr-vehicle-detector", models["vehicle"]["versions"][0]).run_id
    private, public = generate_key_pair(tmp_path / "keys")
    good = register_version(client, spec, run_id, {"onnx": models["vehicle"]["onnx"]}, 64, {},
                            signer=load_signing_key(private))
    set_stage(client, spec.registered_name, good.version, "Production")
    plate = replace(PLATE, registered_name="alpr-plate-detector-signed")
    signed_plate = register_version(client, plate, run_id, {"onnx": models["plate"]["onnx"]}, 64, {},
                                    signer=load_signing_key(private))
    set_stage(client, plate.registered_name, signed_plate.version, "Production")
    config = EdgeConfig(cameras=[], tracking_uri=registry.uri, vehicle_name=spec.registered_name,
                        plate_name=plate.registered_name,
                        cache_dir=str(tmp_path / "cache"), trusted_keys=[str(public)])
    service = EdgeService(config)
    detector = service.detector
    assert detector.vehicle.version == good.version
    unsigned_file = tmp_path / "unsigned" / "model.onnx"
    unsigned_file.parent.mkdir()
    unsigned_file.write_bytes(models["vehicle"]["onnx"].read_bytes() + b"\0")
    unsigned = register_version(client, spec, run_id, {"onnx": unsigned_file}, 64, {})
    set_stage(client, spec.registered_name, unsigned.version, "Production", archive_existing=True)
    poller = RegistryPoller(service.loader, detector.vehicle, detector.policy, on_event=service._on_event)
    try:
        assert poller.poll_once() is False
        assert poller.poll_once() is False  # the same refused version is not fetched (nor counted) again
    finally:
        detector.policy.close()
    assert detector.vehicle.version == good.version
    refused = service.metrics.registry.get_sample_value("alpr_model_versions_refused_total",
                                                        {"model": spec.registered_name})
    assert refused == 1
    assert not (service.loader.store / spec.registered_name / unsigned.version / "model.onnx").exists()
