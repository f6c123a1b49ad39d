"""Static checks of the deployment artifacts under docker/ (and docs/deploy.md): parsed and cross-checked against each
other and against the code, without Docker, Kubernetes or the network.

What is checked: compose services (images/Dockerfiles, mounted files, ports, dependencies, the environment each
service needs), secrets (none written anywhere, every one a required ``${VAR:?...}`` from docker/.env), the Dagster
instance and workspace, the MLflow server (the original design's flags and limits, auth config, databases, bucket), the edge config,
the images (slim edge, pipeline extras), Prometheus targets, the Grafana dashboard (the original design's panels, metrics the edge
really exposes), the GPU override and the Helm values.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
GPU_COMPOSE_FILE = DOCKER / "compose.gpu.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# Host ports the stack publishes, as docs/deploy.md documents them.
DOCUMENTED_HOST_PORTS = {
    "mlflow": {5000},
    "registry-cache": {5080},
    "grafana": {3000},
    "dagster-webserver": {3001},
    "prometheus": {9090},
    "edge": {9108},
    "minio": {9000, 9001},
}

# Environment each kind of service needs. Names the code reads are also checked to exist in the code (below), so a
# rename there fails here instead of silently leaving a container unconfigured.
PIPELINE_ENV = {
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ALPR_HOME", "DAGSTER_HOME",
    "YOLO_OFFLINE", "YOLO_AUTOINSTALL",
}
EDGE_ENV = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_MODEL_STAGE",
            "ALPR_EDGE_CACHE", "ALPR_EDGE_MODELS_DIR"}
MLFLOW_SERVER_ENV = {"PGPASSWORD", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
CODE_READS = {
    "alpr_pipelines/settings.py": {"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                   "AWS_SECRET_ACCESS_KEY", "MLFLOW_EXPERIMENT_NAME", "ALPR_HOME", "DAGSTER_HOME",
                                   "ALPR_RETRAIN_CRON", "ALPR_RETRAIN_TIMEZONE"},
    "alpr_pipelines/edge/loader.py": {"MLFLOW_TRACKING_URI", "MLFLOW_MODEL_STAGE", "ALPR_EDGE_CACHE",
                                      "ALPR_EDGE_MODELS_DIR", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},
}

# Metrics the edge service exposes (checked against alpr_pipelines/edge/metrics.py below).
EDGE_METRICS = {
    "alpr_inference_fps", "alpr_inference_latency_seconds", "alpr_detection_confidence", "alpr_frames_total",
    "alpr_model_version_info", "alpr_model_swaps_total", "alpr_model_swap_failures_total",
    "alpr_registry_poll_errors_total", "alpr_registry_reachable", "alpr_model_versions_refused_total",
    "alpr_read_latency_seconds", "alpr_read_confidence", "alpr_plates_read_total",
}
# Other metric families a dashboard may query, and the scrape job that must exist to provide each.
METRIC_FAMILIES = {"probe_": "mlflow-health", "container_": "cadvisor", "mlflow_": "mlflow", "process_": None}
SEED_PANELS = ["mlflow server status", "inference fps", "inference latency", "detection confidence", "resource usage"]

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; "$${" is an escaped literal "$".
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
# Keys whose values are credentials.
SECRET_KEY_RE = re.compile(r"(password|passwd|secret_key|secret_access_key|access_key_id|api_key|token|_root_user)$",
                           re.IGNORECASE)
PLACEHOLDER = "change-me"
# Literals that must never appear: the original design's hard-coded MinIO password, MinIO's and MLflow's historical defaults.
KNOWN_LEAKED = ["alpr_minio_secure_pass_2024", "password1234", "minioadmin"]


# ------------------------------------------------------------------------------------------------------ helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, tuple[str, bool]]:
    """docker/.env.example as {name: (value, active)}; ``# NAME=value`` lines are documented optional variables."""
    out: dict[str, tuple[str, bool]] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            out[m.group(2)] = (m.group(3), m.group(1) is None)
    return out


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(DOCKER / "prometheus" / "prometheus.yml")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((DOCKER / "grafana" / "dashboards" / "alpr-model-registry.json").read_text())


