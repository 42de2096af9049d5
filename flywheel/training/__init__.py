"""The training edge: the spec (no torch), the child processes (Ultralytics: training, predict_child, export) and the executors that start them (local_trainer, ray_jobs)."""
