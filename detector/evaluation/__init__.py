"""Evaluation: COCO metrics with pycocotools (the only place where boxes become COCO xywh)."""
from detector.evaluation.coco import (
    COCO_STAT_NAMES,
    COCO_STATS,
    coco_gt_from_boxes,
    detections_to_coco,
    evaluate_coco,
    format_coco_table,
    load_coco_gt,
    write_results_json,
)

__all__ = [
    "COCO_STAT_NAMES",
    "COCO_STATS",
    "coco_gt_from_boxes",
    "detections_to_coco",
    "evaluate_coco",
    "format_coco_table",
    "load_coco_gt",
    "write_results_json",
]
