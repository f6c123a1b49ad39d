"""Following the registry for one model slot, and swapping a new version in without dropping a frame.

One small request per interval; a download only when the registry names another version. The new version is
fetched, verified and optimized for this box by a child of the lowest CPU priority (``swap.prefetch``); its session
is then created and run once in one loading step at a frame's end, warmed up further where its first run is costly,
and put in the slot. Any failure leaves the serving version in place. How the steps share the CPU with the frames is
the detector's :class:`~alpr_pipelines.edge.swap.policy.SwapPolicy`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpr_pipelines.edge.detector import Backend, ModelSlot, warm_up
from alpr_pipelines.edge.loader import MLflowModelLoader, RefusedVersion, RemoteVersion, manifest_sha256
from alpr_pipelines.edge.swap.policy import SwapPolicy
from alpr_pipelines.edge.swap.prefetch import fetch_prepared
from alpr_pipelines.edge.trust import TRUST_TAGS

log = logging.getLogger(__name__)


def _trust_of(remote: RemoteVersion) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in remote.tags.items() if k in TRUST_TAGS))


def first_run(backend: Backend, frame_shape: tuple[int, ...] | None = None) -> bool:
    """A new version's first run, in the same loading step as its session's creation (a new session's threads spin
    until a run ends; docs/edge.md, "Swaps"). Returns whether the version is ready to serve after it.

    A model whose first run is cheap (a CPU, dynamic-shape ONNX detector, ``OnnxDetector.smoke_run``, or the plate
    reader) runs once on its smallest input, a few ms: True. Any other (GPU providers, fixed shapes, TensorRT
    engines) makes the first of its warm-up runs at the frames' shape: False, one more run is due in a step of its
    own. Raises whatever the run raises: the caller keeps serving the old version."""
    smoke_run = getattr(backend, "smoke_run", None)
    if smoke_run is not None and not getattr(backend, "first_run_costly", True):
        smoke_run()
        return True
    warm_up(backend, runs=1, frame_shape=frame_shape)
    return False


@dataclass
class PollStats:
    polls: int = 0
    errors: int = 0
    swaps: int = 0
    failed_swaps: int = 0
    reachable: bool = True
    last_error: str | None = None


class RegistryPoller(threading.Thread):
    """Follows the registry for ``slot`` (see the module).

    The interval gets up to ``jitter`` of random spread (a fleet does not poll in lockstep) and backs off
    exponentially, up to ``max_backoff``, while the registry is unreachable. Events go to ``on_event``
    (``poll_ok``, ``poll_error``, ``swapped``, ``swap_failed``). ``policy``: the serving detector's.
    ``frame_shape``: where the frames' current shape is read from, to warm new versions up at it.
    """

    def __init__(self, loader: MLflowModelLoader, slot: ModelSlot, policy: SwapPolicy, interval: float = 10.0,
                 jitter: float = 0.2, max_backoff: float = 120.0, imgsz: int | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 frame_shape: Callable[[], tuple[int, ...] | None] = lambda: None):
        super().__init__(name=f"poller-{slot.name}", daemon=True)
        if interval > 15:
            log.warning("poll interval %.0fs is above 15s: new versions will take longer to reach this box", interval)
        self.loader, self.slot, self.policy = loader, slot, policy
        self.interval, self.jitter, self.max_backoff, self.imgsz = interval, jitter, max_backoff, imgsz
        self.frame_shape = frame_shape
        self.on_event = on_event or (lambda kind, data: None)
        self.stats = PollStats()
        self._stop = threading.Event()
        self._rng = np.random.default_rng()
        self._refused: tuple[str, tuple[tuple[str, str], ...]] | None = None  # the last refused version, its tags

    def stop(self) -> None:
        self._stop.set()

    def next_delay(self) -> float:
        base = self.interval if self.stats.reachable else min(
            self.max_backoff, self.interval * 2 ** min(self.stats.errors, 10))
        return base * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def poll_once(self) -> bool:
        """One poll; returns True when a new version was swapped in."""
        self.stats.polls += 1
        try:
            remote = self.loader.current_version(self.slot.name)
        except Exception as exc:  # noqa: BLE001 - any registry failure means: keep serving, back off
            self.stats.errors += 1
            self.stats.reachable = False
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.on_event("poll_error", {"model": self.slot.name, "error": self.stats.last_error})
            return False
        self.stats.reachable, self.stats.errors = True, 0
        self.on_event("poll_ok", {"model": self.slot.name})
        if remote is None or remote.version == self.slot.version:
            return False
        if self._refused == (remote.version, _trust_of(remote)):
            return False  # refused once, unchanged since: not fetched (nor counted) again until its tags change
        log.info("%s: v%s is the registry's version now (%s); loading it while v%s serves", self.slot.name,
                 remote.version, remote.via, self.slot.version)
        started = time.perf_counter()
        try:
            return self._swap_in(remote, started)
        finally:
            self.policy.spare.done()

    def _swap_in(self, remote: RemoteVersion, started: float) -> bool:
        try:
            path, manifest, optimized = fetch_prepared(self.loader, remote, turns=self.policy.turns,
                                                       child=self.policy.spare.take(),
                                                       optimize=self.slot.prefetch_optimized_copy)
            fetched = time.perf_counter()
            log.debug("%s v%s: fetched, verified, optimized: %s", self.slot.name, remote.version, optimized)
            with self.policy.session_creation():
                model = self.slot.load(path, remote.version, self.policy.threads, self.imgsz, optimized)
                ready = first_run(model, frame_shape=self.frame_shape())
            loaded = time.perf_counter()
            if not ready:
                warm_up(model, runs=1, frame_shape=self.frame_shape(), policy=self.policy)
            warmed = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - a bad version must never take down the serving one
            self.stats.failed_swaps += 1
            refused = isinstance(exc, RefusedVersion)
            if refused:
                self._refused = (remote.version, _trust_of(remote))
            self.on_event("swap_failed", {"model": self.slot.name, "version": remote.version,
                                          "error": f"{type(exc).__name__}: {exc}", "refused": refused})
            log.error("%s v%s could not be loaded, still serving v%s: %s", self.slot.name, remote.version,
                      self.slot.version, exc)
            return False
        old = self.slot.version
        sha = manifest_sha256(manifest, path)
        with self.policy.loading_step():  # it releases the version before the old one, whose memory goes back then
            self.slot.swap(model, {"source": "mlflow", "version": remote.version, "via": remote.via, "sha256": sha})
        self.loader.mark_current(self.slot.name, remote.version, Path(path), sha, remote.via, remote.tags)
        self.loader.prune(self.slot.name, {v for v in (remote.version, old) if v})
        self.stats.swaps += 1
        self.on_event("swapped", {"model": self.slot.name, "from": old, "to": remote.version})
        log.info("%s: swapped v%s -> v%s (fetch %.2f s, session and first run %.0f ms, warm-up %.0f ms)",
                 self.slot.name, old, remote.version, fetched - started, (loaded - fetched) * 1000,
                 (warmed - loaded) * 1000)
        return True

    def run(self) -> None:
        while True:
            self.policy.spare.ready(self.policy.turns)  # started ahead: imported by the time a version is new
            if self._stop.wait(self.next_delay()):
                break
            self.poll_once()
