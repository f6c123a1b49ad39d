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
        before = {p for p in root.rglob("*") if "artifacts" not in p.parts and "cache" not in p.parts}
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
        created = {p for p in root.rglob("*") if "artifacts" not in p.parts and "cache" not in p.parts} - before
        outside = sorted(str(p) for p in created if not str(p).startswith(str(root / "files"))
                         and p.name not in ("mlflow.db", "mlflow.log", "mlflow.db-journal"))
        evil = [str(p) for p in Path("/tmp").glob("evil*")]
    return {"versions": count, "loaded": loaded, "not_serving_last_good": not_serving_good,
            "files_written_outside_cache": outside + evil, "per_kind": per_kind}


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
        ensure_ownership(p, MODEL_NAMES, "alpr-training")
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
    from alpr_pipelines.lib.models import MODEL_SPECS, PLATE

    base = write_synthetic_views(work / "datasets" / "base", MODEL_SPECS.values(), seed=5,
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


FIGURES = ("kills", "tamper", "auth", "datasets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (CI smoke)")
    ap.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES))
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--tampered", type=int, default=100)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    kills, tampered = (8, 14) if args.quick else (args.kills, args.tampered)
    work = Path(tempfile.mkdtemp(prefix="alpr-faults-"))
    result: dict[str, Any] = {"machine": machine(), "command": " ".join(["bench/faults.py", *sys.argv[1:]])}
    try:
        started = time.monotonic()
        if "kills" in args.only:
            result["kills"] = figure_kills(kills, work)
        if "tamper" in args.only:
            result["tamper"] = figure_tamper(tampered, work)
        if "auth" in args.only:
            result["auth"] = figure_auth(work)
        if "datasets" in args.only:
            result["datasets"] = figure_datasets(work)
        result["seconds"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failures = []
    if "kills" in result and (result["kills"]["failed_restarts"] or result["kills"]["unverified_loads"]):
        failures.append("kills")
    if "tamper" in result and (result["tamper"]["loaded"] or result["tamper"]["not_serving_last_good"]
                               or result["tamper"]["files_written_outside_cache"]):
        failures.append("tamper")
    if "auth" in result and (result["auth"]["unauthorized_successes"] or result["auth"]["unexpected"]):
        failures.append("auth")
    if "datasets" in result and result["datasets"]["passed_or_unnamed"]:
        failures.append("datasets")
    result["failed_figures"] = failures
    write_json(result, args.json)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
