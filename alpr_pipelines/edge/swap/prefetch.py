"""Preparing a new version off the frame loop: download, verification and the optimization for this box
(``backends.box_optimized``) in a child process of the lowest CPU priority.

A child shares no interpreter lock with the frame loop and, at the lowest priority from its first statement on,
gets the cores only when frames leave them idle. It writes into the same verified cache (temporary file, sha256
against the manifest, atomic rename) and answers with the paths; the poller then creates the session between two
frames. While the child is starved of the cores (:func:`starved`, from ``/proc/<pid>/schedstat``), the poller also
takes loading turns with the frames (``swap.turns``) and spends each one, :data:`SLICE_S`, leaving the cores idle
for it. A spare child (:class:`SpareFetcher`) is started ahead of need, so a swap does not pay for its imports.
Why, and what each part measured: docs/edge.md, "Swaps".

    python -m alpr_pipelines.edge.swap.prefetch    # reads one request (JSON) on stdin, answers one line of JSON
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by main() only once the priority is down
    from alpr_pipelines.edge.loader import MLflowModelLoader, RemoteVersion
    from alpr_pipelines.edge.swap.turns import FrameTurns


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
_BOOT = "from alpr_pipelines.edge.swap.prefetch import main; raise SystemExit(main())"
SLICE_S = 0.02  # one turn's worth of idle cores for the child: a frame waits for at most this long
WINDOW_S = 0.2  # how long the child's share of the cores is measured over before the poller decides on slices
STARVED_SHARE = 0.2  # of one core: below it, while the child waits for a core longer than it runs, it gets slices


def run_and_wait(pid: int) -> tuple[float, float] | None:
    """Seconds the main thread of process ``pid`` has run, and has waited runnable for a core
    (``/proc/<pid>/schedstat``); None where the kernel does not say."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def starved(ran: float, waited: float, seconds: float) -> bool:
    """Whether a thread that ran ``ran`` and waited runnable ``waited`` seconds of the last ``seconds`` is starved
    of the cores: under :data:`STARVED_SHARE` of one core, and kept waiting longer than it ran (a thread that is
    waiting on the network, or done, is neither)."""
    return seconds > 0 and ran < STARVED_SHARE * seconds and waited > ran


def _lowest_priority_command() -> list[str]:
    """The command prefix that starts a process at the lowest CPU priority, or [] where chrt or nice is missing."""
    chrt, nice = shutil.which("chrt"), shutil.which("nice")
    return [chrt, "--idle", "0", nice, "-n", "19"] if chrt and nice else []


def _request(loader: MLflowModelLoader, remote: RemoteVersion, optimize: bool) -> dict[str, Any]:
    auth = loader.http.auth if isinstance(loader.http.auth, tuple) else None
    return {"loader": {"tracking_uri": loader.tracking_uri, "preferred_stage": loader.preferred_stage,
                       "cache_dir": str(loader.cache_dir), "models_dir": str(loader.models_dir),
                       "timeout": loader.timeout, "prefer_engine": loader.prefer_engine,
                       "precision": loader.precision, "username": auth[0] if auth else None,
                       "password": auth[1] if auth else None, "trusted_keys": loader.trusted_key_entries},
            "remote": asdict(remote), "optimize": optimize}


