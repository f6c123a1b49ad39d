"""Real-time CPU priority for the threads that serve frames (``realtime_priority`` in the edge config).

A frame's ONNX Runtime threads hold every core of a small box for most of the frame, and any other runnable thread
that the kernel lets in takes a core from one of them while the other waits at the next operator. A nice value only
weighs the detector against the box's other services; under ``SCHED_FIFO`` nothing of normal priority runs on a core
while a frame's thread wants it, and a frame waits only for the pieces of loading it takes turns with
(``swap.turns``). What keeps the box responsive: frames end (a paced camera leaves gaps), ONNX Runtime's threads stop
spinning when a run ends (``backends.onnx.session_options``), and the kernel keeps 5% of each second for normal
threads however busy the real-time ones are (``/proc/sys/kernel/sched_rt_runtime_us``).

The policy is per thread, and threads inherit their creator's: the frame loop runs under :func:`realtime`, and so
does the creation of each session, whose pool threads then serve at it. Nothing is started from a real-time thread
but those pool threads (a child process, say, would inherit it too).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

_warned: set[str] = set()


def check_priority(priority: object, where: str) -> int | None:
    """``priority`` as a SCHED_FIFO priority (1-99), or None for none; ValueError naming ``where`` otherwise."""
    if priority is None or priority is False or priority == 0:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 99:
        raise ValueError(f"{where} must be a real-time priority from 1 to 99 (or 0/null for none), got {priority!r}")
    return priority


@contextlib.contextmanager
def realtime(priority: int | None) -> Iterator[None]:
    """The calling thread at ``SCHED_FIFO`` ``priority`` for the block (threads it starts meanwhile keep it), and
    back to its own policy after; nothing where ``priority`` is None. Where this box does not allow it (no
    ``CAP_SYS_NICE``, no rtprio limit, not Linux) the block runs at the thread's own priority, and the first such
    failure is logged once with what to grant."""
    before = None
    if priority:
        try:
            before = os.sched_getscheduler(0), os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (AttributeError, OSError) as exc:
            before = None
            if str(exc) not in _warned:
                _warned.add(str(exc))
                log.warning("real-time priority %d not allowed here (%s): frames run at the normal priority; grant "
                            "CAP_SYS_NICE or an rtprio limit (systemd LimitRTPRIO=%d, docker --cap-add SYS_NICE "
                            "--ulimit rtprio=%d) or set realtime_priority to 0", priority, exc, priority, priority)
    try:
        yield
    finally:
        if before is not None:
            os.sched_setscheduler(0, before[0], before[1])
