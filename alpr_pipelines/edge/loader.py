"""Find, download, verify and cache registered detectors on an edge box, over MLflow's REST API only.

An edge box installs no MLflow client (nor torch, ultralytics or dagster): ``requests`` talks to the tracking
server, which also serves the artifacts (``mlflow server --serve-artifacts``), so the box holds no storage
credentials.

Resolution order in :meth:`MLflowModelLoader.get_model_path`: the stage's alias (``production`` / ``candidate``), then
the stage itself (``get-latest-versions``), then the last verified version in the local cache (so a restart with the
registry away starts from it), then the local fallback file.

Trust (``edge.trust``): a version loads only if its manifest's sha256 is the one the pipeline recorded on the version,
its signature verifies with one of the box's trusted keys when it has any (``ALPR_EDGE_TRUSTED_KEYS``), and every
file matches the manifest's sha256. Names from the registry and the manifest are checked before they become paths.

Cache layout: ``<cache>/<registry>/<model>/<version>/`` holds one version's files and its ``manifest.json``
(``<registry>``: the tracking URI's host, port and a hash of it, so a new registry whose version numbers repeat never
meets the old one's files); a file is written to a temporary name, fsynced, checked against the manifest's sha256 and
moved into place, so a partial or corrupted file is never loaded. ``<cache>/<registry>/<model>/current.json`` names
the last version that was verified and loaded.

Two processes may share one cache: changes to a model's folder happen under an exclusive lock on
``<model>/.lock``, and each process holds a shared lock on ``<version>/.lease`` of every version it serves or keeps
for a rollback; pruning deletes only versions whose lease nobody holds. The kernel drops both with the process.

Environment:
    MLFLOW_TRACKING_URI: registry URL (default http://127.0.0.1:5000).
    MLFLOW_MODEL_STAGE: Production (default) or Staging, as in the original ALPR registry design.
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: basic-auth principal (a read-only one on edge devices).
    ALPR_EDGE_CACHE: cache folder (default ``~/.cache/alpr-edge``).
    ALPR_EDGE_MODELS_DIR: where local fallback files live (default ``models``).
    ALPR_EDGE_TRUSTED_KEYS: comma-separated Ed25519 public keys (PEM files or base64); set, unsigned versions are
        refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from alpr_pipelines.edge.contract import STAGE_ALIASES
from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.edge.trust import (
    MAX_MANIFEST_BYTES,
    TRUST_TAGS,
    TrustedKeys,
    UntrustedVersion,
    check_file_name,
    check_version,
    registered_sha256,
    verify_manifest,
)

log = logging.getLogger(__name__)

LOADABLE_SUFFIXES = {".onnx", ".engine"}
CHUNK = 1 << 16


class ModelLoadError(Exception):
    """No usable model could be found or verified; the message says where it looked."""


class IntegrityError(ModelLoadError):
    """A downloaded file does not match the sha256 in the version's manifest."""


class RefusedVersion(IntegrityError):
    """A version fails the trust checks (``edge.trust``): unregistered manifest, bad signature, unsafe names."""


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def registry_key(tracking_uri: str) -> str:
    """The cache folder of one registry: readable host and port, and a hash of the normalised URI (scheme, host in
    lower case, port with its default, path without a trailing slash; credentials left out)."""
    parts = urlsplit(tracking_uri.strip())
    scheme = (parts.scheme or "http").lower()
    hostname = (parts.hostname or "local").lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        port = 0
    normal = f"{scheme}://{hostname}:{port}{parts.path.rstrip('/')}"
    host = re.sub(r"[^A-Za-z0-9.-]", "_", hostname)[:60].strip(".") or "local"
    return f"{host}_{port}-{hashlib.sha256(normal.encode()).hexdigest()[:10]}"


def check_model_name(name: str) -> str:
    """``name`` if it can be a folder name of the cache (registered names are plain), else ``ModelLoadError``."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ModelLoadError(f"model name {name[:60]!r} is not a plain registered-model name")
    return name


@dataclass(frozen=True)
class RemoteVersion:
    name: str
    version: str
    run_id: str
    source: str
    via: str  # "alias:production" or "stage:Production"
    tags: dict[str, str] = field(default_factory=dict)  # the version's registry tags (the manifest's hash, signature)


def manifest_sha256(manifest: dict[str, Any], path: Path) -> str:
    """The sha256 the manifest records for the file at ``path`` (matched by name)."""
    for entry in manifest["files"].values():
        if entry["name"] == Path(path).name:
            return entry["sha256"]
    raise IntegrityError(f"{Path(path).name} is not listed in the version's manifest")


def local_gpu_compute_capability() -> str | None:
    """This box's GPU compute capability ("8.0"), read without torch; None without a usable NVIDIA GPU."""
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


