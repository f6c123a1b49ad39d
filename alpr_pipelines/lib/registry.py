"""The MLflow Model Registry side: registering versions and keeping stages and aliases in agreement.

MLflow deprecated stages (2.9) in favour of aliases. Our users' scripts still call
``transition_model_version_stage``, so we keep both: the alias of a stage (``STAGE_ALIASES``) always names the newest
version in that stage, and every stage change here moves the alias with it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import alpr_pipelines
from alpr_pipelines.edge import trust
from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.lib.models import PREVIOUS_ALIAS, STAGE_ALIASES, STAGES, ModelSpec
from alpr_pipelines.lib.signing import SigningKey

CONTENT_TAG = "alpr_content_id"
MANIFEST_SHA_TAG = trust.MANIFEST_SHA_TAG
INITIAL_STAGE_TAG = "alpr_initial_stage"
PYFUNC_PATH = "detector"  # the pyfunc models of a run live under detector/<content id>/, one folder per version


def version_artifact_path(source: str) -> str:
    """The artifact path inside the run of a version whose source is ``runs:/<run_id>/<path>``."""
    if not source.startswith("runs:/"):
        raise RegistryError(f"version source {source!r} is not a runs:/ URI; register it with alpr")
    return source.split("/", 2)[2]


class RegistryError(Exception):
    """A registry operation cannot be done; the message says why and what to do."""


@dataclass
class RegisteredVersion:
    name: str
    version: str
    stage: str
    aliases: list[str]
    run_id: str | None
    source: str
    created: bool
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def code_version() -> str:
    """Package version plus the git commit (``+dirty`` when the tree has changes), when run from a checkout."""
    root = Path(alpr_pipelines.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "alpr_pipelines"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{alpr_pipelines.__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return alpr_pipelines.__version__


def build_manifest(spec: ModelSpec, files: dict[str, Path], imgsz: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The version's manifest: sha256 and size of every file, classes, imgsz and provenance in ``extra``."""
    return {
        "model": spec.registered_name,
        "classes": list(spec.classes),
        "imgsz": imgsz,
        "files": {
            role: {"name": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size}
            for role, p in sorted(files.items())
        },
        "code_version": code_version(),
        **extra,
    }


