"""flywheel: a continual-learning data-flywheel daemon for object detection."""

__version__ = "0.1.0"
