"""The fault suite: what the trust chain and the edge cache do when things go wrong, on real servers, counted.

    .venv/bin/python bench/faults.py                 # every figure at full size (make faults), writes the JSON result
    .venv/bin/python bench/faults.py --quick         # small counts, for CI smoke
    .venv/bin/python bench/faults.py --only kills tamper

Figures (docs/reliability.md):
- kills: an edge process fetching, recording and pruning versions is SIGKILLed at a random moment, then a fresh
  process starts from the same cache; counted: restarts that failed, restarts that served a file whose sha256 is not
  a registered version's.
- tamper: versions altered every way an attacker with bucket or registry access could (model only, manifest only,
  both, a signature by an untrusted key, a forged signature, no signature, a validly signed manifest with traversal
  names); counted: versions loaded, restarts not serving the last good version, files written outside the cache.
- auth: the auth audit (``alpr_pipelines.stack.auth_audit``) against ``mlflow server --app-name alpr-auth`` with the
  production profile's auth config; counted: refused actions that succeeded, allowed ones that failed.
- datasets: the bad-dataset catalogue through ``validate_dataset``; counted: cases that passed or did not name the
  culprit file.

Each server is a real ``mlflow server`` on loopback, started here and stopped by PID.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import common  # noqa: F401  (sets the environment and sys.path first)
import requests
from common import free_port, machine, write_json

NAME = "alpr-plate-detector"
MODEL_MB = 24  # big enough that a kill often lands mid-download


@contextmanager
def mlflow_server(root: Path, extra: list[str] | None = None, env: dict[str, str] | None = None):
    port = free_port()
    log = (root / "mlflow.log").open("ab")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
         str(root / "artifacts"), "--serve-artifacts", *(extra or [])],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {root / 'mlflow.log'}")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _model_file(path: Path, seed: int, mb: int = MODEL_MB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(mb * 2**20))
    return path


def _registry(uri: str, root: Path):
    """A client, a run, the release key pair and a ``register(seed, signer)`` helper."""
    from mlflow import MlflowClient

    from alpr_pipelines.lib.models import PLATE
    from alpr_pipelines.lib.registry import register_version
    from alpr_pipelines.lib.signing import generate_key_pair, load_signing_key

    client = MlflowClient(uri)
    exp = client.create_experiment(f"faults-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(exp).info.run_id
    private, public = generate_key_pair(root / "keys")
    signer = load_signing_key(private)
    spec = replace(PLATE)

    def register(seed: int, sign: Any = signer, mb: int = MODEL_MB) -> str:
        onnx = _model_file(root / "files" / str(seed) / "model.onnx", seed, mb)
        v = register_version(client, spec, run_id, {"onnx": onnx}, 320, {}, signer=sign, initial_stage="None")
        return v.version

    return client, register, public, signer


def _stored(client, root: Path, version: str, file_name: str) -> Path:
    from alpr_pipelines.lib.registry import version_artifact_path

    mv = client.get_model_version(NAME, version)
    folder = version_artifact_path(mv.source)
    return next((root / "artifacts").rglob(f"{mv.run_id}/artifacts/{folder}/artifacts/{file_name}"))


# --------------------------------------------------------------------------------------------- kills

KILL_CHILD = """
import json, sys
from alpr_pipelines.edge.loader import MLflowModelLoader, RemoteVersion, manifest_sha256
uri, cache, pub, versions, name = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
loader = MLflowModelLoader(tracking_uri=uri, cache_dir=cache, trusted_keys=[pub])
print("up", flush=True)
prev = None
while True:
    for v in versions:
        mv = loader._get("/api/2.0/mlflow/model-versions/get", name=name, version=v)["model_version"]
        tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
        remote = RemoteVersion(name=name, version=v, run_id=mv["run_id"], source=mv["source"], via="stage:Production",
                               tags=tags)
        path, manifest = loader.fetch(remote)
        loader.mark_current(name, v, path, manifest_sha256(manifest, path), remote.via, tags)
        loader.prune(name, {v, prev} - {None})
        prev = v
"""

RESTART_CHILD = """
import json, sys
from alpr_pipelines.edge.loader import MLflowModelLoader
from alpr_pipelines.edge.integrity import sha256_file
import requests
uri, cache, pub, away, name = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "away", sys.argv[5]


