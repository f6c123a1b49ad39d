"""Fetching a new version off the frame loop's interpreter: download, verification and the optimization for this
box (``onnx_backend.optimized_for_this_box``) in a child process of the lowest CPU priority.

Done in the edge process, that work cost the frames served meanwhile, even from a thread of the lowest priority:
the optimization takes a core from the frame's spinning ONNX Runtime threads, and every pass of the download loop
takes the interpreter lock that the frame loop needs between its runs (a low-priority thread gives it back late);
frames during a swap took up to 2.6x the steady p95 (2 cores). A child shares no lock with the frame loop and, at
the lowest priority from its first statement on, gets the cores only when frames leave them idle. It writes into
the same verified cache (temporary file, sha256 against the manifest, atomic rename) and answers with the paths;
the poller then creates the session from the optimized file, between two frames.

    python -m alpr_pipelines.edge.prefetch    # reads one request (JSON) on stdin, answers one line of JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by main() only once the priority is down
    from alpr_pipelines.edge.loader import MLflowModelLoader, RemoteVersion


def lowest_priority() -> None:
    """This process (its calling thread, and what it starts) to the lowest CPU priority: nice 19, and SCHED_IDLE on
    Linux (CPU only when nothing else wants it)."""
    try:
        os.nice(19)
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass


# The child imports only this module (the standard library) before main() lowers its priority; where util-linux's
# chrt and coreutils' nice exist, it starts at the lowest priority, interpreter start-up included.
_BOOT = "from alpr_pipelines.edge.prefetch import main; raise SystemExit(main())"


def _lowest_priority() -> list[str]:
    """The command prefix that starts a process at the lowest CPU priority, or [] where chrt or nice is missing."""
    chrt, nice = shutil.which("chrt"), shutil.which("nice")
    return [chrt, "--idle", "0", nice, "-n", "19"] if chrt and nice else []


def _request(loader: MLflowModelLoader, remote: RemoteVersion) -> dict[str, Any]:
    auth = loader.http.auth if isinstance(loader.http.auth, tuple) else None
    return {"loader": {"tracking_uri": loader.tracking_uri, "preferred_stage": loader.preferred_stage,
                       "cache_dir": str(loader.cache_dir), "models_dir": str(loader.models_dir),
                       "timeout": loader.timeout, "prefer_engine": loader.prefer_engine,
                       "precision": loader.precision, "username": auth[0] if auth else None,
                       "password": auth[1] if auth else None},
            "remote": asdict(remote)}


def fetch_prepared(loader: MLflowModelLoader, remote: RemoteVersion,
                   timeout: float = 600.0) -> tuple[Path, dict[str, Any], Path | None]:
    """``loader.fetch(remote)`` and the file's copy optimized for this box, done by a child of the lowest priority;
    returns (path, manifest, optimized path or None).

    Raises:
        ModelLoadError: the child failed (its last words are in the message); nothing half-written is left behind.
    """
    from alpr_pipelines.edge.loader import ModelLoadError

    # The request travels on stdin, never the command line: it may hold the edge principal's password.
    try:
        proc = subprocess.Popen([*_lowest_priority(), sys.executable, "-c", _BOOT], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise ModelLoadError(f"{remote.name} v{remote.version}: the fetch could not start: {exc}") from exc
    try:
        out, err = proc.communicate(json.dumps(_request(loader, remote)), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise ModelLoadError(f"{remote.name} v{remote.version}: the fetch took over {timeout:.0f}s") from exc
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "path" not in answer:
        reason = answer.get("error") or err.strip()[-500:] or f"exit {proc.returncode}"
        raise ModelLoadError(f"{remote.name} v{remote.version}: {reason}")
    optimized = Path(answer["optimized"]) if answer.get("optimized") else None
    return Path(answer["path"]), answer["manifest"], optimized


def main() -> int:
    lowest_priority()  # first: what follows (imports included) yields to the frame loop
    request = json.loads(sys.stdin.read())
    from alpr_pipelines.edge.loader import MLflowModelLoader, RemoteVersion
    from alpr_pipelines.edge.onnx_backend import optimized_for_this_box

    try:
        loader = MLflowModelLoader(**request["loader"])
        path, manifest = loader.fetch(RemoteVersion(**request["remote"]))
        optimized = optimized_for_this_box(path) if path.suffix == ".onnx" else None
    except Exception as exc:  # noqa: BLE001 - reported to the poller, which keeps the serving version
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    answer = {"path": str(path), "manifest": manifest, "optimized": str(optimized) if optimized else None}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
