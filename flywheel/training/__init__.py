"""The training edge: the child processes (Ultralytics: training, predict_child, export) and
the adapters that start them (local_trainer, local_predictor, ray_jobs)."""