class Away(requests.Session):  # the registry's address, with the registry down
    def request(self, *a, **k):
        raise requests.ConnectionError("registry away")


loader = MLflowModelLoader(tracking_uri=uri, cache_dir=cache, trusted_keys=[pub], timeout=2,
                           session=Away() if away else None)
path, meta = loader.get_model_path(name)
print(json.dumps({"sha256": sha256_file(path), "source": meta["source"], "version": meta["version"]}))
"""


def figure_kills(count: int, work: Path) -> dict[str, Any]:
    root = work / "kills"
    root.mkdir()
    with mlflow_server(root) as uri:
        client, register, public, _ = _registry(uri, root)
        versions = [register(seed) for seed in (1, 2, 3)]
        from alpr_pipelines.lib.registry import set_stage

        set_stage(client, NAME, versions[-1], "Production")
        allowed = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "files").rglob("model.onnx")}
        cache = root / "cache"
        rng = random.Random(0)
        failed, unverified, sources, delays = 0, 0, {}, []
        for i in range(count):
            child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, uri, str(cache), str(public),
                                      json.dumps(versions), NAME], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
            assert child.stdout is not None
            child.stdout.readline()  # imported and connected: the kill lands in fetch/record/prune
            delay = rng.uniform(0.0, 1.5)
            delays.append(delay)
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait()
            down = i % 4 == 3  # every fourth restart has the registry away: it must start from the cache
            restart = subprocess.run([sys.executable, "-c", RESTART_CHILD, uri, str(cache), str(public),
                                      "away" if down else "up", NAME], capture_output=True, text=True, timeout=120)
            if restart.returncode != 0:
                failed += 1
                continue
            got = json.loads(restart.stdout.strip().splitlines()[-1])
            sources[got["source"]] = sources.get(got["source"], 0) + 1
            if got["sha256"] not in allowed:
                unverified += 1
    return {"kills": count, "failed_restarts": failed, "unverified_loads": unverified,
            "restart_sources": sources, "kill_delay_s": [round(min(delays), 3), round(max(delays), 3)],
            "model_mb": MODEL_MB}


# --------------------------------------------------------------------------------------------- tamper

KINDS = ("model only", "manifest only", "model and manifest", "untrusted key", "forged signature", "unsigned",
         "traversal names (validly signed)")


def _tamper(kind: str, client, root: Path, register, signer, seed: int, attacker) -> str:
    """A new version of NAME, altered as ``kind`` says; returns its version."""
    from alpr_pipelines.edge.trust import MANIFEST_SHA_TAG, SIGNATURE_TAG

    if kind == "unsigned":
        return register(seed, sign=None, mb=1)
    if kind == "untrusted key":
        return register(seed, sign=attacker, mb=1)
    version = register(seed, mb=1)
    model, manifest = _stored(client, root, version, "model.onnx"), _stored(client, root, version, "manifest.json")
    if kind == "model only":
        model.write_bytes(model.read_bytes()[:-1] + b"\x01")
    elif kind == "manifest only":
        body = json.loads(manifest.read_text())
        body["note"] = "altered"
        manifest.write_text(json.dumps(body))
    elif kind == "model and manifest":
        model.write_bytes(b"evil" + model.read_bytes())
        body = json.loads(manifest.read_text())
        body["files"]["onnx"]["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        manifest.write_text(json.dumps(body))
    elif kind == "forged signature":
        body = json.loads(manifest.read_text())
        body["note"] = "altered"
        raw = json.dumps(body).encode()
        manifest.write_bytes(raw)
        client.set_model_version_tag(NAME, version, MANIFEST_SHA_TAG, hashlib.sha256(raw).hexdigest())
        client.set_model_version_tag(NAME, version, SIGNATURE_TAG, base64.b64encode(os.urandom(64)).decode())
    elif kind.startswith("traversal"):
        # The release key itself signs a manifest whose names climb out of the cache (a compromised build).
        body = json.loads(manifest.read_text())
        body["files"]["onnx"]["name"] = random.Random(seed).choice(
            ["../../evil.onnx", "/tmp/evil.onnx", "a/../../evil.onnx", "evil\x00.onnx", "x" * 300 + ".onnx"])
        raw = json.dumps(body).encode()
        manifest.write_bytes(raw)
        for key, value in {MANIFEST_SHA_TAG: hashlib.sha256(raw).hexdigest(), **signer.sign_tags(raw)}.items():
            client.set_model_version_tag(NAME, version, key, value)
    client.set_model_version_tag(NAME, version, "alpr_fault", kind)
    return version


def figure_tamper(count: int, work: Path) -> dict[str, Any]:
    from alpr_pipelines.edge.loader import MLflowModelLoader
    from alpr_pipelines.lib.registry import set_stage
    from alpr_pipelines.lib.signing import generate_key_pair, load_signing_key

    root = work / "tamper"
    root.mkdir()
    with mlflow_server(root) as uri:
        client, register, public, signer = _registry(uri, root)
        attacker = load_signing_key(generate_key_pair(root / "attacker")[0])
        good = register(0, mb=1)
        set_stage(client, NAME, good, "Production", archive_existing=True)
        box = root / "box"
        cache = box / "cache"
        loader = MLflowModelLoader(tracking_uri=uri, cache_dir=cache, trusted_keys=[str(public)])
        _, meta = loader.get_model_path(NAME)
        assert meta["version"] == good
        started = time.time()

        def box_files() -> set[Path]:  # everything outside the artifact store and the registered files' sources
            return {p for p in root.rglob("*") if not p.is_relative_to(root / "artifacts")
                    and not p.is_relative_to(root / "files")}

        before = box_files()
        per_kind: dict[str, dict[str, int]] = {k: {"versions": 0, "refused": 0} for k in KINDS}
        loaded, not_serving_good = 0, 0
        for i in range(count):
            kind = KINDS[i % len(KINDS)]
            version = _tamper(kind, client, root, register, signer, 1000 + i, attacker)
            set_stage(client, NAME, version, "Production", archive_existing=True)
            _, meta = loader.get_model_path(NAME)  # the registry names the tampered version
            per_kind[kind]["versions"] += 1
            if meta.get("version") == version:
                loaded += 1
            else:
                per_kind[kind]["refused"] += 1
            if meta.get("version") != good:
                not_serving_good += 1
        created = box_files() - before
        outside = sorted(str(p) for p in created if not p.is_relative_to(cache)
                         and p.name not in ("mlflow.db", "mlflow.log", "mlflow.db-journal"))
        # A traversal name that stayed inside the cache folder is still a file the manifest should not have made.
        outside += sorted(str(p) for p in created if p.is_relative_to(cache) and "evil" in p.name)
        outside += [str(p) for p in Path("/tmp").glob("evil*") if p.stat().st_mtime >= started]
    return {"versions": count, "loaded": loaded, "not_serving_last_good": not_serving_good,
            "files_written_outside_cache": outside, "per_kind": per_kind}


# --------------------------------------------------------------------------------------------- outage

class _Server:
    """A process started here, stopped (or frozen) by PID."""

    def __init__(self, command: list[str], health: str, env: dict[str, str], log: Path):
        self.command, self.health, self.env, self.log = command, health, env, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.health, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.command[0]} did not start; see {self.log}")
            time.sleep(0.3)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


def _tiny_onnx(work: Path, names: dict[int, str]) -> Path:
    from alpr_pipelines.lib.exports import export_onnx
    from alpr_pipelines.lib.training import offline_ultralytics

    offline_ultralytics()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", nc=len(names), verbose=False)
    model.names = dict(names)
    pt = work / f"untrained-{len(names)}.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}, "epoch": -1, "optimizer": None}, pt)
    return Path(export_onnx(pt, work / f"onnx-{len(names)}", 64).path or "")


def _variant(onnx: Path, dest: Path, salt: int) -> Path:
    """The same graph as another file: a metadata entry differs, so the registry sees another version."""
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx))
    entry = model.metadata_props.add()
    entry.key, entry.value = "alpr_fault_variant", str(salt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx_lib.save(model, str(dest))
    return dest


def _register_variant(client, spec, run_id: str, onnx: Path, root: Path, salt: int) -> str:
    """Register a variant of ``onnx`` (``_variant``) as a new version of ``spec``'s model, stage None."""
    from alpr_pipelines.lib.registry import register_version

    copy = _variant(onnx, root / "versions" / f"{spec.key}-{salt}" / "model.onnx", salt)
    return register_version(client, spec, run_id, {"onnx": copy}, 64, {}, initial_stage="None").version


