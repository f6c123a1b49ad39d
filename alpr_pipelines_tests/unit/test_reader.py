"""The plate reader's pure parts: decoders, text rules, label validation and import, and the edge's third stage."""

import csv
import json

import cv2
import numpy as np
import pytest

from alpr_pipelines.edge.detector import FrameResult, ModelSlot, PlateText
from alpr_pipelines.edge.reader import MIN_READ_WIDTH, Reading, decode_ctc, decode_slots, read_region
from alpr_pipelines.edge.reading import PlateReadingStage
from alpr_pipelines.edge.yolo import Detection
from alpr_pipelines.lib.datasets import DatasetError, DatasetValidationError
from alpr_pipelines.lib.plates import CYRILLIC, PLATE_FORMATS
from alpr_pipelines.lib.reader_data import (
    ALPHABET,
    MAX_TEXT_LENGTH,
    import_boxes_with_text,
    import_labelled_crops,
    normalize_text,
    text_problems,
    validate_reader_dataset,
    write_synthetic_reader_dataset,
)
from alpr_pipelines.lib.reader_eval import (
    ReaderEvaluation,
    edit_distance,
    exact_match_by_width,
    plate_width,
    text_scores,
    wide_plates_score,
    width_band,
)

ABC = "ABC"


def one_hot(rows: list[list[int]], classes: int = len(ABC) + 1, high: float = 8.0) -> np.ndarray:
    """Logits where each step's chosen class stands ``high`` above the rest."""
    out = np.zeros((len(rows), len(rows[0]), classes), np.float32)
    for i, row in enumerate(rows):
        for t, c in enumerate(row):
            out[i, t, c] = high
    return out


@pytest.mark.parametrize(("steps", "text"), [
    ([1, 1, 0, 2, 2, 2, 0, 0], "AB"),  # repeats collapse
    ([1, 0, 1, 2, 0, 2], "AABB"),  # a blank between repeats keeps both
    ([0, 0, 0, 0], ""),  # all blanks: nothing
    ([3, 3, 3, 3], "C"),
    ([0, 1, 2, 3, 0], "ABC"),
])
def test_ctc_decoding_collapses_repeats_then_drops_blanks(steps, text):
    (reading,) = decode_ctc(one_hot([steps]), ABC)
    assert reading.text == text
    assert (reading.confidence > 0.99) if text else reading.confidence == 0.0


@pytest.mark.parametrize(("slots", "text"), [
    ([1, 2, 3, 0, 0], "ABC"),
    ([1, 1, 0, 0, 0], "AA"),  # slots never collapse: a repeated letter is two letters
    ([0, 0, 0, 0, 0], ""),
    ([1, 0, 2, 0, 0], "AB"),  # a pad inside the text is skipped, the rest kept in order
])
def test_slot_decoding_reads_each_position_and_skips_padding(slots, text):
    (reading,) = decode_slots(one_hot([slots]), ABC)
    assert reading.text == text and reading.confidence > 0.99


def test_confidence_is_the_product_of_the_positions_probabilities():
    logits = np.zeros((1, 2, 4), np.float32)
    logits[0, 0, 1] = logits[0, 1, 2] = np.log(3.0)  # p = 3 / (3 + 3) = 0.5 at each position
    (reading,) = decode_slots(logits, ABC)
    assert reading.text == "AB" and reading.confidence == pytest.approx(0.25)


def test_text_rules_normalize_separators_and_name_what_is_wrong():
    assert normalize_text("ab-123 c") == "AB123C"
    assert normalize_text("LL 12\nDDDD") == "LL12DDDD"
    assert normalize_text("м123ас 77") == "М123АС77"  # Cyrillic upper-cased, kept Cyrillic
    assert text_problems("AB123") == []
    assert text_problems("") == ["empty text"]
    assert text_problems("A" * (MAX_TEXT_LENGTH + 1)) == [f"{MAX_TEXT_LENGTH + 1} characters, over the maximum of "
                                                        f"{MAX_TEXT_LENGTH}"]
    assert text_problems("AB#1") == ["characters outside the alphabet: '#'"]