# auto: a TensorRT engine built for this GPU, else INT8 ONNX on a CPU-only box (when the version has one), else FP32.
PRECISIONS = ("auto", "fp32", "int8")


def cpu_only() -> bool:
    """True when this box's ONNX Runtime has no GPU provider (INT8 QDQ models are fast on CPUs, slow on CUDA)."""
    import onnxruntime as ort

    return not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())


class MLflowModelLoader:
    """The original ALPR registry design's loader: ``get_model_path(name, fallback_filename=...) -> (path, metadata)``.

    ``metadata``: ``source`` ("mlflow", "cache" or "local"), ``version``, ``stage``, ``alias`` (or ``via``), ``sha256``.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        preferred_stage: str | None = None,
        cache_dir: str | Path | None = None,
        models_dir: str | Path | None = None,
        timeout: float = 5.0,
        session: requests.Session | None = None,
        prefer_engine: bool = True,
        username: str | None = None,
        password: str | None = None,
        precision: str | None = None,
        trusted_keys: list[str] | None = None,
    ):
        self.tracking_uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000").rstrip("/")
        stage = preferred_stage or os.environ.get("MLFLOW_MODEL_STAGE") or "Production"
        if stage not in STAGE_ALIASES:
            raise ValueError(f"preferred stage {stage!r} must be Production or Staging (MLFLOW_MODEL_STAGE)")
        self.preferred_stage = stage
        self.cache_dir = Path(cache_dir or os.environ.get("ALPR_EDGE_CACHE") or Path.home() / ".cache" / "alpr-edge")
        self.store = self.cache_dir / registry_key(self.tracking_uri)  # this registry's part of the cache
        self._leases: dict[tuple[str, str], int] = {}  # (model, version) -> fd holding its shared lease
        self.models_dir = Path(models_dir or os.environ.get("ALPR_EDGE_MODELS_DIR") or "models")
        self.timeout = timeout
        self.http = session or requests.Session()
        username = username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if username and password:
            self.http.auth = (username, password)
        self.prefer_engine = prefer_engine
        self.precision = (precision or os.environ.get("ALPR_EDGE_PRECISION") or "auto").lower()
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} must be one of {', '.join(PRECISIONS)} "
                             "(ALPR_EDGE_PRECISION)")
        # Public keys this box accepts signatures from (``edge.trust.TrustedKeys.parse`` entries); None: the env's.
        entries = trusted_keys if trusted_keys is not None else TrustedKeys.env_entries()
        self.trusted_key_entries = [e.strip() for e in entries if e.strip()]
        self.trusted = TrustedKeys.parse(self.trusted_key_entries)
        self._mlflow_connected = False  # whether the registry answered the last request (``_request`` keeps it)
        self.check_connection()

    # ------------------------------------------------------------------------------------------- registry

    def _request(self, url: str, **kwargs: Any) -> requests.Response:
        """GET ``url``, recording whether the registry answered (any HTTP status) or could not be reached."""
        try:
            resp = self.http.get(url, timeout=self.timeout, **kwargs)
        except requests.RequestException:
            self._mlflow_connected = False
            raise
        self._mlflow_connected = True
        return resp

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        resp = self._request(f"{self.tracking_uri}{path}", params=params)
        if resp.status_code == 404:
            return {}
        if resp.status_code == 400:
            # MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE (not 404): treat as "none".
            try:
                code = resp.json().get("error_code")
            except ValueError:
                code = None
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return {}
        if resp.status_code in (401, 403):
            raise ModelLoadError(f"{self.tracking_uri} refused {path} (HTTP {resp.status_code}); set "
                                 "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD to the edge principal")
        resp.raise_for_status()
        return resp.json()

    def check_connection(self) -> bool:
        """Whether the registry answers its health check (a proxy's 502 for an unreachable registry is "no")."""
        try:
            ok = self._request(f"{self.tracking_uri}/health").status_code == 200
        except requests.RequestException:
            ok = False
        self._mlflow_connected = ok
        return ok

    def current_version(self, name: str) -> RemoteVersion | None:
        """What the registry names for the preferred stage: alias first, then the stage. One small request when the
        alias exists. Raises ``requests.RequestException`` when the registry is unreachable."""
        alias = STAGE_ALIASES[self.preferred_stage]
        body = self._get("/api/2.0/mlflow/registered-models/alias", name=name, alias=alias)
        mv = body.get("model_version")
        via = f"alias:{alias}"
        if not mv:
            latest = self._get("/api/2.0/mlflow/registered-models/get-latest-versions", name=name,
                               stages=self.preferred_stage).get("model_versions", [])
            mv = latest[0] if latest else None
            via = f"stage:{self.preferred_stage}"
        if not mv:
            return None
        tags = {t["key"]: t.get("value", "") for t in mv.get("tags", []) if isinstance(t, dict) and "key" in t}
        return RemoteVersion(name=name, version=str(mv.get("version")), run_id=str(mv.get("run_id", "")),
                             source=str(mv.get("source", "")), via=via, tags=tags)

    def list_models(self) -> list[dict[str, Any]]:
        """Registered models with their latest versions per stage (``registered-models/search``; ``list`` is gone)."""
        body = self._get("/api/2.0/mlflow/registered-models/search", max_results=100)
        return [
            {"name": m["name"], "aliases": {a["alias"]: a["version"] for a in m.get("aliases", [])},
             "latest_versions": {v.get("current_stage", "None"): v["version"] for v in m.get("latest_versions", [])}}
            for m in body.get("registered_models", [])
        ]

    def _artifact_url(self, run_id: str, path: str) -> str:
        run = self._get("/api/2.0/mlflow/runs/get", run_id=run_id).get("run")
        if not run:
            raise ModelLoadError(f"run {run_id} not found on {self.tracking_uri}")
        root = run["info"]["artifact_uri"]
        if root.startswith("mlflow-artifacts:"):
            rel = root.split(":", 1)[1].lstrip("/")
            return f"{self.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{rel}/{path}"
        # Not proxied by the server (e.g. s3:// directly): the legacy endpoint streams it through the server.
        return f"{self.tracking_uri}/get-artifact?run_uuid={run_id}&path={path}"

    # ------------------------------------------------------------------------------------------- download

    def _download(self, url: str, dest: Path, expected_sha256: str | None,
                  progress: Callable[[int], None] | None = None) -> Path:
        """Stream ``url`` to a temporary file beside ``dest``, verify, then move it into place atomically (fsynced,
        so a power cut leaves the old file or the new one).

        ``expected_sha256`` None: the registry recorded none, which the caller refuses once the file is here; the
        download is capped at the manifest's size limit then."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        h = hashlib.sha256()
        try:
            with self._request(url, stream=True) as resp:
                resp.raise_for_status()
                with tmp.open("wb") as f:
                    for chunk in resp.iter_content(CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        if expected_sha256 is None and f.tell() > MAX_MANIFEST_BYTES:
                            raise RefusedVersion(f"{dest.name}: larger than {MAX_MANIFEST_BYTES} bytes with no "
                                                 "recorded hash; refused")
                        if progress is not None:
                            progress(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
                expected_len = resp.headers.get("Content-Length")
            if expected_len is not None and tmp.stat().st_size != int(expected_len):
                raise IntegrityError(f"{dest.name}: got {tmp.stat().st_size} bytes, expected {expected_len}")
            if expected_sha256 is not None and h.hexdigest() != expected_sha256:
                raise IntegrityError(f"{dest.name}: sha256 {h.hexdigest()[:12]} does not match the "
                                     f"{expected_sha256[:12]} recorded for it; the file was discarded")
            os.replace(tmp, dest)
            return dest
        finally:
            tmp.unlink(missing_ok=True)

    def _pick_file(self, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        files = manifest["files"]  # names and hashes checked by ``edge.trust.verify_manifest``
        engine = files.get("engine")
        if self.prefer_engine and engine is not None:
            cc = local_gpu_compute_capability()
            if cc is not None and f"sm{cc.replace('.', '')}" in engine["name"]:
                return "engine", engine
        int8 = files.get("onnx_int8")
        if int8 is not None and (self.precision == "int8" or (self.precision == "auto" and cpu_only())):
            return "onnx_int8", int8
        if "onnx" not in files:
            raise ModelLoadError(f"{manifest.get('model')}: the version has no ONNX file (the edge loads only ONNX "
                                 "or a TensorRT engine built for its own GPU)")
        return "onnx", files["onnx"]

    def fetch(self, remote: RemoteVersion, progress: Callable[[int], None] | None = None) -> tuple[Path, dict]:
        """Download (or reuse from cache) the loadable file of ``remote``; returns (path, manifest).

        Raises:
            RefusedVersion: the version fails the trust checks (``edge.trust``); nothing of it is loaded.
            IntegrityError: a file does not match its manifest's sha256 (it was discarded).
        """
        try:
            vdir = self.store / check_model_name(remote.name) / check_version(remote.version)
        except (UntrustedVersion, ModelLoadError) as exc:
            raise RefusedVersion(str(exc)) from exc
        if not remote.source.startswith("runs:/") or remote.source.count("/") < 2:
            raise ModelLoadError(f"{remote.name} v{remote.version}: source {remote.source[:80]!r} is not a runs:/ "
                                 "URI of an alpr registration; the edge cannot find its manifest")
        with self._model_lock(remote.name):
            vdir.mkdir(parents=True, exist_ok=True)
            self._lease(remote.name, remote.version)  # kept while this process may serve it
            return self._fetch_into(remote, vdir, progress)

    def _fetch_into(self, remote: RemoteVersion, vdir: Path,
                    progress: Callable[[int], None] | None) -> tuple[Path, dict]:
        prefix = remote.source.split("/", 2)[2]
        manifest_path = vdir / "manifest.json"
        try:
            expected = registered_sha256(remote.tags, remote.name)
        except UntrustedVersion as exc:
            raise RefusedVersion(f"v{remote.version}: {exc}") from exc
        if not manifest_path.is_file() or manifest_path.is_symlink() or sha256_file(manifest_path) != expected:
            url = self._artifact_url(remote.run_id, f"{prefix}/artifacts/manifest.json")
            self._download(url, manifest_path, None)  # capped; checked against the registry just below
        try:
            manifest = verify_manifest(manifest_path.read_bytes(), remote.tags, remote.name, self.trusted)
        except UntrustedVersion as exc:
            manifest_path.unlink(missing_ok=True)
            raise RefusedVersion(f"v{remote.version}: {exc}") from exc
        role, entry = self._pick_file(manifest)
        target = vdir / check_file_name(entry["name"])
        if target.is_symlink() or not target.is_file() or sha256_file(target) != entry["sha256"]:
            target.unlink(missing_ok=True)
            url = self._artifact_url(remote.run_id, f"{prefix}/artifacts/{entry['name']}")
            self._download(url, target, entry["sha256"], progress)
        return target, manifest

    # ------------------------------------------------------------------------------------------- cache

    @contextmanager
    def _model_lock(self, name: str) -> Iterator[None]:
        """Exclusive lock on one model's folder, for fetching, recording and pruning (other processes wait)."""
        folder = self.store / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:  # a full or read-only disk: the caller falls back (cache, local file)
            raise ModelLoadError(f"cannot lock the cache folder {folder}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lease(self, name: str, version: str) -> None:
        """Hold a shared lock on the version's ``.lease`` so that no process prunes it while this one may serve it."""
        if (name, version) in self._leases:
            return
        vdir = self.store / name / version
        try:
            fd = os.open(vdir / ".lease", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:  # a full disk: serving goes on; only the pruning protection is missing
            log.warning("could not lease %s v%s in the cache: %s", name, version, exc)
            return
        self._leases[(name, version)] = fd

    def _release(self, name: str, version: str) -> None:
        fd = self._leases.pop((name, version), None)
        if fd is not None:
            os.close(fd)

    def _current_file(self, name: str) -> Path:
        return self.store / name / "current.json"

    def mark_current(self, name: str, version: str, path: Path, sha256: str, via: str,
                     tags: dict[str, str] | None = None) -> None:
        """Record the last verified, loaded version (atomically), so a restart can start from it; ``tags``: the
        version's trust tags, so that a restart checks its manifest again with the keys it has then."""
        f = self._current_file(name)
        f.parent.mkdir(parents=True, exist_ok=True)
        if path.parent.parent == f.parent:  # a cached version (not a local fallback file): keep it leased
            self._lease(name, version)
        tmp = f.with_name(f".current-{uuid.uuid4().hex[:8]}.json")
        try:
            with tmp.open("w") as out:
                out.write(json.dumps({"version": version, "path": str(path), "sha256": sha256, "via": via,
                                      "tags": {k: v for k, v in (tags or {}).items() if k in TRUST_TAGS}}))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, f)
        except OSError as exc:  # a full disk: the version serves; a restart falls back to the previous record
            log.warning("could not record %s v%s as the last verified version: %s", name, version, exc)
            tmp.unlink(missing_ok=True)

    def cached(self, name: str) -> tuple[Path, dict[str, Any]] | None:
        f = self._current_file(name)
        if not f.is_file():
            return None
        try:
            info = json.loads(f.read_text())
            path = Path(info["path"])
            intact = path.is_file() and sha256_file(path) == info["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the cache's record of %s is unreadable (%s); not using it", name, exc)
            return None
        if not intact:
            log.warning("cached %s v%s is missing or altered; not using it", name, info.get("version"))
            return None
        tags = info.get("tags")
        if tags or self.trusted:  # a record from before tags were kept passes only on a box without keys
            try:
                verify_manifest((path.parent / "manifest.json").read_bytes(), tags or {}, name, self.trusted)
            except (OSError, UntrustedVersion) as exc:
                log.warning("cached %s v%s is not trusted now (%s); not using it", name, info.get("version"), exc)
                return None
        if path.parent.parent == f.parent:
            try:
                with self._model_lock(name):  # not pruned between the check above and the lease
                    if not path.is_file():
                        return None
                    self._lease(name, str(info["version"]))
            except ModelLoadError as exc:
                log.warning("%s", exc)
        return path, {"source": "cache", "version": info["version"], "via": info.get("via"), "sha256": info["sha256"],
                      "stage": self.preferred_stage}

    def prune(self, name: str, keep: set[str]) -> None:
        """Delete cached versions other than ``keep`` (the serving and the previous one) that no other process
        holds a lease on."""
        for (model, version) in list(self._leases):
            if model == name and version not in keep:
                self._release(model, version)
        root = self.store / name
        if not root.is_dir():
            return
        with self._model_lock(name):
            for d in root.iterdir():
                if not d.is_dir() or d.is_symlink() or d.name in keep:
                    continue
                try:
                    fd = os.open(d / ".lease", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.debug("%s v%s is served by another process sharing the cache; kept", name, d.name)
                    continue
                else:
                    shutil.rmtree(d, ignore_errors=True)
                finally:
                    os.close(fd)

    # ------------------------------------------------------------------------------------------- public

    def get_model_path(self, name: str, fallback_filename: str | None = None) -> tuple[str, dict[str, Any]]:
        """Path of the model to load for ``name`` and where it came from (see the module docstring for the order)."""
        tried = []
        try:
            remote = self.current_version(name)
            if remote is not None:
                path, manifest = self.fetch(remote)
                sha = manifest_sha256(manifest, path)
                self.mark_current(name, remote.version, path, sha, remote.via, remote.tags)
                kind, label = remote.via.split(":", 1)
                return str(path), {"source": "mlflow", "version": remote.version, "sha256": sha,
                                   "stage": self.preferred_stage, "alias" if kind == "alias" else "via": label}
            tried.append(f"no {self.preferred_stage} version of {name} in the registry")
        except (requests.RequestException, ModelLoadError) as exc:
            tried.append(f"registry {self.tracking_uri}: {exc}")
        cached = self.cached(name)
        if cached is not None:
            return str(cached[0]), cached[1]
        tried.append("no verified cached version")
        if fallback_filename:
            local = Path(fallback_filename)
            local = local if local.is_absolute() or local.exists() else self.models_dir / local
            if local.is_file():
                if local.suffix not in LOADABLE_SUFFIXES:
                    raise ModelLoadError(f"{local} is a {local.suffix} file; the edge loads only .onnx or .engine "
                                         "(it never unpickles .pt files). Export it with `alpr register-existing`.")
                return str(local), {"source": "local", "version": None, "sha256": sha256_file(local),
                                    "stage": None}
            tried.append(f"no local file {local}")
        raise ModelLoadError(f"no model for {name}: " + "; ".join(tried))
