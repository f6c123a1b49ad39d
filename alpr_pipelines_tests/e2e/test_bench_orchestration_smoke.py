"""The quick variant of figure 5 (orchestration overhead) keeps the benchmark working; it asserts nothing about time.

It trains for real on both sides (a Dagster run and the Ultralytics CLI), so it takes a minute or two on 2 cores.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_orchestration_bench_quick_trains_exports_and_registers(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "orchestration_bench.py"), "--quick", "--keep", "--json",
         str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)  # the JSON result is all of stdout
    work_dir = Path(result["details"]["work_dir"])
    try:
        assert json.loads((tmp_path / "result.json").read_text()) == result
        (figure,) = result["figures"]
        assert (figure["id"], figure["name"]) == ("5", "orchestration overhead")
        assert figure["ours"] > 0 and figure["ratio"] == figure["ours"]
        assert isinstance(figure["met"], bool)
        assert all(figure[k] for k in ("ours_text", "baseline_text", "target", "limits"))
        assert result["machine"] and result["command"] == ".venv/bin/python bench/orchestration_bench.py --quick"

        details = result["details"]
        (ours,), (baseline,) = details["samples"]["ours"], details["samples"]["baseline"]
        for side in (ours, baseline):
            assert side["wall_s"] > 0 and side["train_images_per_s"] > 0 and side["epochs_run"] == 1
            onnx = Path(side["onnx"])
            assert onnx.suffix == ".onnx" and onnx.is_file() and onnx.stat().st_size == side["onnx_bytes"] > 0
        assert ours["onnx_dynamic"] == baseline["onnx_dynamic"]  # both sides export the same kind of model

        # Our side trained, exported, passed its parity check and registered a new version in MLflow.
        assert ours["registered_model"] == "alpr-vehicle-detector" and ours["registered_version"]
        assert ours["registered_new_version"] is True and ours["registered_in_mlflow"] is True
        assert ours["checks_passed"] == {"onnx_matches_pytorch": True}
        assert {"vehicle/weights", "vehicle/onnx", "vehicle/registered_version"} <= set(ours["materialized"])
        assert ours["steps_s"]["vehicle__weights"] > 0 and ours["startup_s"] >= 0
        assert details["medians"]["ours_wall_s"] == ours["wall_s"]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
