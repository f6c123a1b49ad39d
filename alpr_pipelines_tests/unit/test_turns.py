"""Turns: inference work of the edge process one piece at a time, in arrival order (frames and a new version's
loading never overlap, neither can starve the other)."""

import threading
import time

from alpr_pipelines.edge.detector import Turns


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_turns_are_exclusive_and_served_in_arrival_order():
    turns = Turns()
    order: list[str] = []
    inside = []

    def take(name: str) -> None:
        with turns:
            inside.append(name)
            assert len(inside) == 1, f"{inside} hold a turn at once"
            order.append(name)
            time.sleep(0.01)
            inside.remove(name)

    with turns:  # the frame in progress
        threads = []
        for n, name in enumerate(("warm-up", "next frame", "another camera"), start=2):
            t = threading.Thread(target=take, args=(name,))
            t.start()
            threads.append(t)
            _wait_for(lambda n=n: turns._issued == n)  # it is waiting for its turn now
        assert order == []
    for t in threads:
        t.join(5)
    assert order == ["warm-up", "next frame", "another camera"]


def test_a_frame_loop_cannot_starve_a_waiting_warm_up():
    turns = Turns()
    stop = threading.Event()
    frames = []

    def frame_loop() -> None:  # takes its next turn the moment it gives one back, as an unpaced camera does
        while not stop.is_set():
            with turns:
                frames.append(time.monotonic())
                time.sleep(0.002)

    loop = threading.Thread(target=frame_loop)
    loop.start()
    _wait_for(lambda: len(frames) > 5)
    with turns:
        during = len(frames)
    stop.set()
    loop.join(5)
    assert during > 5  # it got its turn while the loop was running, after at most the frame in progress
