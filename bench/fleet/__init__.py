"""Figure 6, the registry under a fleet (``bench/fleet_bench.py``): its server side, load generator, CPU monitor and
report, one module each. Settings shared by them are here."""

import sys
from pathlib import Path

from alpr_pipelines.edge.contract import PLATE_MODEL, VEHICLE_MODEL

ROOT = Path(__file__).resolve().parents[2]
MODELS = (VEHICLE_MODEL, PLATE_MODEL)
STAGE = "Production"  # what an edge box follows by default (MLFLOW_MODEL_STAGE)
ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"
LATEST_PATH = "/api/2.0/mlflow/registered-models/get-latest-versions"
TARGET_DEVICES, TARGET_INTERVAL_S, TARGET_P99_MS = 1000, 10.0, 250.0
# The baseline (devices polling MLflow directly) breaks between 100 and 250 on this machine; the registry cache
# is taken from there to where the load generator itself gives out.
DIRECT_FLEETS = (25, 50, 100, 250, 500, 1000)
CACHE_FLEETS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
MAX_IN_FLIGHT = 15000  # below the open-file limit; a poll beyond it is counted as an error, never silently dropped
SERVER_START_TIMEOUT_S = 180.0
SERVER_IDLE_PCT = 15.0  # % of a core: an MLflow server with no requests uses ~2%
COLD_BURST = 40  # concurrent lookups that warm a fresh server (its workers' credential caches and connection pools)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
