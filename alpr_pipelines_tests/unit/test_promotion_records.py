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
