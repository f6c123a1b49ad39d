"""Which file of a version an edge box loads: an engine for its GPU, INT8 ONNX on a CPU-only box, else FP32."""

import pytest

from alpr_pipelines.edge import loader as loader_mod
from alpr_pipelines.edge.loader import MLflowModelLoader

MANIFEST = {"model": "alpr-plate-detector", "files": {
    "onnx": {"name": "model.onnx", "sha256": "a"}, "onnx_int8": {"name": "model.int8.onnx", "sha256": "b"}}}


def make(monkeypatch, precision=None, cpu_only=True):
    monkeypatch.setattr(loader_mod, "cpu_only", lambda: cpu_only)
    monkeypatch.setattr(MLflowModelLoader, "check_connection", lambda self: False)
    return MLflowModelLoader(tracking_uri="http://127.0.0.1:9", precision=precision)


def test_cpu_box_prefers_int8(monkeypatch):
    assert make(monkeypatch)._pick_file(MANIFEST)[0] == "onnx_int8"


def test_gpu_box_keeps_fp32_onnx(monkeypatch):
    assert make(monkeypatch, cpu_only=False)._pick_file(MANIFEST)[0] == "onnx"


def test_precision_can_be_pinned(monkeypatch):
    assert make(monkeypatch, "fp32")._pick_file(MANIFEST)[0] == "onnx"
    monkeypatch.setenv("ALPR_EDGE_PRECISION", "int8")
    assert make(monkeypatch, cpu_only=False)._pick_file(MANIFEST)[0] == "onnx_int8"


def test_versions_without_int8_load_fp32(monkeypatch):
    fp32_only = {"model": "m", "files": {"onnx": {"name": "model.onnx", "sha256": "a"}}}
    assert make(monkeypatch)._pick_file(fp32_only)[0] == "onnx"


def test_unknown_precision_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="ALPR_EDGE_PRECISION"):
        make(monkeypatch, "fp16")
