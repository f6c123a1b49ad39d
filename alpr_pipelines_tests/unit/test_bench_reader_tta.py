"""bench/reader_tta.py: a crop read as moved and scaled copies, their texts joined by vote and by likelihood."""


import numpy as np
import pytest


@pytest.fixture
def tta(bench_script):
    return bench_script("reader_tta")


def test_the_copies_texts_are_joined_by_vote_and_by_their_summed_likelihoods(tta):
    alphabet = "AB"

    def steps(*rows):  # one crop's per-step probabilities over blank, A, B
        return np.log(np.array([rows]))

    blank, b = [0.9, 0.05, 0.05], [0.05, 0.05, 0.9]
    moving = [steps(b, blank, blank), steps(blank, b, blank), steps(blank, blank, b)]  # "B", a step later each copy
    assert tta.read_with_copies(moving, alphabet) == {"vote": ["B"], "rescored": ["B"]}
    per_step_mean = sum(moving) / 3  # what averaging the copies' steps would read instead
    assert per_step_mean[0].argmax(-1).tolist() == [0, 0, 0]  # blanks win where the spikes disagree: nothing read

    barely_a = steps([0.02, 0.55, 0.43], blank, blank)
    sure_b = steps([0.02, 0.08, 0.9], blank, blank)
    read = tta.read_with_copies([barely_a, sure_b], alphabet)
    assert read == {"vote": ["A"], "rescored": ["B"]}  # a tie keeps the plain crop's text; together B is likelier
    read = tta.read_with_copies([barely_a, sure_b, sure_b], alphabet)
    assert read["vote"] == ["B"]  # two copies of three outvote the plain crop
    sure_a = steps([0.01, 0.95, 0.04], blank, blank)
    nothing = steps(blank, blank, blank)
    read = tta.read_with_copies([nothing, sure_b, sure_a, sure_b, sure_a], alphabet)
    assert read == {"vote": ["B"], "rescored": ["A"]}  # a tie without the plain text: the first copy's; A likelier
    assert tta.read_with_copies([sure_b], alphabet, max_length=0)["vote"] == [""]  # cut as the edge cuts a text
