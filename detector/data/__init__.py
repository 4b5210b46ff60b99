"""Datasets (COCO JSON, YOLO txt, Pascal VOC XML), YOLOv5 augmentations, collate and loaders.

Datasets yield :class:`Sample` in original pixels; :func:`build_dataloader` turns them into
``Batch(images [B,3,S,S] float 0..1, targets [n,6] = (image_index, class, x1, y1, x2, y2), metas)``.
"""
from detector.data.base import DetectionDataset, ImageRecord, Sample
from detector.data.coco import CocoDataset
from detector.data.collate import Batch, collate
from detector.data.dataset_yaml import DatasetSpec, build_dataset, load_dataset_yaml
from detector.data.files import read_image_rgb
from detector.data.letterbox import ImageMeta, letterbox, letterbox_geometry, scale_boxes_to_original
from detector.data.loader import SeededSampler, build_dataloader, seed_worker
from detector.data.mosaic import mosaic
from detector.data.pipeline import DetectionInputs, augmented_sample, letterboxed_sample
from detector.data.transforms import AffineParams, AugmentConfig, box_candidates, random_affine
from detector.data.voc import VocDataset
from detector.data.yolo import YoloDataset

__all__ = [
    "AffineParams", "AugmentConfig", "Batch", "CocoDataset", "DatasetSpec", "DetectionDataset", "DetectionInputs",
    "ImageMeta", "ImageRecord", "Sample", "VocDataset", "YoloDataset", "augmented_sample", "box_candidates",
    "build_dataloader", "build_dataset", "collate", "letterbox", "letterbox_geometry", "letterboxed_sample",
    "load_dataset_yaml", "mosaic", "random_affine", "read_image_rgb", "scale_boxes_to_original", "seed_worker",
    "SeededSampler",
]