@pytest.fixture(scope="module")
def helm_values() -> dict[str, Any]:
    return load_yaml(DOCKER / "k8s" / "values.yaml")


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_words(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs of ``ports``; the short syntax may carry an interpolated bind address."""
    pairs = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = VAR_RE.sub("ADDR", str(entry)).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} publishes no fixed host port"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def listening_ports(service: dict[str, Any]) -> set[int]:
    return {int(p) for p in service.get("expose") or []} | {c for _, c in published_ports(service)}


def resolve_host(services: dict[str, dict[str, Any]], host: str) -> str | None:
    """The service a host name on alpr-network refers to (service name or container_name)."""
    if host in services:
        return host
    return next((name for name, s in services.items() if s.get("container_name") == host), None)


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            yield str(vol.get("source", "")), str(vol["target"])
        else:
            parts = str(vol).split(":")
            if len(parts) >= 2:
                yield parts[0], parts[1]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) of a parsed YAML/JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}/{k}", k, v
            yield from walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def docker_text_files() -> list[Path]:
    """Files of docker/ a person wrote: not the user's docker/.env, not bytecode."""
    return sorted(p for p in DOCKER.rglob("*")
                  if p.is_file() and p.name != ".env" and "__pycache__" not in p.parts and p.suffix != ".pyc")


# ------------------------------------------------------------------------------------------------------ compose


def test_every_service_has_an_image_or_a_build_whose_dockerfile_exists(services):
    assert services, "compose.yaml defines no services"
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"
        if "build" in svc:
            build = svc["build"]
            context = DOCKER / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert context.is_dir(), f"service {name}: build context {context} does not exist"
            assert (context / dockerfile).is_file(), f"service {name}: Dockerfile {context / dockerfile} missing"


def test_services_share_alpr_network_and_dependencies_exist(compose, services):
    assert compose["networks"]["alpr-network"]["name"] == "alpr-network"
    for name, svc in services.items():
        assert "alpr-network" in (svc.get("networks") or []), f"service {name} is not on alpr-network"
        deps = svc.get("depends_on") or []
        for dep in deps:
            assert dep in services, f"service {name} depends on unknown service {dep}"


def test_mounted_files_and_named_volumes_exist(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for env_file in svc.get("env_file") or []:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert path != ".env", f"service {name} reads the user's secrets file wholesale; pass variables explicitly"
            assert (DOCKER / path).exists(), f"service {name}: env_file {path} does not exist"
        for source, target in bind_mounts(svc):
            if source.startswith(".") and "${" not in source:
                assert (DOCKER / source).exists(), f"service {name}: {source} (mounted at {target}) does not exist"
            elif not source.startswith(("/", ".", "$")):
                assert source in declared, f"service {name}: named volume {source} is not declared"


def test_host_ports_are_unique_and_documented(services):
    seen: dict[int, str] = {}
    actual: dict[str, set[int]] = {}
    for name, svc in services.items():
        for host, container in published_ports(svc):
            assert host not in seen, f"host port {host} published by both {seen[host]} and {name}"
            seen[host] = name
            actual.setdefault(name, set()).add(host)
            assert container in listening_ports(svc)
    assert actual == DOCUMENTED_HOST_PORTS
    doc = DEPLOY_DOC.read_text()
    for name, ports in DOCUMENTED_HOST_PORTS.items():
        for port in ports:
            assert re.search(rf"^\| {port} \| {re.escape(name)}(?: \(|\s*\|)", doc, re.MULTILINE), \
                f"docs/deploy.md's port table lacks {port} ({name})"


def test_environment_names_match_what_the_code_reads():
    for rel, names in CODE_READS.items():
        text = (ROOT / rel).read_text()
        for var in names:
            assert f'"{var}"' in text, f"{rel} no longer reads {var}; update docker/compose.yaml and this test"


def test_services_get_the_environment_they_need(services):
    user_code = service_env(services["dagster-user-code"])
    assert PIPELINE_ENV <= set(user_code), f"dagster-user-code lacks {sorted(PIPELINE_ENV - set(user_code))}"
    assert user_code["YOLO_OFFLINE"] == "1" and user_code["YOLO_AUTOINSTALL"] == "false"
    assert user_code["MLFLOW_TRACKING_USERNAME"] == "alpr-pipeline"

    edge = service_env(services["edge"])
    assert EDGE_ENV <= set(edge), f"edge lacks {sorted(EDGE_ENV - set(edge))}"
    assert edge["MLFLOW_TRACKING_USERNAME"] == "alpr-edge"
    leaked = {k for k in edge if k.startswith(("AWS_", "MINIO_", "MLFLOW_S3_"))}
    assert not leaked, f"the edge must hold no storage credentials (artifacts are proxied by MLflow): {leaked}"

    mlflow = service_env(services["mlflow"])
    assert MLFLOW_SERVER_ENV <= set(mlflow), f"mlflow lacks {sorted(MLFLOW_SERVER_ENV - set(mlflow))}"

    # Webserver and daemon never import our code (gRPC), so they get no MLflow or S3 credentials.
    for name in ("dagster-webserver", "dagster-daemon"):
        env = service_env(services[name])
        assert not {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"} & set(env), f"{name} holds credentials"


def test_service_urls_point_at_services_and_ports_that_exist(services):
    for name, svc in services.items():
        for key, value in service_env(svc).items():
            if not value.startswith(("http://", "https://")):
                continue
            url = urlparse(value)
            target = resolve_host(services, url.hostname or "")
            assert target, f"{name}: {key}={value} names no compose service"
            assert url.port in listening_ports(services[target]), f"{name}: {key}={value}: {target} has no such port"


def compose_strings(path: Path) -> Iterator[str]:
    """Every key and scalar of a compose file: what compose interpolates (comments are not)."""
    for _, key, value in walk(load_yaml(path)):
        yield str(key)
        if not isinstance(value, dict | list):
            yield str(value)


def test_compose_variables_come_from_env_example_or_have_defaults(env_example):
    for path in (COMPOSE_FILE, GPU_COMPOSE_FILE):
        for m in (m for text in compose_strings(path) for m in VAR_RE.finditer(text)):
            var, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
            if op.endswith("?"):
                assert var in env_example and env_example[var][1], \
                    f"{path.name}: required ${{{var}}} is not an active line of docker/.env.example"
                assert "docker/.env" in arg, f"{path.name}: the error for a missing {var} must say where to set it"
            else:
                assert op.endswith("-") or var in env_example, \
                    f"{path.name}: ${{{var}}} has no default and is not in docker/.env.example"
            if SECRET_KEY_RE.search(var):
                assert op.endswith("?"), f"{path.name}: secret {var} must be required (${{{var}:?...}}), not defaulted"


# ------------------------------------------------------------------------------------------------------ secrets


def test_no_credential_value_in_any_yaml_or_json_file():
    files = [p for p in docker_text_files() if p.suffix in (".yaml", ".yml", ".json")]
    assert COMPOSE_FILE in files
    for path in files:
        doc = json.loads(path.read_text()) if path.suffix == ".json" else load_yaml(path)
        for where, key, value in walk(doc):
            if not isinstance(key, str) or not SECRET_KEY_RE.search(key) or isinstance(value, dict | list):
                continue
            text = "" if value is None else str(value)
            full_ref = VAR_RE.fullmatch(text)
            assert text == "" or (full_ref and (full_ref.group(2) or "").endswith("?")), \
                f"{path.relative_to(ROOT)}{where}: a credential must be empty or ${{VAR:?...}}, found a literal"


def test_env_example_holds_placeholders_only(env_example):
    secrets = {k: v for k, (v, _) in env_example.items() if SECRET_KEY_RE.search(k)}
    assert secrets, "docker/.env.example lists no credentials"
    for key, value in secrets.items():
        assert value.startswith(PLACEHOLDER), f"docker/.env.example: {key} must be a placeholder ({PLACEHOLDER})"


def test_no_secret_in_other_files():
    checked = docker_text_files() + [DEPLOY_DOC]
    uri_with_password = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^/\s@'\"]+)@")
    for path in checked:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for literal in KNOWN_LEAKED:
            assert literal not in text, f"{rel} contains the known credential {literal!r}"
        for m in uri_with_password.finditer(text):
            assert m.group(1).startswith("$"), f"{rel}: URI with an embedded password: {m.group(0)}"
        if path.name.startswith("Dockerfile") and path.suffix != ".dockerignore":
            bad = re.findall(r"^\s*(?:ENV|ARG)\s+\S*(?:PASSWORD|SECRET|TOKEN|ACCESS_KEY)\S*", text, re.MULTILINE)
            assert not bad, f"{rel} bakes a credential into the image: {bad}"
        if path.suffix == ".sql":
            statements = re.sub(r"--[^\n]*", "", text)
            assert not re.search(r"\bPASSWORD\s+(?!:')", statements), f"{rel}: passwords must be psql variables (:'var')"
        if path.suffix in (".py", ".sh"):
            assert not re.search(r"""(?i)password["']?\s*[:=]\s*["'][^"'$]+["']""", text), f"{rel}: literal password"

    ini = configparser.ConfigParser()
    ini.read(DOCKER / "mlflow" / "basic_auth.ini")
    assert not ini["mlflow"].get("admin_password"), "basic_auth.ini must not hold the admin password"


# ------------------------------------------------------------------------------------------------------ dagster


def test_dagster_instance_is_valid_and_fed_by_the_environment(services):
    config = load_yaml(DOCKER / "dagster.yaml")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    env_vars = {v["env"] for _, k, v in walk(config) if isinstance(v, dict) and set(v) == {"env"}}
    assert {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_HOST"} <= env_vars
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    dagster_services = [n for n, s in services.items() if any("dagster" in w for w in command_words(s))]
    assert set(dagster_services) == {"dagster-user-code", "dagster-webserver", "dagster-daemon"}
    for name in dagster_services:
        env = service_env(services[name])
        assert env_vars <= set(env), f"{name} lacks {sorted(env_vars - set(env))} that dagster.yaml reads"
        assert env["DAGSTER_HOME"] + "/dagster.yaml" in {t for _, t in bind_mounts(services[name])}
        assert env["DAGSTER_POSTGRES_DB"] in (DOCKER / "timescaledb" / "010_alpr_databases.sql").read_text()

    dagster_config = pytest.importorskip("dagster._core.instance.config")
    from dagster._config import validate_config
    from dagster_postgres.storage import DagsterPostgresStorage

    dagster_config.dagster_instance_config(str(DOCKER), "dagster.yaml")  # raises on any schema error
    result = validate_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert result.success, result.errors


def test_workspace_points_at_the_user_code_server(services):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    server = load_yaml(DOCKER / "workspace.yaml")["load_from"][0]["grpc_server"]
    target = resolve_host(services, server["host"])
    assert target == "dagster-user-code"
    words = command_words(services[target])
    assert words[:3] == ["dagster", "api", "grpc"]
    assert words[words.index("-m") + 1] == pyproject["module_name"]
    assert words[words.index("-p") + 1] == str(server["port"])
    assert server["port"] in listening_ports(services[target])
    assert server["location_name"] == pyproject["code_location_name"]


# ------------------------------------------------------------------------------------------------------ mlflow


def test_mlflow_service_follows_the_seed(services):
    svc = services["mlflow"]
    assert svc["container_name"] == "alpr-mlflow"
    args = " ".join(command_words(svc))
    backend = re.search(r"--backend-store-uri[= ](\S+)", args)
    assert backend and urlparse(backend.group(1)).username == "mlflow" and backend.group(1).endswith("/mlflow_db")
    assert urlparse(backend.group(1)).password is None, "the database password comes from PGPASSWORD"
    assert re.search(r"--artifacts-destination[= ]s3://alpr-mlflow-artifacts\b", args)
    assert "--serve-artifacts" in args
    assert re.search(r"--app-name[= ]alpr-auth\b", args)  # basic-auth, creation for the pipeline only
    limits = svc["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) == 0.6 and str(limits["memory"]).upper() in ("600M", "600MB")
    assert "/health" in " ".join(svc["healthcheck"]["test"])
    auth_path = service_env(svc)["MLFLOW_AUTH_CONFIG_PATH"]
    assert ("./mlflow/basic_auth.ini", auth_path) in set(bind_mounts(svc))


def test_mlflow_image_matches_the_pipelines_mlflow():
    pin = re.search(r'"mlflow(?:\[[^\]]*\])?==([\w.]+)"', (ROOT / "pyproject.toml").read_text())
    dockerfile = (DOCKER / "mlflow" / "Dockerfile").read_text()
    assert pin and f"ARG MLFLOW_VERSION={pin.group(1)}" in dockerfile
    assert "mlflow[auth]==" in dockerfile, "--app-name alpr-auth wraps basic-auth, which needs the [auth] extra"
    plugin = (DOCKER / "mlflow" / "auth-plugin" / "pyproject.toml").read_text()
    assert 'alpr-auth = "alpr_mlflow_auth:create_app"' in plugin
    for module in ("alpr_pipelines/stack/mlflow_auth.py", "alpr_pipelines/stack/principals.py"):
        assert f"COPY {module} " in dockerfile and (ROOT / module).is_file()
        assert f"!{module}" in (DOCKER / "mlflow" / "Dockerfile.dockerignore").read_text()
    from alpr_pipelines.edge.contract import MODEL_NAMES

    init = (DOCKER / "mlflow" / "create_users.py").read_text()
    assert f'MODEL_NAMES = "{",".join(MODEL_NAMES)}"' in init, "mlflow-init must create every registered model"
    from alpr_pipelines.stack.principals import REGISTER_EXISTING_EXPERIMENT

    assert f'"{REGISTER_EXISTING_EXPERIMENT}"' in init, "the edge must read register-existing's runs too"


def test_auth_config_databases_and_bucket_agree():
    ini = configparser.ConfigParser()
    ini.read(DOCKER / "mlflow" / "basic_auth.ini")
    auth = ini["mlflow"]
    assert auth["admin_username"] and auth["authorization_function"]
    assert auth["default_permission"] == "NO_PERMISSIONS"  # the edge reads by explicit grants only
    auth_db = urlparse(auth["database_uri"])
    assert auth_db.password is None and auth_db.hostname == "timescaledb"

    sql = (DOCKER / "timescaledb" / "010_alpr_databases.sql").read_text()
    owners = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", sql))
    assert owners == {"mlflow_db": "mlflow", "mlflow_auth": "mlflow", "dagster": "dagster"}
    assert owners[auth_db.path.lstrip("/")] == auth_db.username

    script = (DOCKER / "minio" / "create-bucket.sh").read_text()
    assert "BUCKET=alpr-mlflow-artifacts" in script
    policy = json.loads((DOCKER / "minio" / "mlflow-artifacts-policy.json").read_text())
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {"arn:aws:s3:::alpr-mlflow-artifacts", "arn:aws:s3:::alpr-mlflow-artifacts/*"}


def test_user_bootstrap_creates_the_documented_principals(services):
    # Read the script's USERS table without running it (and without leaving bytecode in the build context).
    tree = ast.parse((DOCKER / "mlflow" / "create_users.py").read_text())
    users = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "USERS" for t in node.targets))
    assert set(users) == {"alpr-pipeline", "alpr-edge"}
    env = service_env(services["mlflow-init"])
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", *users.values()} <= set(env)
    # The principal each client uses is one the bootstrap creates, with the password it is created with.
    for name, user in (("dagster-user-code", "alpr-pipeline"), ("edge", "alpr-edge")):
        assert service_env(services[name])["MLFLOW_TRACKING_PASSWORD"] == env[users[user]]
    doc = DEPLOY_DOC.read_text()
    assert "/api/2.0/mlflow/users/create" in doc and "permissions/grant" in doc


# ------------------------------------------------------------------------------------------------------ edge


def test_edge_container_config_loads_and_matches_the_service(services):
    from alpr_pipelines.edge.service import EdgeConfig

    svc = services["edge"]
    words = command_words(svc)
    assert words[:2] == ["alpr", "edge"]
    config_target = words[words.index("--config") + 1]
    mounts = dict((t, s) for s, t in bind_mounts(svc))
    source = DOCKER / mounts[config_target]
    config = EdgeConfig.load(source)  # needs no model files
    assert config.http_host == "0.0.0.0", "Prometheus scrapes the edge from another container"
    assert config.http_port in listening_ports(svc)
    env = service_env(svc)
    assert config.cache_dir == env["ALPR_EDGE_CACHE"]
    for fallback in (config.vehicle_fallback, config.plate_fallback):
        assert fallback and fallback.startswith(env["ALPR_EDGE_MODELS_DIR"] + "/")
    assert config.tracking_uri is None, "the registry address comes from MLFLOW_TRACKING_URI"
    if config.realtime_priority:  # SCHED_FIFO needs the capability, or an rtprio limit at least as high
        assert "SYS_NICE" in svc.get("cap_add", []) or svc.get("ulimits", {}).get("rtprio", 0) >= config.realtime_priority


def test_edge_polls_through_the_registry_cache_which_fronts_mlflow(services):
    """The compose cache runs the package's own template, every placeholder of it filled from its environment, in
    front of the mlflow service; the edge polls it; MLflow accepts the Host header the cache passes on."""
    from alpr_pipelines.stack import registry_cache

    svc = services["registry-cache"]
    mounts = {t: s for s, t in bind_mounts(svc)}
    template = mounts["/etc/nginx/templates/registry-cache.conf.template"]
    assert (DOCKER / template).resolve() == registry_cache.TEMPLATE.resolve()
    env = service_env(svc)
    text = registry_cache.TEMPLATE.read_text()
    assert set(registry_cache._PLACEHOLDER.findall(text)) == {k for k in env if k.startswith(("REGISTRY_", "MLFLOW_"))}
    filled = registry_cache.render({k: VAR_RE.sub("1s", v) for k, v in env.items()})
    assert "server mlflow:5000;" in filled and f"listen {env['REGISTRY_CACHE_LISTEN']};" in filled
    host, port = env["MLFLOW_UPSTREAM"].split(":")
    assert resolve_host(services, host) == "mlflow" and int(port) in listening_ports(services["mlflow"])
    assert int(env["REGISTRY_CACHE_LISTEN"]) in listening_ports(svc)
    assert env["REGISTRY_CACHE_DIR"] in svc["tmpfs"], "the cache keys hold a credential: memory only"
    registry_cache.check_ttl(VAR_RE.sub(lambda m: m.group(3), env["REGISTRY_CACHE_TTL"]))  # the default is valid

    edge_uri = urlparse(service_env(services["edge"])["MLFLOW_TRACKING_URI"])
    assert resolve_host(services, edge_uri.hostname or "") == "registry-cache"
    assert services["edge"]["depends_on"]["registry-cache"] == {"condition": "service_healthy"}
    allowed = VAR_RE.sub(lambda m: m.group(3), service_env(services["mlflow"])["MLFLOW_SERVER_ALLOWED_HOSTS"])
    assert f"{edge_uri.hostname}:{edge_uri.port}" in allowed.split(","), "MLflow would refuse the cache's requests"


def test_images_install_what_each_side_needs():
    edge = (DOCKER / "Dockerfile.edge").read_text()
    pipeline = (DOCKER / "Dockerfile.pipeline").read_text()
    assert re.search(r"^ARG PIP_EXTRAS=edge$", edge, re.MULTILINE)
    assert "pipeline" not in " ".join(re.findall(r"pip install[^\n]*", edge))
    for heavy in ("torch", "ultralytics", "dagster", "mlflow"):
        assert f"'{heavy}'" in edge, f"Dockerfile.edge must refuse {heavy} in the image"
    assert re.search(r"^ARG PIP_EXTRAS=pipeline$", pipeline, re.MULTILINE)
    assert 'pip install --no-cache-dir ".[${PIP_EXTRAS}]"' in pipeline
    assert "YOLO_OFFLINE=1" in pipeline and "YOLO_AUTOINSTALL=false" in pipeline
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"pipeline", "gpu", "edge"} <= set(extras)
    for name, text in (("Dockerfile.edge", edge), ("Dockerfile.pipeline", pipeline)):
        ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.MULTILINE):
            for item in src.split():
                assert (ROOT / item).exists(), f"{name} copies {item}, which does not exist"
                assert item.rstrip("/") in allowed, f"{name} copies {item} but its .dockerignore excludes it"


# ------------------------------------------------------------------------------------------------------ monitoring


def scrape_targets(prometheus: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(job, host:port) of every address Prometheus contacts, including a probe exporter and what it probes."""
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                address = urlparse(target).netloc if "://" in target else target
                yield job["job_name"], address
        for relabel in job.get("relabel_configs", []):
            if relabel.get("target_label") == "__address__":
                yield job["job_name"], relabel["replacement"]


def test_prometheus_targets_name_services_and_ports(services, prometheus):
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert {"edge", "mlflow-health", "cadvisor"} <= jobs
    targets = list(scrape_targets(prometheus))
    assert ("edge", "edge:9108") in targets and ("mlflow-health", "mlflow:5000") in targets
    for job, address in targets:
        host, port = address.rsplit(":", 1)
        target = "prometheus" if host == "localhost" else resolve_host(services, host)
        assert target, f"job {job}: {host} is not a compose service"
        assert int(port) in listening_ports(services[target]), f"job {job}: {target} does not listen on {port}"


def promql_metrics(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers left once label matchers, ranges, strings, grouping
    clauses, functions and keywords are removed."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in {"and", "or", "unless", "offset", "bool"} and not n[0].isdigit()}


def test_edge_metric_list_matches_the_service():
    source = (ROOT / "alpr_pipelines" / "edge" / "metrics.py").read_text()
    exposed = set(re.findall(r"(?:Gauge|Counter|Histogram|Summary)\(\s*\"(\w+)\"", source))
    assert exposed == EDGE_METRICS


def test_grafana_dashboard_has_the_seed_panels_and_real_metrics(dashboard, prometheus):
    assert dashboard["uid"] == "alpr-model-registry"
    titles = [p["title"].lower() for p in dashboard["panels"]]
    for item in SEED_PANELS:
        assert sum(item in t for t in titles) == 1, f"dashboard needs exactly one panel for {item!r}: {titles}"
    datasource = load_yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"][0]
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    histogram_parts = ("_bucket", "_sum", "_count")
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            metrics = promql_metrics(target["expr"])
            assert metrics, f"panel {panel['title']}: no metric in {target['expr']!r}"
            for metric in metrics:
                base = next((metric[: -len(s)] for s in histogram_parts if metric.endswith(s)), metric)
                if metric in EDGE_METRICS or base in EDGE_METRICS:
                    continue
                family = next((f for f in METRIC_FAMILIES if metric.startswith(f)), None)
                assert family or metric == "up", f"panel {panel['title']}: unknown metric {metric}"
                if family and METRIC_FAMILIES[family]:
                    assert METRIC_FAMILIES[family] in jobs, f"{metric} needs scrape job {METRIC_FAMILIES[family]}"


def test_grafana_provisioning_matches_compose(services):
    grafana = services["grafana"]
    mounts = dict(bind_mounts(grafana))
    provider = load_yaml(DOCKER / "grafana" / "provisioning" / "dashboards" / "alpr.yaml")["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = load_yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"][0]
    url = urlparse(datasource["url"])
    assert url.port in listening_ports(services[resolve_host(services, url.hostname or "") or "?"])


# ------------------------------------------------------------------------------------------------------ GPU, k8s


def test_gpu_override_reserves_the_gpu_where_runs_execute(services):
    override = load_yaml(GPU_COMPOSE_FILE)["services"]
    assert set(override) <= set(services)
    user_code = override["dagster-user-code"]
    devices = user_code["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert "gpu" in user_code["build"]["args"]["PIP_EXTRAS"].split(",")


def test_helm_values_launch_runs_on_kubernetes_with_gpu_training_steps(helm_values):
    assert helm_values["runLauncher"]["type"] == "K8sRunLauncher"
    assert helm_values["generatePostgresqlPasswordSecret"] is False
    assert helm_values["postgresql"]["postgresqlPassword"] == ""
    deployment = helm_values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "alpr_pipelines.definitions"]
    assert deployment["envSecrets"], "credentials come from a Kubernetes secret"
    assert helm_values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert helm_values["concurrency"]["enabled"] and helm_values["concurrency"]["pools"]["defaultLimit"] == 1

    gpu = helm_values["alprGpuTraining"]
    limits = gpu["stepK8sConfig"]["container_config"]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert gpu["stepK8sConfig"]["pod_spec_config"]["tolerations"]
    assert gpu["opTags"]["dagster-k8s/config"] == gpu["stepK8sConfig"]
    per_step = gpu["runConfig"]["execution"]["config"]["per_step_k8s_config"]
    # Default run pods stay CPU-only: promotions must not hold a GPU.
    assert "nvidia.com/gpu" not in json.dumps(helm_values["runLauncher"])

    pytest.importorskip("dagster")
    from alpr_pipelines.definitions import defs

    job = defs().resolve_job_def("train_and_register")
    nodes = {node.name: node.definition for node in job.graph.nodes}
    assert set(per_step) <= set(nodes), f"unknown step keys: {sorted(set(per_step) - set(nodes))}"
    trainings = {name for name, d in nodes.items() if getattr(d, "pool", None) == "alpr_training"}
    assert trainings and trainings <= set(per_step), "every training step must ask for a GPU"
