import json

import pytest

from alpr_pipelines.edge.backends.tensorrt import read_engine_file


def test_reads_ultralytics_engine_header(tmp_path):
    meta = {"names": {"0": "license_plate"}, "imgsz": [320, 320], "stride": 32}
    blob = b"\x00serialized-engine\xff"
    header = json.dumps(meta).encode()
    path = tmp_path / "model.engine"
    path.write_bytes(len(header).to_bytes(4, "little") + header + blob)
    assert read_engine_file(path) == (meta, blob)


def test_plain_engine_without_header(tmp_path):
    path = tmp_path / "plain.engine"
    path.write_bytes(b"\xff\xff\x00\x00raw-engine-bytes")
    meta, blob = read_engine_file(path)
    assert meta == {} and blob == path.read_bytes()


def test_engine_backend_needs_tensorrt_and_a_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (pip install '.[gpu]' on a CUDA machine)")
    from alpr_pipelines.edge.backends.tensorrt import TensorRTDetector

    path = tmp_path / "x.engine"
    path.write_bytes(b"\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="no class names"):
        TensorRTDetector(path)
