"""What each principal can actually do on a running registry: every endpoint the system uses, tried for real as
anonymous, ``alpr-edge`` and ``alpr-pipeline``, each answer compared with the policy (``stack.principals``).

Writes go to scratch resources the audit makes as the pipeline (``alpr-audit-*`` models and experiments, extra
versions of the audited model, its ``alpr-audit`` alias) and deletes afterwards. Used by the auth-matrix test and the
fault suite's figure; run it against a staging registry rather than the fleet's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import requests

from alpr_pipelines.stack.principals import EDGE_USER, PIPELINE_USER, Principals

ANONYMOUS = "anonymous"
PRINCIPALS = (ANONYMOUS, EDGE_USER, PIPELINE_USER)
READS = ("read model", "read version", "read alias", "read artifact")
WRITES = ("create model", "create experiment", "create version", "set alias", "transition", "delete version",
          "delete model")
# What the policy allows: anonymous nothing, the edge reads, the pipeline everything.
ALLOWED = {ANONYMOUS: set(), EDGE_USER: set(READS), PIPELINE_USER: set(READS) | set(WRITES)}


@dataclass(frozen=True)
class Cell:
    principal: str
    action: str
    status: int
    allowed: bool

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300

    @property
    def as_expected(self) -> bool:
        """Allowed actions succeed; the rest are refused (401 for anonymous, 403 for a known principal)."""
        if self.allowed:
            return self.succeeded
        return self.status == (401 if self.principal == ANONYMOUS else 403)


def audit(p: Principals, model: str) -> list[Cell]:
    """Try every action as every principal against ``model`` (which needs one version with an artifact, made by the
    pipeline: the reads and the version-level writes use it) and return the answers."""
    base = p.base_uri.rstrip("/")

    def call(who: str, method: str, path: str, **kw) -> requests.Response:
        auth = None if who == ANONYMOUS else p.auth(who)
        return requests.request(method, f"{base}{path}", auth=auth, timeout=10, **kw)

    def as_pipeline(method: str, path: str, **kw) -> dict:
        resp = call(PIPELINE_USER, method, path, **kw)
        resp.raise_for_status()
        return resp.json()

    versions = as_pipeline("GET", "/api/2.0/mlflow/model-versions/search",
                           params={"filter": f"name='{model}'", "max_results": 1}).get("model_versions", [])
    if not versions:
        raise ValueError(f"{model} has no version to audit against; register one first")
    version = versions[0]
    run = as_pipeline("GET", "/api/2.0/mlflow/runs/get", params={"run_id": version["run_id"]})["run"]
    root = run["info"]["artifact_uri"].split(":", 1)[1].lstrip("/")
    first_file, folder = None, ""
    for _ in range(8):  # the first file, a few folders deep
        listed = as_pipeline("GET", "/api/2.0/mlflow/artifacts/list",
                             params={"run_id": version["run_id"], "path": folder}).get("files", [])
        first_file = next((f["path"] for f in listed if not f.get("is_dir")), None)
        if first_file or not listed:
            break
        folder = listed[0]["path"]
    if first_file is None:
        raise ValueError(f"{model} v{version['version']}'s run has no artifact file to audit a read with")
    as_pipeline("POST", "/api/2.0/mlflow/registered-models/alias",
                json={"name": model, "alias": "alpr-audit", "version": version["version"]})

    cells = []
    for who in PRINCIPALS:
        tag = f"{who}-{uuid.uuid4().hex[:6]}"
        scratch_model = f"alpr-audit-{tag}"
        as_pipeline("POST", "/api/2.0/mlflow/registered-models/create", json={"name": scratch_model})
        scratch_version = as_pipeline("POST", "/api/2.0/mlflow/model-versions/create",
                                      json={"name": model, "source": version["source"],
                                            "run_id": version["run_id"]})["model_version"]["version"]
        tries = {
            "read model": ("GET", "/api/2.0/mlflow/registered-models/get", {"params": {"name": model}}),
            "read version": ("GET", "/api/2.0/mlflow/model-versions/get",
                             {"params": {"name": model, "version": version["version"]}}),
            "read alias": ("GET", "/api/2.0/mlflow/registered-models/alias",
                           {"params": {"name": model, "alias": "alpr-audit"}}),
            "read artifact": ("GET", f"/api/2.0/mlflow-artifacts/artifacts/{root}/{first_file}", {}),
            "create model": ("POST", "/api/2.0/mlflow/registered-models/create",
                             {"json": {"name": f"alpr-audit-new-{tag}"}}),
            "create experiment": ("POST", "/api/2.0/mlflow/experiments/create",
                                  {"json": {"name": f"alpr-audit-{tag}"}}),
            "create version": ("POST", "/api/2.0/mlflow/model-versions/create",
                               {"json": {"name": model, "source": version["source"], "run_id": version["run_id"]}}),
            "set alias": ("POST", "/api/2.0/mlflow/registered-models/alias",
                          {"json": {"name": model, "alias": "alpr-audit", "version": scratch_version}}),
            "transition": ("POST", "/api/2.0/mlflow/model-versions/transition-stage",
                           {"json": {"name": model, "version": scratch_version, "stage": "Archived",
                                     "archive_existing_versions": False}}),
            "delete version": ("DELETE", "/api/2.0/mlflow/model-versions/delete",
                               {"json": {"name": model, "version": scratch_version}}),
            "delete model": ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"json": {"name": scratch_model}}),
        }
        made = [scratch_version]
        for action, (method, path, kw) in tries.items():
            resp = call(who, method, path, **kw)
            cells.append(Cell(who, action, resp.status_code, action in ALLOWED[who]))
            if action == "create version" and resp.ok:
                made.append(resp.json()["model_version"]["version"])
        _tidy(call, model, scratch_model, made, tag)
    return cells


def _tidy(call, model: str, scratch_model: str, versions: list[str], tag: str) -> None:
    """Remove what the audit made (best effort: what a refused principal did not create is simply absent)."""
    bodies = [("/api/2.0/mlflow/model-versions/delete", {"name": model, "version": v}) for v in versions]
    bodies += [("/api/2.0/mlflow/registered-models/delete", {"name": scratch_model}),
               ("/api/2.0/mlflow/registered-models/delete", {"name": f"alpr-audit-new-{tag}"})]
    for path, body in bodies:
        call(PIPELINE_USER, "DELETE", path, json=body)
    exp = call(PIPELINE_USER, "GET", "/api/2.0/mlflow/experiments/get-by-name",
               params={"experiment_name": f"alpr-audit-{tag}"})
    if exp.status_code == 200:
        call(PIPELINE_USER, "POST", "/api/2.0/mlflow/experiments/delete",
             json={"experiment_id": exp.json()["experiment"]["experiment_id"]})


def format_matrix(cells: list[Cell]) -> str:
    """A markdown table: one row per action, one column per principal, each cell the HTTP status and a mark."""
    actions = list(dict.fromkeys(c.action for c in cells))
    by = {(c.principal, c.action): c for c in cells}
    lines = ["| action | " + " | ".join(PRINCIPALS) + " |", "|---|" + "---|" * len(PRINCIPALS)]
    for action in actions:
        row = []
        for who in PRINCIPALS:
            c = by[(who, action)]
            mark = ("allowed" if c.allowed else "refused") + ("" if c.as_expected else " **UNEXPECTED**")
            row.append(f"{c.status} {mark}")
        lines.append(f"| {action} | " + " | ".join(row) + " |")
    return "\n".join(lines)
