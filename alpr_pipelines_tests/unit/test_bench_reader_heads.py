"""bench/reader_heads.py's scores by kind of plate: overall, Russian plates, two-line plates and the rest."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def test_crops_are_scored_overall_and_on_russian_two_line_and_other_plates(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_heads

    from alpr_pipelines.edge import reader as edge_reader
    from alpr_pipelines.lib import reader_data
    from alpr_pipelines.lib.reader_data import Sample

    labels = [("Р691АУ98", "Р691АУ98"), ("AB123", "AB123"), ("С209СУ297", "С209СУ297"), ("XY9", "XY9"),
              ("PD12TKE", ""), ("AB1234", "AB"), ("XYZ9876", "XYZ")]  # "": the top line is not known: not two-line
    read = ["Р691АУ98", "AB128", "С209СУ207", "XY9", "PD12TKE", "AB1234", "XY9876"]
    samples = [Sample(tmp_path / f"{i}.png", text, top) for i, (text, top) in enumerate(labels)]

    class StubReader:
        def __init__(self, *args, **kwargs):
            pass

        def read(self, batch):  # one batch: the bench reads 64 at a time
            return [SimpleNamespace(text=text) for text in read[: len(batch)]]

    monkeypatch.setattr(reader_data, "validate_reader_dataset",
                        lambda root, required: SimpleNamespace(splits={"val": samples}))
    monkeypatch.setattr(reader_data, "load_split_crops", lambda part: [np.zeros((20, 90), np.uint8)] * len(part))
    monkeypatch.setattr(edge_reader, "OnnxPlateReader", StubReader)
    out = reader_heads.kind_scores(tmp_path / "reader.onnx", tmp_path, "more", 0.0)  # one reading a plate
    assert out["more_crops"] == 7 and out["more_russian_crops"] == 2 and out["more_two_line_crops"] == 2
    assert out["more_russian_exact_match"] == 0.5
    assert out["more_two_line_exact_match"] == 0.5
    assert out["more_other_exact_match"] == 2 / 3
    assert out["more_exact_match"] == 4 / 7
    # Crops 90 px wide hold plates of about 78 px (the edge's margin): one band, none at least 130 px wide.
    assert out["more_by_plate_width"] == [{"band": "60-100 px", "plates": 7, "read": 4, "exact_match": 4 / 7}]
    assert out["more_exact_match_wide_plates"] is None


def test_a_time_budget_buys_the_epochs_the_timed_second_epoch_says_fit(monkeypatch, tmp_path):
    """--time-budget: two epochs on CALIBRATION_CROPS crops (all of them where there are fewer), the second timed
    (the first carries the device's warm-up), then as many epochs of all the crops as the budget holds, at least
    one; an epoch that was not timed is an error, not a guess."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_heads

    from alpr_pipelines.lib import reader_model
    from alpr_pipelines.lib.reader_data import ReaderDataset, Sample
    from alpr_pipelines.lib.reader_model import ReaderParams

    def dataset(n: int) -> ReaderDataset:
        crops = [Sample(tmp_path / f"{i}.png", "AB1", "") for i in range(n)]
        return ReaderDataset(tmp_path, "AB1", 8, {"train": crops, "val": crops[:4]}, "fp")

    trained, ends = [], []

    def train_reader(spec, data, params, client, experiment, work, on_epoch=None):
        trained.append((len(data.splits["train"]), params.epochs, data.fingerprint))
        for _ in range(params.epochs):
            on_epoch(SimpleNamespace())  # what the epoch logged: the calibration reads only when it ended

    def clock_at(*seconds):  # the first epoch ends 30 s in (warm-up), the second at the times given
        ends[:] = list(seconds)
        return lambda: ends.pop(0)

    monkeypatch.setattr(reader_model, "train_reader", train_reader)
    calibration = reader_heads.CALIBRATION_CROPS
    monkeypatch.setattr(reader_heads.time, "perf_counter", clock_at(30.0, 32.0))
    epochs, rate = reader_heads.epochs_within(600, dataset(3 * calibration), ReaderParams(), None, tmp_path)
    assert trained == [(calibration, 2, "fp-calibration")]  # not the training's own fingerprint: not reused
    assert rate == calibration / 2 and epochs == int(600 * rate / (3 * calibration))

    monkeypatch.setattr(reader_heads.time, "perf_counter", clock_at(30.0, 32.0))
    assert reader_heads.epochs_within(1, dataset(3 * calibration), ReaderParams(), None, tmp_path)[0] == 1

    monkeypatch.setattr(reader_heads.time, "perf_counter", clock_at(30.0, 32.0))
    epochs, rate = reader_heads.epochs_within(600, dataset(100), ReaderParams(), None, tmp_path)  # fewer crops
    assert trained[-1][0] == 100 and rate == 50 and epochs == 300

    monkeypatch.setattr(reader_heads.time, "perf_counter", clock_at(30.0, 30.0))
    with pytest.raises(RuntimeError, match="not timed"):
        reader_heads.epochs_within(600, dataset(100), ReaderParams(), None, tmp_path)
