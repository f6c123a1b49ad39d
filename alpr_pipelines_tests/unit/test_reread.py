"""edge.reread: a CTC reader's unsure plates read again as moved copies, their texts settled by summed likelihood."""

import numpy as np
import pytest
import torch

from alpr_pipelines.edge.reader import Reading
from alpr_pipelines.edge.reread import COPIES, RereadUnsure, ctc_log_likelihoods, log_softmax, moved


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
        if np.isinf(theirs.item()):
            assert ours[b] == -np.inf  # 5 + 5 characters with a repeat need 11 steps; there are 9
        else:
            assert ours[b] == pytest.approx(theirs.item(), rel=1e-9)
    assert ours[6] == -np.inf and np.isfinite(ours[:6]).all()


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


class ScriptedReader:
    """A CTC reader over "AB" whose logits are scripted per call: the plain batch, then the copies' batch."""

    head, alphabet, max_length, model_version = "ctc", "AB", 8, "7"

    def __init__(self, *batches):
        self.batches = [np.log(np.array(b)) for b in batches]
        self.asked: list[int] = []

    def logits(self, crops):
        self.asked.append(len(crops))
        return self.batches.pop(0)

    def read(self, crops):
        raise AssertionError("a CTC reader is read through its logits")


def test_only_unsure_plates_are_read_again_and_their_copies_settle_on_the_likeliest_text():
    crops = [np.full((8, 16), 128, np.uint8)] * 2
    sure_a = [[0.025, 0.95, 0.025], BLANK, BLANK]
    barely_a = [[0.02, 0.55, 0.43], BLANK, BLANK]  # "A" at 0.55: unsure
    sure_b = [[0.02, 0.08, 0.9], BLANK, BLANK]
    weak_a = [[0.02, 0.5, 0.48], BLANK, BLANK]
    copies = [weak_a, weak_a, weak_a, sure_b, sure_b, sure_b]  # more copies read A, but together B is likelier
    reader = ScriptedReader([sure_a, barely_a], copies)
    readings = RereadUnsure(reader).read(crops)
    assert reader.asked == [2, len(COPIES) - 1]  # the sure plate is read once; the unsure one as six copies more
    assert readings[0] == Reading("A", pytest.approx(0.95))
    assert readings[1] == Reading("B", pytest.approx(0.9))  # the surest copy that read B (four of seven read A)


def test_copies_that_all_read_the_plain_text_keep_it_with_the_surest_copys_confidence(monkeypatch):
    import alpr_pipelines.edge.reread as reread

    monkeypatch.setattr(reread, "ctc_log_likelihoods", None)  # one text among the copies: nothing to score
    barely_a = [[0.02, 0.55, 0.43], BLANK, BLANK]
    copies = [barely_a] * 5 + [[[0.02, 0.8, 0.18], BLANK, BLANK]]
    readings = RereadUnsure(ScriptedReader([barely_a], copies)).read([np.full((8, 16), 128, np.uint8)])
    assert readings == [Reading("A", pytest.approx(0.8))]


def test_a_sure_batch_a_slots_reader_and_a_zero_threshold_read_as_the_reader_does():
    crops = [np.full((8, 16), 128, np.uint8)]
    sure_ab = [[0.015, 0.97, 0.015], BLANK, [0.015, 0.015, 0.97]]
    reader = ScriptedReader([sure_ab])
    assert RereadUnsure(reader).read(crops) == [Reading("AB", pytest.approx(0.9409))] and reader.asked == [1]

    class Plain(ScriptedReader):
        def read(self, crops):
            return [Reading("plain", 0.1)]

    assert RereadUnsure(Plain(), below=0.0).read(crops) == [Reading("plain", 0.1)]
    slots = Plain()
    slots.head = "slots"
    assert RereadUnsure(slots).read(crops) == [Reading("plain", 0.1)]
    assert RereadUnsure(slots).model_version == "7"  # the reader's attributes show through
    with pytest.raises(ValueError, match="between 0 and 1"):
        RereadUnsure(slots, below=1.5)


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
