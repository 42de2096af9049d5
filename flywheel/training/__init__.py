"""The training edge: the spec (no torch), the child process (Ultralytics), the runner."""
