"""`flywheel serve`: the production model behind HTTP, in its own process.

An edge package: it reads the data root's `production/` folder (never the database), loads the
model in the configured runtime, answers `POST /v1/detect` with dynamic batching, swaps models
between batches when production changes, exports Prometheus metrics and, when enabled, keeps
the images the model doubts in `captured/`. Started by `flywheel serve ROOT` (flywheel/cli/serve.py),
never inside the training daemon.
"""