def test_the_alphabet_writes_every_synthetic_plate_and_has_no_repeats():
    assert len(set(ALPHABET)) == len(ALPHABET)
    for formats in PLATE_FORMATS.values():
        for fmt in formats:
            assert set(fmt.letters) <= set(ALPHABET)
    assert set(CYRILLIC) <= set(ALPHABET) and set("0123456789") <= set(ALPHABET)


def test_scores_are_exact_match_and_character_error_rate():
    assert edit_distance("AB123", "AB123") == 0
    assert edit_distance("AB123", "A8123") == 1 and edit_distance("AB12", "AB123") == 1
    exact, cer = text_scores(["AB123", "XY9"], ["AB123", "XY99"])
    assert exact == 0.5 and cer == pytest.approx(1 / 9)


def test_exact_match_is_also_given_by_the_plates_width():
    # A crop cut as the edge cuts one: the plate and READ_MARGIN (8%) on each side.
    assert plate_width(np.zeros((30, 116), np.uint8)) == pytest.approx(100)
    assert [width_band(w) for w in (40, 59.9, 60, 99, 100, 129.9, 130, 400)] == [
        "under 60 px", "under 60 px", "60-100 px", "60-100 px", "100-130 px", "100-130 px", "130 px and over",
        "130 px and over"]
    truth = ["A1", "B2", "C3", "D4", "E5"]
    read = ["A1", "B0", "C3", "D4", "E6"]
    widths = [150, 50, 110, 55, 140]
    bands = exact_match_by_width(read, truth, widths)
    # Narrowest band first; a band without plates is left out.
    assert bands == [{"band": "under 60 px", "plates": 2, "read": 1, "exact_match": 0.5},
                     {"band": "100-130 px", "plates": 1, "read": 1, "exact_match": 1.0},
                     {"band": "130 px and over", "plates": 2, "read": 1, "exact_match": 0.5}]
    assert wide_plates_score(bands) == 0.5  # 150 and 140: at least WIDE_PLATE (130) px
    assert wide_plates_score(exact_match_by_width(read, truth, [50] * 5)) is None
    with pytest.raises(ValueError, match="one per plate"):
        exact_match_by_width(read, truth, widths[:4])
    base = {"exact_match": 0.6, "cer": 0.1, "latency_ms_p50": 1.0, "latency_ms_p95": 2.0, "plates_per_second": 9.0,
            "file_size_mb": 1.0, "images": 5, "golden_fingerprint": "g"}
    scored = ReaderEvaluation(**base, by_plate_width=bands, exact_match_wide_plates=0.5)
    assert scored.headline()["exact_match_wide_plates"] == 0.5
    assert "exact_match_wide_plates" not in ReaderEvaluation(**base).headline()  # no plate that wide: no number
    # Cached as the registry caches it (JSON, keys sorted): the bands come back in their order.
    again = ReaderEvaluation(**json.loads(json.dumps(scored.as_dict(), sort_keys=True)))
    assert again == scored and [b["band"] for b in again.by_plate_width] == [b["band"] for b in bands]


def _write_crop(path, shade=0):
    image = np.full((24, 96, 3), 235, np.uint8)
    cv2.putText(image, "AB12", (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (shade, shade, shade), 2)
    cv2.imwrite(str(path), image)


def test_user_crops_with_a_labels_csv_are_validated_by_file(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for shade, name in enumerate(("a.png", "b.png", "c.png")):
        _write_crop(crops / name, shade * 40)
    (crops / "broken.png").write_bytes(b"not an image")
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["image", "text"], ["a.png", "ab-12"], ["b.png", ""], ["c.png", "AB#12"],
                                 ["broken.png", "AB12"], ["../outside.png", "AB12"],
                                 ["a.png", "A" * (MAX_TEXT_LENGTH + 2)]])
    with pytest.raises(DatasetValidationError) as info:
        import_labelled_crops(crops, labels, tmp_path / "out")
    found = {(p.kind, p.path.rsplit("/", 1)[-1], p.detail.split(": ", 1)[-1]) for p in info.value.problems}
    assert ("bad text", "b.png", "empty text") in found
    assert ("bad text", "c.png", "characters outside the alphabet: '#'") in found
    assert ("unreadable image", "broken.png", "cannot be decoded as an image") in found
    assert any(kind == "bad path" for kind, _, _ in found)
    assert any(kind == "bad text" and "over the maximum" in detail for kind, _, detail in found)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written

    labels.write_text("image,text\na.png,ab-12\nb.png,CD 34\nc.png,ЕК 99\n", encoding="utf-8")
    root = import_labelled_crops(crops, labels, tmp_path / "out", val_share=0.5)
    dataset = validate_reader_dataset(root, required_splits=())
    texts = sorted(s.text for samples in dataset.splits.values() for s in samples)
    assert texts == ["AB12", "CD34", "ЕК99"]
    assert dataset.alphabet == ALPHABET and dataset.max_length == MAX_TEXT_LENGTH
    assert json.loads((root / "reader.json").read_text())["max_length"] == MAX_TEXT_LENGTH


