"""The registry cache (nginx) in front of a real MLflow server with basic-auth: it answers what MLflow answers, only
to the principal MLflow answered, passes everything else through, shows a moved alias within its lifetime, and
never turns an MLflow outage into an answer."""

import time
import uuid
import warnings
from collections.abc import Iterator

import pytest
import requests

from alpr_pipelines.edge.loader import MLflowModelLoader
from alpr_pipelines.lib.registry import set_stage
from alpr_pipelines.stack.registry_cache import HEADER
from alpr_pipelines_tests.conftest import MlflowServer, registry_cache_in_front

NAME = "alpr-plate-detector"
ALIAS = "/api/2.0/mlflow/registered-models/alias"
LATEST = "/api/2.0/mlflow/registered-models/get-latest-versions"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[dict]:
    """MLflow's basic-auth app (SQLite stores) with an admin and the read-only edge principal; NAME has three
    versions, v2 in Production (alias production), v3 in Staging (alias candidate)."""
    root = tmp_path_factory.mktemp("auth-mlflow")
    admin = ("admin", uuid.uuid4().hex)
    ini = root / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                   "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 60\n")
    server = MlflowServer(root, ["--app-name", "basic-auth"], {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex})
    server.start()
    try:
        edge = ("alpr-edge", uuid.uuid4().hex)
        created = requests.post(f"{server.uri}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                                json={"username": edge[0], "password": edge[1]})
        assert created.status_code == 200, created.text
        with pytest.MonkeyPatch.context() as env:  # MlflowClient reads its principal from the environment only
            env.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
            env.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
            yield {"server": server, "admin": admin, "edge": edge, "client": _client(server.uri)}
    finally:
        server.stop()


def _client(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(f"cache-{uuid.uuid4().hex[:6]}")
    client.create_registered_model(NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages: deprecated, kept in agreement with aliases
        for n in (1, 2, 3):
            run = client.create_run(experiment)
            client.create_model_version(NAME, f"runs:/{run.info.run_id}/detector/{n}", run.info.run_id)
            set_stage(client, NAME, str(n), "Staging" if n == 3 else "Production", archive_existing=n != 3)
    return client


@pytest.fixture(scope="module")
def cache(auth_server, tmp_path_factory) -> Iterator[str]:
    # One nginx worker: it stores an answer before it takes the next request, so back-to-back lookups are hits every
    # time. With one per core, another worker can take the next one while the answer is sent but not yet stored, and
    # ask MLflow once more (registry_cache.write_config; 4 in 8,000 pairs here, and once in CI).
    with registry_cache_in_front(auth_server["server"].uri, tmp_path_factory.mktemp("cache") / "rc", workers=1) as uri:
        yield uri


def _get(base: str, path: str, auth, **params) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, auth=auth, timeout=10)


def test_it_answers_what_mlflow_answers_and_then_from_the_cache(auth_server, cache):
    edge, direct = auth_server["edge"], auth_server["server"].uri
    for path, params in ((ALIAS, {"name": NAME, "alias": "production"}), (LATEST, {"name": NAME,
                                                                                   "stages": "Production"})):
        # Back to back, well inside an entry's lifetime (at least 1 s): the first may be MLflow's, the rest the cache's.
        answers = [_get(cache, path, edge, **params) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert [r.headers[HEADER] for r in answers[1:]] == ["HIT", "HIT"]
        expected = _get(direct, path, edge, **params).json()
        assert all(r.json() == expected for r in answers)
    # "no such alias" is an answer too (the loader then asks for the stage): the same 400 as MLflow's, cached.
    missing = [_get(cache, ALIAS, edge, name=NAME, alias="no-such-alias") for _ in range(2)]
    assert [r.status_code for r in missing] == [400, 400] and missing[1].headers[HEADER] == "HIT"
    assert missing[0].json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_an_answer_is_only_served_to_the_principal_it_was_given_to(auth_server, cache):
    edge, admin = auth_server["edge"], auth_server["admin"]
    assert _get(cache, ALIAS, edge, name=NAME, alias="production").status_code == 200  # now cached for alpr-edge
    for auth in (None, (edge[0], "wrong-password"), ("nobody", edge[1])):
        for _ in range(2):
            resp = _get(cache, ALIAS, auth, name=NAME, alias="production")
            assert resp.status_code == 401, (auth and auth[0], resp.status_code)
            assert "model_version" not in resp.text
            assert resp.headers[HEADER] != "HIT"  # refusals are never cached: each one is MLflow's
    first = _get(cache, ALIAS, admin, name=NAME, alias="production")
    assert first.status_code == 200 and first.headers[HEADER] in ("MISS", "EXPIRED")  # its own entry


def test_writes_and_other_calls_pass_through_with_mlflows_permissions(auth_server, cache):
    edge, admin = auth_server["edge"], auth_server["admin"]
    body = {"name": NAME, "version": "3", "key": "note", "value": uuid.uuid4().hex}
    denied = requests.post(f"{cache}/api/2.0/mlflow/model-versions/set-tag", json=body, auth=edge, timeout=10)
    assert denied.status_code == 403  # the read-only principal stays read-only
    ok = requests.post(f"{cache}/api/2.0/mlflow/model-versions/set-tag", json=body, auth=admin, timeout=10)
    assert ok.status_code == 200, ok.text
    got = _get(cache, "/api/2.0/mlflow/model-versions/get", edge, name=NAME, version="3").json()
    assert {"key": "note", "value": body["value"]} in got["model_version"]["tags"]
    assert HEADER not in _get(cache, "/api/2.0/mlflow/model-versions/get", edge, name=NAME, version="3").headers
    assert requests.get(f"{cache}/health", timeout=10).text == "OK"


def test_a_moved_alias_reaches_the_edge_within_the_entry_lifetime(auth_server, cache, tmp_path):
    client, edge = auth_server["client"], auth_server["edge"]
    loader = MLflowModelLoader(tracking_uri=cache, username=edge[0], password=edge[1], cache_dir=tmp_path)
    assert loader._mlflow_connected
    before = loader.current_version(NAME)
    assert before is not None and before.via == "alias:production"
    target = "3" if before.version == "2" else "2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        set_stage(client, NAME, target, "Production", archive_existing=True)
    moved = time.monotonic()
    seen = set()
    while True:
        remote = loader.current_version(NAME)
        assert remote is not None
        seen.add(remote.version)
        if remote.version == target:
            break
        # 1s entries live 1 to 2 s (nginx counts in whole seconds); more for MLflow's answer on a busy machine.
        assert time.monotonic() - moved < 4.5, f"still {remote.version} after {time.monotonic() - moved:.1f}s"
        time.sleep(0.05)
    assert seen <= {before.version, target}
    # The original design's stage lookup agrees through the cache as well.
    latest = _get(cache, LATEST, edge, name=NAME, stages="Production").json()["model_versions"]
    deadline = time.monotonic() + 4.5
    while [v["version"] for v in latest] != [target] and time.monotonic() < deadline:
        time.sleep(0.2)
        latest = _get(cache, LATEST, edge, name=NAME, stages="Production").json()["model_versions"]
    assert [v["version"] for v in latest] == [target]


def test_mlflow_away_is_an_error_never_a_stale_answer(tmp_path):
    """An answer the cache holds is not served once it has expired and MLflow is down: the cache answers 502, the
    loader raises, and the edge keeps its model and counts the poll error (as without the cache)."""
    server = MlflowServer(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    server.start()
    try:
        from mlflow import MlflowClient

        client = MlflowClient(server.uri)
        run = client.create_run(client.create_experiment("away"))
        client.create_registered_model(NAME)
        client.create_model_version(NAME, f"runs:/{run.info.run_id}/detector/1", run.info.run_id)
        client.set_registered_model_alias(NAME, "production", "1")
        with registry_cache_in_front(server.uri, tmp_path / "rc") as uri:
            assert _get(uri, ALIAS, None, name=NAME, alias="production").status_code == 200  # now cached
            server.stop()
            time.sleep(2.2)  # past the entry's lifetime (1 to 2 s)
            for _ in range(2):  # the expired entry is refreshed, not served
                resp = _get(uri, ALIAS, None, name=NAME, alias="production")
                assert resp.status_code == 502, (resp.status_code, resp.headers.get(HEADER))
            loader = MLflowModelLoader(tracking_uri=uri, cache_dir=tmp_path / "edge")
            assert not loader._mlflow_connected
            with pytest.raises(requests.RequestException):
                loader.current_version(NAME)
    finally:
        server.stop()
