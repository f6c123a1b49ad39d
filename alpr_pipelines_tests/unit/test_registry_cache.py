"""The registry cache's configuration: the template is filled completely, nginx accepts what we write, and the
production profile's settings for it are checked before anything starts."""

import subprocess
import uuid

import pytest

from alpr_pipelines.settings import load_settings
from alpr_pipelines.stack import StackError, registry_cache
from alpr_pipelines.stack import production as prod


def _nginx() -> str | None:
    try:
        return registry_cache.nginx_binary()
    except StackError:
        return None


NGINX = _nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
VALUES = {"REGISTRY_CACHE_DIR": "/tmp/c", "MLFLOW_UPSTREAM": "127.0.0.1:5000", "REGISTRY_CACHE_LISTEN": "8080",
          "REGISTRY_CACHE_TTL": "1s"}


def test_template_is_filled_and_nginx_variables_are_left_alone():
    text = registry_cache.render(VALUES)
    assert not registry_cache._PLACEHOLDER.search(text)
    assert "server 127.0.0.1:5000;" in text and "listen 8080;" in text and "proxy_cache_valid 200 400 404 1s;" in text
    # The credential is part of the key: an answer is only ever served to the principal it was given to.
    assert "$http_authorization" in text and "proxy_cache_key" in text


def test_a_missing_value_is_named():
    with pytest.raises(StackError, match="MLFLOW_UPSTREAM"):
        registry_cache.render({k: v for k, v in VALUES.items() if k != "MLFLOW_UPSTREAM"})


@pytest.mark.parametrize("ttl", ["1s", "5s", "2m", "30s"])
def test_whole_seconds_are_accepted(ttl):
    assert registry_cache.check_ttl(ttl) == ttl


@pytest.mark.parametrize("ttl", ["500ms", "0s", "", "1", "1h", "-1s", "1.5s"])
def test_other_lifetimes_are_refused_with_the_reason(ttl):
    with pytest.raises(StackError, match="ALPR_REGISTRY_CACHE_TTL.*whole seconds"):
        registry_cache.check_ttl(ttl)


@needs_nginx
def test_nginx_accepts_the_written_configuration(tmp_path):
    prefix = tmp_path / "rc"
    main = registry_cache.write_config(prefix, "127.0.0.1:5000", "127.0.0.1", 18080, "1s")
    entries = registry_cache.cache_dir(prefix)
    # The cache files hold the Authorization header: private, and in memory where the machine has a tmpfs.
    assert oct(prefix.stat().st_mode & 0o777) == oct(entries.stat().st_mode & 0o777) == "0o700"
    assert entries.is_relative_to("/dev/shm") or entries == prefix.resolve() / "cache"
    assert f"proxy_cache_path {entries} " in (prefix / "registry-cache.conf").read_text()
    out = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(main), "-e", "stderr"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr and "test is successful" in out.stderr
    svc = registry_cache.service(prefix, "127.0.0.1", 18080)
    assert svc.name == "registry-cache" and svc.health_url == "http://127.0.0.1:18080/health"
    assert svc.command[-4:] == ["-c", str(main), "-e", "stderr"]


def test_without_nginx_the_message_says_what_to_do(monkeypatch):
    monkeypatch.setattr(registry_cache.shutil, "which", lambda *a, **k: None)
    with pytest.raises(StackError, match=r"apt-get install nginx-light.*ALPR_REGISTRY_CACHE=off"):
        registry_cache.nginx_binary()


def _env_file(tmp_path, **extra):
    values = {key: uuid.uuid4().hex for key in prod.REQUIRED_KEYS} | extra
    path = tmp_path / "production.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.mark.parametrize(("extra", "message"), [
    ({"ALPR_REGISTRY_CACHE": "maybe"}, "ALPR_REGISTRY_CACHE='maybe': use on or off"),
    ({"ALPR_REGISTRY_CACHE_PORT": "80a"}, "ALPR_REGISTRY_CACHE_PORT='80a' is not a port number"),
    ({"ALPR_REGISTRY_CACHE_TTL": "250ms"}, "ALPR_REGISTRY_CACHE_TTL='250ms'"),
])
def test_bad_cache_settings_stop_before_anything_starts(tmp_path, monkeypatch, extra, message):
    monkeypatch.setattr(registry_cache, "nginx_binary", lambda: "/usr/sbin/nginx")
    with pytest.raises(StackError, match=message):
        prod.production_config(_env_file(tmp_path, **extra))


def test_the_cache_stands_in_front_of_mlflow_and_can_be_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_cache, "nginx_binary", lambda: "/usr/sbin/nginx")
    settings = load_settings({"ALPR_HOME": str(tmp_path / "home"), "ALPR_MLFLOW_PORT": "5999"})
    cfg = prod.production_config(_env_file(tmp_path, ALPR_REGISTRY_CACHE_PORT="6080"))
    names = [s.name for s in prod.services(settings, cfg)]
    assert names.index("registry-cache") == names.index("mlflow") + 1  # started once MLflow is healthy
    cache = next(s for s in prod.services(settings, cfg) if s.name == "registry-cache")
    assert cache.health_url == "http://127.0.0.1:6080/health"

    monkeypatch.setattr(registry_cache, "nginx_binary", lambda: pytest.fail("nginx is not needed when it is off"))
    off = prod.production_config(_env_file(tmp_path, ALPR_REGISTRY_CACHE="off"))
    assert "registry-cache" not in [s.name for s in prod.services(settings, off)]


def test_a_start_never_serves_what_an_earlier_run_cached(tmp_path):
    prefix = tmp_path / "rc"
    registry_cache.write_config(prefix, "127.0.0.1:5000", "127.0.0.1", 18080)
    stale = registry_cache.cache_dir(prefix) / "a" / "entry"
    stale.parent.mkdir(parents=True)
    stale.write_text("KEY: GET ... Basic secret")
    registry_cache.write_config(prefix, "127.0.0.1:5000", "127.0.0.1", 18080)
    assert not stale.exists()


def test_an_ipv6_address_is_bracketed(tmp_path):
    registry_cache.write_config(tmp_path / "rc", "127.0.0.1:5000", "::1", 18080)
    assert "listen [::1]:18080;" in (tmp_path / "rc" / "registry-cache.conf").read_text()


@pytest.mark.parametrize(("workers", "line"), [(None, "worker_processes auto;"), (1, "worker_processes 1;"),
                                                (3, "worker_processes 3;")])
def test_one_worker_per_core_unless_told(tmp_path, workers, line):
    main = registry_cache.write_config(tmp_path / "rc", "127.0.0.1:5000", "127.0.0.1", 18080, workers=workers)
    assert line in main.read_text().splitlines()


@pytest.mark.parametrize(("ttl", "workers", "message"), [
    ("1s", 0, "at least one nginx worker process, got 0"), ("1s", True, "got True"), ("1s", "2", "got '2'"),
    ("500ms", None, "ALPR_REGISTRY_CACHE_TTL='500ms'")])
def test_bad_settings_write_nothing(tmp_path, ttl, workers, message):
    prefix = tmp_path / "rc"
    with pytest.raises(StackError, match=message):
        registry_cache.write_config(prefix, "127.0.0.1:5000", "127.0.0.1", 18080, ttl, workers=workers)
    assert not prefix.exists() and not registry_cache.cache_dir(prefix).exists()
