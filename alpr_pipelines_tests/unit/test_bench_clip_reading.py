"""bench/clip_reading.py: the demo clip's plates read from their true boxes, as the edge reads and each once, beside
the edge's readings of the detector's boxes; and the ``--reread-below`` flag it shares with bench/reader_heads.py."""

import argparse

import pytest

from alpr_pipelines.cli.demo import CLIP_HEIGHT, CLIP_WIDTH, clip_readings
from alpr_pipelines.edge.reader import Reading, read_region
from alpr_pipelines.edge.reread import REREAD_BELOW
from alpr_pipelines.lib.reader_data import normalize_text
from alpr_pipelines.lib.synth import clip_scene

FRAMES = 6  # one scene of the clip, held for six frames


class ReadsTruthBut:
    """Reads each frame's plates (one batch a frame, in order) as their true texts, except where ``wrong`` names
    (frame, plate): those read "WRONG"."""

    def __init__(self, truth: dict[int, list[str]], wrong: set[tuple[int, int]]):
        self.truth, self.wrong, self.frame = truth, wrong, 0

    def read(self, crops):
        texts = self.truth[self.frame]
        assert len(crops) == len(texts), "a frame's readable plates are read in one batch"
        readings = [Reading("WRONG" if (self.frame, p) in self.wrong else t, 0.9) for p, t in enumerate(texts)]
        self.frame += 1
        return readings


@pytest.fixture(scope="module")
def clip():
    frames = [clip_scene(0, i, CLIP_WIDTH, CLIP_HEIGHT) for i in range(FRAMES)]
    boxes = {i: plates for i, plates, _ in clip_readings([{"frame": i, "plates": []} for i in range(FRAMES)])}
    truth = {i: [normalize_text(b.text) for b in plates] for i, plates in boxes.items()}
    assert all(truth.values()), "every frame of the scene shows a plate wide enough to read"
    assert all(read_region(frames[i].image, b.x1, b.y1, b.x2, b.y2) is not None for i in boxes for b in boxes[i])
    return [f.image for f in frames], truth, boxes


def test_true_boxes_are_read_both_ways_beside_the_edge_readings(bench_script, clip):
    clip_reading = bench_script("clip_reading")
    frames, truth, boxes = clip
    first = boxes[0][0]
    results = [{"frame": i, "plates": []} for i in range(FRAMES)]
    results[0]["plates"] = [{"box": [first.x1, first.y1, first.x2, first.y2], "text": truth[0][0]}]  # the edge read one
    as_the_edge_reads = ReadsTruthBut(truth, wrong={(2, 0)})
    each_once = ReadsTruthBut(truth, wrong={(i, 0) for i in range(FRAMES)})

    counts = clip_reading.read_true_boxes(frames, results, as_the_edge_reads, each_once)

    total = sum(len(t) for t in truth.values())
    assert (counts.total, counts.from_truth, counts.from_truth_once, counts.from_detector) == (
        total, total - 1, total - FRAMES, 1)
    missed = boxes[2][0]
    assert counts.misses == [(round(missed.x2 - missed.x1), truth[2][0], "WRONG")]  # the edge-like reading's misses
    assert set(counts.distinct) == counts.texts == {t for texts in truth.values() for t in texts}


def test_reread_below_defaults_to_the_edges_threshold_and_rejects_what_is_not_a_confidence(bench_script, capsys):
    common = bench_script("common")
    parser = argparse.ArgumentParser(prog="script")
    assert common.reread_below_or_exit(parser, None) == REREAD_BELOW
    assert common.reread_below_or_exit(parser, 0) == 0.0
    with pytest.raises(SystemExit):
        common.reread_below_or_exit(parser, 1.5)
    assert "--reread-below must be a confidence from 0 to 1" in capsys.readouterr().err


def test_a_true_box_that_gives_no_crop_is_missed_both_ways_and_listed_as_read_none(bench_script, clip, monkeypatch):
    from alpr_pipelines.edge import reader as edge_reader

    clip_reading = bench_script("clip_reading")
    frames, truth, boxes = clip
    gone = boxes[1][0]
    real = edge_reader.read_region

    def no_crop_for_gone(frame, x1, y1, x2, y2):
        return None if (x1, y1, x2, y2) == (gone.x1, gone.y1, gone.x2, gone.y2) else real(frame, x1, y1, x2, y2)

    monkeypatch.setattr(edge_reader, "read_region", no_crop_for_gone)
    readable = {i: [t for p, t in enumerate(texts) if (i, p) != (1, 0)] for i, texts in truth.items()}
    results = [{"frame": i, "plates": []} for i in range(FRAMES)]

    counts = clip_reading.read_true_boxes(frames, results, ReadsTruthBut(readable, set()),
                                          ReadsTruthBut(readable, set()))

    total = sum(len(t) for t in truth.values())
    assert (counts.total, counts.from_truth, counts.from_truth_once, counts.from_detector) == (
        total, total - 1, total - 1, 0)  # the readings after the missing crop stay with their own plates
    assert counts.misses == [(round(gone.x2 - gone.x1), truth[1][0], None)]
