"""How serving frames and loading new versions share an edge box's CPU, as one object the detector, the pollers
and the frame loops are given: ONNX Runtime's thread count, the frames' real-time priority, the turns frames and
loading steps take, and the spare fetch child the box's pollers share. Why each part is there: docs/edge.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from alpr_pipelines.edge.swap.prefetch import SpareFetcher
from alpr_pipelines.edge.swap.priority import check_priority, realtime
from alpr_pipelines.edge.swap.turns import FrameTurns


@contextlib.contextmanager
def pin_to_first_core(threads: int | None) -> Iterator[None]:
    """The calling thread on the first core it may use, for the block: where ONNX Runtime chose its own thread count
    (``threads`` None), it pins a session's pool threads to the other cores and leaves the first to the caller.
    Nothing where ``threads`` is set, on one core, or where the OS does not allow it."""
    pinned = None
    if not threads:
        try:
            before = os.sched_getaffinity(0)
            if len(before) > 1:
                os.sched_setaffinity(0, {min(before)})
                pinned = before
        except (AttributeError, OSError):  # not Linux, or not allowed here
            pass
    try:
        yield
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)


@dataclass
class SwapPolicy:
    """One box's CPU policy for frames and hot swaps.

    Attributes:
        threads: ONNX Runtime intra-op threads per session; None: one per core, each pinned (its default).
        realtime_priority: SCHED_FIFO priority (1-99) of the frames' threads and the sessions' pool threads; None:
            the normal priority (``swap.priority``).
        turns: frames and loading steps take turns (``swap.turns``).
        spare: the fetch child started ahead of need, shared by the box's pollers (``swap.prefetch``).
    """

    threads: int | None = None
    realtime_priority: int | None = None
    turns: FrameTurns = field(default_factory=FrameTurns)
    spare: SpareFetcher = field(default_factory=SpareFetcher)

    def __post_init__(self) -> None:
        self.realtime_priority = check_priority(self.realtime_priority, "realtime_priority")

    def frame(self) -> FrameTurns:
        """``with policy.frame():`` around one frame's inference: its turn."""
        return self.turns

    @contextlib.contextmanager
    def frame_loop(self) -> Iterator[None]:
        """Around a camera's whole frame loop: on the core the pool threads leave to their caller, at the frames'
        priority, so a frame's threads hold every core while they run."""
        with pin_to_first_core(self.threads), realtime(self.realtime_priority):
            yield

    @contextlib.contextmanager
    def loading_step(self) -> Iterator[None]:
        """Around a step of loading that runs on this process's cores (a warm-up run, the swap itself): a turn."""
        with self.turns.loading_turn():
            yield

    @contextlib.contextmanager
    def session_creation(self, serving: bool = True) -> Iterator[None]:
        """Around creating a session (and its first run): a loading turn while frames are served (``serving``), on
        the caller's core, at the frames' priority so that the session's pool threads serve at it."""
        if not serving:  # nothing to take turns with yet: just the priority
            with realtime(self.realtime_priority):
                yield
            return
        with self.turns.loading_turn(), pin_to_first_core(self.threads), realtime(self.realtime_priority):
            yield

    def close(self) -> None:
        """Ends the spare fetch child; nothing starts after."""
        self.spare.close()