def content_id(manifest: dict[str, Any]) -> str:
    """Identity of a version: model name, the trained weights' hash, image size and which formats it carries.

    Not the ONNX or engine bytes: Ultralytics stamps the export time into them, so re-exporting the same weights
    must not make a "new" version.
    """
    ident = {
        "model": manifest["model"],
        "weights": (manifest["files"].get("weights") or manifest["files"]["onnx"])["sha256"],
        "imgsz": manifest["imgsz"],
        "formats": sorted(manifest["files"]),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def ensure_registered_model(client: MlflowClient, spec: ModelSpec) -> None:
    try:
        client.get_registered_model(spec.registered_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(spec.registered_name, description=spec.description,
                                           tags={"classes": ",".join(spec.classes)})
        except MlflowException as race:  # created by a concurrent step: fine
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    client.set_registered_model_tag(spec.registered_name, "classes", ",".join(spec.classes))


def find_version_by_content(client: MlflowClient, name: str, cid: str):
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get(CONTENT_TAG) == cid:
            return mv
    return None


def _staged_code() -> Path:
    """A copy of what the pyfunc model imports, for its ``code_paths``: the package marker, ``alpr_pipelines/edge``
    and ``alpr_pipelines/lib/pyfunc`` (the rest of ``lib`` needs torch and is left out)."""
    package = Path(alpr_pipelines.__file__).resolve().parent
    dest = Path(tempfile.mkdtemp(prefix="alpr-code-")) / "alpr_pipelines"
    for part in ("edge", "lib/pyfunc"):
        for f in (package / part).rglob("*.py"):
            target = dest / f.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    for marker in ("__init__.py", "lib/__init__.py"):
        shutil.copyfile(package / marker, dest / marker)
    return dest


def save_pyfunc(path: Path, files: dict[str, Path], manifest_path: Path, task: str = "detect") -> None:
    """Write the pyfunc model folder: ONNX Runtime inference (a detector's boxes, or the reader's text), with every
    file of the version as an artifact."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import alpr_pipelines.lib.pyfunc.model_code as model_code
    import alpr_pipelines.lib.pyfunc.reader_code as reader_code
    from alpr_pipelines.lib.pyfunc.model import OUTPUT_COLUMNS

    if task == "read":
        entry = reader_code.__file__
        signature = ModelSignature(inputs=Schema([ColSpec("binary", "image")]), outputs=Schema(
            [ColSpec("long", "image_index"), ColSpec("string", "text"), ColSpec("double", "confidence")]))
    else:
        entry = model_code.__file__
        signature = ModelSignature(
            inputs=Schema([ColSpec("binary", "image")]),
            outputs=Schema([ColSpec("long" if c in ("image_index", "class_id") else "string" if c == "class_name"
                                    else "double", c) for c in OUTPUT_COLUMNS]),
            params=ParamSchema([ParamSpec("conf", "double", 0.25), ParamSpec("iou", "double", 0.7)]),
        )
    code = _staged_code()
    try:
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(entry),  # models from code: consumers never unpickle our objects
            artifacts={**{role: str(p) for role, p in files.items()}, "manifest": str(manifest_path)},
            code_paths=[str(code)],
            signature=signature,
            pip_requirements=["onnxruntime", "opencv-python-headless", "numpy", "pandas", "requests", "cryptography",
                              f"mlflow=={mlflow.__version__}"],
        )
    finally:
        shutil.rmtree(code.parent, ignore_errors=True)


def sign_existing(client: MlflowClient, mv: Any, signer: SigningKey, ours: dict[str, Any]) -> None:
    """Sign a version registered before the key existed, only if its manifest is the one the registry recorded and
    lists exactly the files we hold (``ours``: the manifest built from them): a content-id tag alone is anyone's to
    write, and the key must never sign someone else's model."""
    with tempfile.TemporaryDirectory(prefix="alpr-sign-") as tmp:
        path = Path(client.download_artifacts(mv.run_id, f"{version_artifact_path(mv.source or '')}/artifacts/"
                                                         "manifest.json", tmp))
        body = path.read_bytes()
    try:  # the registry's hash, the model name and plain file names: the edge's own check, without keys
        stored = trust.verify_manifest(body, dict(mv.tags), ours["model"], trust.TrustedKeys({}))
        same = stored.get("imgsz") == ours["imgsz"] and {r: f["sha256"] for r, f in stored["files"].items()} == {
            r: f["sha256"] for r, f in ours["files"].items()}
    except trust.UntrustedVersion:
        same = False
    if not same:
        raise RegistryError(f"{mv.name} v{mv.version} claims this content, but its manifest is not the one the "
                            "registry recorded or lists other files; not signing it. Archive or delete that version "
                            "and register again")
    for key, value in signer.sign_tags(body).items():
        client.set_model_version_tag(mv.name, mv.version, key, value)


def register_version(
    client: MlflowClient,
    spec: ModelSpec,
    run_id: str,
    files: dict[str, Path],
    imgsz: int,
    provenance: dict[str, Any],
    initial_stage: str = "None",
    version_tags: dict[str, str] | None = None,
    signer: SigningKey | None = None,
) -> RegisteredVersion:
    """Register ``files`` (``weights``, ``onnx``, optional ``engine``) as a new version of ``spec``'s model.

    Idempotent: a version with the same content (see :func:`content_id`) is returned as it is, never duplicated.

    Args:
        client: MLflow client of the tracking server that holds the registry.
        spec: which model.
        run_id: the MLflow run the version comes from; the pyfunc model is logged into it.
        files: role -> local file (``weights``, ``onnx``, optional ``engine``).
        imgsz: the exported input size.
        provenance: recorded in the manifest (dataset fingerprint, Dagster run id, MLflow run id, ...).
        initial_stage: "None" or "Staging"; Staging also sets the ``candidate`` alias.
        version_tags: extra tags for the version (training metrics, engine identity).
        signer: the pipeline's release key (``lib.signing``); the manifest's signature becomes a version tag.
    """
    if initial_stage not in ("None", "Staging"):
        raise RegistryError(f"initial stage must be None or Staging, got {initial_stage!r}; promote with `alpr promote`")
    missing = [f"{role}={p}" for role, p in files.items() if not Path(p).is_file()]
    if missing:
        raise RegistryError(f"cannot register {spec.registered_name}: files missing: {', '.join(missing)}")
    ensure_registered_model(client, spec)
    manifest = build_manifest(spec, files, imgsz, {"mlflow_run_id": run_id, **provenance})
    cid = content_id(manifest)
    existing = find_version_by_content(client, spec.registered_name, cid)
    if existing is None:
        with tempfile.TemporaryDirectory(prefix="alpr-register-") as tmp:
            manifest["created_at"] = datetime.now(UTC).isoformat()
            manifest_path = Path(tmp) / "manifest.json"
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            model_dir = Path(tmp) / PYFUNC_PATH
            save_pyfunc(model_dir, files, manifest_path, spec.task)
            # Its own folder per version: a run can hold several versions (other image size, an engine added
            # later), and a version's files must never be overwritten by the next one's.
            artifact_path = f"{PYFUNC_PATH}/{cid[:16]}"
            client.log_artifacts(run_id, str(model_dir), artifact_path)
            tags = {
                CONTENT_TAG: cid,
                MANIFEST_SHA_TAG: sha256_file(manifest_path),
                "classes": ",".join(spec.classes),
                "imgsz": str(imgsz),
                "code_version": manifest["code_version"],
                **{k: str(v) for k, v in provenance.items() if v is not None},
                **(version_tags or {}),
                **(signer.sign_tags(manifest_path.read_bytes()) if signer is not None else {}),
            }
            mv = client.create_model_version(
                spec.registered_name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags,
                description=spec.description + (f"; classes: {', '.join(spec.classes)}" if spec.classes else ""),
            )
        mv = wait_until_ready(client, spec.registered_name, mv.version)
        created = True
    else:
        mv, created = existing, False
        if signer is not None and trust.SIGNATURE_TAG not in mv.tags:
            sign_existing(client, mv, signer, manifest)
    # The initial stage is applied once: at creation, or to finish a creation that crashed before it. Never again to
    # an existing version, which a promotion decision may since have moved (re-staging it would undo a rejection).
    if mv.tags.get(INITIAL_STAGE_TAG) != "applied":
        if initial_stage != "None" and mv.current_stage == "None":
            set_stage(client, spec.registered_name, mv.version, initial_stage)
        client.set_model_version_tag(spec.registered_name, mv.version, INITIAL_STAGE_TAG, "applied")
    return describe_version(client, spec.registered_name, mv.version, created=created)


def wait_until_ready(client: MlflowClient, name: str, version: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version} did not become READY (status {mv.status})")
        time.sleep(0.5)


def describe_version(client: MlflowClient, name: str, version: str, created: bool = False) -> RegisteredVersion:
    mv = client.get_model_version(name, version)
    return RegisteredVersion(name=name, version=str(mv.version), stage=mv.current_stage or "None",
                             aliases=list(mv.aliases), run_id=mv.run_id, source=mv.source or "", created=created,
                             tags=dict(mv.tags))


def set_stage(client: MlflowClient, name: str, version: str, stage: str, archive_existing: bool = False) -> None:
    """Move ``version`` to ``stage`` and keep the stage aliases in agreement.

    Production: the old holder of the ``production`` alias gets ``previous``. Any stage: the alias of a stage the
    version leaves is moved to the newest version still in that stage, or deleted when none is left.
    """
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    old_champion = alias_version(client, name, STAGE_ALIASES["Production"])
    with warnings.catch_warnings():
        # Deliberate: stages stay supported beside aliases for the original design's scripts (see the module docstring).
        warnings.filterwarnings("ignore", message=".*transition_model_version_stage.*", category=FutureWarning)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=archive_existing)
    if stage == "Production" and old_champion is not None and old_champion != str(version):
        client.set_registered_model_alias(name, PREVIOUS_ALIAS, old_champion)
    reconcile_aliases(client, name)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def reconcile_aliases(client: MlflowClient, name: str) -> dict[str, str | None]:
    """Point each stage alias at the newest version in its stage (or remove it); return alias -> version.

    When Production changed behind our back (a person called ``transition_model_version_stage``), the version that
    held the ``production`` alias becomes ``previous``, as if it had been promoted through us.
    """
    versions = list(client.search_model_versions(f"name = '{name}'"))
    result: dict[str, str | None] = {}
    for stage, alias in STAGE_ALIASES.items():
        in_stage = sorted((int(v.version) for v in versions if v.current_stage == stage), reverse=True)
        current = alias_version(client, name, alias)
        want = str(in_stage[0]) if in_stage else None
        if want is None and current is not None:
            client.delete_registered_model_alias(name, alias)
        elif want is not None and current != want:
            client.set_registered_model_alias(name, alias, want)
            if stage == "Production" and current is not None:
                client.set_registered_model_alias(name, PREVIOUS_ALIAS, current)
        result[alias] = want
    return result
