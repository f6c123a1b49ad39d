"""bench/reader_heads.py's scores on the further crops: overall, on Russian plates and on the rest."""

from types import SimpleNamespace


def test_more_crops_are_scored_overall_on_russian_plates_and_on_the_rest(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_heads

    from alpr_pipelines.edge import reader as edge_reader
    from alpr_pipelines.lib import reader_eval

    truth = ["Р691АУ98", "AB123", "С209СУ297", "XY9", "PD12TKE"]
    read = ["Р691АУ98", "AB128", "С209СУ207", "XY9", "PD12TKE"]

    class StubReader:
        def __init__(self, *args, **kwargs):
            pass

        def read(self, crops):
            return [SimpleNamespace(text=text) for text in read[: len(crops)]]

    monkeypatch.setattr(reader_eval, "golden_crops", lambda root: ([object()] * len(truth), truth))
    monkeypatch.setattr(edge_reader, "OnnxPlateReader", StubReader)
    out = reader_heads.more_crops_scores(tmp_path / "reader.onnx", tmp_path)
    assert out["more_crops"] == 5 and out["more_russian_crops"] == 2
    assert out["more_russian_exact_match"] == 0.5
    assert out["more_other_exact_match"] == 2 / 3
    assert out["more_exact_match"] == 3 / 5
