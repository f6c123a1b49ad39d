import os

from alpr_pipelines.edge.swap.prefetch import STARVED_SHARE, WINDOW_S, run_and_wait, starved


def test_a_child_is_starved_only_when_it_waits_for_a_core_it_does_not_get():
    w = WINDOW_S
    assert starved(0.05 * w, 0.9 * w, w)  # runnable nearly all the window, ran 5% of a core: slices
    assert not starved(0.33 * w, 0.6 * w, w)  # the gaps of a paced camera: a third of a core, no slices
    assert not starved(0.0, 0.0, w)  # waiting on the network (or done): slices would not help
    assert not starved(0.5 * STARVED_SHARE * w, 0.1 * STARVED_SHARE * w, w)  # little work, little wait
    assert not starved(0.0, 1.0, 0.0)


def test_run_and_wait_reads_this_kernels_schedstat_or_says_it_cannot():
    got = run_and_wait(os.getpid())
    if got is not None:  # Linux with scheduler statistics
        ran, waited = got
        assert ran > 0 and waited >= 0
    assert run_and_wait(2 ** 22 + 12345) is None  # no such process
