"""The registry's principals and what each may do, set up through MLflow's REST API by the admin (idempotent).

- ``alpr-pipeline`` creates the registered models and the training experiment, so it owns them (MANAGE): training,
  registration, aliases, stages, promotion and rollback run as it.
- ``alpr-edge`` (the credential on every box) gets READ on exactly those, under ``default_permission =
  NO_PERMISSIONS``: it reads versions, aliases and artifacts, and creates and changes nothing (the ``alpr-auth``
  app, ``stack.mlflow_auth``, refuses it new models and experiments).
- anyone else authenticated sees nothing until an admin grants it; anonymous callers get 401.

An existing user keeps its password; a model or experiment someone else created first is reported, not taken over.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import requests

PIPELINE_USER, EDGE_USER, ADMIN_USER = "alpr-pipeline", "alpr-edge", "admin"
# Where versions' runs live besides MLFLOW_EXPERIMENT_NAME: `alpr register-existing` (lib/existing.py) uses this one.
REGISTER_EXISTING_EXPERIMENT = "alpr-registered-existing"


class PrincipalsError(Exception):
    """The registry's users or grants could not be set up; the message says which and why."""


@dataclass(frozen=True)
class Principals:
    base_uri: str
    admin_password: str
    pipeline_password: str
    edge_password: str

    def auth(self, user: str) -> tuple[str, str]:
        return user, {ADMIN_USER: self.admin_password, PIPELINE_USER: self.pipeline_password,
                      EDGE_USER: self.edge_password}[user]

    def call(self, user: str, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.base_uri.rstrip('/')}{path}", auth=self.auth(user), timeout=10,
                                **kwargs)


def _ok_or_exists(resp: requests.Response) -> bool:
    return resp.status_code == 200 or resp.status_code == 409 or "ALREADY_EXISTS" in resp.text


def ensure_users(p: Principals, timeout: float = 30.0) -> None:
    """Both principals exist (retrying while the server finishes starting)."""
    deadline = time.monotonic() + timeout
    for user in (PIPELINE_USER, EDGE_USER):
        while True:
            resp = p.call(ADMIN_USER, "POST", "/api/2.0/mlflow/users/create",
                          json={"username": user, "password": p.auth(user)[1]})
            if _ok_or_exists(resp) or "already exists" in resp.text.lower():
                break
            if time.monotonic() > deadline:
                raise PrincipalsError(f"could not create MLflow user {user}: HTTP {resp.status_code} "
                                      f"{resp.text[:200]}")
            time.sleep(1)


def _grant_read(p: Principals, resource_type: str, resource_id: str) -> None:
    resp = p.call(ADMIN_USER, "POST", "/api/3.0/mlflow/users/permissions/grant",
                  json={"username": EDGE_USER, "resource_type": resource_type, "resource_id": resource_id,
                        "permission": "READ"})
    if not _ok_or_exists(resp):
        raise PrincipalsError(f"could not grant {EDGE_USER} READ on {resource_type} {resource_id}: "
                              f"HTTP {resp.status_code} {resp.text[:200]}")


def ensure_ownership(p: Principals, model_names: Iterable[str], experiments: Iterable[str]) -> None:
    """The pipeline creates the registered models and the experiments its versions' runs live in (owning them); the
    edge may read them."""
    for name in model_names:
        resp = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
        if not _ok_or_exists(resp):
            raise PrincipalsError(f"{PIPELINE_USER} could not create registered model {name}: HTTP "
                                  f"{resp.status_code} {resp.text[:200]}")
        owned = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/registered-models/set-tag",
                       json={"name": name, "key": "alpr_owner", "value": PIPELINE_USER})
        if owned.status_code != 200:
            raise PrincipalsError(f"registered model {name} exists but {PIPELINE_USER} cannot change it (HTTP "
                                  f"{owned.status_code}): someone else created it first. Have an admin check who, "
                                  f"then grant {PIPELINE_USER} MANAGE on it or delete it.")
        _grant_read(p, "registered_model", name)
    for experiment in experiments:
        got = p.call(PIPELINE_USER, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                     params={"experiment_name": experiment})
        if got.status_code == 200:
            experiment_id = got.json()["experiment"]["experiment_id"]
        else:
            created = p.call(PIPELINE_USER, "POST", "/api/2.0/mlflow/experiments/create", json={"name": experiment})
            if created.status_code != 200:
                raise PrincipalsError(f"{PIPELINE_USER} could not read or create experiment {experiment}: HTTP "
                                      f"{created.status_code} {created.text[:200]} (if someone else created it, "
                                      f"grant {PIPELINE_USER} MANAGE on it)")
            experiment_id = created.json()["experiment_id"]
        _grant_read(p, "experiment", experiment_id)
