"""The quick benchmark variant runs in CI to keep the benchmarks working; it asserts nothing about time."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_reports_every_figure():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "edge_bench.py"), "--quick"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.index("{"):])
    for key in ("ours_fps", "ultralytics_fps", "throughput_ratio", "efficiency", "matmul_gflops", "two_stage_fps"):
        assert result[key] > 0, key
    assert result["blas"], "the matmul baseline must say which BLAS and how many threads it ran with"
