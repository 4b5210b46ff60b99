"""detector: a config-driven YOLO-style detector training framework with swappable assigners and losses."""

__version__ = "0.1.0"
