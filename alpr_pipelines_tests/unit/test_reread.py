"""edge.reread: a CTC reader's unsure plates read again as moved copies, their texts settled by summed likelihood."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alpr_pipelines.edge.reader import OnnxPlateReader, Reading, log_softmax
from alpr_pipelines.edge.reread import COPIES, RereadUnsure, ctc_log_likelihoods, most_probable_texts, moved


def test_the_likelihood_of_a_text_sums_every_ctc_path_as_torch_does():
    rng = np.random.default_rng(0)
    log_probs = log_softmax(rng.normal(size=(7, 9, 5)) * 2)
    labels = [[1, 2, 3], [2, 2], [], [4], [1, 1, 1, 1], [3, 1, 3, 1, 3], [1] * 5 + [2] * 5]
    ours = ctc_log_likelihoods(log_probs, labels)
    for b, label in enumerate(labels):
        if not label:
            assert ours[b] == pytest.approx(log_probs[b, :, 0].sum())  # only the all-blank path reads nothing
            continue
        theirs = -torch.nn.functional.ctc_loss(
            torch.from_numpy(log_probs[b])[:, None], torch.tensor([label]), [9], [len(label)], reduction="sum")
        assert ours[b] == pytest.approx(theirs.item(), rel=1e-9) if np.isfinite(theirs.item()) else ours[b] == -np.inf
    assert ours[6] == -np.inf and np.isfinite(ours[:6]).all()  # ten characters with 8 blanks between repeats: 18 steps
    # Only the blank a repeat needs between its characters rules a path out: AAAAA needs 9 steps, ABABA 5.
    short = ctc_log_likelihoods(log_probs[:2, :8], [[1] * 5, [1, 2, 1, 2, 1]])
    assert short[0] == -np.inf and np.isfinite(short[1])


def test_the_likelihood_is_the_sum_over_every_path_that_collapses_to_the_text():
    alphabet = "AB"
    rng = np.random.default_rng(2)
    for text in ("", "A", "AB", "AA", "BA"):
        probs = rng.dirichlet(np.ones(3), size=4)  # 4 steps over blank, A, B
        total = 0.0
        for path in itertools.product(range(3), repeat=4):
            read, previous = [], 0
            for c in path:
                if c and c != previous:
                    read.append(alphabet[c - 1])
                previous = c
            if "".join(read) == text:
                total += float(np.prod([probs[t, c] for t, c in enumerate(path)]))
        label = [alphabet.index(ch) + 1 for ch in text]
        assert np.exp(ctc_log_likelihoods(np.log(probs)[None], [label])[0]) == pytest.approx(total)


def test_a_copy_moves_and_scales_the_plate_and_keeps_the_crop_size():
    crop = np.zeros((20, 40), np.uint8)
    crop[:, 10] = 255  # a bright column at x = 10
    assert moved(crop, 0.0, 0.0, 1.0) is crop and COPIES[0] == (0.0, 0.0, 1.0)
    right = moved(crop, 0.25, 0.0, 1.0)  # a quarter of the width: 10 px
    assert right.shape == crop.shape and int(right[10].argmax()) == 20
    row = np.zeros((20, 40), np.uint8)
    row[4] = 255
    assert int(moved(row, 0.0, 0.25, 1.0)[:, 7].argmax()) == 9  # a quarter of the height: 5 px down
    smaller = moved(crop, 0.0, 0.0, 0.5)  # about the centre x = 19.5: 10 -> 14.75
    assert int(smaller[10].argmax()) in (14, 15)
    edge = crop.copy()
    edge[:, 0] = 100
    assert (moved(edge, 0.25, 0.0, 1.0)[:, :10] == 100).all()  # the border repeats the crop's edge column


BLANK = [0.9, 0.05, 0.05]


def one_char(p_a: float, p_b: float) -> list[list[float]]:
    """Three steps over (blank, A, B): A or B at the first step, then blanks."""
    return [[1 - p_a - p_b, p_a, p_b], BLANK, BLANK]


class ScriptedReader:
    """A CTC reader over "AB" whose logits are scripted per call: the plain batch, then the copies' batch."""

    head, alphabet, max_length, model_version, height, width = "ctc", "AB", 8, "7", 8, 16

    def __init__(self, *batches):
        self.batches = [np.log(np.array(b)) for b in batches]
        self.asked: list[int] = []

    def logits(self, crops):
        self.asked.append(len(crops))
        return self.batches.pop(0)

    decode = OnnxPlateReader.decode  # the real decoding and length cut

    def read(self, crops):
        raise AssertionError("a CTC reader is read through its logits")


