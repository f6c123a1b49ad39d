"""Figure 5, orchestration overhead: a full Dagster run (train, export, register) against plain Ultralytics CLI
training and export with the same settings, interleaved (ours, baseline, ours, baseline, ...) so that drift in
machine load hits both sides alike.

- Ours: ``dagster asset materialize -m alpr_pipelines.definitions --select '*vehicle/registered_version'`` in a
  fresh process, with a run config that points the dataset asset at the prepared data YAML (``source: yaml``, what
  ``alpr train --data`` does) and the training flags below. The selection is everything upstream of the registered
  version: golden set, dataset, weights, ONNX with its blocking ONNX Runtime vs PyTorch parity check, the INT8
  quantization where the pipeline has it, TensorRT (skipped without CUDA) and the registered version, against a
  loopback MLflow server; the evaluation assets are not part of it. Executor: in-process by default, as
  ``alpr train`` runs it; ``--executor multiprocess`` measures Dagster's default for runs launched from the UI or the
  daemon (a process per step). Wall time runs from process start to exit, so it includes Python start-up, imports,
  loading the code location and interpreter shut-down: real overhead a user pays.
- Baseline: ``yolo train`` then ``yolo export format=onnx`` with the arguments our training and export pass to
  Ultralytics (``lib/training.py``, ``lib/exports.py``; the export's dynamic/static shape follows what ours produced);
  its wall time is the sum of both processes' wall times. Ultralytics' MLflow callback is switched off for it
  (``mlflow=False`` in its own ``YOLO_CONFIG_DIR``) so that it is plain Ultralytics; our trainer strips that callback
  itself and logs through its own MLflow client. Both sides run with ``YOLO_OFFLINE=1`` and ``YOLO_VERBOSE=false``.
- Training images per second, the same definition on both sides: train images x epochs over the last ``time`` of
  Ultralytics' ``results.csv`` (seconds from the start of the first epoch to the end of the last epoch's validation,
  as the trainer itself measures it); trainer set-up and the final validation of ``best.pt`` fall outside it on both.

Each repetition really trains: a fresh MLflow experiment (a finished run with the same ``alpr_training_key`` would
otherwise be reused) and no training or export folder left from the previous repetition. Prepared once and not
timed, as a user who has run the pipeline before finds them: the dataset (vehicle view of synthetic scenes), the
golden set, Ultralytics' label caches, the MLflow server (started and warmed up) and a Dagster instance in a
temporary DAGSTER_HOME (initialized by one golden-set run).

    .venv/bin/python bench/orchestration_bench.py            # full: the demo's training, 3 repetitions, ~17 min
    .venv/bin/python bench/orchestration_bench.py --epochs 3 # the same on a training a quarter as long
    .venv/bin/python bench/orchestration_bench.py --quick    # CI smoke: 1 repetition, asserts nothing about time
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import free_port, machine  # first: offline Ultralytics, the repository on sys.path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Both sides run with these; our training sets the same itself (lib/training.py offline_ultralytics).
ULTRALYTICS_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false"}
TARGET_WALL, TARGET_IPS = 1.15, 0.95
OURS_TARGET = "vehicle/registered_version"

# golden: the golden set's config; None keeps the pipeline's defaults (lib.golden), as a user has them.
# FULL is a short training (160/40 images of 512x320 scenes, 12 epochs at 320 px, batch 16; the demo's recipe trains
# longer). The overhead is a fixed number of seconds per run, so the ratio depends on the training's length:
# `--epochs 3` shows it on a training a quarter as long.
FULL = {"train_images": 160, "val_images": 40, "scene": (512, 320), "imgsz": 320, "epochs": 12, "batch": 16,
        "repetitions": 3, "golden": None}
QUICK = {"train_images": 16, "val_images": 4, "scene": (192, 128), "imgsz": 128, "epochs": 1, "batch": 8,
         "repetitions": 1, "golden": {"scenes": 8, "width": 320, "height": 192}}


def pipeline_training_args(imgsz: int, epochs: int, batch: int) -> dict[str, Any]:
    """What ``lib/training.py`` passes to ``model.train`` for ``alpr train`` with these flags and TrainConfig's
    defaults (lr0 0.01, AdamW, 2 workers, seed 0, patience 100, no augmentation overrides), device cpu."""
    from alpr_pipelines.lib.training import TrainingParams, ultralytics_args

    params = TrainingParams(epochs=epochs, imgsz=imgsz, batch=batch, device="cpu")
    return {**ultralytics_args(params), "device": "cpu", "plots": True, "verbose": False, "amp": True}


# --------------------------------------------------------------------------------------------- prepare (not timed)


def prepare(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Dataset, golden set, label caches, Ultralytics config folders, MLflow server, DAGSTER_HOME."""
    from alpr_pipelines import stack
    from alpr_pipelines.defs.golden import GoldenSetConfig
    from alpr_pipelines.defs.resources import AlprStateResource
    from alpr_pipelines.lib.datasets import write_synthetic_views
    from alpr_pipelines.lib.models import VEHICLE
    from alpr_pipelines.settings import load_settings
    from alpr_pipelines.stack.embedded import ensure_dagster_home

    home = work / "alpr-home"
    width, height = cfg["scene"]
    data_yaml = write_synthetic_views(work / "data", [VEHICLE], seed=5, counts={
        "train": cfg["train_images"], "val": cfg["val_images"]}, width=width, height=height)["vehicle"]
    # Rendered once here, as any run after a pipeline's first finds it; each timed run still validates it.
    GoldenSetConfig(**(cfg["golden"] or {})).splits(AlprStateResource(home=str(home)))
    warm_label_caches(data_yaml, cfg["imgsz"], cfg["batch"])

    yolo_config = {side: work / f"yolo-config-{side}" for side in ("ours", "baseline")}
    for side, folder in yolo_config.items():
        folder.mkdir(parents=True)
        settings_env = {**os.environ, **ULTRALYTICS_ENV, "YOLO_CONFIG_DIR": str(folder)}
        extra = ["mlflow=False"] if side == "baseline" else []  # ours keeps Ultralytics' defaults, as a user has them
        subprocess.run([str(BIN / "yolo"), "settings", f"runs_dir={work / 'stray-runs'}", *extra], env=settings_env,
                       check=True, capture_output=True, timeout=120)

    port = free_port()
    settings = load_settings({"ALPR_HOME": str(home), "ALPR_MLFLOW_PORT": str(port),
                              "DAGSTER_HOME": str(work / "dagster-home")})
    stack.up(settings, only=["mlflow"])
    prep = {"home": home, "data_yaml": data_yaml, "yolo_config": yolo_config, "settings": settings}
    try:
        warm_mlflow(settings.mlflow_tracking_uri, work)
        ensure_dagster_home(settings)
        # The instance's storage is created on first use: one golden-set run here, so no timed run pays for it.
        golden_only = work / "warm-up-run-config.yaml"
        golden_only.write_text(json.dumps({"execution": {"config": {"in_process": {}}},
                                           **({"ops": {"datasets__golden_set": {"config": cfg["golden"]}}}
                                              if cfg["golden"] else {})}))
        timed([str(BIN / "dagster"), "asset", "materialize", "-m", "alpr_pipelines.definitions", "--select",
               "datasets/golden_set", "-c", str(golden_only)], ours_env(prep, "bench-warm-up"), work / "warm-up.log")
    except BaseException:
        stack.down(settings)
        raise
    return prep


