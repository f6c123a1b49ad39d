"""The registry cache: nginx in front of the MLflow server, so that a fleet's version lookups cost MLflow nothing.

What it caches and why is in its configuration, ``nginx/registry-cache.conf.template`` (one template for the compose
stack, where the nginx image fills it, and for the local processes started here). This module fills the template,
writes the main ``nginx.conf`` around it and describes the process as a :class:`~alpr_pipelines.stack.process.Service`,
for ``alpr stack up --profile production`` and the fleet benchmark.

nginx is a system package, not a Python one (``apt-get install nginx-light`` on Debian and Ubuntu); without it the
production profile says so and how to run without the cache (``ALPR_REGISTRY_CACHE=off``).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alpr_pipelines.stack.process import Service, StackError

TEMPLATE = Path(__file__).parent / "nginx" / "registry-cache.conf.template"
DEFAULT_TTL = "1s"
HEADER = "X-Alpr-Registry-Cache"  # HIT, MISS, UPDATING, STALE or EXPIRED on the cached lookups
NGINX_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")  # not on a normal user's PATH
MEMORY_DIR = Path("/dev/shm")  # a tmpfs on Linux: the cache's files (whose keys hold credentials) never reach a disk
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_TTL = re.compile(r"^[1-9][0-9]*[sm]$")  # nginx caches in whole seconds

MAIN_CONF = """\
# Written by alpr (alpr_pipelines.stack.registry_cache): nginx's main configuration for the registry cache.
# The cache itself is configured in registry-cache.conf, filled in from the package's template.
daemon off;
worker_processes {workers};
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
{user}
events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include {prefix}/registry-cache.conf;
}}
"""


def render(values: dict[str, str], template: str | None = None) -> str:
    """The template with every ``${NAME}`` replaced, as the nginx image's envsubst does.

    Raises:
        StackError: the template names a placeholder that ``values`` lacks (nothing is left half-filled).
    """
    text = TEMPLATE.read_text() if template is None else template
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise StackError(f"the registry cache template needs {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def check_ttl(ttl: str) -> str:
    """``ttl`` if it is a whole number of seconds or minutes (``1s``, ``5s``, ``2m``); else a StackError.

    nginx's cache counts validity in whole seconds: ``500ms`` would be read as 0 and cache nothing.
    """
    if not _TTL.match(ttl):
        raise StackError(f"ALPR_REGISTRY_CACHE_TTL={ttl!r} is not a whole number of seconds or minutes; use e.g. 1s, "
                         "5s or 2m (nginx's cache counts validity in whole seconds)")
    return ttl


def nginx_binary() -> str:
    """The nginx executable, from PATH or the usual sbin folders.

    Raises:
        StackError: nginx is not installed; the message says how to install it or do without the cache.
    """
    found = shutil.which("nginx") or shutil.which("nginx", path=os.pathsep.join(NGINX_SEARCH_PATH))
    if found is None:
        raise StackError(
            "the registry cache needs nginx, which is not installed: `apt-get install nginx-light` (Debian/Ubuntu), "
            "or set ALPR_REGISTRY_CACHE=off in the env file to let edge boxes talk to MLflow directly")
    return found


def cache_dir(prefix: Path) -> Path:
    """Where the cache of the instance configured under ``prefix`` keeps its entries: in memory (``/dev/shm``) when
    the machine has it, one folder per prefix and user; else ``prefix/cache``."""
    prefix = prefix.resolve()
    if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK):
        tag = hashlib.sha256(str(prefix).encode()).hexdigest()[:12]
        return MEMORY_DIR / f"alpr-registry-cache-{os.geteuid()}-{tag}"
    return prefix / "cache"


def write_config(prefix: Path, upstream: str, host: str, port: int, ttl: str = DEFAULT_TTL,
                 workers: int | None = None) -> Path:
    """Write ``nginx.conf`` and ``registry-cache.conf`` under ``prefix``; return the main file.

    ``upstream`` is MLflow's ``host:port``. The cache's entries go to :func:`cache_dir`, emptied here (so a start
    never serves what an earlier run cached) and private to this user (mode 0700): their keys include the edge
    principal's Authorization header.

    ``workers``: nginx's worker processes; None for one per core (``auto``), what the stack runs. With several, a
    lookup that another worker takes while the answer that fills its entry is on its way (sent, not yet stored) can
    go to MLflow once more (measured: 4 in 8,000 back-to-back pairs); one worker stores an answer before it takes the
    next request, which tests that count hits rely on.

    Raises:
        StackError: ``ttl`` is not whole seconds or minutes, or ``workers`` is not a positive whole number (nothing
            is written).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise StackError(f"the registry cache needs at least one nginx worker process, got {workers!r}")
    check_ttl(ttl)
    prefix = prefix.resolve()
    (prefix / "temp").mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o700)
    entries = cache_dir(prefix)
    shutil.rmtree(entries, ignore_errors=True)
    entries.mkdir(mode=0o700, parents=True)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address needs its brackets
    (prefix / "registry-cache.conf").write_text(render({
        "REGISTRY_CACHE_DIR": str(entries), "MLFLOW_UPSTREAM": upstream,
        "REGISTRY_CACHE_LISTEN": listen, "REGISTRY_CACHE_TTL": ttl}))
    # nginx started by root hands its workers to "nobody", who could not write the cache; keep them ours, like the
    # stack's other services (the directive is ignored, with a warning, when nginx is not started by root).
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(MAIN_CONF.format(prefix=prefix, user=user, workers="auto" if workers is None else workers))
    return main


def service(prefix: Path, host: str, port: int) -> Service:
    """The cache as a stack service (its configuration written by :func:`write_config` under ``prefix``).

    Healthy when MLflow's ``/health`` answers through it.
    """
    main = prefix.resolve() / "nginx.conf"
    return Service("registry-cache", [nginx_binary(), "-p", str(prefix.resolve()), "-c", str(main), "-e", "stderr"],
                   f"http://{host}:{port}/health", "nginx")


@dataclass(frozen=True)
class RunningCache:
    url: str
    pid: int
    command: list[str]
    ttl: str


@contextmanager
def running(upstream_url: str, prefix: Path, ttl: str = DEFAULT_TTL, host: str = "127.0.0.1", port: int = 0,
            timeout: float = 30.0, workers: int | None = None) -> Iterator[RunningCache]:
    """The cache in front of ``upstream_url`` (``http://host:port`` of an MLflow server) as a child process for the
    length of the block, its files under ``prefix``; stopped by PID after. For tests and benchmarks: the production
    profile runs it as a stack service instead.

    Ready once it listens, not once MLflow answers through it: the upstream may be down on purpose.

    Raises:
        StackError: nginx is not installed, exits during start-up, or does not listen within ``timeout`` (the
            message holds its log).
    """
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    write_config(prefix, upstream_url.split("//", 1)[-1].rstrip("/"), host, port, ttl, workers)
    svc = service(prefix, host, port)
    log = prefix.resolve() / "nginx.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(svc.command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise StackError(f"nginx exited during start-up:\n{log.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise StackError(f"nginx not listening on {host}:{port} after {timeout:.0f}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield RunningCache(f"http://{host}:{port}", proc.pid, svc.command, ttl)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        shutil.rmtree(cache_dir(prefix), ignore_errors=True)
