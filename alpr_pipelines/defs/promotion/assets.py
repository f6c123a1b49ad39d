"""Evaluation assets: each model's newest registered version and the current champion, scored on the golden set by
the same code (a detector's mAP, the plate reader's exact match and CER)."""

from typing import Any

import dagster as dg

from alpr_pipelines.defs.registry.resources import MlflowRegistryResource
from alpr_pipelines.defs.resources import AlprStateResource
from alpr_pipelines.lib.evaluation import EvaluationError, EvaluationResult
from alpr_pipelines.lib.gate import CLASS_AP50_PREFIX, DEFAULT_POLICIES
from alpr_pipelines.lib.golden import GoldenSplits
from alpr_pipelines.lib.models import MODEL_SPECS, STAGE_ALIASES, ModelSpec
from alpr_pipelines.lib.promotion import PromotionError, evaluate_version
from alpr_pipelines.lib.reader_eval import ReaderEvaluation
from alpr_pipelines.lib.registry import alias_version


def per_class_table(result: EvaluationResult) -> dg.MetadataValue:
    """AP50 and AP50-95 of each class on the golden set, as a table in the Dagster UI."""
    rows = [dg.TableRecord({"class": name, "AP50": round(result.per_class_ap50.get(name, 0.0), 4),
                            "AP50-95": round(ap, 4)})
            for name, ap in result.per_class_ap50_95.items()]
    return dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=[
        dg.TableColumn("class", "string"), dg.TableColumn("AP50", "float"), dg.TableColumn("AP50-95", "float")]))


def width_table(result: ReaderEvaluation) -> dg.MetadataValue:
    """Exact match on the golden plate crops by the plate's width in pixels, as a table in the Dagster UI."""
    rows = [dg.TableRecord({"plate width": row["band"], "plates": row["plates"], "read": row["read"],
                            "exact match": round(row["exact_match"], 4)})
            for row in result.by_plate_width]
    return dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=[
        dg.TableColumn("plate width", "string"), dg.TableColumn("plates", "int"), dg.TableColumn("read", "int"),
        dg.TableColumn("exact match", "float")]))


def build_evaluation_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[spec.key, "evaluation"],
        group_name=spec.group,
        ins={"registered": dg.AssetIn([spec.key, "registered_version"]),
             "golden": dg.AssetIn(["datasets", "golden_set"])},
        kinds={"onnx", "mlflow"},
        description=f"The registered {spec.registered_name} version's ONNX (what the edge runs) and the current "
        "Production version, scored by the same code on the frozen golden set: "
        + ("mAP50, mAP50-95, precision, recall, per-class AP, CPU latency p50/p95 at the deployment size"
           if spec.task == "detect" else "plate-level exact match (also by plate width), character error rate, "
           "p50/p95 latency per plate read once by the network (the gate's budget) and as the edge reads it, "
           "unsure plates again (with their share)")
        + ", file size. Scores are cached on each version.",
    )
    def _evaluation(context: dg.AssetExecutionContext, mlflow_registry: MlflowRegistryResource,
                    state: AlprStateResource, registered: dict, golden: dict) -> dg.Output[dict]:
        client = mlflow_registry.get_client()
        name = spec.registered_name
        splits = GoldenSplits.from_dict(golden[spec.key])
        work = state.path("evaluations")
        champion_version = alias_version(client, name, STAGE_ALIASES["Production"])
        try:
            candidate, cached = evaluate_version(client, name, registered["version"], splits, work)
            champion = None
            if champion_version is not None and champion_version != registered["version"]:
                champion, _ = evaluate_version(client, name, champion_version, splits, work)
        except (EvaluationError, PromotionError) as exc:
            raise dg.Failure(description=f"evaluation of {name} v{registered['version']} failed: {exc}") from exc
        metadata: dict[str, Any] = {
            "version": registered["version"],
            "cached": cached,
            **{k: round(v, 5) for k, v in candidate.headline().items() if not k.startswith(CLASS_AP50_PREFIX)},
            "latency_ms_p50": round(candidate.latency_ms_p50, 2),
            "file_size_mb": round(candidate.file_size_mb, 3),
            "golden_images": candidate.images,
            "champion_version": champion_version or "-",
        }
        if isinstance(candidate, EvaluationResult):
            metadata["per_class_ap"] = per_class_table(candidate)
        else:
            if candidate.served_latency_ms_p50 is not None:
                metadata["served_latency_ms_p50"] = round(candidate.served_latency_ms_p50, 2)
            if candidate.by_plate_width:
                metadata["exact_match_by_plate_width"] = width_table(candidate)
        if champion is not None:
            score = DEFAULT_POLICIES[spec.key].score
            metadata["champion"] = dg.MetadataValue.json(champion.headline())
            metadata[f"delta_{score}"] = round(candidate.headline()[score] - champion.headline()[score], 5)
        return dg.Output({"name": name, "version": registered["version"], "candidate": candidate.as_dict(),
                          "champion": champion.as_dict() if champion else None, "champion_version": champion_version},
                         metadata=metadata)

    return _evaluation


evaluation_assets = [build_evaluation_asset(spec) for spec in MODEL_SPECS.values()]
