"""Run every benchmark one after another (never two at once: they would share the two cores), keep each result in
``.alpr/bench/results/<name>.json`` and write ``docs/benchmarks.md`` from them.

    .venv/bin/python bench/run_all.py                      # everything (make bench), ~30-40 minutes
    .venv/bin/python bench/run_all.py --only edge swap     # some; the report keeps the others' last results
    .venv/bin/python bench/run_all.py --quick              # CI-sized smoke of every script; writes no report
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> script; run in this order (the edge figures first: they train the cached models the others reuse).
BENCHES = {
    "edge": "edge_bench.py",        # figures 1, 2, 3
    "swap": "swap_bench.py",        # figure 4
    "orchestration": "orchestration_bench.py",  # figure 5
    "fleet": "fleet_bench.py",      # figure 6
    "memory": "memory_bench.py",    # figure 7
}


def results_dir() -> Path:
    from alpr_pipelines.settings import load_settings

    return load_settings().home / "bench" / "results"


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def run(name: str, quick: bool) -> dict:
    out = results_dir() / (f"{name}.quick.json" if quick else f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / BENCHES[name]), "--json", str(out)] + (["--quick"] if quick else [])
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} benchmark failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["commit"] = git_commit()
    out.write_text(json.dumps(result, indent=2, default=str))
    return result


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def report(results: dict[str, dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Every figure of issue 6, measured beside its baseline in the same run (medians of interleaved runs where a "
        "figure repeats), written by `make bench` (`.venv/bin/python bench/run_all.py`). Timings decide no test; "
        "`make bench-quick` runs every script at smoke size, and CI runs the quick variants.",
        "",
    ]
    machines = sorted({r.get("machine", "?") for r in results.values()})
    lines += [f"Machine: {m}." for m in machines] + [""]
    lines += ["| figure | ours | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    figures = sorted((f for r in results.values() for f in r["figures"]), key=lambda f: int(f["id"]))
    for f in figures:
        lines.append(f"| {f['id']}. {f['name']} | {f['ours_text']} | {f['baseline_text']} | {fmt(f.get('ratio'))} "
                     f"| {f['target']} | {'yes' if f['met'] else '**no**'} |")
    lines += ["", "## What limits each figure", ""]
    for f in figures:
        lines.append(f"- **{f['id']}. {f['name']}**: {f['limits']}")
    lines += ["", "## Runs", "", "| benchmark | reproduce | finished (UTC) | commit | wall time |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | `{r['command']}` | {r.get('finished', '-')} | {r.get('commit', '-')} | "
                     f"{r.get('wall_s', '-')} s |")
    lines += ["", "Full results, with every sample and setting: `.alpr/bench/results/<benchmark>.json`.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES))
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the stored results")
    args = parser.parse_args()
    names = args.only or list(BENCHES)
    if not args.report_only:
        for name in names:
            result = run(name, args.quick)
            for f in result["figures"]:
                print(f"figure {f['id']}: {f['ours_text']} | {f['baseline_text']} | met={f['met']}", file=sys.stderr)
    if args.quick:
        return 0
    stored = {n: json.loads((results_dir() / f"{n}.json").read_text()) for n in BENCHES
              if (results_dir() / f"{n}.json").is_file()}
    Path(args.report).write_text(report(stored))
    print(f"wrote {args.report} ({len(stored)} of {len(BENCHES)} benchmarks)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
