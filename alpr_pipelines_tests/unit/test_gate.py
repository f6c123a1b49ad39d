import pytest

from alpr_pipelines.lib.gate import DEFAULT_POLICIES, GatePolicy, decide
from alpr_pipelines.lib.models import DETECTOR_SPECS, MODEL_SPECS

POLICY = GatePolicy(min_map50=0.5, min_map50_95=0.10, min_class_ap50=0.4, max_regression=0.01,
                    latency_budget_ms_p95=50.0, require_parity=True)


def m(score: float, latency: float = 20.0, map50: float = 0.9, weakest: float = 0.8) -> dict[str, float]:
    return {"mAP50": map50, "mAP50-95": score, "latency_ms_p95": latency, "AP50/car": 0.95, "AP50/bus": weakest}


@pytest.mark.parametrize(
    ("case", "candidate", "champion", "parity", "promote", "failing"),
    [
        ("first model, good", m(0.30), None, True, True, None),
        ("first model, under the floor", m(0.05), None, True, False, "mAP50-95 0.0500 vs floor"),
        ("finds too little", m(0.30, map50=0.45), None, True, False, "mAP50 0.4500 vs floor"),
        ("one class it cannot find", m(0.30, weakest=0.2), None, True, False, "weakest class bus AP50 0.2000"),
        ("better than champion", m(0.40), m(0.30), True, True, None),
        ("worse than champion", m(0.20), m(0.30), True, False, "vs champion"),
        ("within tolerance", m(0.295), m(0.30), True, True, None),
        ("just past tolerance", m(0.289), m(0.30), True, False, "vs champion"),
        ("over the latency budget", m(0.40, latency=80.0), m(0.30), True, False, "latency"),
        ("parity failed", m(0.40), m(0.30), False, False, "parity check failed"),
        ("parity never ran", m(0.40), m(0.30), None, False, "parity check not run"),
    ],
)
def test_gate_table(case, candidate, champion, parity, promote, failing):
    decision = decide(candidate, champion, parity, POLICY)
    assert decision.promote is promote, (case, decision.reasons)
    assert decision.first_model is (champion is None)
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    if failing is None:
        assert not failed
    else:
        assert len(failed) == 1 and failing in failed[0]
    assert all(r.startswith(("PASS ", "FAIL ")) for r in decision.reasons)


def test_first_model_is_said_explicitly():
    decision = decide(m(0.3), None, True, POLICY)
    assert any("first model" in r for r in decision.reasons)


def test_parity_can_be_waived_per_policy():
    assert decide(m(0.3), None, None, GatePolicy(min_map50_95=0.1, require_parity=False)).promote


def test_missing_metrics_are_an_error_not_a_zero():
    with pytest.raises(ValueError, match="lack 'mAP50'"):
        decide({"mAP50-95": 0.5, "latency_ms_p95": 10.0}, None, True, POLICY)
    with pytest.raises(ValueError, match="lack per-class AP50"):
        decide({"mAP50": 0.9, "mAP50-95": 0.5, "latency_ms_p95": 10.0}, None, True, POLICY)


def test_every_model_has_a_default_policy_that_rejects_a_model_that_does_not_work():
    assert set(DEFAULT_POLICIES) == set(MODEL_SPECS)
    for key in DETECTOR_SPECS:
        policy = DEFAULT_POLICIES[key]
        assert policy.min_map50 >= 0.8 and policy.min_map50_95 > 0
        untrained = {"mAP50": 0.02, "mAP50-95": 0.005, "latency_ms_p95": 10.0, "AP50/car": 0.02}
        assert not decide(untrained, None, True, policy).promote
    assert DEFAULT_POLICIES["plate"].min_map50 == 0.80  # plate mAP50 below 0.80 never reaches Production
    assert DEFAULT_POLICIES["vehicle"].min_class_ap50 > 0
    reader = DEFAULT_POLICIES["ocr"]
    untrained_reader = {"exact_match": 0.0, "cer": 0.95, "latency_ms_p95": 1.0}
    decision = decide(untrained_reader, None, True, reader)
    assert not decision.promote
    assert [r for r in decision.reasons if r.startswith("FAIL")] == [
        f"FAIL exact_match 0.0000 vs floor {reader.min_exact_match:.4f}",
        f"FAIL cer 0.9500 vs ceiling {reader.max_cer:.4f}"]
    assert reader.min_exact_match >= 0.5 and reader.max_cer <= 0.15  # a reader clearly worse than the recipe's fails


def test_a_reader_is_compared_with_its_champion_on_exact_match_and_never_on_map():
    reader = DEFAULT_POLICIES["ocr"]
    good = {"exact_match": 0.96, "cer": 0.01, "latency_ms_p95": 2.0}
    worse = {"exact_match": 0.93, "cer": 0.02, "latency_ms_p95": 2.0}
    decision = decide(worse, good, True, reader)
    assert not decision.promote
    assert "FAIL exact_match 0.9300 vs champion 0.9600 (-0.0300, tolerance -0.0050)" in decision.reasons
    assert not any("mAP" in r for r in decision.reasons)
    assert decide(good, worse, True, reader).promote
    with pytest.raises(ValueError, match="lack 'exact_match'"):
        decide({"cer": 0.01, "latency_ms_p95": 2.0}, None, True, reader)
    with pytest.raises(ValueError, match="lack 'mAP50'"):  # a floor set for a metric the model does not report
        decide(good, None, True, reader.with_overrides({"min_map50": 0.5}, "test"))


def test_overrides_merge_and_name_their_source():
    base = DEFAULT_POLICIES["plate"]
    tuned = base.with_overrides({"min_map50": 0.9, "latency_budget_ms_p95": 100}, "test")
    assert tuned.min_map50 == 0.9 and tuned.latency_budget_ms_p95 == 100.0 and tuned.min_map50_95 == base.min_map50_95
    with pytest.raises(ValueError, match="test: unknown gate policy fields \\['min_recall'\\]"):
        base.with_overrides({"min_recall": 0.5}, "test")
    with pytest.raises(ValueError, match="min_map50 must be a float"):
        base.with_overrides({"min_map50": "high"}, "test")

