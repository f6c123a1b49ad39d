"""Shared fixtures: a real ``mlflow server`` on a free loopback port, tiny datasets, isolated state folders."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest

# Ultralytics must never reach for the network or pip during tests.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early; log:\n{log.read_text()[-3000:] if log else ''}")
        try:
            with urlopen(url, timeout=2):
                return
        except (URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout}s; log:\n{log.read_text()[-3000:] if log else ''}")


class MlflowServer:
    """``mlflow server`` on a free loopback port; ``extra_args``/``env`` add to its command line and environment
    (e.g. ``--app-name basic-auth`` with its config)."""

    def __init__(self, root: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow.log"
        self.proc: subprocess.Popen | None = None
        self.extra_args, self.env = extra_args or [], env or {}

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        # No job consumers, as the stack runs it (stack/embedded.py).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts", *self.extra_args],
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )
        wait_http(f"{self.uri}/health", 120, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        self.proc = None


def _served(root: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def registry_cache_in_front(upstream_uri: str, root: Path, ttl: str = "1s", workers: int | None = None) -> Iterator[str]:
    """The registry cache (nginx, the production profile's configuration) in front of ``upstream_uri``; yields its
    URL. Skips the test when nginx is not installed. ``workers``: nginx's worker processes (None: one per core)."""
    from alpr_pipelines.stack import StackError, registry_cache

    try:
        registry_cache.nginx_binary()
    except StackError as exc:
        pytest.skip(str(exc))
    with registry_cache.running(upstream_uri, root, ttl, workers=workers) as cache:
        yield cache.url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server (SQLite backend, served artifacts) for the whole session."""
    yield from _served(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture()
def mlflow_client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.uri)


@pytest.fixture(scope="session")
def tiny_views(tmp_path_factory) -> dict[str, Path]:
    """Both models' views of 8 train + 4 val small synthetic scenes (shared, read-only)."""
    from alpr_pipelines.lib.datasets import write_synthetic_views
    from alpr_pipelines.lib.models import DETECTOR_SPECS

    root = tmp_path_factory.mktemp("tiny") / "views"
    return write_synthetic_views(root, DETECTOR_SPECS.values(), seed=3, counts={"train": 8, "val": 4},
                                 width=256, height=160)


def copy_dataset(data_yaml: Path, dest: Path) -> Path:
    """A private, breakable copy of a dataset; its data.yaml points at the copy."""
    import shutil

    import yaml

    shutil.copytree(data_yaml.parent, dest)
    data = yaml.safe_load((dest / "data.yaml").read_text())
    data["path"] = str(dest)
    (dest / "data.yaml").write_text(yaml.safe_dump(data))
    return dest / "data.yaml"


@pytest.fixture(scope="module")
def module_mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A real MLflow server of the test module's own, for tests that need the fixed model names to themselves."""
    yield from _served(tmp_path_factory.mktemp("module-mlflow"))


@pytest.fixture()
def unique_experiment(request) -> str:
    return f"test-{request.node.name}-{time.time_ns()}"


def graph_assets() -> list:
    """Every asset of the code location (``definitions.defs``), for ``dg.materialize``."""
    from alpr_pipelines.definitions import defs

    return list(defs().assets or [])


def graph_checks() -> list:
    """Every asset check of the code location (the blocking ONNX parity checks of all models)."""
    from alpr_pipelines.definitions import defs

    return list(defs().asset_checks or [])


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A YOLO11n of one class, untrained (its head's numbers are what matters here, not its accuracy)."""
    from alpr_pipelines.lib.training import offline_ultralytics

    offline_ultralytics()
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")
    model.model.names = {0: "plate"}
    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    model.save(str(path))
    return path


@pytest.fixture
def bench_script(monkeypatch):
    """Import a bench/ script by name as a module, bench/ on sys.path for this test only (its scripts import one
    another by their bare names)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    return importlib.import_module
