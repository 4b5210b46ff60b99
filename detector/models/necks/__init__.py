"""Necks: fuse backbone features level by level; same number of levels in and out."""
from detector.models.necks.pan import YOLOv5PAN

__all__ = ["YOLOv5PAN"]
