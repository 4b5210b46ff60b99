"""Heads: per-level feature maps -> per-level raw predictions -> :class:`detector.structures.HeadOutputs`."""
from detector.models.heads.yolo import YOLOv5Head, flatten_level_outputs, init_yolov5_detect_bias

__all__ = ["YOLOv5Head", "flatten_level_outputs", "init_yolov5_detect_bias"]
