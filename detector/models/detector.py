"""The detector: backbone + neck + head + prior generator, ``images -> HeadOutputs``.

Letter convention (see ``detector/structures.py``): ``B`` images, ``H, W`` input size, ``P`` priors,
``C`` classes. The model never sees targets and never decodes boxes (that is a coder's job).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detector.models.backbones.csp import CSPDarknet
from detector.models.common import Conv
from detector.models.heads.yolo import YOLOv5Head
from detector.models.necks.pan import YOLOv5PAN
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.structures import HeadOutputs

# (depth_multiple, width_multiple) of YOLOv5's models/yolov5{n,s,m,l,x}.yaml.
YOLOV5_SIZES: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}

# YOLOv5's default anchors (w, h) in pixels for P3/8, P4/16, P5/32.
YOLOV5_ANCHORS: tuple[tuple[int, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)


class Detector(nn.Module):
    """``images (Tensor[B, 3, H, W]) -> HeadOutputs`` over all priors.

    Args:
        backbone: ``images -> per-level features`` (finest first).
        neck: ``per-level features -> per-level features``.
        head: ``per-level features -> per-level Tensor[B, A, H_l, W_l, K]``, with a ``flatten(levels, priors)``
            method returning HeadOutputs (see :class:`detector.models.heads.yolo.YOLOv5Head`).
        prior_generator: ``(level_shapes, device, dtype) -> Priors`` with a ``strides`` attribute, and
            ``anchors`` (list of Tensor[A, 2] px) for anchor priors.
        num_classes: ``C``.
        feature_levels: which of the neck's outputs the head sees (indices, finest first); None = all.

    Attributes:
        num_classes (int), strides (tuple[int, ...]), anchors (list[Tensor[A, 2]] pixels, or None for
        point priors). Anchors are configuration (from the config), not part of the state dict.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, prior_generator, num_classes: int,
                 feature_levels: Sequence[int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.prior_generator = prior_generator
        self.num_classes = int(num_classes)
        self.strides = tuple(int(s) for s in prior_generator.strides)
        self.feature_levels = None if feature_levels is None else tuple(int(i) for i in feature_levels)

    @property
    def anchors(self) -> list[Tensor] | None:
        """Per level Tensor[A, 2] anchor ``(w, h)`` in pixels (CPU, float32); None for point priors."""
        anchors = getattr(self.prior_generator, "anchors", None)
        return None if anchors is None else [a.clone() for a in anchors]

    def check_input(self, images: Tensor) -> None:
        """Raise ValueError unless ``images`` is Tensor[B, C, H, W] with H and W multiples of the largest stride."""
        if images.dim() != 4:
            raise ValueError(f"Detector: images must be Tensor[B, 3, H, W], got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        s = max(self.strides)
        if h % s or w % s:
            raise ValueError(
                f"Detector: input size {h}x{w} (HxW) is not a multiple of the largest stride {s}; "
                f"letterbox or pad to a multiple of {s}, e.g. {-(-h // s) * s}x{-(-w // s) * s} "
                f"(data.img_size must be a multiple of {s})"
            )

    def forward_levels(self, images: Tensor) -> list[Tensor]:
        """images (Tensor[B, 3, H, W]) -> per level raw Tensor[B, A, H / s_l, W / s_l, K] (export, inspection)."""
        self.check_input(images)
        features = self.neck(self.backbone(images))
        if self.feature_levels is not None:
            features = [features[i] for i in self.feature_levels]
        h, w = images.shape[-2:]
        up = getattr(self.head, "upsample", 1)  # a head that upsamples its inputs (CenterNet's stride-4 map)
        for f, s in zip(features, self.strides):
            if tuple(f.shape[-2:]) != (h // (s * up), w // (s * up)):
                raise ValueError(
                    f"Detector: a feature map of size {tuple(f.shape[-2:])} for stride {s} on a {h}x{w} input; "
                    f"the strides {self.strides} do not match the backbone"
                )
        return self.head(features)

    def forward(self, images: Tensor) -> HeadOutputs:
        """images (Tensor[B, 3, H, W] float, 0..1) -> HeadOutputs(box [B,P,4], obj [B,P], cls [B,P,C], priors).

        ``H`` and ``W`` must be multiples of ``max(strides)``. Priors are built in the images' floating dtype
        on their device (float32 under autocast); head outputs are in the compute dtype.
        """
        levels = self.forward_levels(images)
        dtype = images.dtype if images.is_floating_point() else torch.float32
        priors = self.prior_generator([tuple(t.shape[2:4]) for t in levels], images.device, dtype)
        return self.head.flatten(levels, priors)


def build_yolov5(
    size: str = "n",
    num_classes: int = 80,
    anchors: Sequence[Sequence[float]] | None = None,
    strides: Sequence[int] = (8, 16, 32),
    box_uncertainty: bool = False,
    depth_multiple: float | None = None,
    width_multiple: float | None = None,
    in_channels: int = 3,
    head: Callable[..., nn.Module] | None = None,
    point_priors: bool = False,
    upsample: int = 1,
) -> Detector:
    """YOLOv5 v6+ (``yolov5{n,s,m,l,x}.yaml``): CSP-Darknet + SPPF, PAN neck, a head on P3/P4/P5 (or a subset).

    Args:
        size: one of ``n, s, m, l, x``; picks ``(depth_multiple, width_multiple)`` from ``YOLOV5_SIZES``.
        num_classes: ``C``.
        anchors: per level anchors in pixels (``[w0, h0, w1, h1, ...]`` or ``[[w, h], ...]``); default
            ``YOLOV5_ANCHORS``.
        strides: ``(8, 16, 32)``, the strides of this architecture, or a subset of them in order (``(32,)``
            for YOLOv2's single level; the neck computes the levels up to the coarsest one used).
        box_uncertainty: add 4 log-variance channels per anchor.
        depth_multiple, width_multiple: override the size's multiples.
        in_channels: image channels.
        head: ``head(in_channels, num_classes, num_anchors, strides, box_uncertainty) -> nn.Module`` (an entry of
            ``detector.build.HEADS``); default :class:`YOLOv5Head`.
        point_priors: one point prior per cell (anchor-free heads); ``anchors`` is then ignored.
        upsample: the head upsamples its inputs by this factor, so ``strides`` are those of the neck levels divided
            by it (CenterNet: ``strides=(4,)`` from the stride-8 level with ``upsample=2``).
    """
    if size not in YOLOV5_SIZES:
        raise ValueError(f"build_yolov5: unknown size {size!r} (model.size); valid: {sorted(YOLOV5_SIZES)}")
    d, w = YOLOV5_SIZES[size]
    d = d if depth_multiple is None else float(depth_multiple)
    w = w if width_multiple is None else float(width_multiple)
    if d <= 0 or w <= 0:
        raise ValueError(f"build_yolov5: depth_multiple and width_multiple must be > 0, got {d} and {w}")
    strides = tuple(int(s) for s in strides)
    available = tuple(s // upsample for s in CSPDarknet.strides)
    if not strides or any(s not in available for s in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(
            f"build_yolov5: strides {list(strides)} (model.strides) do not match the YOLOv5 architecture, "
            f"whose P3/P4/P5 outputs have strides {list(CSPDarknet.strides)} (give all of them or a subset, in "
            f"order{f'; divided by the head upsampling {upsample}: {list(available)}' if upsample > 1 else ''})"
        )
    levels = [available.index(s) for s in strides]
    if point_priors:
        generator, num_anchors = PointPriorGenerator(strides), [1] * len(strides)
    else:
        generator = AnchorPriorGenerator(YOLOV5_ANCHORS if anchors is None else anchors, strides)
        num_anchors = generator.num_anchors
    backbone = CSPDarknet(in_channels, depth_multiple=d, width_multiple=w)
    neck = YOLOv5PAN(backbone.out_channels, depth_multiple=d, outputs=max(levels) + 1)
    in_ch = [neck.out_channels[i] for i in levels]
    make_head = YOLOv5Head if head is None else head
    head_module = make_head(in_ch, num_classes, num_anchors, strides, box_uncertainty)
    return Detector(backbone, neck, head_module, generator, num_classes,
                    feature_levels=None if levels == list(range(len(neck.out_channels))) else levels)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; only those with ``requires_grad`` if ``trainable_only``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every :class:`Conv`'s BatchNorm into its convolution, in place, for inference; returns ``model``.

    Uses the BatchNorm running statistics, so outputs equal the unfused model's in eval mode (up to
    rounding). Training a fused model is not meaningful; call this on an eval copy.
    """
    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv.eval(), m.bn.eval())
            m.bn = nn.Identity()
    return model
