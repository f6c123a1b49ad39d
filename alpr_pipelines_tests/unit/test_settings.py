from pathlib import Path

import pytest

from alpr_pipelines.settings import load_settings


def test_defaults_point_at_the_embedded_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert (s.dagster_host, s.dagster_port) == ("127.0.0.1", 3000)
    assert s.home == (tmp_path / ".alpr").resolve()
    assert s.dagster_home == s.home / "dagster"
    assert s.aws_access_key_id is None and s.s3_endpoint_url is None


def test_seed_env_vars_win(tmp_path):
    s = load_settings({
        "MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "ALPR_HOME": str(tmp_path),
        "ALPR_MLFLOW_PORT": "5055",
    })
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.s3_endpoint_url == "http://minio:9000" and s.aws_secret_access_key == "secret"
    assert s.home == Path(tmp_path).resolve() and s.mlflow_port == 5055


def test_tracking_uri_follows_the_port_when_unset():
    assert load_settings({"ALPR_MLFLOW_PORT": "5099"}).mlflow_tracking_uri == "http://127.0.0.1:5099"


def test_bad_port_is_a_clear_error():
    with pytest.raises(ValueError, match="ALPR_DAGSTER_PORT='x' is not a port number"):
        load_settings({"ALPR_DAGSTER_PORT": "x"})