def spawn() -> subprocess.Popen[str]:
    """A child at the lowest priority that imports what a fetch needs, then waits for one request on stdin (it
    exits when stdin closes unanswered, so a spare never outlives its edge process). Raises OSError."""
    return subprocess.Popen([*_lowest_priority_command(), sys.executable, "-c", _BOOT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class SpareFetcher:
    """A fetch child started ahead of need (:func:`spawn`), for whichever of a box's pollers finds a new version first;
    one at a time (each costs ~80 MB while it waits). Thread-safe.

    No new one starts while a fetch that took one (:meth:`take`) is under way, until it says it is over
    (:meth:`done`): a start runs at the poller's priority until the child lowers its own, and on 2 cores a start
    that another poller made during a swap took a core from the new version's session creation. The start itself
    takes a loading turn (``turns``), so it never overlaps a frame either."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._closed = False
        self._fetching = 0  # fetches under way that took this spare's child (or found none)

    def ready(self, turns: FrameTurns | None = None) -> None:
        """Start one unless one is waiting, a fetch is under way, or this is closed; where none can start, each fetch
        starts its own (and says why). ``turns``: the frame loop's; the start takes a loading turn of them."""
        with self._lock:
            if self._closed or self._fetching or (self._child is not None and self._child.poll() is None):
                return
            with turns.loading_turn() if turns is not None else contextlib.nullcontext():
                try:
                    self._child = spawn()
                except OSError:
                    self._child = None

    def take(self) -> subprocess.Popen[str] | None:
        """The waiting child, or None (the fetch then starts its own); call :meth:`done` when the fetch is over."""
        with self._lock:
            child, self._child = self._child, None
            self._fetching += 1
        return child

    def done(self) -> None:
        """The fetch that called :meth:`take` is over (swapped in or failed): the next :meth:`ready` starts one."""
        with self._lock:
            self._fetching = max(0, self._fetching - 1)

    def close(self) -> None:
        """Ends the waiting child; no new one starts (a fetch still under way keeps its own)."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        discard(child)


def discard(child: subprocess.Popen[str] | None) -> None:
    """Ends a spare fetch child that will not be used (closing its stdin is its signal to exit)."""
    if child is None:
        return
    try:
        child.communicate("", timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()


def fetch_prepared(loader: MLflowModelLoader, remote: RemoteVersion, timeout: float = 600.0,
                   turns: FrameTurns | None = None,
                   child: subprocess.Popen[str] | None = None,
                   optimize: bool = True) -> tuple[Path, dict[str, Any], Path | None]:
    """``loader.fetch(remote)`` and (with ``optimize``) the file's copy optimized for this box, done by a child of
    the lowest priority; returns (path, manifest, optimized path or None).

    ``turns``: the frame loop's (``swap.turns.FrameTurns``); while the child is starved of the cores
    (:func:`starved`), this thread takes loading turns of :data:`SLICE_S` and leaves the cores idle for it, so a box
    kept busy by its cameras still swaps.
    ``child``: a spare from :func:`spawn` (used up by this call, whatever happens); a new one is started without.
    ``optimize``: False when the slot loads the file itself (``ModelSlot.prefetch_optimized_copy``): no copy is made.

    Raises:
        ModelLoadError: the child failed (its last words are in the message); nothing half-written is left behind.
    """
    from alpr_pipelines.edge.loader import ModelLoadError, RefusedVersion

    if child is not None and child.poll() is not None:  # the spare died waiting (killed, out of memory)
        child.communicate()
        child = None
    try:
        proc = child or spawn()
    except OSError as exc:
        raise ModelLoadError(f"{remote.name} v{remote.version}: the fetch could not start: {exc}") from exc
    answered: dict[str, Any] = {}

    def talk() -> None:
        try:  # the request travels on stdin, never the command line: it may hold the edge principal's password
            answered["out"], answered["err"] = proc.communicate(json.dumps(_request(loader, remote, optimize)),
                                                                timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the poller's thread below
            proc.kill()
            answered["failure"] = exc

    talker = threading.Thread(target=talk, name=f"prefetch-{remote.name}", daemon=True)
    talker.start()
    if turns is None:
        talker.join()
    last, since = run_and_wait(proc.pid), time.monotonic()
    slicing = last is None  # where the kernel does not say how the child fares, every turn is a slice
    while talker.is_alive():
        with turns.loading_turn() if slicing and turns is not None else contextlib.nullcontext():  # a slice, or a wait
            talker.join(SLICE_S)
        now = time.monotonic()
        if last is not None and now - since >= WINDOW_S:
            current = run_and_wait(proc.pid)
            if current is not None:
                slicing = starved(current[0] - last[0], current[1] - last[1], now - since)
                last, since = current, now
    if "failure" in answered:
        raise ModelLoadError(f"{remote.name} v{remote.version}: the fetch failed: {answered['failure']}")
    if "out" not in answered:
        raise ModelLoadError(f"{remote.name} v{remote.version}: the fetch took over {timeout:.0f}s")
    out, err = answered["out"], answered["err"]
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "path" not in answer:
        reason = answer.get("error") or err.strip()[-500:] or f"exit {proc.returncode}"
        raise (RefusedVersion if answer.get("refused") else ModelLoadError)(f"{remote.name} v{remote.version}: {reason}")
    optimized = Path(answer["optimized"]) if answer.get("optimized") else None
    return Path(answer["path"]), answer["manifest"], optimized


def main() -> int:
    lowest_priority()  # first: what follows (imports included) yields to the frame loop
    from alpr_pipelines.edge.backends.box_optimized import optimized_for_this_box
    from alpr_pipelines.edge.loader import MLflowModelLoader, RefusedVersion, RemoteVersion

    text = sys.stdin.read()  # imports done: a spare waits here for its request
    if not text.strip():
        return 0  # discarded unused
    request = json.loads(text)
    try:
        loader = MLflowModelLoader(**request["loader"])
        path, manifest = loader.fetch(RemoteVersion(**request["remote"]))
        optimized = optimized_for_this_box(path) if request.get("optimize", True) and path.suffix == ".onnx" else None
    except Exception as exc:  # noqa: BLE001 - reported to the poller, which keeps the serving version
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                     "refused": isinstance(exc, RefusedVersion)}) + "\n")
        return 1
    answer = {"path": str(path), "manifest": manifest, "optimized": str(optimized) if optimized else None}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
