"""The edge runtime (docs/edge.md). It imports no dagster, torch, ultralytics, mlflow or pandas: an edge box installs
the base package only."""
