"""The MLflow pyfunc flavour of a registered detector (``model``), defined from code (``model_code``), never a pickle."""
