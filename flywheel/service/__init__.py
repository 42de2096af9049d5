"""The long-running service: daemon, trigger, train queue, HTTP, health, systemd, metrics, notify hooks."""
