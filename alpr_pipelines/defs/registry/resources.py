"""The MLflow tracking server and Model Registry as a typed resource."""


import dagster as dg
from mlflow import MlflowClient

from alpr_pipelines.settings import load_settings


class MlflowRegistryResource(dg.ConfigurableResource):
    """MLflow tracking + registry. Unset fields fall back to ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME``.

    Read at use time, not import time, so one code location serves every environment.
    """

    tracking_uri: str | None = None
    experiment_name: str | None = None

    def uri(self) -> str:
        return self.tracking_uri or load_settings().mlflow_tracking_uri

    def experiment(self) -> str:
        return self.experiment_name or load_settings().mlflow_experiment

    def get_client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.uri().rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, name: str, version: str) -> str:
        return f"{self.uri().rstrip('/')}/#/models/{name}/versions/{version}"