class _GatedStack:
    """``alpr stack up`` in its own ``ALPR_HOME`` under ``root``, the vehicle gate's floors at 0 (an equal model
    passes), one run to register variants of an untrained vehicle model under, and the golden set written once
    (before any promotion reads it). Use as a context manager: ``alpr stack down`` on the way out."""

    def __init__(self, root: Path):
        self.root, self.home = root, root / "home"
        self.home.mkdir(parents=True)
        policy = root / "gate.yaml"
        policy.write_text("vehicle: {min_map50: 0.0, min_map50_95: 0.0, min_class_ap50: 0.0, "
                          "require_parity: false}\n")
        mport = free_port()
        self.env = {**os.environ, "ALPR_HOME": str(self.home), "ALPR_MLFLOW_PORT": str(mport),
                    "ALPR_DAGSTER_PORT": str(free_port()), "ALPR_GATE_POLICY": str(policy),
                    "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mport}"}
        self.env.pop("DAGSTER_HOME", None)
        self.alpr = str(Path(sys.executable).parent / "alpr")

    def up(self) -> None:
        up = subprocess.run([self.alpr, "stack", "up"], env=self.env, capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            raise RuntimeError(f"alpr stack up failed: {up.stderr[-2000:]}")

    def __enter__(self) -> _GatedStack:
        from mlflow import MlflowClient

        from alpr_pipelines.lib.golden import GoldenSpec, write_golden
        from alpr_pipelines.lib.models import VEHICLE

        self.up()
        try:
            self.client = MlflowClient(self.env["MLFLOW_TRACKING_URI"])
            self.run_id = self.client.create_run(self.client.create_experiment("faults")).info.run_id
            self.onnx = _tiny_onnx(self.root, VEHICLE.names)
            write_golden(self.home / "datasets" / "golden", GoldenSpec())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([self.alpr, "stack", "down"], env=self.env, capture_output=True, timeout=120)

    def register(self, salt: int) -> str:
        from alpr_pipelines.lib.models import VEHICLE

        return _register_variant(self.client, VEHICLE, self.run_id, self.onnx, self.root, salt)


def figure_outage(down_s: float, work: Path) -> dict[str, Any]:
    """The registry away while an edge service streams: MLflow killed and restarted, then the S3 store frozen (moto
    keeps its objects in memory, so it is stopped with SIGSTOP rather than killed) and resumed."""
    import threading

    import boto3
    import yaml
    from mlflow import MlflowClient

    from alpr_pipelines.edge.service import EdgeConfig, EdgeService
    from alpr_pipelines.lib.models import PLATE, VEHICLE
    from alpr_pipelines.lib.registry import set_stage
    from alpr_pipelines.lib.synth import write_sample_clip
    from alpr_pipelines.stack.process import bin_path

    root = work / "outage"
    root.mkdir()
    s3_port, port = free_port(), free_port()
    s3_env = {"AWS_ACCESS_KEY_ID": "faults", "AWS_SECRET_ACCESS_KEY": "faults", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = _Server([bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                 f"http://127.0.0.1:{s3_port}/moto-api/", s3_env, root / "s3.log")
    mlflow = _Server([bin_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
                      f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", "s3://alpr-mlflow-artifacts",
                      "--serve-artifacts"], f"http://127.0.0.1:{port}/health",
                     {**s3_env, "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
                      "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, root / "mlflow.log")
    uri = f"http://127.0.0.1:{port}"
    poll, frames_per_s = 1.0, 5
    result: dict[str, Any] = {"down_s": down_s, "poll_interval_s": poll}
    edge = None
    try:
        s3.start()
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", **{k.lower(): v for k, v in s3_env.items()
                                                                          if k != "AWS_DEFAULT_REGION"},
                     region_name="us-east-1").create_bucket(Bucket="alpr-mlflow-artifacts")
        mlflow.start()
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("faults")).info.run_id
        vehicle_onnx, plate_onnx = _tiny_onnx(root, VEHICLE.names), _tiny_onnx(root, PLATE.names)

        def new_version(spec, onnx: Path, salt: int, production: bool = True) -> str:
            v = _register_variant(client, spec, run_id, onnx, root, salt)
            if production:
                set_stage(client, spec.registered_name, v, "Production", archive_existing=True)
            return v

        v1, p1 = new_version(VEHICLE, vehicle_onnx, 1), new_version(PLATE, plate_onnx, 1)
        seconds = 2 * down_s + 180
        clip = write_sample_clip(root / "clip.avi", frames=int(seconds * frames_per_s) + 200, width=320, height=192)
        config = root / "cameras.yaml"
        config.write_text(yaml.safe_dump({
            "registry": {"tracking_uri": uri, "poll_interval": poll},
            "cameras": [{"name": "gate", "source": str(clip), "fps_limit": frames_per_s}],
            "output": {"detections": str(root / "detections.jsonl")}, "http": {"port": 0},
            "cache_dir": str(root / "edge-cache")}))
        edge = EdgeService(EdgeConfig.load(config))
        assert edge.detector.vehicle.version == v1 and edge.detector.plate.version == p1
        runner = threading.Thread(target=edge.run, kwargs={"serve_http": False}, daemon=True)
        runner.start()
        time.sleep(5)

        def wait_for(version: str, limit: float) -> float | None:
            start = time.monotonic()
            while time.monotonic() - start < limit:
                if edge.detector.vehicle.version == version:
                    return time.monotonic() - start
                time.sleep(0.2)
            return None

        # MLflow killed for down_s, then started again on the same port and stores.
        mlflow.signal(signal.SIGKILL)
        mlflow.proc.wait()
        time.sleep(down_s)
        backoff_at_return = max(p.next_delay() for p in edge.pollers)
        mlflow.start()
        returned = time.monotonic()
        v2 = new_version(VEHICLE, vehicle_onnx, 2)
        took = wait_for(v2, 300)
        result["mlflow"] = {"killed_for_s": down_s, "swap_after_return_s": None if took is None else
                            round(time.monotonic() - returned, 1), "poll_delay_at_return_s": round(backoff_at_return, 1),
                            "serving_after_return": edge.detector.vehicle.version}
        # S3 frozen for down_s while the registry names a new version: lookups work, downloads cannot.
        v3 = new_version(VEHICLE, vehicle_onnx, 3, production=False)  # its files reach the store first
        s3.signal(signal.SIGSTOP)
        set_stage(client, VEHICLE.registered_name, v3, "Production", archive_existing=True)
        time.sleep(down_s)
        serving_while_frozen = edge.detector.vehicle.version
        s3.signal(signal.SIGCONT)
        returned = time.monotonic()
        took = wait_for(v3, 300)
        result["s3"] = {"frozen_for_s": down_s, "served_while_frozen": serving_while_frozen,
                        "swap_after_return_s": None if took is None else round(time.monotonic() - returned, 1),
                        "versions": {"before": v2, "named_during": v3}}
        time.sleep(3)
        alive = runner.is_alive()
        edge.stop()
        runner.join(60)
        rows = [json.loads(line) for line in (root / "detections.jsonl").read_text().splitlines()]
        frames = [r["frame"] for r in rows]
        times = [r["time"] for r in rows]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        result.update({"crashed": not alive, "frames": len(frames), "frames_contiguous": frames == list(range(len(frames))),
                       "longest_gap_between_frames_s": round(max(gaps), 2) if gaps else None,
                       "expected_gap_s": round(1 / frames_per_s, 2)})
    finally:
        if edge is not None:
            edge.stop()
        mlflow.stop()
        s3.stop()
    return result


# --------------------------------------------------------------------------------------------- races

JOB_CHILD = """
import sys
import dagster as dg
from alpr_pipelines.definitions import defs
config = {"model": "vehicle", "version": sys.argv[1], "decided_by": "promote_version job (UI)"}
result = defs().get_job_def("promote_version").execute_in_process(
    run_config={"ops": {"gate_and_promote": {"config": config}}}, instance=dg.DagsterInstance.ephemeral(),
    raise_on_error=False)
print("ok" if result.success else "failed")
"""


def figure_races(count: int, work: Path) -> dict[str, Any]:
    """``count`` candidates of one model promoted at once by the daemon's sensor (Staging), ``alpr promote`` (each
    with its own DAGSTER_HOME) and the promote_version job run elsewhere, on the embedded stack; the gate's floors are
    0, so every candidate can win (an equal model passes) and only the lock and the compare-and-swap keep order."""
    from alpr_pipelines.lib.models import VEHICLE
    from alpr_pipelines.lib.registry import set_stage

    with _GatedStack(work / "races") as stack:
        client, env, alpr, root, version = stack.client, stack.env, stack.alpr, stack.root, stack.register
        champion = version(1)
        set_stage(client, VEHICLE.registered_name, champion, "Production")
        racers = [version(2 + i) for i in range(count)]
        actors = {v: ("sensor", "cli", "job")[i % 3] for i, v in enumerate(racers)}
        procs = []
        for v, actor in actors.items():
            if actor == "sensor":
                set_stage(client, VEHICLE.registered_name, v, "Staging")
            elif actor == "cli":
                procs.append(subprocess.Popen([alpr, "promote", "--model", "vehicle", "--version", v],
                                              env={**env, "DAGSTER_HOME": str(root / f"dagster-cli-{v}")},
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            else:
                procs.append(subprocess.Popen([sys.executable, "-c", JOB_CHILD, v], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in procs:
            proc.wait(1800)

        def settled(mv) -> bool:
            tags = mv.tags
            if tags.get("alpr_decision"):
                return True
            attempts = int(tags.get("alpr_promotion_attempts") or 0)
            # a version the sensor follows is retried until a decision; one promoted by hand keeps its error
            return attempts > 0 and actors.get(str(mv.version)) != "sensor"

        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            mvs = {str(mv.version): mv for mv in client.search_model_versions(f"name = '{VEHICLE.registered_name}'")}
            if all(settled(mvs[v]) for v in racers):
                break
            time.sleep(5)
        production = [v for v, mv in mvs.items() if mv.current_stage == "Production"]
        alias = client.get_model_version_by_alias(VEHICLE.registered_name, "production").version
        outcome: dict[str, dict[str, int]] = {}
        errors: dict[str, int] = {}  # the recorded errors, version numbers folded
        unexplained = []
        for v in racers:
            tags = mvs[v].tags
            kind = tags.get("alpr_decision") or ("error recorded" if tags.get("alpr_promotion_error") else "nothing")
            outcome.setdefault(actors[v], {}).setdefault(kind, 0)
            outcome[actors[v]][kind] += 1
            if v not in production and not (tags.get("alpr_decision_reasons") or tags.get("alpr_promotion_error")):
                unexplained.append(v)
            if tags.get("alpr_promotion_error") and not tags.get("alpr_decision"):
                kind = re.sub(r"v\d+", "vN", tags["alpr_promotion_error"])[:110]
                errors[kind] = errors.get(kind, 0) + 1
        from alpr_pipelines.lib.promotion import DECISION_TAG

        promoted = [v for v in racers if mvs[v].tags.get(DECISION_TAG) == "promoted"]
    return {"candidates": count, "actors": {a: sum(1 for x in actors.values() if x == a) for a in ("sensor", "cli", "job")},
            "production_versions": production, "alias_equals_stage": [str(alias)] == production,
            "promotions": len(promoted), "outcomes": outcome, "errors_recorded": errors,
            "losers_without_reason": unexplained}


# --------------------------------------------------------------------------------------------- daemon

def figure_daemon(kills: int, work: Path) -> dict[str, Any]:
    """The Dagster daemon SIGKILLed at a random moment of its sensor's life ``kills`` times, a new candidate
    registered before each kill, the daemon started again by ``alpr stack up``; counted: promotion runs per
    (version, attempt), which the sensor's run keys must keep at one."""
    import dagster as dg

    from alpr_pipelines.lib.models import VEHICLE
    from alpr_pipelines.lib.registry import set_stage

    rng = random.Random(1)
    with _GatedStack(work / "daemon") as stack:
        client, home = stack.client, stack.home
        candidates = []
        for i in range(kills):
            v = stack.register(i + 1)
            set_stage(client, VEHICLE.registered_name, v, "Staging")
            candidates.append(v)
            time.sleep(rng.uniform(0.0, 35.0))  # the sensor ticks every 30 s: the kill lands anywhere in a tick
            pid = int((home / "stack" / "run" / "dagster-daemon.pid").read_text().split()[0])
            try:
                os.killpg(pid, signal.SIGKILL)  # the daemon and what it started (its code server)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1)
            stack.up()
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            tags = {v: client.get_model_version(VEHICLE.registered_name, v).tags for v in candidates}
            if all(t.get("alpr_decision") for t in tags.values()):
                break
            time.sleep(5)
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        runs: dict[str, int] = {}
        for run in instance.get_runs(dg.RunsFilter(job_name="promote_version")):
            key = f"{run.tags.get('alpr/version')}:{run.tags.get('alpr/attempt', '1')}"
            runs[key] = runs.get(key, 0) + 1
        duplicated = {k: n for k, n in runs.items() if n > 1}
        first_runs = {v: runs.get(f"{v}:1", 0) for v in candidates}
        undecided = [v for v, t in tags.items() if not t.get("alpr_decision")]
    return {"kills": kills, "versions": len(candidates), "runs": sum(runs.values()),
            "versions_with_one_first_run": sum(1 for n in first_runs.values() if n == 1),
            "duplicated_runs": duplicated, "undecided": undecided}


# --------------------------------------------------------------------------------------------- auth

def figure_auth(work: Path) -> dict[str, Any]:
    from alpr_pipelines.edge.contract import MODEL_NAMES, VEHICLE_MODEL
    from alpr_pipelines.stack import production as prod
    from alpr_pipelines.stack.auth_audit import audit, format_matrix
    from alpr_pipelines.stack.principals import PIPELINE_USER, Principals, ensure_ownership, ensure_users

    root = work / "auth"
    root.mkdir()
    ini = root / "basic_auth.ini"
    ini.write_text(prod.AUTH_INI.format(database_uri=f"sqlite:///{root / 'auth.db'}"))
    secrets = [uuid.uuid4().hex for _ in range(3)]
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": secrets[0],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
    with mlflow_server(root, ["--app-name", "alpr-auth"], env) as uri:
        p = Principals(uri, *secrets)
        ensure_users(p)
        ensure_ownership(p, MODEL_NAMES, ["alpr-training", "alpr-registered-existing"])
        exp = p.call(PIPELINE_USER, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                     params={"experiment_name": "alpr-training"}).json()["experiment"]
        run = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/runs/create",
                     json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]
        root_path = run["artifact_uri"].split(":", 1)[1].lstrip("/")
        p.call(PIPELINE_USER, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{root_path}/model/manifest.json",
               data=b"{}").raise_for_status()
        p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/model-versions/create",
               json={"name": VEHICLE_MODEL, "source": f"runs:/{run['run_id']}/model",
                     "run_id": run["run_id"]}).raise_for_status()
        cells = audit(p, VEHICLE_MODEL)
    unauthorized = [f"{c.principal}: {c.action} ({c.status})" for c in cells if not c.allowed and c.succeeded]
    wrong = [f"{c.principal}: {c.action} ({c.status})" for c in cells if not c.as_expected]
    return {"cells": len(cells), "unauthorized_successes": unauthorized, "unexpected": wrong,
            "matrix": format_matrix(cells)}


# --------------------------------------------------------------------------------------------- datasets

def figure_datasets(work: Path) -> dict[str, Any]:
    import cv2
    import numpy as np

    from alpr_pipelines.lib.datasets import DatasetError, label_path, validate_dataset, write_synthetic_views
    from alpr_pipelines.lib.models import DETECTOR_SPECS, PLATE

    base = write_synthetic_views(work / "datasets" / "base", DETECTOR_SPECS.values(), seed=5,
                                 counts={"train": 6, "val": 3}, width=256, height=160)["plate"]

    def fresh(case: str) -> tuple[Path, Path]:
        dest = work / "datasets" / case
        shutil.copytree(base.parent, dest)
        text = (dest / "data.yaml").read_text().replace(str(base.parent), str(dest))
        (dest / "data.yaml").write_text(text)
        return dest / "data.yaml", sorted((dest / "images" / "train").glob("*.jpg"))[0]

    def huge(img: Path) -> Path:
        ok, png = cv2.imencode(".png", np.full((6000, 8000), 114, np.uint8))
        out = img.with_suffix(".png")
        out.write_bytes(png.tobytes())
        return out

    cases = {
        "unreadable image": lambda y, img: (img.write_bytes(b"not an image"), img)[1],
        "label out of range": lambda y, img: (label_path(img).write_text("0 1.4 0.5 0.2 0.2\n"), label_path(img))[1],
        "unknown class": lambda y, img: (label_path(img).write_text("7 0.5 0.5 0.2 0.2\n"), label_path(img))[1],
        "garbage label": lambda y, img: (label_path(img).write_text("zero 0.5 0.5 0.2 0.2\n"), label_path(img))[1],
        "train/val leak": lambda y, img: (shutil.copyfile(img, y.parent / "images" / "val" / "leak.jpg"),
                                          y.parent / "images" / "val" / "leak.jpg")[1],
        "image too large (header)": lambda y, img: huge(img),
        "download: key": lambda y, img: (y.write_text(y.read_text() + "download: https://example.com/x.zip\n"),
                                         y)[1],
    }
    results = {}
    for case, breakit in cases.items():
        data_yaml, image = fresh(case.replace(" ", "_").replace("/", "_").replace(":", ""))
        culprit = breakit(data_yaml, image)
        try:
            validate_dataset(data_yaml, PLATE.names)
            results[case] = "PASSED VALIDATION"
        except DatasetError as exc:
            results[case] = "named" if str(culprit) in str(exc) or culprit.name in str(exc) else f"unnamed: {exc}"
    return {"cases": results, "passed_or_unnamed": [c for c, r in results.items() if r != "named"]}


FIGURES = ("kills", "tamper", "outage", "races", "daemon", "auth", "datasets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (CI smoke)")
    ap.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES))
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--tampered", type=int, default=100)
    ap.add_argument("--daemon-kills", type=int, default=20)
    ap.add_argument("--racers", type=int, default=20, help="concurrent promotions of one model")
    ap.add_argument("--down-minutes", type=float, default=10.0, help="how long MLflow, then S3, stay away")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    kills, tampered, down_s, racers, daemon_kills = (
        (8, 14, 20.0, 6, 2) if args.quick
        else (args.kills, args.tampered, args.down_minutes * 60, args.racers, args.daemon_kills))
    work = Path(tempfile.mkdtemp(prefix="alpr-faults-"))
    result: dict[str, Any] = {"machine": machine(), "command": " ".join(["bench/faults.py", *sys.argv[1:]])}
    try:
        started = time.monotonic()
        figures = {"kills": lambda: figure_kills(kills, work), "tamper": lambda: figure_tamper(tampered, work),
                   "outage": lambda: figure_outage(down_s, work), "races": lambda: figure_races(racers, work),
                   "daemon": lambda: figure_daemon(daemon_kills, work), "auth": lambda: figure_auth(work),
                   "datasets": lambda: figure_datasets(work)}
        for name, measure in figures.items():
            if name in args.only:
                result[name] = measure()
                print(f"figure {name}: {json.dumps(result[name])}", file=sys.stderr, flush=True)
        result["seconds"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failures = []
    if "kills" in result and (result["kills"]["failed_restarts"] or result["kills"]["unverified_loads"]):
        failures.append("kills")
    if "tamper" in result and (result["tamper"]["loaded"] or result["tamper"]["not_serving_last_good"]
                               or result["tamper"]["files_written_outside_cache"]):
        failures.append("tamper")
    if "outage" in result:
        o = result["outage"]
        gap_ok = o["longest_gap_between_frames_s"] is not None and o["longest_gap_between_frames_s"] < 1.0
        if o["crashed"] or not o["frames_contiguous"] or not gap_ok or o["mlflow"]["swap_after_return_s"] is None \
                or o["s3"]["swap_after_return_s"] is None or o["s3"]["served_while_frozen"] == o["s3"]["versions"]["named_during"]:
            failures.append("outage")
    if "races" in result:
        r = result["races"]
        if len(r["production_versions"]) != 1 or not r["alias_equals_stage"] or r["losers_without_reason"]:
            failures.append("races")
    if "daemon" in result:
        d = result["daemon"]
        if d["duplicated_runs"] or d["undecided"] or d["versions_with_one_first_run"] != d["versions"]:
            failures.append("daemon")
    if "auth" in result and (result["auth"]["unauthorized_successes"] or result["auth"]["unexpected"]):
        failures.append("auth")
    if "datasets" in result and result["datasets"]["passed_or_unnamed"]:
        failures.append("datasets")
    result["failed_figures"] = failures
    write_json(result, args.json)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
