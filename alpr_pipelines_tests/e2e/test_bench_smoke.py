"""The quick benchmark variants run in CI to keep the benchmarks working; they assert nothing about time."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, *extra: str, timeout: int = 600) -> dict:
    """The script's --quick run, its JSON result; its temporary files go to a folder of their own, which must hold
    none of the script's work folders (``alpr-*``) afterwards."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # a timed-out run's children may hold it
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *extra], capture_output=True,
                             text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "TMPDIR": tmp})
        left = sorted(p.name for p in Path(tmp).glob("alpr-*"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not left, f"{script} left its work folders behind: {left}"
    result = json.loads(out.stdout[out.stdout.index("\n{") + 1:] if not out.stdout.startswith("{") else out.stdout)
    for figure in result["figures"]:
        assert {"id", "name", "ours", "ours_text", "baseline_text", "target", "met", "limits"} <= set(figure)
    return result


def test_edge_bench_quick_reports_figures_1_to_3():
    result = run_quick("edge_bench.py")
    figures = {f["id"]: f for f in result["figures"]}
    assert set(figures) == {"1", "2", "3"}
    med = result["details"]["medians"]
    for key in ("ours_fps", "ours_fp32_fps", "ultralytics_fps", "two_stage_fps", "two_stage_ultralytics_fps",
                "inference_ms", "matmul_gflops"):
        assert med[key] > 0, key
    assert result["details"]["blas"], "the matmul baseline must say which BLAS and how many threads it ran with"
    # Rectangular inference: a 640x384 frame is served at its own aspect, not padded to a square.
    height, width = result["details"]["served_shape"]
    assert width == result["details"]["imgsz"]["vehicle"] and height < width


def test_swap_bench_quick_follows_every_promotion():
    result = run_quick("swap_bench.py")
    d = result["details"]
    assert result["figures"][0]["id"] == "4"
    assert d["swaps"] == 2 and len(d["latencies_s"]) == 2 and all(x > 0 for x in d["latencies_s"])
    assert d["dropped"] == 0 and d["out_of_order"] == 0 and d["frames"] > 0
    assert len(d["cpu_stalls_ms"]) >= 1 and all(x > 0 for x in d["cpu_stalls_ms"])


def test_turns_bench_quick_pairs_both_policies():
    result = run_quick("turns_bench.py")
    waits = result["waits"]
    assert set(waits) == {"arrival order", "at a frame's end"}
    assert all(w["n"] == 4 and w["max_ms"] >= w["median_ms"] >= 0 and 0 <= w["waited"] <= 4
               and w["max_ms"] >= w["mean_ms"] >= 0 for w in waits.values())


def test_memory_bench_quick_measures_every_process():
    result = run_quick("memory_bench.py")
    d = result["details"]
    assert result["figures"][0]["id"] == "7"
    for key in ("edge", "edge_ultralytics", "training", "training_ultralytics"):
        assert d[key]["largest_process_mb"] > 0 and d[key]["tree_peak_mb"] > 0, key
    # Each process's own peak, not the benchmark's: the edge (no torch) stays below the Ultralytics script (torch).
    assert d["edge"]["largest_process_mb"] < d["edge_ultralytics"]["largest_process_mb"]


def test_dfl_bench_quick_serves_both_exports():
    result = run_quick("dfl_bench.py")
    d = result["details"]
    assert set(d["samples_fps"]) == {"ours_fp32", "stock_fp32", "ours_int8", "stock_int8"}
    assert all(len(v) == 2 and min(v) > 0 for v in d["samples_fps"].values())
    assert set(d["ratios"]) == {"fp32", "int8"} and all(r > 0 for r in d["ratios"].values())
    # The same network: only float rounding tells the two files apart.
    assert d["max_box_diff_px"] < 0.05 and d["max_score_diff"] < 1e-3


def test_reader_bench_quick_reports_figures_9_to_11_and_says_which_baselines_ran():
    result = run_quick("reader_bench.py", "--baselines", "tesseract", "rapidocr")
    figures = {f["id"]: f for f in result["figures"]}
    assert set(figures) == {"9", "10", "11"}
    d = result["details"]
    ours = {"ours", "ours, each plate read once"}  # as the edge reads (unsure plates again), and without rereading
    ran = set(d["baselines_ran"].replace("none", "").replace(" ", "").split(",")) - {""}
    assert set(d["accuracy"]) == ours | ran and set(d["plates_per_second"]) == ours | ran
    assert set(d["baselines_not_run"]) | set(d["accuracy"]) >= {"ours", "tesseract", "rapidocr"}
    assert all(v > 0 for v in d["fps"]["three_stage"] + d["fps"]["three_stage_once"] + d["fps"]["two_stage"])
    assert "each plate read once" in figures["9"]["ours_text"] and "ours" not in figures["9"]["baseline_text"]
    assert d["golden_crops"] > 0 and all(0.0 <= a["cer"] for a in d["accuracy"].values())


def test_reader_precision_bench_quick_pairs_the_precisions_this_cpu_has():
    result = run_quick("reader_precision.py")
    rates = result["crops_per_second"]
    assert len(rates["fp32"]) == 2 and all(r > 0 for r in rates["fp32"])
    if result["bf16_native"]:
        assert len(rates["bf16"]) == 2 and result["ratio_bf16_over_fp32"] > 0
    else:
        assert "bf16" not in rates and result["ratio_bf16_over_fp32"] is None


def test_the_report_keeps_the_investigations_it_did_not_rerun(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from run_all import carried_over, report

    previous = report({"turns": {"figures": [], "command": "x", "camera_fps": 15, "waits": {"arrival order": {
        "n": 4, "median_ms": 2.0, "mean_ms": 2.0, "p90_ms": 3.0, "max_ms": 4.0, "waited": 2}}}})
    again = report({"reader_precision": {"figures": [], "command": "y", "medians": {"fp32": 300.0, "bf16": 600.0},
                                         "ratio_bf16_over_fp32": 2.0, "runs": 5, "steps": 60, "batch": 32}},
                   carried_over(previous, {"reader_precision"}))
    section = again.split("## Investigations", 1)[1].split("\n## ", 1)[0]
    assert "`bench/turns_bench.py`" in section and "**2.00x**" in section
    assert section.count("### ") == 2
    # The committed report parses: every subsection of it is kept when nothing is re-run.
    committed = (ROOT / "docs" / "benchmarks.md").read_text()
    kept = carried_over(committed, set())["investigations"]
    assert sum(line.startswith("### ") for line in kept) == committed.count("\n### ") > 0


def test_reader_heads_bench_quick_scores_the_more_crops_overall_and_by_kind():
    result = run_quick("reader_heads.py", "--heads", "ctc", "--more-crops", "24")
    (row,) = result["heads"]
    assert row["more_crops"] == 24 and 0 <= row["more_russian_crops"] + row["more_two_line_crops"] <= 24
    assert 0.0 <= row["more_exact_match"] <= 1.0 and row["more_cer"] >= 0.0
    assert ("more_russian_exact_match" in row) == (row["more_russian_crops"] > 0)
    assert ("more_two_line_exact_match" in row) == (row["more_two_line_crops"] > 0)
    assert ("more_other_exact_match" in row) == (row["more_russian_crops"] + row["more_two_line_crops"] < 24)
    assert row["golden_crops"] == 24 and 0.0 <= row["golden_exact_match"] <= 1.0
    assert row["shift_crops"] == 24 and sum(band["plates"] for band in row["shift_by_plate_width"]) == 24
    assert result["recipe"]["residual_blocks"] == [1, 1]  # the recipe's


def test_reader_heads_bench_quick_trains_for_a_time_budget_and_keeps_the_onnx(tmp_path):
    result = run_quick("reader_heads.py", "--heads", "ctc", "--time-budget", "3", "--threads", "1",
                       "--keep-onnx", str(tmp_path / "kept"))
    (row,) = result["heads"]
    rate, crops = row["calibration_crops_per_second"], result["train_plates"]
    assert rate > 0 and result["recipe"]["threads"] == 1
    assert row["epochs"] == 1 or abs(row["epochs"] - 3 * rate / crops) <= 1  # the budget's epochs at the timed rate
    assert (tmp_path / "kept" / "ctc.onnx").stat().st_size > 0
    # The kept reader scored again, nothing trained: as a training's row, with the bands of plate width.
    kept = str(tmp_path / "kept" / "ctc.onnx")
    (given,) = run_quick("reader_heads.py", "--more-crops", "8", "--score-onnx", kept)["heads"]
    assert given["head"] == "given" and given["more_crops"] == 8 and given["shift_crops"] == 24
    assert sum(band["plates"] for band in given["golden_by_plate_width"]) == given["golden_crops"] == 24
    for extra, says in ((["--score-onnx", str(tmp_path / "missing.onnx")], "is not a file"),
                        (["--score-onnx", kept, "--keep-onnx", str(tmp_path)], "--keep-onnx would do nothing")):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "reader_heads.py"), "--quick", *extra],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 2 and says in out.stderr, out.stderr[-2000:]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reader_heads.py"), "--quick", "--time-budget", "3",
                          "--epochs", "2"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "give it or --epochs, not both" in out.stderr
