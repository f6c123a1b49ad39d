"""Dagster definitions, one folder per domain; thin glue over ``alpr_pipelines.lib``."""
