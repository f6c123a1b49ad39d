"""Shared by the benchmark scripts: the machine description and the JSON result every script prints last.

Importing it also sets up what every script needs before Ultralytics is imported: offline, no auto-install, quiet
(each unless already set), and the repository root on ``sys.path`` (a script run as ``python bench/x.py`` has only
``bench/`` there). Import it first.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for _name, _value in (("YOLO_OFFLINE", "1"), ("YOLO_AUTOINSTALL", "false"), ("YOLO_VERBOSE", "false")):
    os.environ.setdefault(_name, _value)


def work_folder(prefix: str) -> Path:
    """A new temporary folder for this run's files (crops, exports, clips, servers' stores and logs). Removed when the
    script exits, unless it ends on an uncaught exception: then it is kept, and its path printed, because the error
    may point to a log in it. A file that cannot be removed is named, not fatal."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    failed: list[bool] = []
    report = sys.excepthook

    def note_failure(*exc_info: Any) -> None:
        failed.append(True)
        report(*exc_info)

    def remove_or_keep() -> None:
        if failed:
            print(f"kept {folder}: the run failed, and its logs are there", file=sys.stderr)
            return
        shutil.rmtree(folder, onerror=lambda _fn, path, exc: print(f"could not remove {path}: {exc[1]}",
                                                                      file=sys.stderr))

    sys.excepthook = note_failure
    atexit.register(remove_or_keep)
    return folder


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine(threads: int | None = None) -> str:
    """CPU model, cores, memory and Python, as the report's header states them."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu += f" ({int_matmul_isa()})"
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    used = f", {threads} threads" if threads else ""
    return f"{cpu}, {os.cpu_count()} cores{mem}, no GPU used{used}, Python {platform.python_version()}"


def int_matmul_isa() -> str:
    """What this CPU multiplies INT8 with, which decides what quantization buys: AMX, VNNI or neither."""
    from alpr_pipelines.edge.backends.box_optimized import cpu_flags

    flags = set(cpu_flags().split())
    if "amx_int8" in flags:
        return "AMX and VNNI"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "VNNI"
    best = next((isa for isa in ("avx512f", "avx2") if isa in flags), None)
    return f"{best.upper().replace('F', '')} without VNNI" if best else "no VNNI"


def paired(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median of the rounds' ``a``/``b`` ratios: the two sides of a round ran back to back, under the same load, so a
    shared VM's drift between rounds (seen here: 40% within one run) cancels out of each ratio."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))


def reread_below_or_exit(parser: argparse.ArgumentParser, value: float | None) -> float:
    """A script's ``--reread-below`` value, the edge's default (``edge.reread.REREAD_BELOW``) where none was given;
    one that is not a confidence ends the script with a usage error naming the flag."""
    from alpr_pipelines.edge.reread import REREAD_BELOW, check_reread_below

    try:
        return check_reread_below(REREAD_BELOW if value is None else value)
    except ValueError as exc:
        parser.error(f"--reread-below {exc}")


def write_json(result: dict[str, Any], path: str | None) -> None:
    """Print the result as the last thing on stdout (the runner and the smoke tests parse it); also to ``path``."""
    text = json.dumps(result, indent=2, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    print(text, flush=True)


def _longest_stall(seconds: float) -> float:
    import time

    end = last = time.perf_counter()
    end += seconds
    longest = 0.0
    while last < end:
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return longest * 1000


def cpu_stalls(seconds: float = 10.0) -> list[float]:
    """The longest time (ms) a thread that keeps every core busy went without running, one per core: what this
    machine (its host, for a VM, and everything else running on it) takes from a busy frame loop that no code of
    ours can give back. Nothing else of the benchmark may run meanwhile."""
    from multiprocessing import get_context

    cores = os.cpu_count() or 1
    with get_context("spawn").Pool(cores) as pool:
        return sorted(pool.map(_longest_stall, [seconds] * cores), reverse=True)
