"""The state folder as a resource: where datasets, trainings and exports live on disk."""


from pathlib import Path

import dagster as dg

from alpr_pipelines.settings import Settings, load_settings


class AlprStateResource(dg.ConfigurableResource):
    """Project state folder; ``home`` overrides ``ALPR_HOME`` (default ``./.alpr``)."""

    home: str | None = None

    def settings(self) -> Settings:
        env = None
        if self.home:
            import os

            env = {**os.environ, "ALPR_HOME": self.home}
        return load_settings(env)

    def path(self, *parts: str) -> Path:
        p = self.settings().home.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p
