"""Who may do what on the registry, tried for real against ``mlflow server --app-name alpr-auth`` with the production
profile's auth config: anonymous callers get nothing, the edge principal reads and changes nothing (not even a new
model name), the pipeline principal does everything the system needs. Every cell is asserted."""

import uuid

import pytest
import requests

from alpr_pipelines.edge.contract import MODEL_NAMES, VEHICLE_MODEL
from alpr_pipelines.stack import production as prod
from alpr_pipelines.stack.auth_audit import ANONYMOUS, PRINCIPALS, READS, WRITES, audit, format_matrix
from alpr_pipelines.stack.principals import EDGE_USER, PIPELINE_USER, Principals, ensure_ownership, ensure_users
from alpr_pipelines_tests.conftest import MlflowServer


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    ini = root / "basic_auth.ini"
    ini.write_text(prod.AUTH_INI.format(database_uri=f"sqlite:///{root / 'auth.db'}"))
    p = Principals("", admin_password=uuid.uuid4().hex, pipeline_password=uuid.uuid4().hex,
                   edge_password=uuid.uuid4().hex)
    server = MlflowServer(root, ["--app-name", "alpr-auth"],
                          {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": p.admin_password,
                           "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex})
    server.start()
    try:
        p = Principals(server.uri, p.admin_password, p.pipeline_password, p.edge_password)
        ensure_users(p)
        ensure_ownership(p, MODEL_NAMES, ["alpr-training", "alpr-registered-existing"])
        ensure_ownership(p, MODEL_NAMES, ["alpr-training", "alpr-registered-existing"])  # idempotent
        yield p
    finally:
        server.stop()


def _register_one(p: Principals) -> None:
    """A version with an artifact, made by the pipeline the way registration does (run, artifact, version)."""
    exp = p.call(PIPELINE_USER, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                 params={"experiment_name": "alpr-training"}).json()["experiment"]
    run = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/runs/create",
                 json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]
    root = run["artifact_uri"].split(":", 1)[1].lstrip("/")
    put = p.call(PIPELINE_USER, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{root}/model/manifest.json",
                 data=b"{}")
    assert put.status_code == 200, put.text
    created = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/model-versions/create",
                     json={"name": VEHICLE_MODEL, "source": f"runs:/{run['run_id']}/model",
                           "run_id": run["run_id"]})
    assert created.status_code == 200, created.text


def test_every_principal_against_every_endpoint(secured):
    _register_one(secured)
    cells = audit(secured, VEHICLE_MODEL)
    table = format_matrix(cells)
    assert len(cells) == len(PRINCIPALS) * (len(READS) + len(WRITES))
    by = {(c.principal, c.action): c for c in cells}
    for action in (*READS, *WRITES):
        assert by[(ANONYMOUS, action)].status == 401, table
        assert by[(PIPELINE_USER, action)].succeeded, table
    for action in READS:
        assert by[(EDGE_USER, action)].succeeded, table
    for action in WRITES:
        assert by[(EDGE_USER, action)].status == 403, table
    assert all(c.as_expected for c in cells), table


def test_the_edge_cannot_claim_a_free_model_name_but_tolerates_an_existing_one(secured):
    free = f"alpr-plate-ocr-{uuid.uuid4().hex[:6]}"
    claimed = secured.call(EDGE_USER, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": free})
    assert claimed.status_code == 403 and "may not create registered models" in claimed.text
    existing = secured.call(EDGE_USER, "POST", "/api/2.0/mlflow/registered-models/create",
                            json={"name": VEHICLE_MODEL})
    assert existing.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in existing.text
    # A principal nobody granted anything sees nothing, under NO_PERMISSIONS.
    admin = secured.auth("admin")
    requests.post(f"{secured.base_uri}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                  json={"username": "visitor", "password": "visitor-password-1"})
    seen = requests.get(f"{secured.base_uri}/api/2.0/mlflow/registered-models/get", auth=("visitor",
                        "visitor-password-1"), params={"name": VEHICLE_MODEL}, timeout=10)
    assert seen.status_code == 403
