"""The registry contract an edge box relies on, from the original ALPR registry design: the registered model names (two detectors and the plate reader),
the stages, and the aliases the pipeline keeps in agreement with them (MLflow deprecated stages in favour of aliases;
both work). The pipeline's side (``lib.models``) imports these, so there is one copy."""

VEHICLE_MODEL = "alpr-vehicle-detector"
PLATE_MODEL = "alpr-plate-detector"
OCR_MODEL = "alpr-plate-ocr"  # the plate reader: a plate crop's text
MODEL_NAMES = (VEHICLE_MODEL, PLATE_MODEL, OCR_MODEL)  # every registered model the pipeline owns
STAGES = ("None", "Staging", "Production", "Archived")
# The version holding a stage's alias is the newest version in that stage.
STAGE_ALIASES = {"Staging": "candidate", "Production": "production"}
PREVIOUS_ALIAS = "previous"  # the Production version before the current one: what a rollback restores
