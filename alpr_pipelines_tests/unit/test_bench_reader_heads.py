"""bench/reader_heads.py's scores by kind of plate: overall, Russian plates, two-line plates and the rest."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np


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
    out = reader_heads.kind_scores(tmp_path / "reader.onnx", tmp_path, "more")
    assert out["more_crops"] == 7 and out["more_russian_crops"] == 2 and out["more_two_line_crops"] == 2
    assert out["more_russian_exact_match"] == 0.5
    assert out["more_two_line_exact_match"] == 0.5
    assert out["more_other_exact_match"] == 2 / 3
    assert out["more_exact_match"] == 4 / 7


def test_a_time_budget_buys_the_epochs_the_timed_second_epoch_says_fit(monkeypatch, tmp_path):
    """--time-budget: two epochs on CALIBRATION_CROPS crops, the second timed between the epochs' logged metrics (the
    first carries the device's warm-up), then as many epochs of all the crops as the budget holds, at least one."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_heads

    from alpr_pipelines.lib import reader_model
    from alpr_pipelines.lib.reader_data import ReaderDataset, Sample
    from alpr_pipelines.lib.reader_model import ReaderParams

    crops = [Sample(tmp_path / f"{i}.png", "AB1", "") for i in range(3 * reader_heads.CALIBRATION_CROPS)]
    data = ReaderDataset(tmp_path, "AB1", 8, {"train": crops, "val": crops[:4]}, "fp")
    trained = []

    def train_reader(spec, dataset, params, client, experiment, work):
        trained.append((len(dataset.splits["train"]), params.epochs, dataset.fingerprint))
        return SimpleNamespace(run_id="run")

    # The first epoch ended 30 s after the start (warm-up), the second 2 s after the first.
    client = SimpleNamespace(get_metric_history=lambda run_id, key: [SimpleNamespace(timestamp=32_000),
                                                                     SimpleNamespace(timestamp=30_000)])
    monkeypatch.setattr(reader_model, "train_reader", train_reader)
    rate = reader_heads.CALIBRATION_CROPS / 2  # crops a second in the timed epoch
    epochs = reader_heads.epochs_within(600, data, ReaderParams(), client, tmp_path)
    assert trained == [(reader_heads.CALIBRATION_CROPS, 2, "fp-calibration")]  # not the training's own fingerprint
    assert epochs == int(600 * rate / len(crops))
    assert reader_heads.epochs_within(1, data, ReaderParams(), client, tmp_path) == 1  # at least one
