"""The trust chain against a real `mlflow server`: what the edge loader and the promotion evaluator accept.

The files are stand-ins (bytes named ``model.onnx``): trust is decided before anything is loaded.
"""

import hashlib
import json
from pathlib import Path

import pytest

from alpr_pipelines.edge.loader import MLflowModelLoader, RefusedVersion
from alpr_pipelines.edge.trust import MANIFEST_SHA_TAG
from alpr_pipelines.lib.models import ModelSpec
from alpr_pipelines.lib.promotion import PromotionError, download_verified
from alpr_pipelines.lib.registry import register_version, set_stage
from alpr_pipelines.lib.signing import generate_key_pair, load_signing_key


@pytest.fixture()
def world(mlflow_server, mlflow_client, tmp_path, request):
    """A fresh registered model, a run to register into, a release key and a loader that trusts it."""
    spec = ModelSpec(key="plate", registered_name=f"alpr-trust-{request.node.name[:40].replace('_', '-')}",
                     classes=("license_plate",), description="trust test")
    run_id = mlflow_client.create_run(mlflow_client.create_experiment(spec.registered_name)).info.run_id
    private, public = generate_key_pair(tmp_path / "keys")
    loader = MLflowModelLoader(tracking_uri=mlflow_server.uri, cache_dir=tmp_path / "cache",
                               trusted_keys=[str(public)])
    return {"spec": spec, "run_id": run_id, "signer": load_signing_key(private), "loader": loader,
            "client": mlflow_client, "root": mlflow_server.root, "tmp": tmp_path}


def register(world, content: bytes, signed: bool = True, stage: str = "Production"):
    f = world["tmp"] / f"src-{hashlib.sha256(content).hexdigest()[:8]}" / "model.onnx"
    f.parent.mkdir(parents=True)
    f.write_bytes(content)
    v = register_version(world["client"], world["spec"], world["run_id"], {"onnx": f}, 64, {},
                         signer=world["signer"] if signed else None)
    if stage != "None":
        set_stage(world["client"], world["spec"].registered_name, v.version, stage, archive_existing=True)
    return v.version


def stored(world, version: str, name: str) -> Path:
    """The file ``name`` of ``version`` in the server's artifact store (what someone with bucket access writes)."""
    mv = world["client"].get_model_version(world["spec"].registered_name, version)
    folder = mv.source.split("/", 2)[2]
    return next(world["root"].rglob(f"{world['run_id']}/artifacts/{folder}/artifacts/{name}"))


def test_a_signed_version_loads_and_an_unsigned_one_never_replaces_it(world):
    loader, name = world["loader"], world["spec"].registered_name
    good = register(world, b"good model")
    path, meta = loader.get_model_path(name)
    assert meta["source"] == "mlflow" and meta["version"] == good and Path(path).read_bytes() == b"good model"
    unsigned = register(world, b"unsigned model", signed=False)
    with pytest.raises(RefusedVersion, match="unsigned"):
        loader.fetch(loader.current_version(name))
    path, meta = loader.get_model_path(name)  # the registry names the unsigned one: the last verified one serves
    assert meta["source"] == "cache" and meta["version"] == good and unsigned != good
    # Without trusted keys the registry's hash alone is the anchor, and the unsigned version passes it.
    plain = MLflowModelLoader(tracking_uri=loader.tracking_uri, cache_dir=world["tmp"] / "plain", trusted_keys=[])
    assert plain.get_model_path(name)[1]["version"] == unsigned


