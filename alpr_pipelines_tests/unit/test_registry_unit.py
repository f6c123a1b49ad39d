import hashlib

import pytest

from alpr_pipelines.lib.models import PLATE, STAGE_ALIASES, spec_for
from alpr_pipelines.lib.registry import build_manifest, content_id


def test_manifest_hashes_every_file(tmp_path):
    w, o = tmp_path / "best.pt", tmp_path / "model.onnx"
    w.write_bytes(b"weights")
    o.write_bytes(b"onnx")
    m = build_manifest(PLATE, {"weights": w, "onnx": o}, 320, {"dataset_fingerprint": "fp", "dagster_run_id": "r"})
    assert m["classes"] == ["license_plate"] and m["imgsz"] == 320
    assert m["files"]["weights"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert set(m["files"]) == {"weights", "onnx"} and m["files"]["onnx"]["size_bytes"] == 4
    assert m["dataset_fingerprint"] == "fp" and m["code_version"]


def test_content_id_ignores_export_timestamps_but_not_weights(tmp_path):
    w, o = tmp_path / "best.pt", tmp_path / "model.onnx"
    w.write_bytes(b"weights")
    o.write_bytes(b"onnx exported at 10:00")
    first = content_id(build_manifest(PLATE, {"weights": w, "onnx": o}, 320, {}))
    o.write_bytes(b"onnx exported at 11:00")
    assert content_id(build_manifest(PLATE, {"weights": w, "onnx": o}, 320, {})) == first
    w.write_bytes(b"other weights")
    assert content_id(build_manifest(PLATE, {"weights": w, "onnx": o}, 320, {})) != first
    assert content_id(build_manifest(PLATE, {"weights": w, "onnx": o}, 640, {})) != first


def test_contract_names():
    assert spec_for("alpr-vehicle-detector").classes == ("car", "truck", "bus", "motorcycle")
    assert spec_for("plate").registered_name == "alpr-plate-detector"
    assert spec_for("ocr").registered_name == "alpr-plate-ocr" and spec_for("alpr-plate-ocr").task == "read"
    assert STAGE_ALIASES == {"Staging": "candidate", "Production": "production"}
    with pytest.raises(ValueError, match="unknown model"):
        spec_for("alpr-plate-reader")


def test_version_artifact_path_parses_runs_uris():
    from alpr_pipelines.lib.registry import RegistryError, version_artifact_path

    assert version_artifact_path("runs:/abc123/detector/0f1e2d3c4b5a6978") == "detector/0f1e2d3c4b5a6978"
    with pytest.raises(RegistryError, match="not a runs:/ URI"):
        version_artifact_path("models:/m-123")