def warm_mlflow(uri: str, work: Path) -> None:
    """A freshly started server's workers initialize on their first requests; a user's server has long done so."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("bench-warm-up")
    probe = work / "warm-up.txt"
    probe.write_text("warm-up")
    for _ in range(8):  # the server has several workers; each request may land on any of them
        run_id = client.create_run(experiment).info.run_id
        client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)], params=[Param("p", "1")])
        client.log_artifact(run_id, str(probe))
        client.search_runs([experiment])
        client.search_model_versions("name = 'bench-warm-up'")
        client.set_terminated(run_id)




def warm_label_caches(data_yaml: Path, imgsz: int, batch: int) -> None:
    """Ultralytics writes ``labels/<split>.cache`` on first use; build it now so no timed run pays for it."""
    os.environ.update(ULTRALYTICS_ENV)
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml))
    args = get_cfg(overrides={"imgsz": imgsz, "batch": batch})
    for split in ("train", "val"):
        build_yolo_dataset(args, data[split], batch, data, mode=split)


# --------------------------------------------------------------------------------------------- the two sides


def timed(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 1800) -> tuple[float, float, float]:
    """Run ``cmd`` to completion; (wall seconds, epoch time at start, epoch time at exit). Raises on failure."""
    started_epoch, started = time.time(), time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}); log {log}:\n{log.read_text()[-3000:]}")
    return wall, started_epoch, time.time()


INT8_OP = "vehicle__onnx_int8"


def has_op(op: str) -> bool:
    """Whether the pipeline has this asset (``vehicle__onnx_int8`` -> ``vehicle/onnx_int8``) today."""
    import dagster as dg

    from alpr_pipelines.definitions import defs

    key = dg.AssetKey(op.split("__"))
    return any(key in a.keys for a in defs().assets or [])


def ours_run_config(data_yaml: Path, cfg: dict[str, Any], executor: str) -> dict[str, Any]:
    """Run config of the Dagster run: the prepared dataset as a YAML source (``alpr train --data`` does the same),
    the training flags of the baseline, every other setting at the pipeline's defaults (``--no-int8`` switches the
    INT8 quantization off through its own config)."""
    int8_off = {INT8_OP: {"config": {"enabled": False}}} if not cfg["int8"] and has_op(INT8_OP) else {}
    return {
        "execution": {"config": {executor: {}}},
        "ops": {
            **({"datasets__golden_set": {"config": cfg["golden"]}} if cfg["golden"] else {}),
            "vehicle__dataset": {"config": {"source": "yaml", "data_yaml": str(data_yaml)}},
            "vehicle__weights": {"config": {"epochs": cfg["epochs"], "imgsz": cfg["imgsz"], "batch": cfg["batch"],
                                            "device": "cpu"}},
            "vehicle__registered_version": {"config": {"initial_stage": "Staging"}},
            **int8_off,
        },
    }


def ours_env(prep: dict[str, Any], experiment: str) -> dict[str, str]:
    settings = prep["settings"]
    return {**os.environ, **ULTRALYTICS_ENV, "ALPR_HOME": str(prep["home"]), "DAGSTER_HOME": str(settings.dagster_home),
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "MLFLOW_EXPERIMENT_NAME": experiment,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "YOLO_CONFIG_DIR": str(prep["yolo_config"]["ours"])}


def run_ours(prep: dict[str, Any], cfg: dict[str, Any], rep: int, work: Path, executor: str) -> dict[str, Any]:
    settings = prep["settings"]
    home: Path = prep["home"]
    for leftover in ("training", "exports"):  # a repetition must train and export, never reuse the last one's files
        shutil.rmtree(home / leftover, ignore_errors=True)
    experiment = f"bench-orchestration-{rep}-{time.time_ns()}"  # fresh: no finished run with this training key
    run_config = work / f"ours-{rep}-run-config.yaml"
    run_config.write_text(json.dumps(ours_run_config(prep["data_yaml"], cfg, executor), indent=1))  # JSON is YAML
    env = ours_env(prep, experiment)
    # Everything upstream of the registered version: golden set, dataset, weights, ONNX (+ its blocking parity
    # check), whatever else the export stage holds, TensorRT (skipped without CUDA), registration. Not evaluation.
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "alpr_pipelines.definitions",
           "--select", f"*{OURS_TARGET}", "-c", str(run_config)]
    log = work / f"ours-{rep}.log"
    load = os.getloadavg()[0]
    wall, t0, t1 = timed(cmd, env, log)
    breakdown = dagster_breakdown(settings.dagster_home, t0, t1, cfg)
    results_csv = next((home / "training" / "vehicle").glob("*/train/results.csv"))
    onnx = next((home / "exports" / "vehicle").glob("*/model.onnx"))
    version = breakdown.pop("registered")
    sample = {"wall_s": wall, "load_1min_at_start": load, "onnx": str(onnx), "onnx_bytes": onnx.stat().st_size,
              "experiment": experiment, "registered_model": version.get("name"),
              "registered_version": version.get("version"),
              "registered_new_version": version.get("created"), "mlflow_run_id": version.get("run_id"),
              **epoch_loop(results_csv, cfg["train_images"]), **breakdown}
    sample["registered_in_mlflow"] = registered_in_mlflow(settings.mlflow_tracking_uri, sample)
    sample["onnx_dynamic"] = onnx_is_dynamic(onnx)
    return sample


def onnx_is_dynamic(path: Path) -> bool:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return any(d.dim_param for d in dims)


def run_baseline(prep: dict[str, Any], cfg: dict[str, Any], rep: int, work: Path, dynamic: bool) -> dict[str, Any]:
    project = work / "baseline" / f"rep{rep}"  # absolute: a relative project lands under Ultralytics' runs_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({**ULTRALYTICS_ENV, "YOLO_CONFIG_DIR": str(prep["yolo_config"]["baseline"])})
    args = pipeline_training_args(cfg["imgsz"], cfg["epochs"], cfg["batch"])
    train_cmd = [str(BIN / "yolo"), "train", "model=yolo11n.yaml", f"data={prep['data_yaml']}",
                 *[f"{k}={v}" for k, v in args.items()], f"project={project}", "name=train", "exist_ok=True"]
    load = os.getloadavg()[0]
    train_wall, _, _ = timed(train_cmd, env, work / f"baseline-{rep}-train.log")
    best = project / "train" / "weights" / "best.pt"
    # lib/exports.py export_onnx's arguments: simplify on (ExportConfig's default), default opset, FP32, on the CPU,
    # and the shape our export produced in this repetition (dynamic or fixed), so both sides export the same thing.
    export_cmd = [str(BIN / "yolo"), "export", f"model={best}", "format=onnx", f"imgsz={cfg['imgsz']}",
                  "simplify=True", f"dynamic={dynamic}", "half=False", "device=cpu"]
    export_wall, _, _ = timed(export_cmd, env, work / f"baseline-{rep}-export.log")
    onnx = best.with_suffix(".onnx")
    if not onnx.is_file():
        raise RuntimeError(f"yolo export wrote no {onnx}")
    return {"wall_s": train_wall + export_wall, "load_1min_at_start": load, "train_process_s": train_wall,
            "export_process_s": export_wall, "onnx": str(onnx), "onnx_bytes": onnx.stat().st_size,
            "onnx_dynamic": dynamic,
            **epoch_loop(project / "train" / "results.csv", cfg["train_images"])}


def epoch_loop(results_csv: Path, train_images: int) -> dict[str, float]:
    """Epochs and seconds of the epoch loop as Ultralytics' trainer records them, and training images per second."""
    with results_csv.open() as fh:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    seconds = float(rows[-1]["time"])
    return {"epochs_run": len(rows), "epoch_loop_s": seconds, "train_images_per_s": train_images * len(rows) / seconds}


