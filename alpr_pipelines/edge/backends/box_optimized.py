"""A model optimized once for this box (ONNX Runtime's offline mode), importable without OpenCV: the child that
prepares new versions (``edge.swap.prefetch``) imports only this, ONNX Runtime and the loader.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import uuid
from pathlib import Path

import onnxruntime as ort

from alpr_pipelines.edge.integrity import sha256_file

log = logging.getLogger(__name__)


def available_providers() -> list[str]:
    """Execution providers in order of preference, limited to what this machine's onnxruntime offers."""
    preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    return [p for p in preferred if p in have]


def cpu_flags() -> str:
    """This CPU's instruction-set flags as /proc/cpuinfo lists them (``flags`` on x86, ``Features`` on Arm); empty
    where there is no such file."""
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def box_tag() -> str:
    """What a model optimized on this box depends on: this ONNX Runtime and this CPU's instruction sets."""
    return hashlib.sha256(f"{ort.__version__}|{platform.machine()}|{cpu_flags()}".encode()).hexdigest()[:12]


def optimized_for_this_box(path: Path) -> Path | None:
    """``path`` as ONNX Runtime optimizes it for this CPU (every level, layout included), saved beside it once, so a
    session loads it with no optimization to do (``OnnxDetector(path, optimized=...)``); None when it cannot be made
    or this box runs ONNX models on a GPU provider (the caller then loads ``path`` itself).

    Why: optimizing is most of the work of loading a version, so it runs apart from the frame loop
    (``edge.swap.prefetch``, at the lowest CPU priority) and what is left fits between two frames (docs/edge.md). This is ONNX Runtime's offline mode: the file suits this machine and this ONNX Runtime only,
    so its name carries :func:`box_tag`, and a sidecar holds its sha256, so a file altered on disk is made again,
    never loaded.
    """
    if available_providers() != ["CPUExecutionProvider"]:
        return None
    path = Path(path)
    dest = path.with_name(f"{path.stem}.box-{box_tag()}.onnx")
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file() and stamp.read_text().strip() == sha256_file(dest):
        return dest
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.optimized_model_filepath = str(tmp)
        options.log_severity_level = 3  # not the warning that the file suits this machine only: that is the point
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if not tmp.is_file():
            raise RuntimeError("ONNX Runtime wrote no optimized model")
        os.replace(tmp, dest)
        stamp_tmp = stamp.with_name(f".{stamp.name}.partial-{uuid.uuid4().hex[:8]}")
        stamp_tmp.write_text(sha256_file(dest))
        os.replace(stamp_tmp, stamp)
        return dest
    except Exception as exc:  # noqa: BLE001 - any failure: the caller loads the original
        log.warning("could not save %s optimized for this box (%s); loading it as it is", path, exc)
        return None
    finally:
        tmp.unlink(missing_ok=True)
