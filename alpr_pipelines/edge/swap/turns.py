"""The frame loop and background loading take turns: a frame and a step of loading a new version (creating its
session, its first run, the swap itself, a slice of idle cores for the fetch child) never overlap.

ONNX Runtime's threads spin while a frame runs, so any other CPU work meanwhile takes a core a frame's operator then
waits for. Frames go in arrival order; a loading step goes at a frame's end, ahead of the next frame (where a paced
camera leaves its gap), one per frame's end so neither side starves; with no frame for :attr:`FrameTurns.idle_s`, at
once. A frame's latency counts its wait for a turn. Measurements: docs/edge.md, "Turns".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class FrameTurns:
    """``with turns:`` around a frame; ``with turns.loading_turn():`` around a step of loading (see the module)."""

    def __init__(self, idle_s: float = 0.25) -> None:
        self.idle_s = idle_s
        self._cond = threading.Condition()
        self._busy = False  # a frame or a loading step holds the turn
        self._issued = self._serving = 0  # frames' tickets: handed out, and the one whose turn is next
        self._steps_issued = self._steps_serving = 0  # loading steps' tickets, likewise
        self._step_next = False  # a frame ended while a step waited: the next turn is that step's
        self._frame_ended = float("-inf")  # monotonic time of the last frame's end

    # ---------------------------------------------------------------------------------------------- frames

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._issued
            self._issued += 1
            while self._busy or self._step_next or ticket != self._serving:
                self._cond.wait()
            self._busy = True

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._busy = False
            self._serving += 1
            self._frame_ended = time.monotonic()
            self._step_next = self._steps_issued > self._steps_serving
            self._cond.notify_all()

    # ---------------------------------------------------------------------------------------------- loading

    @contextmanager
    def loading_turn(self) -> Iterator[None]:
        """Hold the turn for one step of loading: granted at the next frame's end, or at once when no frame has
        ended for :attr:`idle_s` and none is waiting."""
        with self._cond:
            ticket = self._steps_issued
            self._steps_issued += 1
            while True:
                if not self._busy and ticket == self._steps_serving:
                    if self._step_next:
                        break
                    idle_for = time.monotonic() - self._frame_ended
                    if self._issued == self._serving and idle_for >= self.idle_s:
                        break
                    self._cond.wait(None if self._issued > self._serving else self.idle_s - idle_for)
                else:
                    self._cond.wait()
            self._step_next = False
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._steps_serving += 1
                self._cond.notify_all()
