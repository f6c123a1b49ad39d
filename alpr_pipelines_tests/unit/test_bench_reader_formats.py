"""bench/reader_formats.py: the Viterbi over plate layouts (checked against every path of a small lattice), the rule
that lets a greedy reading give way, and the layouts it reads the training plates with."""

import itertools

import numpy as np
import pytest


@pytest.fixture
def bench(bench_script):
    return bench_script("reader_formats")


def collapse(path: tuple[int, ...], alphabet: str) -> str:
    out, previous = [], 0
    for c in path:
        if c and c != previous:
            out.append(alphabet[c - 1])
        previous = c
    return "".join(out)


def test_the_best_path_in_formats_is_the_best_of_every_path_that_fits(bench):
    """Exhaustive over 4^5 paths: the most probable path whose collapsed text fits a pattern, two equal characters
    apart only with a blank between ("LL" may read "AA")."""
    alphabet = "AB1"
    formats = bench.PlateFormats({"L": "AB", "D": "1"}, ("LD", "LL", "LDL"))
    slots, lengths = formats.slots(alphabet)
    rng = np.random.default_rng(1)
    for _ in range(40):
        log_probs = bench.log_softmax(rng.normal(0, 2, (5, len(alphabet) + 1)))
        best_score, best_text = -np.inf, None
        for path in itertools.product(range(len(alphabet) + 1), repeat=5):
            text = collapse(path, alphabet)
            score = sum(log_probs[t, c] for t, c in enumerate(path))
            if formats.matches(text) and score > best_score:
                best_score, best_text = score, text
        ((score, chars),) = bench.best_paths_in_formats(log_probs[None], slots, lengths)
        assert score == pytest.approx(best_score, abs=1e-4) and "".join(alphabet[c] for _, c in chars) == best_text


def test_a_greedy_reading_gives_way_only_to_a_nearly_as_probable_one_that_fits(bench):
    alphabet = "AB1"
    formats = bench.PlateFormats({"L": "AB", "D": "1"}, ("LD", "LL", "LDL"))

    def steps(*columns):
        out = np.zeros((1, len(columns), len(alphabet) + 1))
        for t, column in enumerate(columns):
            for c, v in column.items():
                out[0, t, c] = v
        return out

    close = steps({3: 6, 2: 5.5}, {0: 9}, {3: 9}, {0: 9})  # "11" fits nothing; "B1" is 0.5 nats behind
    assert bench.read_in_formats(close, alphabet, formats, 2.0) == ["B1"]
    assert bench.read_in_formats(close, alphabet, formats, 0.0) == ["11"]
    confident = steps({3: 12}, {0: 12}, {3: 12}, {0: 12})  # an unknown layout read with confidence stands
    assert bench.read_in_formats(confident, alphabet, formats, 4.0) == ["11"]
    fits = steps({1: 9}, {0: 9}, {3: 9}, {0: 9}, {2: 5, 0: 4})  # "A1B" fits LDL: untouched
    assert bench.read_in_formats(fits, alphabet, formats, 4.0) == ["A1B"]


def test_merging_sure_blanks_changes_no_decision(bench):
    """Steps where every character is more than the margin behind are merged before the Viterbi: the readings are
    those of the full lattice under the same rule."""
    from alpr_pipelines.edge.reader import decode_ctc

    alphabet, margin = "AB12", 3.0
    formats = bench.PlateFormats({"L": "AB", "D": "12"}, ("LDD", "LLD", "DLLD"))
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (200, 24, len(alphabet) + 1))
    logits[:, :, 0] += rng.choice([0.0, 3.0, 9.0], size=(200, 24))  # runs of sure blanks, and unsure steps
    slots, lengths = formats.slots(alphabet)
    changed = 0
    for row, text in zip(logits, bench.read_in_formats(logits, alphabet, formats, margin), strict=True):
        log_probs = bench.log_softmax(row)
        expected = decode_ctc(row[None], alphabet)[0].text
        if not formats.matches(expected):
            ((score, chars),) = bench.best_paths_in_formats(log_probs[None], slots, lengths)
            if chars and log_probs.max(-1).sum() - score <= margin:
                expected = "".join(alphabet[c] for _, c in chars)
        assert text == expected
        changed += text != decode_ctc(row[None], alphabet)[0].text
    assert changed > 10  # the rule was exercised


def test_every_training_plate_fits_the_training_layouts_and_held_out_ones_mostly_do_not(bench):
    from alpr_pipelines.lib.plates import render_plate
    from alpr_pipelines.lib.reader_data import normalize_text

    formats = bench.training_formats()
    rng = np.random.default_rng(0)
    assert all(formats.matches(normalize_text(render_plate(rng, 32, "train").text)) for _ in range(300))
    shift = [normalize_text(render_plate(rng, 32, "shift").text) for _ in range(100)]
    assert 0 < sum(formats.matches(t) for t in shift) < 60  # "LL DDDD" is in both; the rest are held out


def test_two_equal_characters_in_a_row_need_a_blank_so_the_path_takes_the_next_best(bench):
    """Two steps, layout LL: "AA" would need a blank between its letters, so the best path that fits reads "BA"
    (B second best at the first step), not "AA" at the score of "BA"."""
    alphabet = "AB"
    formats = bench.PlateFormats({"L": "AB"}, ("LL",))
    logits = np.array([[[0.0, 5.0, 4.0], [0.0, 6.0, 0.0]]])  # blank, A, B per step
    ((score, chars),) = bench.best_paths_in_formats(bench.log_softmax(logits), *formats.slots(alphabet))
    log_probs = bench.log_softmax(logits)[0]
    assert [(t, alphabet[c]) for t, c in chars] == [(0, "B"), (1, "A")]
    assert score == pytest.approx(log_probs[0, 2] + log_probs[1, 1], abs=1e-4)
    assert bench.read_in_formats(logits, alphabet, formats, 10.0) == ["BA"]


def test_leaving_a_layout_out_scores_its_crops_against_the_rest(bench):
    """Each crop is scored once, with its own layout out of the list: a reading that fits the rest stands, one of
    the left-out layout may give way to a layout still in the list."""
    alphabet = "AB1"
    formats = bench.PlateFormats({"L": "AB", "D": "1"}, ("LD", "LL"))
    logits = np.full((2, 4, len(alphabet) + 1), 0.0)
    logits[0, [0, 2], [1, 3]] = 9.0  # "A1", clearly
    logits[0, [1, 3], 0] = 9.0
    logits[1, 0, 2], logits[1, 0, 3], logits[1, 2, 3] = 6.0, 5.5, 9.0  # "B1", a "1" close behind its B
    logits[1, [1, 3], 0] = 9.0
    truth = ["A1", "B1"]
    assert bench.left_out_layout_scores(logits, truth, alphabet, formats, 0.0) == {"right": 2, "crops": 2}
    # both crops are LD, so with LD out only LL is left, and the best LL reading is about 9 nats behind each: within
    # 1 nat both readings stand, with no limit both give way to an LL reading and are wrong
    assert bench.left_out_layout_scores(logits, truth, alphabet, formats, 1.0) == {"right": 2, "crops": 2}
    assert bench.left_out_layout_scores(logits, truth, alphabet, formats, float("inf"))["right"] == 0

