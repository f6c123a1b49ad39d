"""edge.priority: the frame loop's real-time priority, and the threads that inherit it."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from alpr_pipelines.edge.service import ConfigError, EdgeConfig
from alpr_pipelines.edge.swap import priority
from alpr_pipelines.edge.swap.priority import check_priority, realtime

linux = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="SCHED_FIFO is Linux's")


def _may_go_realtime() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_priorities_are_checked():
    assert check_priority(None, "p") is None
    assert check_priority(0, "p") is None
    assert check_priority(10, "p") == 10
    for bad in (100, -1, "high", 2.5, True):
        with pytest.raises(ValueError, match="real-time priority from 1 to 99"):
            check_priority(bad, "realtime_priority")


def test_the_edge_config_reads_the_priority_and_names_a_bad_one(tmp_path):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras: [{source: clip.avi}]\nrealtime_priority: 20\n")
    assert EdgeConfig.load(cfg).realtime_priority == 20
    cfg.write_text("cameras: [{source: clip.avi}]\n")
    assert EdgeConfig.load(cfg).realtime_priority is None
    cfg.write_text("cameras: [{source: clip.avi}]\nrealtime_priority: 200\n")
    with pytest.raises(ConfigError, match=r"cameras.yaml: realtime_priority must be a real-time priority"):
        EdgeConfig.load(cfg)


@linux
def test_the_block_runs_at_fifo_its_new_threads_keep_it_and_the_thread_gets_its_policy_back():
    if not _may_go_realtime():
        pytest.skip("this process may not use SCHED_FIFO (needs CAP_SYS_NICE or an rtprio limit)")
    seen: dict[str, tuple[int, int]] = {}

    def record() -> None:  # as ONNX Runtime's pool threads start inside a session's creation
        seen["started"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

    def body() -> None:
        with realtime(7):
            seen["inside"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
            t = threading.Thread(target=record)
            t.start()
            t.join()
        seen["after"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["inside"] == (os.SCHED_FIFO, 7)
    assert seen["started"] == (os.SCHED_FIFO, 7)
    assert seen["after"] == (os.SCHED_OTHER, 0)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # another thread's policy is not this one's


def test_a_box_that_refuses_it_runs_the_block_at_normal_priority_and_says_what_to_grant(monkeypatch, caplog):
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse, raising=False)
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: 0, raising=False)
    monkeypatch.setattr(os, "sched_getparam", lambda pid: None, raising=False)
    monkeypatch.setattr(priority, "_warned", set())
    ran = []
    with caplog.at_level(logging.WARNING, logger="alpr_pipelines.edge.swap.priority"):
        for _ in range(2):
            with realtime(10):
                ran.append(True)
    assert ran == [True, True]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once, not per frame loop or session
    assert "CAP_SYS_NICE" in warnings[0] and "LimitRTPRIO=10" in warnings[0]


def test_no_priority_changes_nothing(monkeypatch):
    def fail(*args: object) -> None:
        raise AssertionError("no scheduling call expected")

    monkeypatch.setattr(os, "sched_setscheduler", fail, raising=False)
    with realtime(None):
        pass