def test_a_labels_csv_may_name_each_plates_top_line(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for shade, name in enumerate(("a.png", "b.png", "c.png")):
        _write_crop(crops / name, shade * 40)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,text,top_line\na.png,AB 12,AB\nb.png,CD34,EF\nc.png,GH5,\n", encoding="utf-8")
    with pytest.raises(DatasetValidationError) as info:
        import_labelled_crops(crops, labels, tmp_path / "out")
    (problem,) = info.value.problems
    assert problem.kind == "bad top line" and problem.path.endswith("b.png") and "'EF'" in problem.detail

    labels.write_text("image,text,top_line\na.png,AB12,AB\na.png,AB12,A\nb.png,CD34\n", encoding="utf-8")
    with pytest.raises(DatasetValidationError) as info:  # one crop, two top lines: which is right cannot be known
        import_labelled_crops(crops, labels, tmp_path / "out")
    assert [p.kind for p in info.value.problems] == ["conflicting labels"]
    assert "top lines ['A', 'AB']" in info.value.problems[0].detail

    labels.write_text("image,text,top_line\na.png,AB 12,AB\na.png,AB12\nb.png,CD34,CD34\nc.png,GH5\n",
                      encoding="utf-8")  # a top line given once and not the other time: no contradiction
    root = import_labelled_crops(crops, labels, tmp_path / "out", val_share=0.5)
    dataset = validate_reader_dataset(root, required_splits=())
    tops = sorted((s.text, s.top_line) for samples in dataset.splits.values() for s in samples)
    assert tops == [("AB12", ""), ("AB12", "AB"), ("CD34", "CD34"), ("GH5", "")]  # "": not known


def test_coco_and_yolo_boxes_with_text_are_cut_as_the_edge_cuts_them(tmp_path):
    frame = np.full((200, 300, 3), 90, np.uint8)
    cv2.rectangle(frame, (50, 80), (170, 110), (240, 240, 240), -1)
    for x, y, grey in ((210, 125, 20), (210, 25, 160), (110, 155, 200)):  # three more plates, each its own crop
        cv2.rectangle(frame, (x, y), (x + 40, y + 30), (grey, grey, grey), -1)
    cv2.imwrite(str(tmp_path / "f.jpg"), frame)
    coco = {"images": [{"id": 1, "file_name": "f.jpg", "width": 300, "height": 200}],
            "annotations": [{"id": 7, "image_id": 1, "bbox": [50, 80, 120, 30], "text": "AB 123"},
                            {"id": 8, "image_id": 1, "bbox": [10, 10, 60, 20], "attributes": {"text": "XY9"}},
                            {"id": 9, "image_id": 1, "bbox": [200, 120, 60, 40], "text": "CD-1\r\n234\n"},
                            {"id": 10, "image_id": 1, "bbox": [200, 20, 60, 40], "text": "\n - \nEF5\n6"},
                            {"id": 11, "image_id": 1, "bbox": [100, 150, 60, 40], "text": "GH7\n-"}]}
    (tmp_path / "plates.json").write_text(json.dumps(coco))
    root = import_boxes_with_text(tmp_path / "plates.json", tmp_path / "out", val_share=0.01)
    samples = sorted((s.text, s.top_line) for split in validate_reader_dataset(root, ()).splits.values() for s in split)
    # two lines with characters name the top line; lines without any do not count
    assert samples == [("AB123", ""), ("CD1234", "CD1"), ("EF56", "EF5"), ("GH7", ""), ("XY9", "")]

    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    cv2.imwrite(str(yolo / "images" / "f.jpg"), frame)
    (yolo / "labels" / "f.txt").write_text("0 0.366667 0.475 0.4 0.15 AB 123\n0 0.5 0.5 0.02 0.02 TINY\n"
                                           "0 0.1 0.1 0.3 0.1\n")
    with pytest.raises(DatasetValidationError) as info:
        import_boxes_with_text(yolo / "images", tmp_path / "out2")
    kinds = sorted(p.kind for p in info.value.problems)
    assert kinds == ["bad text", "plate too small"]  # the box without text, the box too small to read


def test_validation_refuses_a_folder_that_is_not_a_reader_dataset(tmp_path):
    with pytest.raises(DatasetError, match="is not a reader dataset"):
        validate_reader_dataset(tmp_path)


def test_synthetic_crops_are_deterministic_readable_and_valid(tmp_path):
    a = write_synthetic_reader_dataset(tmp_path / "a", seed=3, train=12, val=4)
    b = write_synthetic_reader_dataset(tmp_path / "b", seed=3, train=12, val=4)
    da, db = validate_reader_dataset(a), validate_reader_dataset(b)
    assert da.fingerprint == db.fingerprint and da.counts() == {"train": 12, "val": 4}
    for s in da.splits["train"]:
        image = cv2.imread(str(s.image))
        assert image.shape[1] >= MIN_READ_WIDTH and not text_problems(s.text)
        assert s.top_line and s.text.startswith(s.top_line)  # synthetic crops know their lines
    assert any(s.top_line != s.text for s in da.splits["train"]) or any(  # a two-line plate among 200 crops
        s.top_line != s.text for s in validate_reader_dataset(
            write_synthetic_reader_dataset(tmp_path / "c", seed=3, train=200, val=1)).splits["train"])
    golden = validate_reader_dataset(write_synthetic_reader_dataset(tmp_path / "g", 3, 0, 4, top_lines=False), ())
    assert all(s.top_line == "" for s in golden.splits["val"])


class FakeReader:
    model_version = "7"

    def __init__(self):
        self.batches = []

    def read(self, crops):
        self.batches.append(len(crops))
        return [Reading(f"P{i}", 0.9) for i in range(len(crops))]


def test_the_reading_stage_reads_every_plate_of_a_frame_in_one_batch():
    frame = np.zeros((200, 400, 3), np.uint8)
    plates = [Detection(10, 10, 90, 30, 0.9, 0, "license_plate"), Detection(100, 50, 220, 80, 0.8, 0, "license_plate"),
              Detection(300, 150, 310, 155, 0.7, 0, "license_plate")]  # the last is too small to read
    reader = FakeReader()
    stage = PlateReadingStage(ModelSlot("alpr-plate-ocr", model=reader))
    result = stage(frame, FrameResult([], plates, "1", "2", 0.0))
    assert reader.batches == [2]
    assert result.texts == [PlateText("P0", 0.9), PlateText("P1", 0.9), PlateText(None, None)]
    line = result.as_dict()
    assert [p["text"] for p in line["plates"]] == ["P0", "P1", None]
    assert line["reader_version"] == "7" and line["plates"][0]["text_confidence"] == 0.9
    assert read_region(frame, 300, 150, 310, 155) is None


def test_without_a_reader_the_json_lines_are_what_they_were():
    stage = PlateReadingStage(ModelSlot("alpr-plate-ocr"))
    plate = Detection(10, 10, 90, 30, 0.9, 0, "license_plate")
    result = stage(np.zeros((50, 100, 3), np.uint8), FrameResult([], [plate], "1", "2", 0.0))
    line = result.as_dict()
    assert "text" not in line["plates"][0] and "reader_version" not in line


def test_the_recipe_and_test_run_configs_are_valid_reader_configs():
    from alpr_pipelines.defs.presets import recipe_run_config, tiny_run_config
    from alpr_pipelines.defs.reader.config import ReaderDatasetConfig, ReaderTrainConfig
    from alpr_pipelines.lib.recipes import READER_RECIPE

    assert ReaderTrainConfig(**recipe_run_config()["ops"]["ocr__weights"]["config"]).to_params() == READER_RECIPE
    for config in (recipe_run_config(), tiny_run_config()):
        ReaderTrainConfig(**config["ops"]["ocr__weights"]["config"]).to_params().validate()
        assert ReaderDatasetConfig(**config["ops"]["ocr__dataset"]["config"]).source == "synthetic"


def test_the_demo_scores_the_clip_by_plates_detected_and_read_exactly():
    from alpr_pipelines.cli.demo import CLIP_HEIGHT, CLIP_WIDTH, reading_report
    from alpr_pipelines.lib.synth import clip_scene

    results, readable = [], 0
    for frame in range(0, 60, 12):
        truth = clip_scene(0, frame, CLIP_WIDTH, CLIP_HEIGHT).plates
        plates = [{"box": [b.x1, b.y1, b.x2, b.y2], "text": normalize_text(b.text)} for b in truth]
        readable += sum(1 for b in truth if b.x2 - b.x1 >= MIN_READ_WIDTH)
        if plates:
            plates[0]["text"] = "WRONG"  # one misread plate per frame with plates
        results.append({"frame": frame, "plates": plates, "reader_version": "1"})
    misread = sum(1 for r in results if r["plates"] and r["plates"][0]["box"][2] - r["plates"][0]["box"][0]
                  >= MIN_READ_WIDTH)
    assert readable > 0
    assert reading_report(results) == (f"plates read exactly: {(readable - misread) / readable:.2f} "
                                       f"({readable - misread}/{readable}; plates at least {MIN_READ_WIDTH} px wide); "
                                       f"{misread} detected and read otherwise, 0 not detected")
    frame = next(r for r in results if any(p["box"][2] - p["box"][0] >= MIN_READ_WIDTH for p in r["plates"]))
    lost = sum(1 for p in frame["plates"] if p["box"][2] - p["box"][0] >= MIN_READ_WIDTH)
    frame["plates"] = []  # that frame's plates not detected
    misread = sum(1 for r in results if r["plates"] and r["plates"][0]["box"][2] - r["plates"][0]["box"][0]
                  >= MIN_READ_WIDTH)
    exact = readable - lost - misread
    assert reading_report(results) == (
        f"plates read exactly: {exact / readable:.2f} ({exact}/{readable}; plates at least {MIN_READ_WIDTH} px wide); "
        f"{misread} detected and read otherwise, {lost} not detected")
    assert "no plate reader served" in reading_report([{"frame": 0, "plates": []}])


def test_the_demo_prints_the_readers_golden_score_by_plate_width():
    from alpr_pipelines.cli.demo import width_line
    from alpr_pipelines.lib.promotion import EVAL_TAG

    bands = exact_match_by_width(["A1", "B0", "C3", "D4"], ["A1", "B2", "C3", "D4"], [140, 50, 120, 55])
    tag = json.dumps({"by_plate_width": bands, "exact_match": 0.75}, sort_keys=True)  # as the registry caches it
    assert width_line({EVAL_TAG: tag}) == (
        "golden plates read exactly, by plate width: under 60 px 0.50 (1/2); 100-130 px 1.00 (1/1); "
        "130 px and over 1.00 (1/1)")
    assert width_line({EVAL_TAG: json.dumps({"mAP50-95": 0.6})}) is None  # a detector's evaluation
    for broken in ("not json", "[]", json.dumps({"by_plate_width": {"a": 1}}), json.dumps({"by_plate_width": [{}]}),
                   json.dumps({"by_plate_width": [3]})):
        assert width_line({EVAL_TAG: broken}) is None
    assert width_line({}) is None
