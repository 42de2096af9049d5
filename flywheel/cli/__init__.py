"""The `flywheel` command: one module per command group."""
