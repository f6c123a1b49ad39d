"""The edge runtime. It imports no dagster, torch or ultralytics: an edge box installs only ``.[edge]``."""
