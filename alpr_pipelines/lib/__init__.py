"""Framework-free building blocks: nothing here imports dagster."""
