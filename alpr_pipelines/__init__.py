"""alpr-pipelines: train, gate and ship YOLO11 detectors for a fleet of ALPR cameras."""

__version__ = "0.1.0"
