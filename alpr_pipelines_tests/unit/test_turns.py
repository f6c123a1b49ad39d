"""FrameTurns: the inference work of the edge process one piece at a time. Frames go in arrival order; a piece of loading
goes at a frame's end, ahead of the next frame, or at once when no frame has come for a while; neither starves."""

import threading
import time

from alpr_pipelines.edge.swap.turns import FrameTurns


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _exclusive(turns: FrameTurns, order: list[str], inside: list[str]):
    def take(name: str, piece: bool) -> None:
        with turns.loading_turn() if piece else turns:
            inside.append(name)
            assert len(inside) == 1, f"{inside} hold a turn at once"
            order.append(name)
            time.sleep(0.01)
            inside.remove(name)

    return take


def test_frames_go_in_arrival_order_and_a_waiting_piece_goes_at_the_next_frames_end():
    turns = FrameTurns(idle_s=60)
    order: list[str] = []
    take = _exclusive(turns, order, [])
    threads = []
    with turns:  # the frame in progress
        for n, (name, piece) in enumerate((("next frame", False), ("another camera", False), ("session", True))):
            t = threading.Thread(target=take, args=(name, piece))
            t.start()
            threads.append(t)
            _wait_for(lambda n=n: turns._issued + turns._steps_issued == n + 2)  # waiting for its turn now
        assert order == []
    for t in threads:
        t.join(5)
    assert order == ["session", "next frame", "another camera"]


def test_a_piece_waits_for_a_frames_end_while_frames_come_and_goes_at_once_when_none_do():
    turns = FrameTurns(idle_s=0.2)
    with turns.loading_turn():  # no frame has come yet: at once
        pass
    with turns:
        pass
    asked = time.monotonic()
    with turns.loading_turn():  # a frame ended just now and none has come since: it waits for the idle time to pass
        waited = time.monotonic() - asked
    assert 0.15 <= waited < 5


def test_a_frame_waits_for_at_most_the_piece_in_progress_and_pieces_alternate_with_frames():
    turns = FrameTurns(idle_s=60)
    stop = threading.Event()
    log: list[str] = []

    def frame_loop() -> None:  # takes its next turn the moment it gives one back, as an unpaced camera does
        while not stop.is_set():
            with turns:
                log.append("frame")
                time.sleep(0.002)

    def pieces() -> None:
        for _ in range(5):
            with turns.loading_turn():
                log.append("piece")

    loop = threading.Thread(target=frame_loop)
    loop.start()
    _wait_for(lambda: len(log) > 3)
    loader = threading.Thread(target=pieces)
    loader.start()
    loader.join(10)
    stop.set()
    loop.join(5)
    assert not loader.is_alive()  # the frame loop did not starve the pieces
    first = log.index("piece")
    run = log[first:first + 9]
    assert run == ["piece", "frame"] * 4 + ["piece"], run  # one piece per frame's end, never two in a row
