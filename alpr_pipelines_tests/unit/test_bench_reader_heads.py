"""bench/reader_heads.py's scores by kind of plate: overall, Russian plates, two-line plates and the rest."""

from types import SimpleNamespace

import numpy as np


def test_crops_are_scored_overall_and_on_russian_two_line_and_other_plates(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_heads

    from alpr_pipelines.edge import reader as edge_reader
    from alpr_pipelines.lib import reader_eval

    truth = ["Р691АУ98", "AB123", "С209СУ297", "XY9", "PD12TKE", "AB1234", "XYZ9876"]
    read = ["Р691АУ98", "AB128", "С209СУ207", "XY9", "PD12TKE", "AB1234", "XY9876"]
    wide, square = np.zeros((20, 90), np.uint8), np.zeros((40, 64), np.uint8)
    crops = [wide, wide, square, wide, wide, square, square]  # a Russian crop counts as Russian whatever its shape

    class StubReader:
        def __init__(self, *args, **kwargs):
            pass

        def read(self, batch):  # one batch: the bench reads 64 at a time
            return [SimpleNamespace(text=text) for text in read[: len(batch)]]

    monkeypatch.setattr(reader_eval, "golden_crops", lambda root: (crops, truth))
    monkeypatch.setattr(edge_reader, "OnnxPlateReader", StubReader)
    out = reader_heads.kind_scores(tmp_path / "reader.onnx", tmp_path, "more")
    assert out["more_crops"] == 7 and out["more_russian_crops"] == 2 and out["more_two_line_crops"] == 2
    assert out["more_russian_exact_match"] == 0.5
    assert out["more_two_line_exact_match"] == 0.5
    assert out["more_other_exact_match"] == 2 / 3
    assert out["more_exact_match"] == 4 / 7
