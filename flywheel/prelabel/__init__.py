"""Pre-labels: the production model's boxes, written in the form a labeling tool imports, and
an uncertainty ranking of unlabeled images (`flywheel predict`, `flywheel suggest`).

A package of its own, not part of `ingest` (which reads batches in) nor of `training` (the
only place torch lives): `writers` and `uncertainty` are pure (no torch, no database), so
tests and a benchmark can call them on fixed detections (flywheel.core.prediction's records);
`inputs` collects the images a Predictor (flywheel.core.ports) is asked about.
"""
