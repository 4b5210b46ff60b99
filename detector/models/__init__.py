"""Models: ``images -> HeadOutputs``. Never imports losses or assigners.

Public API:
    build_yolov5(size="n", num_classes=80, anchors=None, strides=(8, 16, 32), box_uncertainty=False,
                 depth_multiple=None, width_multiple=None, in_channels=3) -> Detector
    Detector(backbone, neck, head, prior_generator, num_classes); forward(images) -> HeadOutputs
    AnchorPriorGenerator(anchors, strides), PointPriorGenerator(strides): (level_shapes, device, dtype) -> Priors
    count_parameters(model, trainable_only=False) -> int; fuse_conv_bn(model) -> model
"""
from detector.models.detector import (
    YOLOV5_ANCHORS,
    YOLOV5_SIZES,
    Detector,
    build_yolov5,
    count_parameters,
    fuse_conv_bn,
)
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator

__all__ = [
    "YOLOV5_ANCHORS",
    "YOLOV5_SIZES",
    "AnchorPriorGenerator",
    "Detector",
    "PointPriorGenerator",
    "build_yolov5",
    "count_parameters",
    "fuse_conv_bn",
]
