"""MLflow "models from code" entry point: the registered pyfunc is defined by this file, not by a pickle."""

from mlflow.models import set_model

from alpr_pipelines.lib.pyfunc.model import AlprDetectorModel

set_model(AlprDetectorModel())
