"""The by-eye reading of the golden crops (bench/reader_by_eye.py): how readings by eye are parsed and scored."""

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


def test_several_readings_are_scored_side_by_side_with_the_reader(by_eye):
    truth = ["AB12", "Р691АУ98", "CD34", "EF56"]
    readings = {"a": ["AB12", "P691AY98", "", "EF58"], "b": ["AB12", "P691AY98", "CD34", "EF58"]}
    scores = by_eye.by_eye_scores(truth, readings, machine=["AB12", "P691AY98", "CD31", "EF56"])
    assert scores["read_by_each"] == {"a": 2, "b": 3}
    assert (scores["read_by_any"], scores["read_by_all"], scores["unread_by_any"]) == (3, 2, ["#3 EF56"])
    # The reader is held to the exact text: Latin look-alikes count for a reading by eye only.
    assert (scores["read_by_reader"], scores["read_by_reader_and_any"], scores["read_by_reader_and_all"]) == (2, 1, 1)
    assert scores["read_by_all_missed_by_reader"] == ["#1 Р691АУ98"]  # both readings read it, the reader did not
    assert scores["read_by_reader_alone"] == ["#3 EF56"]
    alone = by_eye.by_eye_scores(truth, {"a": readings["a"]}, machine=["AB12", "", "", ""])
    assert (alone["read_by_any"], alone["read_by_all"], alone["read_by_all_missed_by_reader"]) == (2, 2,
                                                                                                 ["#1 Р691АУ98"])
    with pytest.raises(ValueError, match="no readings"):
        by_eye.by_eye_scores(truth, {})
    # By the gate's plate-width bands, narrowest first.
    widths = by_eye.by_eye_scores(truth, readings, machine=["AB12", "P691AY98", "CD31", "EF56"],
                                  widths=[50, 120, 140, 135])["by_plate_width"]
    assert widths == [
        {"band": "under 60 px", "crops": 1, "read_by_any": 1, "read_by_all": 1, "read_by_reader": 1},
        {"band": "100-130 px", "crops": 1, "read_by_any": 1, "read_by_all": 1, "read_by_reader": 0},
        {"band": "130 px and over", "crops": 2, "read_by_any": 1, "read_by_all": 0, "read_by_reader": 1}]
    with pytest.raises(ValueError, match="one per crop"):
        by_eye.by_eye_scores(truth, readings, widths=[50, 120])


def test_tiles_are_each_crop_on_its_own_enlarged_and_numbered_as_on_the_sheets(by_eye, tmp_path):
    import cv2
    import numpy as np

    crops = [np.full((20, 60, 3), 40 * n, np.uint8) for n in range(4)]
    by_eye.write_sheets(crops, tmp_path, HEADER, tiles_too=True)
    assert sorted(p.name for p in tmp_path.glob("tile-*.png")) == [f"tile-{n}.png" for n in range(4)]
    tile = cv2.imread(str(tmp_path / "tile-2.png"))
    assert tile.shape == (3 * by_eye.TILE_H, 3 * by_eye.TILE_W, 3)
    assert abs(int(tile[30, 30, 0]) - 80) <= 2  # crop 2's grey, not another crop's