def dagster_breakdown(dagster_home: Path, proc_start: float, proc_end: float, cfg: dict[str, Any]) -> dict[str, Any]:
    """Where our wall time went, from the Dagster event log of the run just finished: process start-up (Python,
    imports, loading the code location, the instance) before the run starts, each step, Dagster's own work between
    steps, and interpreter shut-down after the run ends; plus what the run materialized."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_records(limit=1)[0]
        run_id = record.dagster_run.run_id
        if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"Dagster run {run_id} ended {record.dagster_run.status}")
        steps = {s.step_key: round((s.end_time or 0) - (s.start_time or 0), 2)
                 for s in instance.get_run_step_stats(run_id)}
        meta: dict[str, dict[str, Any]] = {}
        for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = rec.event_log_entry.asset_materialization
            if mat is not None:
                meta["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()
                                                      if isinstance(v.value, (str, int, float, bool))}
        checks = {}
        for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
            evaluation = rec.event_log_entry.dagster_event.event_specific_data
            checks[evaluation.check_name] = evaluation.passed
    run_s = (record.end_time or proc_end) - (record.start_time or proc_start)
    weights = meta.get("vehicle/weights", {})
    ips = weights.get("train_images_per_second")
    registered = meta.get(OURS_TARGET, {})
    return {
        "dagster_run_id": run_id,
        "startup_s": round((record.start_time or proc_start) - proc_start, 2),
        "run_s": round(run_s, 2),
        "between_steps_s": round(run_s - sum(steps.values()), 2),
        "shutdown_s": round(proc_end - (record.end_time or proc_end), 2),
        "steps_s": steps,
        "checks_passed": checks,
        "materialized": sorted(meta),
        # model.train() as the weights asset measures it: trainer set-up, the epochs, final validation of best.pt
        "model_train_s": round(cfg["train_images"] * cfg["epochs"] / ips, 2) if ips else None,
        "mlflow_run_id": weights.get("mlflow_run_id"),
        "registered": {"name": registered.get("model"), "version": registered.get("version"),
                       "created": registered.get("created"), "run_id": weights.get("mlflow_run_id")},
    }


def registered_in_mlflow(uri: str, sample: dict[str, Any]) -> bool:
    """The version the run reported exists in the registry, READY, from this repetition's MLflow run."""
    from mlflow import MlflowClient

    mv = MlflowClient(uri, registry_uri=uri).get_model_version(sample["registered_model"], sample["registered_version"])
    return mv.run_id == sample["mlflow_run_id"] and mv.status == "READY"


