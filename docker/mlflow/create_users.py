"""Create the MLflow principals of the compose stack through the REST API (service ``mlflow-init``). Idempotent.

- ``alpr-pipeline``: the writer used by training, registration and promotion (dagster-user-code). It creates the
  training experiment and the registered models here, so it owns them (MANAGE); under the stack's
  ``default_permission = NO_PERMISSIONS`` it sees nothing else.
- ``alpr-edge``: the read-only principal of edge devices: READ on exactly those, never more (``alpr_principals``, the
  image's copy of alpr_pipelines/stack/principals.py).

An existing user keeps its password (rotate with ``PATCH /api/2.0/mlflow/users/update-password``, docs/deploy.md).
Passwords come from the environment only (docker/.env through compose) and are never printed. It runs in the MLflow
image, which holds ``alpr_principals`` (docker/mlflow/Dockerfile).

Environment: MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_PASSWORD, ALPR_PIPELINE_PASSWORD, ALPR_EDGE_PASSWORD,
MLFLOW_EXPERIMENT_NAME (default ``alpr-training``), ALPR_MODEL_NAMES (default: the registered models below).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USERS = {"alpr-pipeline": "ALPR_PIPELINE_PASSWORD", "alpr-edge": "ALPR_EDGE_PASSWORD"}
MODEL_NAMES = "alpr-vehicle-detector,alpr-plate-detector,alpr-plate-ocr"
MIN_PASSWORD_LENGTH = 12  # MLflow refuses shorter passwords; say so before it does.


def request(base: str, auth: str, method: str, path: str, body: dict | None = None,
            query: dict | None = None) -> tuple[int, dict]:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")[:300]}


def main() -> int:
    base = os.environ.get("MLFLOW_TRACKING_URI", "http://mlflow:5000").rstrip("/")
    admin_user = "admin"  # the auth config's admin_username
    missing = [v for v in ("MLFLOW_AUTH_ADMIN_PASSWORD", *USERS.values()) if not os.environ.get(v)]
    if missing:
        print(f"mlflow-init: set {', '.join(missing)} in docker/.env (copy docker/.env.example)", file=sys.stderr)
        return 2
    short = [v for v in USERS.values() if len(os.environ[v]) < MIN_PASSWORD_LENGTH]
    if short:
        print(f"mlflow-init: {', '.join(short)} must be at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2
    auth = base64.b64encode(f"{admin_user}:{os.environ['MLFLOW_AUTH_ADMIN_PASSWORD']}".encode()).decode()

    # The admin login proves the server is up and the admin password is the one it was bootstrapped with.
    deadline = time.monotonic() + 120
    while True:
        try:
            status, body = request(base, auth, "GET", "/api/2.0/mlflow/users/get", query={"username": admin_user})
        except OSError as exc:  # connection refused while MLflow starts
            status, body = 0, {"message": str(exc)}
        if status == 200:
            break
        if status in (401, 403):
            print(f"mlflow-init: {base} refused the admin login (HTTP {status}); MLFLOW_AUTH_ADMIN_PASSWORD only sets "
                  "the password on the first start, see docs/deploy.md to rotate it", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"mlflow-init: {base} did not answer: HTTP {status} {body.get('message', '')}", file=sys.stderr)
            return 1
        time.sleep(2)

    for username, env_var in USERS.items():
        status, _ = request(base, auth, "GET", "/api/2.0/mlflow/users/get", query={"username": username})
        if status == 200:
            print(f"mlflow-init: user {username} exists (password unchanged)")
            continue
        status, body = request(base, auth, "POST", "/api/2.0/mlflow/users/create",
                               body={"username": username, "password": os.environ[env_var]})
        if status != 200:
            print(f"mlflow-init: creating {username} failed: HTTP {status} {body.get('message', '')}", file=sys.stderr)
            return 1
        print(f"mlflow-init: created user {username}")

    from alpr_principals import Principals, PrincipalsError, ensure_ownership

    names = [n.strip() for n in (os.environ.get("ALPR_MODEL_NAMES") or MODEL_NAMES).split(",") if n.strip()]
    experiments = [os.environ.get("MLFLOW_EXPERIMENT_NAME") or "alpr-training", "alpr-registered-existing"]
    try:
        ensure_ownership(Principals(base, os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"], os.environ["ALPR_PIPELINE_PASSWORD"],
                                    os.environ["ALPR_EDGE_PASSWORD"]), names, experiments)
    except PrincipalsError as exc:
        print(f"mlflow-init: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow-init: alpr-pipeline owns {', '.join(names + experiments)}; alpr-edge may read them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
