"""Fetching a new version off the frame loop's interpreter: download, verification and the optimization for this
box (``box_optimized.optimized_for_this_box``) in a child process of the lowest CPU priority.

Done in the edge process, that work cost the frames served meanwhile, even from a thread of the lowest priority:
the optimization takes a core from the frame's spinning ONNX Runtime threads, and every pass of the download loop
takes the interpreter lock that the frame loop needs between its runs (a low-priority thread gives it back late);
frames during a swap took up to 2.6x the steady p95 (2 cores). A child shares no lock with the frame loop and, at
the lowest priority from its first statement on, gets the cores only when frames leave them idle. It writes into
the same verified cache (temporary file, sha256 against the manifest, atomic rename) and answers with the paths;
the poller then creates the session from the optimized file, between two frames.

Idle cores alone do not always come: a box whose cameras keep both cores busy (measured: two-stage INT8 at 640 and
15 fps on a 2-core AMD EPYC without VNNI, 57 ms of every 67) left the child so little that its 0.6 s of CPU took
3 to 26 s, and the new version waited. So while the child is starved, the poller also takes turns with the frames
(``edge.turns``) and spends each turn, :data:`SLICE_S`, doing nothing: the frame loop's threads sleep, the cores
go idle, and the child runs. A frame then waits for at most one slice; the child gets a slice of both cores per
frame at least. Starved (:func:`starved`) means that over the last :data:`WINDOW_S` the child's working thread
ran for less than :data:`STARVED_SHARE` of a core and waited for one longer than it ran (``/proc/<pid>/schedstat``);
a child that gets the gaps a paced camera leaves (a third of a core at 15 fps on the benchmark box) gets no
slices, so its frames wait for none (figure 4 of ``docs/benchmarks.md``). Where the kernel does not say, every
turn is a slice. Half of a child's CPU was its start (imports: 0.33 of 0.6 s, OpenCV included, which it no longer
imports), so the pollers keep a spare (:class:`Spare`) started ahead of need: it imports at the lowest priority
while nothing is asked of it and then waits for its request, and the swap pays only the fetch and the optimization.

    python -m alpr_pipelines.edge.prefetch    # reads one request (JSON) on stdin, answers one line of JSON
"""

from __future__ import annotations

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
    from alpr_pipelines.edge.turns import Turns


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


def _request(loader: MLflowModelLoader, remote: RemoteVersion) -> dict[str, Any]:
    auth = loader.http.auth if isinstance(loader.http.auth, tuple) else None
    return {"loader": {"tracking_uri": loader.tracking_uri, "preferred_stage": loader.preferred_stage,
                       "cache_dir": str(loader.cache_dir), "models_dir": str(loader.models_dir),
                       "timeout": loader.timeout, "prefer_engine": loader.prefer_engine,
                       "precision": loader.precision, "username": auth[0] if auth else None,
                       "password": auth[1] if auth else None},
            "remote": asdict(remote)}


def spawn() -> subprocess.Popen[str]:
    """A child at the lowest priority that imports what a fetch needs, then waits for one request on stdin (it
    exits when stdin closes unanswered, so a spare never outlives its edge process). Raises OSError."""
    return subprocess.Popen([*_lowest_priority_command(), sys.executable, "-c", _BOOT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Spare:
    """A child started ahead of need (:func:`spawn`), for whichever of a box's pollers finds a new version first;
    one at a time (each costs ~80 MB while it waits). Thread-safe.

    No new one starts while a fetch that took one (:meth:`take`) is under way, until it says it is over
    (:meth:`done`): a start runs at the poller's priority until the child lowers its own, and on 2 cores a start
    that another poller made during a swap took a core from the new version's session creation. The start itself
    takes a turn (``turns``), so it never overlaps a frame either."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._closed = False
        self._fetching = 0  # fetches under way that took this spare's child (or found none)

    def ready(self, turns: Turns | None = None) -> None:
        """Start one unless one is waiting, a fetch is under way, or this is closed; where none can start, each fetch
        starts its own (and says why). ``turns``: the frame loop's, the start is a piece of them."""
        from alpr_pipelines.edge.turns import piece_of

        with self._lock:
            if self._closed or self._fetching or (self._child is not None and self._child.poll() is None):
                return
            with piece_of(turns):
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
    """Ends a spare child that will not be used (closing its stdin is its signal to exit)."""
    if child is None:
        return
    try:
        child.communicate("", timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()


def fetch_prepared(loader: MLflowModelLoader, remote: RemoteVersion, timeout: float = 600.0,
                   turns: Turns | None = None,
                   child: subprocess.Popen[str] | None = None) -> tuple[Path, dict[str, Any], Path | None]:
    """``loader.fetch(remote)`` and the file's copy optimized for this box, done by a child of the lowest priority;
    returns (path, manifest, optimized path or None).

    ``turns``: the frame loop's turns (``edge.turns.Turns``); while the child is starved of the cores
    (:func:`starved`), this thread takes pieces of :data:`SLICE_S` and leaves the cores idle for it, so a box kept
    busy by its cameras still swaps.
    ``child``: a spare from :func:`spawn` (used up by this call, whatever happens); a new one is started without.

    Raises:
        ModelLoadError: the child failed (its last words are in the message); nothing half-written is left behind.
    """
    from alpr_pipelines.edge.loader import ModelLoadError
    from alpr_pipelines.edge.turns import piece_of

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
            answered["out"], answered["err"] = proc.communicate(json.dumps(_request(loader, remote)),
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
        with piece_of(turns if slicing else None):  # a slice, or a plain wait of the same length
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
        raise ModelLoadError(f"{remote.name} v{remote.version}: {reason}")
    optimized = Path(answer["optimized"]) if answer.get("optimized") else None
    return Path(answer["path"]), answer["manifest"], optimized


def main() -> int:
    lowest_priority()  # first: what follows (imports included) yields to the frame loop
    from alpr_pipelines.edge.box_optimized import optimized_for_this_box
    from alpr_pipelines.edge.loader import MLflowModelLoader, RemoteVersion

    text = sys.stdin.read()  # imports done: a spare waits here for its request
    if not text.strip():
        return 0  # discarded unused
    request = json.loads(text)
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
