"""Label assigners: ``assigner(priors, targets, batch_size, pred=None) -> Assignment``.

One file per assigner (``common.py`` holds the interface and the padded ground-truth layout they share;
``matcher.py``, ``tal_steps.py`` and ``simota_steps.py`` the pure steps that ``max_iou.py``, ``tal.py`` and
``simota.py`` run); every assigner returns :class:`detector.structures.Assignment`. The config names are the keys of
``detector.build.ASSIGNERS``.
"""
from detector.assigners.atss import ATSSAssigner, assign_atss
from detector.assigners.fcos import FCOSAssigner, assign_fcos
from detector.assigners.max_iou import MaxIoUAssigner, SSDAssigner, assign_max_iou, assign_ssd, match_max_iou
from detector.assigners.simota import SimOTAAssigner, assign_simota
from detector.assigners.tal import TaskAlignedAssigner, assign_tal
from detector.assigners.yolov1 import YOLOv1Assigner, assign_yolov1
from detector.assigners.yolov3 import YOLOv2Assigner, YOLOv3Assigner, assign_yolov3
from detector.assigners.yolov5 import YOLOv5Assigner, assign_yolov5_ratio

__all__ = [
    "ATSSAssigner",
    "FCOSAssigner",
    "MaxIoUAssigner",
    "SSDAssigner",
    "SimOTAAssigner",
    "TaskAlignedAssigner",
    "YOLOv1Assigner",
    "YOLOv2Assigner",
    "YOLOv3Assigner",
    "YOLOv5Assigner",
    "assign_atss",
    "assign_fcos",
    "assign_max_iou",
    "assign_simota",
    "assign_ssd",
    "assign_tal",
    "assign_yolov1",
    "assign_yolov3",
    "assign_yolov5_ratio",
    "match_max_iou",
]
