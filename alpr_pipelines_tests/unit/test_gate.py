import pytest

from alpr_pipelines.defs.promotion.gate import DEFAULT_POLICIES, GatePolicy, decide

POLICY = GatePolicy(min_map50_95=0.10, max_regression=0.01, latency_budget_ms_p95=50.0, require_parity=True)


def m(score: float, latency: float = 20.0) -> dict[str, float]:
    return {"mAP50-95": score, "latency_ms_p95": latency}


@pytest.mark.parametrize(
    ("case", "candidate", "champion", "parity", "promote", "failing"),
    [
        ("first model, good", m(0.30), None, True, True, None),
        ("first model, under the floor", m(0.05), None, True, False, "vs floor"),
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
    with pytest.raises(ValueError, match="lack 'mAP50-95'"):
        decide({"latency_ms_p95": 10.0}, None, True, POLICY)


def test_every_model_has_a_default_policy():
    assert set(DEFAULT_POLICIES) == {"vehicle", "plate"}
    assert all(p.min_map50_95 > 0 for p in DEFAULT_POLICIES.values())  # an untrained model never passes
