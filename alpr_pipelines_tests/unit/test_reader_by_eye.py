"""The by-eye reading of the golden crops (bench/reader_by_eye.py): how a person's readings are parsed and scored."""

import pytest


@pytest.fixture()
def by_eye(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import reader_by_eye

    return reader_by_eye


def test_a_person_types_cyrillic_plates_in_their_latin_look_alikes(by_eye):
    assert by_eye.read_as("P691AY98", "Р691АУ98")  # Latin P, A, Y for Cyrillic Р, А, У
    assert by_eye.read_as("Р691АУ98", "Р691АУ98")
    assert not by_eye.read_as("P691AY99", "Р691АУ98")
    assert not by_eye.read_as("", "Р691АУ98")
    assert not by_eye.read_as("P691AY98", "PD12TKE")


HEADER = "# golden crops 0123456789abcdef, sample seed 7, 4 crops"


def test_readings_are_one_numbered_line_per_crop_and_unreadable_ones_are_empty(by_eye, tmp_path):
    path = tmp_path / "readings.txt"
    path.write_text(HEADER + "\n#0 nh-263-p\n\n#1 ?\n#2\n#3\tAB 12\n", encoding="utf-8")
    assert by_eye.read_readings(path, 4, HEADER) == ["NH263P", "", "", "AB12"]
    with pytest.raises(SystemExit, match="the sample has 5 crops"):
        by_eye.read_readings(path, 5, HEADER)
    path.write_text(HEADER + "\n#0 AB\n#2 CD\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"readings.txt:3: expected the reading of crop #1"):
        by_eye.read_readings(path, 2, HEADER)


def test_readings_of_another_sample_are_refused(by_eye, tmp_path):
    path = tmp_path / "readings.txt"
    path.write_text(HEADER + "\n#0 AB\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="reads another sample than this machine's"):
        by_eye.read_readings(path, 1, HEADER.replace("0123", "9999"))
    path.write_text("#0 AB\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="reads another sample"):
        by_eye.read_readings(path, 1, HEADER)


def test_sheets_never_overwrite_a_persons_readings(by_eye, tmp_path):
    import numpy as np

    crops = [np.full((20, 60, 3), 200, np.uint8) for _ in range(7)]
    by_eye.write_sheets(crops, tmp_path, HEADER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readings.txt", "sheet-0.png"]
    assert by_eye.read_readings(tmp_path / "readings.txt", 7, HEADER) == [""] * 7
    by_eye.write_sheets(crops, tmp_path, HEADER)  # still empty: written again
    (tmp_path / "readings.txt").write_text(HEADER + "\n#0 AB\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="already holds readings"):
        by_eye.write_sheets(crops, tmp_path, HEADER)
