"""Process supervision for the stacks ``alpr stack`` runs on one machine: the embedded default (``embedded``) and the
production-like profile (``production``: PostgreSQL, S3, MLflow auth, the registry cache), both as local processes
started, checked and stopped by PID (``process``)."""

from __future__ import annotations

from pathlib import Path

from alpr_pipelines.settings import Settings
from alpr_pipelines.stack import embedded, process
from alpr_pipelines.stack.process import ServiceStatus, StackError

__all__ = ["ServiceStatus", "StackError", "down", "status", "up"]


def up(settings: Settings, timeout: float = 120.0, only: list[str] | None = None, profile: str = "embedded",
       env_file: Path | None = None) -> list[ServiceStatus]:
    """Start every service of ``profile`` not already running, then wait until all are healthy.

    ``profile`` "embedded" (SQLite, local artifacts, no auth) or "production" (PostgreSQL, S3, MLflow auth; needs
    ``env_file``, see :mod:`alpr_pipelines.stack.production`).

    Raises:
        StackError: a port is taken by another program, a service exits or stays unhealthy past ``timeout`` (the
            message points at its log), or the production env file is missing or incomplete.
    """
    if profile == "embedded":
        return embedded.up(settings, timeout, only)
    if profile == "production":
        from alpr_pipelines.stack import production

        if env_file is None:
            raise StackError("the production profile needs --env-file (copy config/production.env.example)")
        return production.up(settings, env_file, timeout, only)
    raise StackError(f"unknown profile {profile!r}; use embedded or production")


def down(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Stop whatever the last ``up`` started here (either profile), by PID; return the names stopped."""
    return process.stop_all(settings, timeout)


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service of the last ``up`` (the embedded ones if none ran here): running, healthy, its URL."""
    return process.status(settings, process.recorded_services(settings) or embedded.services(settings))
