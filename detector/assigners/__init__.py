"""Label assigners: ``assigner(priors, targets, batch_size, pred_boxes=None) -> Assignment``.

One file per assigner; every assigner returns :class:`detector.structures.Assignment`.
"""
from detector.assigners.yolov5 import YOLOv5Assigner, assign_yolov5_ratio

__all__ = ["YOLOv5Assigner", "assign_yolov5_ratio"]
