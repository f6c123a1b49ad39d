"""Two edge processes sharing one cache: neither prunes a version the other serves, and a version whose server died is
pruned on the next swap. The cache is keyed by registry."""

import subprocess
import sys

from alpr_pipelines.edge.loader import MLflowModelLoader, registry_key

SERVE = """
import sys, time
from alpr_pipelines.edge.loader import MLflowModelLoader
loader = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=sys.argv[1], timeout=0.2)
loader._lease("alpr-plate-detector", "1")
print("serving", flush=True)
time.sleep(60)
"""


def _version(loader: MLflowModelLoader, version: str) -> None:
    vdir = loader.store / "alpr-plate-detector" / version
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(b"x")


def test_a_version_another_process_serves_is_not_pruned(tmp_path):
    loader = MLflowModelLoader(tracking_uri="http://127.0.0.1:9", cache_dir=tmp_path, timeout=0.2)
    for v in ("1", "2", "3"):
        _version(loader, v)
    other = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "serving"
        loader.prune("alpr-plate-detector", keep={"3"})
        left = sorted(p.name for p in (loader.store / "alpr-plate-detector").iterdir() if p.is_dir())
        assert left == ["1", "3"]  # 2 was nobody's; 1 is the other process's
    finally:
        other.kill()
        other.wait()
    loader.prune("alpr-plate-detector", keep={"3"})  # its server is gone: the lease went with it
    assert sorted(p.name for p in (loader.store / "alpr-plate-detector").iterdir() if p.is_dir()) == ["3"]


def test_each_registry_has_its_own_part_of_the_cache():
    a, b = registry_key("http://10.0.0.5:5000"), registry_key("http://10.0.0.6:5000")
    assert a != b and a.startswith("10.0.0.5_5000-")
    assert registry_key("http://h:5000/") == registry_key("http://H:5000") == registry_key("http://u:p@h:5000")
    assert registry_key("http://h") == registry_key("http://h:80") != registry_key("http://h:5080")
    assert "/" not in registry_key("http://../../etc:1/x") and not registry_key("http://..:1").startswith(".")
