"""bench/reader_pair.py: two readers' texts joined by their CTC likelihoods."""

from pathlib import Path

import numpy as np
import pytest


def test_a_pair_of_readers_keeps_the_text_both_find_most_probable(monkeypatch):
    """bench/reader_pair.py: the CTC likelihood sums every path (two steps of "A" or "A"+blank read "A"), and the
    rescored text is the candidate whose likelihood under both readers together is highest."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_pair

    alphabet = "AB"
    steps = np.log(np.array([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]))  # blank, A, B
    # "A": AA, A-, -A  ->  0.8*0.3 + 0.8*0.6 + 0.1*0.3
    assert np.exp(reader_pair.ctc_log_likelihood(steps, "A", alphabet)) == pytest.approx(0.24 + 0.48 + 0.03)
    sure_a = np.log(np.array([[[0.02, 0.9, 0.08], [0.9, 0.05, 0.05]]]))  # reads "A", sure
    leans_b = np.log(np.array([[[0.02, 0.45, 0.53], [0.9, 0.05, 0.05]]]))  # reads "B", barely
    read = reader_pair.read_as_pair(sure_a, leans_b, alphabet)
    assert read["first"] == ["A"] and read["second"] == ["B"] and read["rescored"] == ["A"]
