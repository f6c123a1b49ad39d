"""Registry-side promotion: evaluate versions (cached per version), record decisions, promote, reject, roll back.

Every decision is written onto the version as tags a person can read in the MLflow UI:
``alpr_decision`` (promoted / rejected / forced), ``alpr_decision_reasons``, ``alpr_decision_metrics`` (candidate and
champion numbers, JSON), ``alpr_decision_time``, ``alpr_decision_run_id``, ``alpr_decided_by``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.edge.trust import TrustedKeys, UntrustedVersion, registered_sha256, verify_manifest
from alpr_pipelines.lib.evaluation import EvaluationResult, ModelUnusable
from alpr_pipelines.lib.gate import GatePolicy, decide
from alpr_pipelines.lib.golden import GoldenSplits
from alpr_pipelines.lib.isolation import EVALUATOR_VERSIONS, RESULT_TYPES, EvaluationLimits, evaluate_onnx_isolated
from alpr_pipelines.lib.models import PREVIOUS_ALIAS, STAGE_ALIASES, ModelSpec, spec_for
from alpr_pipelines.lib.promotion_lock import PromotionLockError, promotion_lock
from alpr_pipelines.lib.reader_eval import ReaderEvaluation
from alpr_pipelines.lib.registry import (
    RegistryError,
    alias_version,
    reconcile_aliases,
    set_stage,
    version_artifact_path,
)

EVAL_TAG = "alpr_eval"
PARITY_TAG = "alpr_parity"
DECISION_TAG = "alpr_decision"
ATTEMPTS_TAG = "alpr_promotion_attempts"  # promotion runs of this version that ended in an error
ERROR_TAG = "alpr_promotion_error"  # the last one's error
MAX_ATTEMPTS = 3


class PromotionError(Exception):
    """A promotion cannot be carried out; the message says why and what to do."""


class CandidateUnusable(PromotionError):
    """The version itself cannot be used: no pipeline manifest, files that fail the trust checks, no ONNX file.
    Deciding again would not change that, so the candidate is rejected (transport errors are not this)."""


class ChampionChanged(PromotionError):
    """Production moved while a candidate was judged against the old champion; judging again is safe."""


REGISTER_HINT = "`alpr register-existing --models-dir DIR` (it exports, hashes, signs and registers a model file)"


def download_verified(client: MlflowClient, name: str, version: str, dest: Path,
                      max_download_mb: int | None = None) -> dict[str, Path]:
    """Download a version's files, check the manifest (``edge.trust.verify_manifest``: the registry's hash, and the
    signature when ``ALPR_EDGE_TRUSTED_KEYS`` names keys) and each file against it; return role -> path.

    Files are fetched into a temporary folder beside ``dest`` and moved into place only when every hash matches;
    nothing is fetched when the store lists more than ``max_download_mb`` (``ALPR_EVAL_MAX_DOWNLOAD_MB``).

    Raises:
        CandidateUnusable: no manifest, too large, or a file whose hash differs from the manifest.
    """
    mv = client.get_model_version(name, version)
    if not mv.run_id:
        raise PromotionError(f"{name} version {version} has no source run; register it with alpr")
    trusted = TrustedKeys.from_env()

    def trusted_manifest(path: Path) -> dict[str, Any]:
        try:
            return verify_manifest(path.read_bytes(), dict(mv.tags), name, trusted)
        except UntrustedVersion as exc:
            raise CandidateUnusable(f"v{version}: {exc}") from exc

    try:
        registered_sha256(dict(mv.tags), name)  # before any download
    except UntrustedVersion as exc:
        raise CandidateUnusable(f"v{version}: {exc} ({REGISTER_HINT})") from exc

    if dest.is_dir() and (dest / "manifest.json").is_file():
        manifest = trusted_manifest(dest / "manifest.json")
        files = {role: dest / f["name"] for role, f in manifest["files"].items()}
        if all(p.is_file() and sha256_file(p) == manifest["files"][r]["sha256"] for r, p in files.items()):
            return files
    artifacts = f"{version_artifact_path(mv.source or '')}/artifacts"
    cap_mb = max_download_mb if max_download_mb is not None else EvaluationLimits.from_env().max_download_mb
    listed = _listed_bytes(client, mv.run_id, artifacts)
    if listed > cap_mb * 1024 * 1024:
        raise CandidateUnusable(f"{name} v{version}: its files weigh {listed / 2**20:.0f} MB, over the "
                                f"{cap_mb} MB an evaluation downloads (ALPR_EVAL_MAX_DOWNLOAD_MB)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        local = Path(client.download_artifacts(mv.run_id, artifacts, str(tmp)))
        if not (local / "manifest.json").is_file():
            raise CandidateUnusable(f"{name} version {version} has no manifest.json; use {REGISTER_HINT}")
        manifest = trusted_manifest(local / "manifest.json")
        for f in manifest["files"].values():
            got = sha256_file(local / f["name"])
            if got != f["sha256"]:
                raise CandidateUnusable(f"{name} v{version}: {f['name']} sha256 {got[:12]} != manifest {f['sha256'][:12]}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(local, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {role: dest / f["name"] for role, f in manifest["files"].items()}


def _listed_bytes(client: MlflowClient, run_id: str, path: str) -> int:
    """What downloading ``path`` would fetch, as the artifact store lists it (folders included)."""
    total = 0
    for f in client.list_artifacts(run_id, path):
        total += _listed_bytes(client, run_id, f.path) if f.is_dir else (f.file_size or 0)
    return total


Evaluation = EvaluationResult | ReaderEvaluation  # a detector's scores, or the plate reader's


def cached_evaluation(client: MlflowClient, name: str, version: str, golden: GoldenSplits) -> Evaluation | None:
    raw = client.get_model_version(name, version).tags.get(EVAL_TAG)
    if not raw:
        return None
    data = json.loads(raw)
    task = spec_for(name).task
    if data.get("golden_fingerprint") != golden.key or data.get("evaluator_version") != EVALUATOR_VERSIONS[task]:
        return None
    try:
        return RESULT_TYPES[task](**data)
    except TypeError:  # written by a build whose evaluation had other fields: scored again
        return None


def evaluate_version(client: MlflowClient, name: str, version: str, golden: GoldenSplits,
                     work_dir: Path) -> tuple[Evaluation, bool]:
    """Score a registered version's ONNX on the golden set and its shift split (a reader: on the golden plate
    crops), in a child process with a timeout and a memory cap (``lib.isolation``); cached on the version per golden
    set and evaluator.

    Returns:
        (result, cached)
    """
    files = download_verified(client, name, version, work_dir / name / str(version))  # a cached score too
    cached = cached_evaluation(client, name, version, golden)
    if cached is not None:
        return cached, True
    if "onnx" not in files:
        raise CandidateUnusable(f"{name} version {version} has no ONNX file to evaluate")
    result = evaluate_onnx_isolated(files["onnx"], golden.data_yaml, golden.key, shift_yaml=golden.shift_yaml,
                                    task=spec_for(name).task)
    client.set_model_version_tag(name, version, EVAL_TAG, json.dumps(result.as_dict(), sort_keys=True))
    for key, value in result.headline().items():
        client.set_model_version_tag(name, version, f"eval_{key}", f"{value:.5f}")
    return result, False


def candidates(client: MlflowClient, name: str, after_version: int = 0) -> list[str]:
    """Versions awaiting a decision: in Staging or holding the candidate alias, undecided, newer than ``after``."""
    alias = alias_version(client, name, STAGE_ALIASES["Staging"])
    out = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        if int(mv.version) <= after_version or mv.tags.get(DECISION_TAG):
            continue
        if mv.current_stage == "Staging" or str(mv.version) == alias:
            out.append(str(mv.version))
    return sorted(out, key=int)


@dataclass(frozen=True)
class DecisionRecord:
    name: str
    version: str
    verdict: str
    reasons: list[str]
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    decided_by: str
    dagster_run_id: str | None
    time: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def record_decision(client: MlflowClient, record: DecisionRecord) -> None:
    """Tag the version with the decision; the verdict (``DECISION_TAG``) goes last, so whoever sees a verdict also
    sees its reasons, numbers and who decided (a tag at a time is all the registry offers)."""
    tags = {
        "alpr_decision_reasons": "; ".join(record.reasons),
        "alpr_decision_metrics": json.dumps({"candidate": record.candidate, "champion": record.champion,
                                             "champion_version": record.champion_version}, sort_keys=True),
        "alpr_decision_time": record.time,
        "alpr_decision_run_id": record.dagster_run_id or "",
        "alpr_decided_by": record.decided_by,
        DECISION_TAG: record.verdict,
    }
    for k, v in tags.items():
        client.set_model_version_tag(record.name, record.version, k, v)


def record_failed_attempt(client: MlflowClient, name: str, version: str, error: str, decided_by: str,
                          dagster_run_id: str | None) -> int:
    """Record on the version that a promotion run of it ended in ``error``; returns the attempts so far. At
    :data:`MAX_ATTEMPTS` the version is rejected with the last error, so none is left pending and invisible."""
    mv = client.get_model_version(name, version)
    attempts = int(mv.tags.get(ATTEMPTS_TAG) or 0) + 1
    client.set_model_version_tag(name, version, ATTEMPTS_TAG, str(attempts))
    client.set_model_version_tag(name, version, ERROR_TAG, error[:4000])
    if attempts >= MAX_ATTEMPTS and not mv.tags.get(DECISION_TAG):
        reject(client, name, version)
        record_decision(client, DecisionRecord(
            name=name, version=version, verdict="rejected",
            reasons=[f"gave up after {attempts} promotion runs that ended in an error; the last: {error[:1000]}"],
            candidate={}, champion=None, champion_version=alias_version(client, name, STAGE_ALIASES["Production"]),
            decided_by=decided_by, dagster_run_id=dagster_run_id, time=now_iso()))
    return attempts


def retries_due(client: MlflowClient, name: str, among: list[str] | None = None) -> list[tuple[str, int]]:
    """Candidates (``among``, if the caller listed them already) whose last promotion run ended in an error and that
    have attempts left: (version, next attempt)."""
    out = []
    for version in candidates(client, name) if among is None else among:
        attempts = int(client.get_model_version(name, version).tags.get(ATTEMPTS_TAG) or 0)
        if 0 < attempts < MAX_ATTEMPTS:
            out.append((version, attempts + 1))
    return out


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promote_to_production(client: MlflowClient, name: str, version: str) -> dict[str, str | None]:
    """Production stage (archiving the old one) and the production alias, then read both back.

    Raises:
        PromotionError: stage and alias disagree after the change (a concurrent change raced us).
    """
    set_stage(client, name, version, "Production", archive_existing=True)
    return verify_agreement(client, name, expect_production=version)


def verify_agreement(client: MlflowClient, name: str, expect_production: str | None = None) -> dict[str, str | None]:
    """Read back the Production stage and the production alias; they must name the same version."""
    aliases = reconcile_aliases(client, name)
    latest = client.get_latest_versions(name, stages=["Production"])
    by_stage = str(latest[0].version) if latest else None
    by_alias = alias_version(client, name, STAGE_ALIASES["Production"])
    if by_stage != by_alias or (expect_production is not None and by_alias != expect_production):
        raise PromotionError(
            f"{name}: after the change the Production stage names {by_stage} and the alias names {by_alias}"
            f"{'' if expect_production is None else f' (expected {expect_production})'}; another change raced "
            "this one. Check `alpr status` and promote again."
        )
    return {**aliases, PREVIOUS_ALIAS: alias_version(client, name, PREVIOUS_ALIAS)}


def reject(client: MlflowClient, name: str, version: str) -> None:
    """Out of Staging (back to None) so it holds no candidate alias; the decision tags say why."""
    if client.get_model_version(name, version).current_stage in ("Staging",):
        set_stage(client, name, version, "None")


def rollback(client: MlflowClient, name: str) -> tuple[str, str]:
    """Production goes back to the version holding the ``previous`` alias.

    Returns:
        (demoted version, restored version)
    """
    restored = alias_version(client, name, PREVIOUS_ALIAS)
    current = alias_version(client, name, STAGE_ALIASES["Production"])
    if restored is None:
        raise PromotionError(f"{name} has no '{PREVIOUS_ALIAS}' version to roll back to")
    if current is None:
        raise PromotionError(f"{name} has no Production version to roll back from")
    try:
        with promotion_lock(name):
            if alias_version(client, name, STAGE_ALIASES["Production"]) != current:
                raise ChampionChanged(f"{name}: Production moved while rolling back from v{current}; nothing "
                                      "changed. Check `alpr status` and roll back again if still wanted.")
            promote_to_production(client, name, restored)
    except (RegistryError, PromotionLockError) as exc:
        raise PromotionError(str(exc)) from exc
    return current, restored


def judge_candidate(client: MlflowClient, spec: ModelSpec, version: str, golden: GoldenSplits, policy: GatePolicy,
                    work_dir: Path, decided_by: str, dagster_run_id: str | None, force: bool = False,
                    reason: str | None = None) -> tuple[DecisionRecord, bool]:
    """Evaluate ``version`` and the champion by the same code on the golden set and apply the gate; change nothing.
    Returns the decision to record and whether to promote (``force`` promotes whatever the gate says, with a
    ``reason``).

    A candidate that is unusable itself (no pipeline manifest, files that fail the trust checks, a model that does
    not load or run) is rejected with the reason and how to register it properly: never a score of 0.

    Raises:
        EvaluationError, PromotionError, MlflowException: anything else (the registry or the golden set is away,
            the champion cannot be evaluated, a forced promotion has no reason): the run fails, the error is
            recorded on the version, and the sensor runs it again (``record_failed_attempt``).
    """
    if force and not reason:
        raise PromotionError("a forced promotion needs a reason (--reason TEXT)")
    name = spec.registered_name
    mv = client.get_model_version(name, version)
    champion_version = alias_version(client, name, STAGE_ALIASES["Production"])
    try:
        candidate, _ = evaluate_version(client, name, version, golden, work_dir)
    except (CandidateUnusable, ModelUnusable) as exc:
        record = DecisionRecord(name=name, version=version, verdict="rejected",
                                reasons=[f"cannot be evaluated: {exc}"], candidate={}, champion=None,
                                champion_version=champion_version, decided_by=decided_by,
                                dagster_run_id=dagster_run_id, time=now_iso())
        return record, False
    champion = evaluate_version(client, name, champion_version, golden, work_dir)[0] if champion_version else None
    parity = {"passed": True, "failed": False}.get(mv.tags.get(PARITY_TAG, ""))
    decision = decide(candidate.headline(), champion.headline() if champion else None, parity, policy)
    reasons = list(decision.reasons)
    verdict = decision.verdict
    if force and not decision.promote:
        verdict = "forced"
        reasons.append(f"FORCED by {decided_by}: {reason}")
    record = DecisionRecord(name=name, version=version, verdict=verdict, reasons=reasons,
                            candidate=candidate.headline(), champion=champion.headline() if champion else None,
                            champion_version=champion_version, decided_by=decided_by, dagster_run_id=dagster_run_id,
                            time=now_iso())
    return record, decision.promote or force


def apply_decision(client: MlflowClient, record: DecisionRecord, promote: bool) -> dict[str, str | None] | None:
    """Promote (Production stage and alias, the old champion ``previous``; returns the aliases read back) or reject
    (out of Staging), then record the decision on the version.

    It is a compare-and-swap under the model's promotion lock (``lib.promotion_lock``, shared by the sensor, the
    UI's jobs and the CLI whatever their Dagster instance): it promotes only while Production is still the champion
    the candidate was judged against.

    Raises:
        ChampionChanged: Production moved since the judgement; nothing changed, judging again is safe.
        PromotionError: the lock stayed held by another change, or stage and alias disagree after the change;
            nothing is recorded, and promoting again is safe.
    """
    try:
        with promotion_lock(record.name):
            if promote:
                now = alias_version(client, record.name, STAGE_ALIASES["Production"])
                if now != record.champion_version:
                    raise ChampionChanged(f"{record.name}: Production is v{now}, not the v{record.champion_version} "
                                          f"that v{record.version} was judged against; nothing changed. Judge it "
                                          "again.")
                aliases = promote_to_production(client, record.name, record.version)
            else:
                aliases = None
                reject(client, record.name, record.version)
            record_decision(client, record)
    except PromotionLockError as exc:
        raise PromotionError(str(exc)) from exc
    return aliases