def test_a_bucket_writer_cannot_swap_model_and_manifest(world):
    """Model and manifest replaced together in the artifact store, consistent with each other: refused by the edge
    (with or without keys) and by the promotion evaluator, because the registry recorded the manifest's hash."""
    name = world["spec"].registered_name
    version = register(world, b"honest model")
    evil = b"evil model"
    stored(world, version, "model.onnx").write_bytes(evil)
    manifest_file = stored(world, version, "manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["onnx"]["sha256"] = hashlib.sha256(evil).hexdigest()
    manifest_file.write_text(json.dumps(manifest))
    for trusted in ([], world["loader"].trusted_key_entries):
        loader = MLflowModelLoader(tracking_uri=world["loader"].tracking_uri, trusted_keys=trusted,
                                   cache_dir=world["tmp"] / f"cache-{len(trusted)}")
        with pytest.raises(RefusedVersion, match="did not write"):
            loader.fetch(loader.current_version(name))
        assert not list((world["tmp"] / f"cache-{len(trusted)}").rglob("model.onnx"))
    with pytest.raises(PromotionError, match="did not write"):
        download_verified(world["client"], name, version, world["tmp"] / "eval" / version)


def test_a_registry_writer_cannot_plant_files_outside_the_cache(world):
    """Someone who can also set registry tags (so the hash matches) but holds no release key: a manifest naming
    ``../../x.pth`` is refused before any path is built, with keys or without."""
    name = world["spec"].registered_name
    version = register(world, b"model", signed=False)
    manifest_file = stored(world, version, "manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["onnx"]["name"] = "../../../planted.pth"
    body = json.dumps(manifest).encode()
    manifest_file.write_bytes(body)
    world["client"].set_model_version_tag(name, version, MANIFEST_SHA_TAG, hashlib.sha256(body).hexdigest())
    plain = MLflowModelLoader(tracking_uri=world["loader"].tracking_uri, cache_dir=world["tmp"] / "c" / "d" / "cache",
                              trusted_keys=[])
    with pytest.raises(RefusedVersion, match="not a plain file name"):
        plain.fetch(plain.current_version(name))
    with pytest.raises(RefusedVersion, match="unsigned"):
        world["loader"].fetch(world["loader"].current_version(name))
    assert not list(world["tmp"].rglob("planted.pth"))


def test_a_hand_registered_version_without_a_manifest_hash_is_refused(world):
    """The original design's way: create_model_version over a run folder, no pipeline tags."""
    client, name = world["client"], world["spec"].registered_name
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{world['run_id']}/model", world["run_id"])
    set_stage(client, name, mv.version, "Production")
    loader = world["loader"]
    with pytest.raises(RefusedVersion, match="alpr register-existing"):
        loader.fetch(loader.current_version(name))


def test_a_candidate_that_cannot_be_evaluated_is_rejected_with_how_to_register_it(world):
    """The original design's hand registration in Staging: a decision is recorded, and it leaves Staging."""
    from alpr_pipelines.lib.gate import GatePolicy
    from alpr_pipelines.lib.golden import GoldenSplits
    from alpr_pipelines.lib.promotion import DECISION_TAG, apply_decision, judge_candidate

    client, name = world["client"], world["spec"].registered_name
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{world['run_id']}/model", world["run_id"])
    set_stage(client, name, mv.version, "Staging")
    golden = GoldenSplits(Path("unused.yaml"), "f", Path("unused-shift.yaml"), "s")
    record, promote = judge_candidate(client, world["spec"], str(mv.version), golden, GatePolicy(),
                                      world["tmp"] / "eval", "test", None)
    assert not promote and record.verdict == "rejected" and "alpr register-existing" in record.reasons[0]
    apply_decision(client, record, promote)
    after = client.get_model_version(name, mv.version)
    assert after.tags[DECISION_TAG] == "rejected" and after.current_stage == "None"


def test_promotion_is_compare_and_swap_on_the_champion(world):
    from alpr_pipelines.lib.promotion import ChampionChanged, DecisionRecord, apply_decision, now_iso

    client, name = world["client"], world["spec"].registered_name
    first = register(world, b"first")
    second = register(world, b"second", stage="None")
    stale = DecisionRecord(name=name, version=second, verdict="promoted", reasons=["better"], candidate={},
                           champion=None, champion_version=None, decided_by="test", dagster_run_id=None,
                           time=now_iso())  # judged when there was no champion; there is one now (first)
    with pytest.raises(ChampionChanged, match="Judge it again"):
        apply_decision(client, stale, True)
    assert client.get_latest_versions(name, stages=["Production"])[0].version == first


def test_a_promotion_that_keeps_failing_is_retried_then_rejected(world):
    """Errors are recorded on the version; it is due for another run until the third, which records a rejection."""
    from alpr_pipelines.lib.promotion import (
        DECISION_TAG,
        ERROR_TAG,
        MAX_ATTEMPTS,
        record_failed_attempt,
        retries_due,
    )

    client, name = world["client"], world["spec"].registered_name
    version = register(world, b"candidate", stage="Staging")
    assert retries_due(client, name) == []
    for attempt in range(1, MAX_ATTEMPTS):
        assert record_failed_attempt(client, name, version, f"boom {attempt}", "test", None) == attempt
        assert retries_due(client, name) == [(version, attempt + 1)]
    assert record_failed_attempt(client, name, version, "boom last", "test", None) == MAX_ATTEMPTS
    mv = client.get_model_version(name, version)
    assert mv.tags[DECISION_TAG] == "rejected" and "boom last" in mv.tags["alpr_decision_reasons"]
    assert mv.tags[ERROR_TAG] == "boom last" and mv.current_stage == "None" and retries_due(client, name) == []
