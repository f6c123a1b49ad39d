"""bench/reader_pair.py: two readers' texts joined by their CTC likelihoods."""


import numpy as np
import pytest


@pytest.fixture
def pair(bench_script):
    return bench_script("reader_pair")


def test_the_pair_keeps_the_text_both_readers_together_find_more_probable(pair):
    alphabet = "AB"
    leans_a = np.log(np.array([[[0.02, 0.55, 0.43], [0.9, 0.05, 0.05]]]))  # reads "A", barely
    sure_b = np.log(np.array([[[0.02, 0.08, 0.9], [0.9, 0.05, 0.05]]]))  # reads "B", sure
    for first, second in ((leans_a, sure_b), (sure_b, leans_a)):  # the order of the two does not matter
        read = pair.read_as_pair(first, second, alphabet)
        assert read["rescored"] == ["B"] and {read["first"][0], read["second"][0]} == {"A", "B"}
    assert pair.read_as_pair(leans_a, sure_b, alphabet)["averaged"] == ["B"]  # 0.55 x 0.08 < 0.43 x 0.9 per step
