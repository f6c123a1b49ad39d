"""Run a candidate's evaluation in a child process with a wall-clock timeout and a memory cap.

A registered version is untrusted until judged: its ONNX graph may hang, or allocate until the machine swaps. The
promotion run must survive both and still decide, so the scoring runs in ``python -m alpr_pipelines.lib.isolation``
under ``RLIMIT_AS`` and is killed (its whole process group) at the deadline. The result comes back as JSON on a pipe;
nothing is unpickled from the child.

Environment:
    ALPR_EVAL_TIMEOUT_S: seconds one evaluation may take (default 900).
    ALPR_EVAL_MEMORY_MB: the child's address-space cap (default 8192; onnxruntime and the metric code reserve ~4 GB
        of address space before any work).
    ALPR_EVAL_MAX_DOWNLOAD_MB: the most a candidate's files may weigh before they are downloaded (default 1024).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpr_pipelines.lib.evaluation import EVALUATOR_VERSION, EvaluationError, EvaluationResult, ModelUnusable
from alpr_pipelines.lib.reader_eval import READER_EVALUATOR_VERSION, ReaderEvaluation

RESULT_TYPES: dict[str, Any] = {"detect": EvaluationResult, "read": ReaderEvaluation}  # by ModelSpec.task
EVALUATOR_VERSIONS = {"detect": EVALUATOR_VERSION, "read": READER_EVALUATOR_VERSION}  # a cached score's must match
# How a failed allocation reads in the child's errors (Python, C++, ONNX Runtime's arena and its thread pool).
ALLOCATION_FAILURES = ("MemoryError", "bad_alloc", "cannot allocate memory", "Cannot allocate memory",
                       "Failed to allocate")


@dataclass(frozen=True)
class EvaluationLimits:
    timeout_s: float = 900.0
    memory_mb: int = 8192
    max_download_mb: int = 1024

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EvaluationLimits:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for field_name, var, kind in (("timeout_s", "ALPR_EVAL_TIMEOUT_S", float),
                                      ("memory_mb", "ALPR_EVAL_MEMORY_MB", int),
                                      ("max_download_mb", "ALPR_EVAL_MAX_DOWNLOAD_MB", int)):
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = -1
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{var}={raw!r} must be a positive {kind.__name__}; unset it for the default")
            values[field_name] = value
        return cls(**values)


def evaluate_onnx_isolated(onnx_path: Path, golden_yaml: Path, golden_fingerprint: str,
                           shift_yaml: Path | None = None, limits: EvaluationLimits | None = None,
                           task: str = "detect") -> EvaluationResult | ReaderEvaluation:
    """``lib.evaluation.evaluate_onnx`` (a detector; ``task`` "read": ``lib.reader_eval.evaluate_reader_onnx`` on
    golden plate crops) in a child process under ``limits``.

    Raises:
        ModelUnusable: the model does not load or run, exhausts the memory cap or outlives the timeout.
        EvaluationError: anything else the child reports (the golden set is unreadable, ...).
    """
    limits = limits or EvaluationLimits.from_env()
    if task not in RESULT_TYPES:
        raise ValueError(f"unknown model task {task!r}; expected one of {sorted(RESULT_TYPES)}")
    request = json.dumps({"memory_mb": limits.memory_mb, "onnx": str(onnx_path), "golden_yaml": str(golden_yaml),
                          "fingerprint": golden_fingerprint, "task": task,
                          "shift_yaml": None if shift_yaml is None else str(shift_yaml)})
    proc = subprocess.Popen([sys.executable, "-m", "alpr_pipelines.lib.isolation"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the kill reaches all it started
    try:
        out, err = proc.communicate(request, timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ModelUnusable(f"evaluating {Path(onnx_path).name} took longer than {limits.timeout_s:g} s and was "
                            "stopped (ALPR_EVAL_TIMEOUT_S)") from None
    except BaseException:  # the run was cancelled (or anything else): never leave the child running
        _kill_group(proc)
        raise
    reply = _last_json_line(out)
    if reply is None:
        tail = err.strip().splitlines()[-3:]
        if any(m in err for m in ALLOCATION_FAILURES):
            raise ModelUnusable(f"evaluating {Path(onnx_path).name} needed more than the {limits.memory_mb} MB "
                                f"memory cap (ALPR_EVAL_MEMORY_MB; exit {proc.returncode}): {' | '.join(tail)}")
        if proc.returncode < 0:
            raise ModelUnusable(f"evaluating {Path(onnx_path).name} crashed the scorer (signal {-proc.returncode}): "
                                f"{' | '.join(tail)}")
        raise EvaluationError(f"the evaluation process exited {proc.returncode} without a result: "
                              f"{' | '.join(tail)}")
    if "error" in reply:
        kind = ModelUnusable if reply["error"] == "ModelUnusable" else EvaluationError
        raise kind(reply["message"])
    return RESULT_TYPES[task](**reply["result"])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _last_json_line(out: str) -> dict | None:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def main() -> None:
    """Child side: one JSON request on stdin, one JSON line on stdout. The memory cap is set before the model is
    read."""
    import resource

    from alpr_pipelines.lib.evaluation import evaluate_onnx
    from alpr_pipelines.lib.reader_eval import evaluate_reader_onnx

    req = json.loads(sys.stdin.read())
    cap = int(req["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        shift = Path(req["shift_yaml"]) if req["shift_yaml"] else None
        result: EvaluationResult | ReaderEvaluation
        if req.get("task", "detect") == "read":
            result = evaluate_reader_onnx(Path(req["onnx"]), Path(req["golden_yaml"]), req["fingerprint"],
                                          shift_root=shift)
        else:
            result = evaluate_onnx(Path(req["onnx"]), Path(req["golden_yaml"]), req["fingerprint"], shift_yaml=shift)
        reply: dict = {"result": result.as_dict()}
    except ModelUnusable as exc:
        message = str(exc)
        if any(m in message for m in ALLOCATION_FAILURES):  # the cap, met while the model loads or runs
            message += f" (over the evaluation's memory cap of {req['memory_mb']} MB, ALPR_EVAL_MEMORY_MB)"
        reply = {"error": "ModelUnusable", "message": message}
    except EvaluationError as exc:
        reply = {"error": "EvaluationError", "message": str(exc)}
    except MemoryError:
        reply = {"error": "ModelUnusable", "message": "the model ran out of memory under ALPR_EVAL_MEMORY_MB"}
    except Exception as exc:  # noqa: BLE001 - reported, and retried by the promotion run's attempts
        reply = {"error": "EvaluationError", "message": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
