"""lib.training.EpochProgress: each epoch's log line says the training's pace and about how long the rest will take."""

import pytest

from alpr_pipelines.lib.training import EpochMetrics, EpochProgress, duration_text


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_each_epoch_line_says_its_pace_and_how_long_the_rest_will_take():
    clock = Clock()
    progress = EpochProgress("ocr", 12, clock=clock)
    clock.now += 600  # the first epoch, loading the data included: 10 minutes
    assert progress.line(EpochMetrics(1, {"exact_match": 0.5, "cer": 0.25})) == (
        "ocr epoch 1/12 (10.0 min an epoch, about 1 h 50 min to go): exact_match=0.5000, cer=0.2500")
    clock.now += 300  # from the second epoch on, the pace leaves the first (and its loading) out
    assert progress.line(EpochMetrics(2, {})).startswith("ocr epoch 2/12 (5.0 min an epoch, about 50.0 min to go)")
    clock.now += 360
    assert progress.line(EpochMetrics(3, {})).startswith("ocr epoch 3/12 (5.5 min an epoch, about 49.5 min to go)")


def test_the_last_epoch_has_nothing_to_go_and_a_resumed_training_paces_only_its_own_epochs():
    clock = Clock()
    resumed = EpochProgress("plate", 6, clock=clock)  # last.pt held epochs 1 to 3
    clock.now += 120
    assert resumed.line(EpochMetrics(4, {})) == "plate epoch 4/6 (2.0 min an epoch, about 4.0 min to go): "
    clock.now += 90
    assert "(1.5 min an epoch, about 1.5 min to go)" in resumed.line(EpochMetrics(5, {}))
    clock.now += 90
    assert resumed.line(EpochMetrics(6, {"loss": 1.0})) == "plate epoch 6/6 (1.5 min an epoch): loss=1.0000"


@pytest.mark.parametrize(("seconds", "shown"), [(90, "1.5 min"), (3540, "59.0 min"), (3599, "1 h 0 min"),
                                                (4500, "1 h 15 min"), (7199, "2 h 0 min")])
def test_durations_read_as_minutes_then_as_hours_and_whole_minutes(seconds, shown):
    assert duration_text(seconds) == shown