def grey(n: int) -> list[np.ndarray]:
    return [np.full((8, 16), 128, np.uint8)] * n


def test_only_unsure_plates_are_read_again_and_their_copies_settle_on_the_likeliest_text():
    barely_a, sure_a, sure_b, weak_a = one_char(0.55, 0.43), one_char(0.95, 0.03), one_char(0.08, 0.9), one_char(0.5, 0.48)
    copies = [weak_a] * 3 + [sure_b] * 3  # more copies read A, but together B is likelier
    reader = ScriptedReader([sure_a, barely_a], copies)
    readings = RereadUnsure(reader).read(grey(2))
    assert reader.asked == [2, len(COPIES) - 1]  # the sure plate is read once; the unsure one as six copies more
    assert readings[0] == Reading("A", pytest.approx(0.95))
    assert readings[1] == Reading("B", pytest.approx(3 * 0.9 / 7))  # 3 of 7 readings read B at 0.9; A counts 0


def test_the_copies_likelihoods_are_summed_not_the_surest_copy_taken():
    barely_a, fair_a, sure_b = one_char(0.55, 0.43), one_char(0.7, 0.28), one_char(0.01, 0.98)
    log_probs = [np.log(np.array(x)) for x in [barely_a] + [fair_a] * 5 + [sure_b]]
    texts = ["A"] * 6 + ["B"]
    assert most_probable_texts([log_probs], [texts], "AB") == ["A"]  # six fair readings outweigh one sure one
    assert most_probable_texts([log_probs[-1:] + log_probs[:1]], [["B", "A"]], "AB") == ["B"]
    reader = ScriptedReader([barely_a], [fair_a] * 5 + [sure_b])
    assert RereadUnsure(reader).read(grey(1)) == [Reading("A", pytest.approx((0.55 + 5 * 0.7) / 7))]


def test_several_unsure_plates_in_a_batch_each_get_their_own_copies():
    nothing = [BLANK, BLANK, BLANK]  # reads "" at confidence 0: unsure
    sure_ab = [[0.015, 0.97, 0.015], BLANK, [0.015, 0.015, 0.97]]
    barely_a, sure_b = one_char(0.55, 0.43), one_char(0.02, 0.97)
    first = [one_char(0.1, 0.85)] * 6  # the empty plate's copies read B
    second = [sure_b] * 6  # the barely-A plate's copies read B too, surely
    reader = ScriptedReader([nothing, sure_ab, barely_a], first + second)
    readings = RereadUnsure(reader).read(grey(3))
    assert reader.asked == [3, 12]
    assert [r.text for r in readings] == ["B", "AB", "B"]
    assert readings[1].confidence == pytest.approx(0.9409)  # the sure plate as read
    assert readings[2].confidence == pytest.approx(6 * 0.97 / 7)


def test_a_reread_text_is_cut_to_the_readers_length_as_a_plain_one_is():
    ab = [[0.2, 0.6, 0.2], BLANK, [0.2, 0.2, 0.6]]  # "AB" at 0.36: unsure
    reader = ScriptedReader([ab], [ab] * 6)
    reader.max_length = 1
    assert RereadUnsure(reader).read(grey(1)) == [Reading("A", pytest.approx(0.36))]


def test_copies_that_all_read_the_plain_text_keep_it_without_scoring(monkeypatch):
    import alpr_pipelines.edge.reread as reread

    monkeypatch.setattr(reread, "ctc_log_likelihoods", None)  # one text among the copies: nothing to score
    barely_a = one_char(0.55, 0.43)
    readings = RereadUnsure(ScriptedReader([barely_a], [barely_a] * 5 + [one_char(0.8, 0.18)])).read(grey(1))
    assert readings == [Reading("A", pytest.approx((6 * 0.55 + 0.8) / 7))]


def test_warming_up_runs_the_copies_too_and_other_readers_read_as_they_are():
    sure_ab = [[0.015, 0.97, 0.015], BLANK, [0.015, 0.015, 0.97]]
    reader = ScriptedReader([sure_ab])
    assert RereadUnsure(reader).read(grey(1)) == [Reading("AB", pytest.approx(0.9409))] and reader.asked == [1]
    blank = [BLANK, BLANK, BLANK]
    warming = ScriptedReader([blank], [blank] * 6, [blank] * 4, [blank] * 24)
    wrapped = RereadUnsure(warming)
    wrapped.smoke_run()
    wrapped.warm_up(runs=1)
    assert warming.asked == [1, 6, 4, 24]  # a grey crop reads nothing: unsure, so its copies are read

    class Plain(ScriptedReader):
        def read(self, crops):
            return [Reading("plain", 0.1)]

    assert RereadUnsure(Plain(), below=0.0).read(grey(1)) == [Reading("plain", 0.1)]
    slots = Plain()
    slots.head = "slots"
    assert RereadUnsure(slots).read(grey(1)) == [Reading("plain", 0.1)]
    assert RereadUnsure(slots).model_version == "7"  # the reader's attributes show through
    for bad in (1.5, "0.5", True):
        with pytest.raises(ValueError, match="must be a confidence from 0 to 1"):
            RereadUnsure(slots, below=bad)


