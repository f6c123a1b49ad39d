"""How a promotion decision is written onto a model version."""

from alpr_pipelines.lib.promotion import DECISION_TAG, DecisionRecord, record_decision


class RecordingClient:
    """MlflowClient's one method record_decision uses, remembering the tags in the order they were set."""

    def __init__(self) -> None:
        self.tags: list[str] = []

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags.append(key)


def test_the_verdict_is_the_last_tag_a_decision_writes():
    """The demo and `alpr status` take the verdict tag as "decided": its details must already be there."""
    client = RecordingClient()
    record_decision(client, DecisionRecord(
        name="alpr-plate-ocr", version="3", verdict="promoted", reasons=["first model"], candidate={"cer": 0.1},
        champion=None, champion_version=None, decided_by="promotion sensor", dagster_run_id=None,
        time="2026-12-04T00:00:00Z"))
    assert client.tags[-1] == DECISION_TAG
    assert {"alpr_decided_by", "alpr_decision_reasons", "alpr_decision_metrics"} <= set(client.tags[:-1])


def test_a_cached_evaluation_is_reused_only_when_this_release_can_read_it(tmp_path):
    """The golden score is cached on the version (a JSON tag); one from another golden set, another evaluator, or a
    build whose evaluation had other fields is scored again, never a crash."""
    import json
    from types import SimpleNamespace

    from alpr_pipelines.lib.golden import GoldenSplits
    from alpr_pipelines.lib.promotion import EVAL_TAG, cached_evaluation
    from alpr_pipelines.lib.reader_eval import ReaderEvaluation

    golden = GoldenSplits(tmp_path / "g", "f1", tmp_path / "s", "f2")
    scored = ReaderEvaluation(exact_match=0.9, cer=0.03, latency_ms_p50=1.0, latency_ms_p95=2.0,
                              plates_per_second=500.0, file_size_mb=2.0, images=600, golden_fingerprint=golden.key,
                              by_plate_width=[{"band": "130 px and over", "plates": 2, "read": 1, "exact_match": 0.5}],
                              exact_match_wide_plates=0.5)

    def cached(data: dict):
        client = SimpleNamespace(get_model_version=lambda name, version: SimpleNamespace(
            tags={EVAL_TAG: json.dumps(data, sort_keys=True)}))
        return cached_evaluation(client, "alpr-plate-ocr", "3", golden)

    assert cached(scored.as_dict()) == scored
    assert cached({**scored.as_dict(), "golden_fingerprint": "another"}) is None
    assert cached({**scored.as_dict(), "evaluator_version": "1"}) is None
    assert cached({**scored.as_dict(), "exact_match_wide": 0.5}) is None  # a field this release does not have
