"""The inbox edge: batch layout, validation, quarantine, and the watchdog watcher."""