def test_the_edge_the_gate_and_the_pyfunc_read_through_the_rereading(monkeypatch, tmp_path):
    from alpr_pipelines.edge import reading
    from alpr_pipelines.lib import reader_eval

    timed_alone, clock = [], [0.0]  # the evaluator's clock: 1 ms a reading alone, 7 ms a reading as served

    class Opened(ScriptedReader):
        def __init__(self, path, threads=None, model_version=None, providers=None):
            super().__init__()
            self.model_version = model_version

        def read(self, crops):  # the network alone: the gate times it reading each plate once
            timed_alone.append(len(crops))
            clock[0] += 0.001
            return [Reading("A", 0.1 if len(timed_alone) == 5 else 1.0)] * len(crops)  # the last plate: unsure

    monkeypatch.setattr(reading, "OnnxPlateReader", Opened)
    opened = reading.open_reader(tmp_path / "r.onnx", "3", reread_below=0.5)
    assert isinstance(opened, RereadUnsure) and opened.below == 0.5 and opened.model_version == "3"
    assert reading.open_reader(tmp_path / "r.onnx", "3").below == 0.9
    monkeypatch.setattr(reader_eval, "OnnxPlateReader", Opened)
    monkeypatch.setattr(reader_eval, "golden_crops", lambda root, max_images=None: (grey(2), ["A", "B"]))
    seen = []

    def read_in_batches(reader, crops, batch=16):
        seen.append(reader)
        clock[0] += 0.007
        return [Reading("A", 1.0)] * len(crops)

    monkeypatch.setattr(reader_eval, "read_in_batches", read_in_batches)
    monkeypatch.setattr(reader_eval, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    (tmp_path / "r.onnx").write_bytes(b"stub")  # its size is reported
    scores = reader_eval.evaluate_reader_onnx(tmp_path / "r.onnx", tmp_path, "fp", reread_below=0.25)
    assert scores.exact_match == 0.5 and {(type(r), r.below) for r in seen} == {(RereadUnsure, 0.25)}
    assert timed_alone == [1] * (reader_eval.LATENCY_WARMUP + 2)  # each golden plate alone, after the warm-up
    assert scores.latency_ms_p95 == pytest.approx(1.0) and scores.served_latency_ms_p95 == pytest.approx(7.0)
    assert scores.reread_share == 0.5  # of the two plates, the one read at 0.1 < 0.25 is read again as served
    assert {"latency_ms_p95", "served_latency_ms_p95", "reread_share"} <= set(scores.headline())

    from alpr_pipelines.edge import reader as edge_reader
    from alpr_pipelines.lib.pyfunc import model

    monkeypatch.setattr(edge_reader, "OnnxPlateReader", Opened)
    monkeypatch.setattr(model, "verify_against_registry", lambda artifacts: None)
    flavour = model.AlprPlateReaderModel()
    flavour.load_context(SimpleNamespace(artifacts={"onnx": str(tmp_path / "r.onnx")}))
    assert isinstance(flavour.reader, RereadUnsure) and flavour.reader.below == 0.9


def test_the_edge_config_sets_the_rereading_threshold_and_rejects_what_is_not_a_confidence(tmp_path):
    import yaml

    from alpr_pipelines.edge.config import ConfigError, EdgeConfig
    from alpr_pipelines.edge.reread import REREAD_BELOW

    path = tmp_path / "cameras.yaml"

    def load(reader):
        path.write_text(yaml.safe_dump({"cameras": [{"source": 0}], "models": {"reader": reader}}))
        return EdgeConfig.load(path)

    assert load({}).reread_below == REREAD_BELOW and load({"reread_below": 0}).reread_below == 0.0
    assert load({"reread_below": 0.75}).reread_below == 0.75
    for bad in (1.5, -0.1, "high", True, None):
        with pytest.raises(ConfigError, match=r"models.reader.reread_below must be a confidence from 0 to 1"):
            load({"reread_below": bad})
