"""MLflow "models from code" entry point of the plate reader's pyfunc: defined by this file, not by a pickle."""

from mlflow.models import set_model

from alpr_pipelines.lib.pyfunc.model import AlprPlateReaderModel

set_model(AlprPlateReaderModel())
