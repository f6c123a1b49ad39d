"""The MLflow server's auth app (``mlflow server --app-name alpr-auth``): MLflow's basic-auth, and only named
principals may create registered models and experiments.

MLflow's basic-auth checks a permission on every existing resource, but lets any authenticated user create a
registered model or an experiment (and hands its creator MANAGE on it). On a fleet that means the edge credential,
which sits on every box, could claim ``alpr-plate-detector`` on a fresh registry or after a deletion, and then set
its ``production`` alias. This app adds one check after basic-auth's own: creating is for admins and the principals
in ``ALPR_MLFLOW_CREATORS`` (default ``alpr-pipeline``); anyone else gets 403, except for a name that already exists
(MLflow's ``register_model`` always tries to create first and treats "already exists" as success; nothing is
created then).

Registered as the ``mlflow.app`` entry point ``alpr-auth`` (pyproject.toml). With ``default_permission =
NO_PERMISSIONS`` in the auth config and READ grants for the edge principal (``stack.principals``), the edge can read
the models and their artifacts and change nothing.
"""

from __future__ import annotations

import os
from typing import Any

from flask import g, jsonify, make_response, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.server import app as flask_app
from mlflow.server import auth as basic_auth
from mlflow.server.handlers import _get_ajax_path, _get_model_registry_store, _get_rest_path, _get_tracking_store

DEFAULT_CREATORS = "alpr-pipeline"


def _paths(endpoint: str) -> frozenset[str]:
    return frozenset({_get_rest_path(endpoint), _get_ajax_path(endpoint)})


MODEL_CREATE = _paths("/mlflow/registered-models/create")
EXPERIMENT_CREATE = _paths("/mlflow/experiments/create")


def creators(env: dict[str, str] | None = None) -> set[str]:
    raw = (os.environ if env is None else env).get("ALPR_MLFLOW_CREATORS", DEFAULT_CREATORS)
    return {name.strip() for name in raw.split(",") if name.strip()}


def _exists(kind: str, name: str) -> bool:
    try:
        if kind == "model":
            _get_model_registry_store().get_registered_model(name)
            return True
        return _get_tracking_store().get_experiment_by_name(name) is not None
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return False


def deny_creation() -> Any:
    """Flask before-request hook, after basic-auth's (which authenticated the caller or answered 401)."""
    if request.method != "POST":
        return None
    kind = "model" if request.path in MODEL_CREATE else "experiment" if request.path in EXPERIMENT_CREATE else None
    if kind is None:
        return None
    user = g.get("mlflow_authenticated_user")
    if user is None:
        return basic_auth.make_forbidden_response()
    if user in creators() or basic_auth.store.get_user(user).is_admin:
        return None
    name = (request.get_json(silent=True) or {}).get("name")
    if isinstance(name, str) and name and _exists(kind, name):
        return None  # the handler answers RESOURCE_ALREADY_EXISTS and creates nothing
    what = "registered models" if kind == "model" else "experiments"
    return make_response(jsonify(error_code="PERMISSION_DENIED",
                                 message=f"User '{user}' may not create {what}: only admins and "
                                         "ALPR_MLFLOW_CREATORS may."), 403)


def create_app() -> Any:
    """The basic-auth app (FastAPI under uvicorn, Flask otherwise) with :func:`deny_creation` after its hook."""
    app = basic_auth.create_app(flask_app)
    flask_app.before_request(deny_creation)
    return app