# --------------------------------------------------------------------------------------------- report




def step_label(step_key: str) -> str:
    """``vehicle__onnx_int8`` -> ``onnx_int8``; the parity check's step (``vehicle__onnx_onnx_matches_pytorch``)
    -> ``parity check``."""
    return "parity check" if step_key.endswith("onnx_matches_pytorch") else step_key.split("__", 1)[-1]


def summarize(samples: dict[str, list[dict[str, Any]]], cfg: dict[str, Any], quick: bool,
              executor: str) -> dict[str, Any]:
    def med(side: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[side])

    ours_wall, base_wall = med("ours", "wall_s"), med("baseline", "wall_s")
    ours_ips, base_ips = med("ours", "train_images_per_s"), med("baseline", "train_images_per_s")
    wall_ratio, ips_ratio = ours_wall / base_wall, ours_ips / base_ips
    step_keys = dict.fromkeys(k for s in samples["ours"] for k in s["steps_s"])
    steps = {k: statistics.median(s["steps_s"].get(k, 0.0) for s in samples["ours"]) for k in step_keys}
    met = wall_ratio <= TARGET_WALL and ips_ratio >= TARGET_IPS
    extra = {step_label(k): v for k, v in steps.items() if k not in ("vehicle__weights", "vehicle__onnx")}
    int8_s = steps.get(INT8_OP)
    pairs = list(zip(samples["ours"], samples["baseline"], strict=True))
    # In-process steps run one after the other, so a step's duration is what the run would lose without it.
    without_int8 = statistics.median((o["wall_s"] - o["steps_s"].get(INT8_OP, 0.0)) / b["wall_s"] for o, b in pairs)
    overhead = ours_wall - base_wall
    breakeven = overhead / (TARGET_WALL - 1)  # baseline wall time at which this overhead is exactly 1.15x
    ours_text = (f"{ours_wall:.1f} s wall (`dagster asset materialize --select '*{OURS_TARGET}'`, {executor} "
                 f"executor, process start to exit), {ours_ips:.2f} train images/s")
    baseline_text = (f"{base_wall:.1f} s wall (`yolo train` {med('baseline', 'train_process_s'):.1f} s + `yolo export` "
                     f"{med('baseline', 'export_process_s'):.1f} s), {base_ips:.2f} train images/s")
    limits = (
        f"Ours takes {overhead:+.1f} s, nearly all of it a fixed cost: process start-up "
        f"{med('ours', 'startup_s'):.1f} s (Python, Dagster and MLflow imports, loading the code location, creating "
        f"the run), shut-down {med('ours', 'shutdown_s'):.1f} s, Dagster between steps "
        f"{med('ours', 'between_steps_s'):.1f} s; work the baseline does not do: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in extra.items())
        + f". Against that, the training step takes {steps.get('vehicle__weights', 0):.1f} s to `yolo train`'s "
        f"{med('baseline', 'train_process_s'):.1f} s and the ONNX step {steps.get('vehicle__onnx', 0):.1f} s to "
        f"`yolo export`'s {med('baseline', 'export_process_s'):.1f} s (no second process start-up). Training runs at "
        f"{ips_ratio:.2f}x the baseline's images/s. The ratio falls as training grows: here {cfg['epochs']} epochs x "
        f"{cfg['train_images']} images at {cfg['imgsz']} px on {os.cpu_count()} CPU cores."
        + f" At this overhead the target needs a baseline of at least {breakeven:.0f} s."
        + (f" Without the INT8 step the wall ratio would be about {without_int8:.2f}x." if int8_s else "")
    )
    figure = {
        "id": "5", "name": "orchestration overhead", "ours": round(wall_ratio, 3), "ours_text": ours_text,
        "baseline_text": baseline_text, "ratio": round(wall_ratio, 3),
        "target": f"<= {TARGET_WALL}x wall, >= {TARGET_IPS}x images/s", "met": met, "limits": limits,
    }
    return {
        "figures": [figure],
        "details": {
            "quick": quick, "repetitions": len(samples["ours"]), "executor": executor,
            "order": "interleaved: ours, baseline, ours, baseline, ...",
            "note": "load_1min_at_start in each sample is the machine's 1-minute load average when that side started "
                    "(other work on a shared machine shows there)",
            "settings": {**{k: v for k, v in cfg.items() if k != "repetitions"},
                         "ultralytics_train_args": pipeline_training_args(cfg["imgsz"], cfg["epochs"], cfg["batch"])},
            "wall_definition": "process start to exit; ours one `dagster asset materialize` process, the baseline "
                               "`yolo train` plus `yolo export`",
            "images_per_s_definition": "train images x epochs / the last 'time' in results.csv (Ultralytics' own "
                                       "clock over the epoch loop, same on both sides)",
            "medians": {
                "ours_wall_s": ours_wall, "baseline_wall_s": base_wall,
                "ours_train_images_per_s": ours_ips, "baseline_train_images_per_s": base_ips,
                "ours_epoch_loop_s": med("ours", "epoch_loop_s"),
                "baseline_epoch_loop_s": med("baseline", "epoch_loop_s"),
                "ours_startup_s": med("ours", "startup_s"), "ours_shutdown_s": med("ours", "shutdown_s"),
                "ours_between_steps_s": med("ours", "between_steps_s"),
                "ours_model_train_s": med("ours", "model_train_s"),
                "ours_steps_s": steps,
                "baseline_train_process_s": med("baseline", "train_process_s"),
                "baseline_export_process_s": med("baseline", "export_process_s"),
            },
            "wall_ratio": wall_ratio, "images_per_s_ratio": ips_ratio,
            # the same ratios pair by pair (each repetition's ours over the baseline run right after it)
            "per_repetition_wall_ratios": [o["wall_s"] / b["wall_s"] for o, b in pairs],
            "per_repetition_images_per_s_ratios": [o["train_images_per_s"] / b["train_images_per_s"] for o, b in pairs],
            "overhead_s": overhead, "baseline_wall_needed_for_target_s": breakeven,
            "wall_ratio_without_int8_step": without_int8 if int8_s else None,
            "samples": samples,
        },
        "machine": machine(),
        "command": ".venv/bin/python bench/orchestration_bench.py" + (" --quick" if quick else "")
        + (f" --executor {executor}" if executor != "in_process" else "") + ("" if cfg["int8"] else " --no-int8"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: tiny data, 1 epoch, 1 repetition")
    parser.add_argument("--executor", choices=["in_process", "multiprocess"], default="in_process",
                        help="Dagster executor of our run (multiprocess: one process per step, as a run launched "
                        "from the UI or the daemon)")
    parser.add_argument("--no-int8", action="store_true",
                        help="switch our pipeline's INT8 quantization off (run config), to see what it costs")
    parser.add_argument("--repetitions", type=int, help="override the number of interleaved repetitions")
    parser.add_argument("--epochs", type=int, help="override the number of training epochs")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, runs) for inspection")
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.repetitions:
        cfg["repetitions"] = args.repetitions
    if args.epochs:
        cfg["epochs"] = args.epochs
    cfg["int8"] = not args.no_int8

    from alpr_pipelines import stack

    work = Path(tempfile.mkdtemp(prefix="alpr-orch-bench-"))
    prep: dict[str, Any] = {}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout holds the JSON result alone (MLflow prints run links)
            prep = prepare(work, cfg)
            samples: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
            for rep in range(cfg["repetitions"]):  # interleaved, so drift in machine load hits both sides alike
                ours = run_ours(prep, cfg, rep, work, args.executor)
                samples["ours"].append(ours)
                samples["baseline"].append(run_baseline(prep, cfg, rep, work, ours["onnx_dynamic"]))
        result = summarize(samples, cfg, args.quick, args.executor)
        result["details"]["work_dir"] = str(work) if args.keep else None
    finally:
        if "settings" in prep:
            stack.down(prep["settings"])
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
