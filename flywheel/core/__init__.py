"""Records, states, policies and ports: pure, no I/O library imported."""
