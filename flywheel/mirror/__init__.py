"""Adapters of the registry mirror (flywheel/flow/mirroring.py): the MLflow tracker (imported
only when `[mlflow] tracking_uri` is set), the record of what it holds, in-memory twins."""
