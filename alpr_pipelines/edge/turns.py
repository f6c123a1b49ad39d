"""Turns: the inference work of an edge process, one piece at a time: frames, and the pieces of loading a new
version (creating its session, proving it runs, swapping it in, slices of idle cores for the child that fetches
and optimizes it).

ONNX Runtime's threads spin while their session runs (``onnx_backend.session_options``), so a frame gets every core
with no wake-up delay between operators; but any other CPU work during the frame takes a core from a thread the
frame's operators then wait for. Measured on 2 cores (two-stage, INT8, 640x384): frames that overlapped a new
version's session creation took 58 ms (median) against 31 ms. So they take turns, and a frame's latency counts its
wait for one. The one costly piece, optimizing the new graph, runs at the lowest CPU priority instead, in a child
process (``edge.prefetch``), which idle cores and the poller's slices serve.

Frames are served in arrival order (cameras on one box share its cores anyway). A piece goes at a frame's end,
ahead of the next frame, where a paced camera leaves its gap; one piece per frame's end, so neither side starves the
other. With no frame for :attr:`Turns.idle_s` (no camera running, or one slower than that), a piece goes at once.
Going at a frame's end shortens frames' waits where a creation fits in the camera's gap. Paired against arrival
order (``bench/turns_bench.py``, INT8 two-stage at 15 fps, 2 cores): on a VM where a creation under load (20-60 ms)
overran the ~18 ms gap either way, the median wait behind one came out 0.79x, 1.09x and 0.85x in three runs; on one
twice as fast, with the gap near 40 ms, two runs gave a median wait of 0.03 against 13.5 ms (p90 0.70x), then a
frame waiting behind 12 of 40 creations against 24 of 40 (mean 0.41x, p90 0.75x; docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


class Turns:
    """``with turns:`` around a frame; ``with turns.piece():`` around a piece of loading (see the module)."""

    def __init__(self, idle_s: float = 0.25) -> None:
        self.idle_s = idle_s
        self._cond = threading.Condition()
        self._busy = False  # a frame or a piece holds the turn
        self._issued = self._serving = 0  # frames' tickets: handed out, and the one whose turn is next
        self._pieces_issued = self._pieces_serving = 0  # pieces' tickets, likewise
        self._piece_next = False  # a frame ended while a piece waited: the next turn is that piece's
        self._frame_ended = float("-inf")  # monotonic time of the last frame's end

    # ---------------------------------------------------------------------------------------------- frames

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._issued
            self._issued += 1
            while self._busy or self._piece_next or ticket != self._serving:
                self._cond.wait()
            self._busy = True

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._busy = False
            self._serving += 1
            self._frame_ended = time.monotonic()
            self._piece_next = self._pieces_issued > self._pieces_serving
            self._cond.notify_all()

    # ---------------------------------------------------------------------------------------------- pieces

    @contextmanager
    def piece(self) -> Iterator[None]:
        """Hold the turn for one piece of loading: granted at the next frame's end, or at once when no frame has
        ended for :attr:`idle_s` and none is waiting."""
        with self._cond:
            ticket = self._pieces_issued
            self._pieces_issued += 1
            while True:
                if not self._busy and ticket == self._pieces_serving:
                    if self._piece_next:
                        break
                    idle_for = time.monotonic() - self._frame_ended
                    if self._issued == self._serving and idle_for >= self.idle_s:
                        break
                    self._cond.wait(None if self._issued > self._serving else self.idle_s - idle_for)
                else:
                    self._cond.wait()
            self._piece_next = False
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._pieces_serving += 1
                self._cond.notify_all()


def piece_of(turns: Turns | None) -> AbstractContextManager[None]:
    """``turns.piece()``, or no turn to take where there are no turns (a poller with no frame loop)."""
    return turns.piece() if turns is not None else nullcontext()
