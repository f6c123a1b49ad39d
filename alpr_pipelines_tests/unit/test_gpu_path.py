"""The GPU path: verified for real where CUDA is present, and its CPU fallbacks checked everywhere."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alpr_pipelines.lib.exports import cuda_environment, export_tensorrt, tensorrt_skip_reason

HAS_CUDA = cuda_environment() is not None


def test_tensorrt_is_skipped_with_a_reason_without_cuda(tmp_path):
    result = export_tensorrt(tmp_path / "unused.pt", tmp_path, 64, env=None)
    if not HAS_CUDA:
        assert result.path is None and result.skipped_reason == "skipped: no CUDA device"
    assert tensorrt_skip_reason(None) == "skipped: no CUDA device"
    assert "TensorRT is not installed" in tensorrt_skip_reason({"gpu_name": "x", "tensorrt": None})


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the no-GPU path is not what it runs")
def test_verify_gpu_script_reports_skip_without_cuda(tmp_path):
    report = tmp_path / "r.json"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "scripts" / "verify_gpu.py"), "--report", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3 and "no CUDA device" in out.stdout
    assert json.loads(report.read_text())["result"] == "skipped: no CUDA device"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (run `make gpu-check` on a GPU machine)")
def test_verify_gpu_script_passes_on_a_gpu(tmp_path):
    report = tmp_path / "r.json"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "scripts" / "verify_gpu.py"), "--report", str(report)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_the_gpu_checks_reader_training_runs_its_whole_path_on_the_cpu(tmp_path):
    """The reader check of `make gpu-check` trains, exports and compares as it does on CUDA ("0"): run here on the
    CPU so a GPU session finds it working; on CUDA it also asserts the run trained in float32 on the device."""
    import importlib.util

    from alpr_pipelines.lib.reader_model import cpu_trains_bf16

    path = Path(__file__).resolve().parents[2] / "scripts" / "verify_gpu.py"
    spec = importlib.util.spec_from_file_location("alpr_verify_gpu", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.reader_training(tmp_path, "cpu", 1)
    assert out["parity"]["passed"] and out["parity"]["crops"] == 32 and out["parity"]["same_text"] == 32
    assert out["precision"] == ("bf16-autocast" if cpu_trains_bf16() else "fp32")
    assert set(out["final_metrics"]) >= {"exact_match", "cer"}
