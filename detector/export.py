"""ONNX export of a trained detector: raw decoded outputs, or detections with NMS (or top-k) inside the graph.

Letters (see :mod:`detector.structures`): ``B`` images (the exported graph's dynamic axis), ``P`` priors, ``C``
classes, ``K`` boxes NonMaxSuppression keeps over the batch, ``D`` detection slots per image.

Two graphs, both taking ``images`` (float32 Tensor[B, 3, H, W], RGB in 0..1, letterboxed to the export size):

* ``raw`` -> ``boxes`` Tensor[B, P, 4] (xyxy pixels of the input, decoded by the run's coder) and ``scores``
  Tensor[B, P, C] (:func:`detector.structures.detection_scores`: scored as the head was trained). Post-process
  them as :func:`detector.ops.nms.postprocess_scores` does.
* ``detections`` -> ``detections`` Tensor[B, D, 6] rows ``(x1, y1, x2, y2, score, class)`` by decreasing score, and
  ``num_detections`` Tensor[B] (int64): rows ``>= num_detections[b]`` of image ``b`` are zeros. With
  ``eval.nms: iou``, ONNX's own ``NonMaxSuppression`` (per image and class, every class of a prior a candidate,
  score ``> conf_thres``, IoU ``> iou_thres`` suppresses), then the ``D = max_det`` best of each image: what
  ``postprocess_scores`` keeps, except its cap of 30000 candidates per image before NMS. With ``eval.nms: none``
  (NMS-free heads, ``yolo_e2e``: in eval mode the model is the one-to-one head) the ``D = min(max_det, P * C)``
  best (prior, class) scores, those ``<= conf_thres`` zeroed. ``diou``, ``peaks`` and variance voting have no ONNX
  operator here: export ``raw`` and post-process outside the graph.

Boxes are in pixels of the letterboxed input; map them back with the letterbox's scale and padding. The image
size is fixed at export (the priors are constants of the graph); the batch axis is dynamic. Conv + BatchNorm pairs
are fused first. The exporter is PyTorch's TorchScript one (``torch.onnx.export(..., dynamo=False)``), which needs
no ``onnxscript``; ``NonMaxSuppression`` is emitted by :class:`_NonMaxSuppression`'s ``symbolic``.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from detector.engine.checkpoint import CheckpointError, load_checkpoint
from detector.models.detector import fuse_conv_bn
from detector.structures import HeadOutputs, detection_scores

OUTPUTS = {"raw": ("boxes", "scores"), "detections": ("detections", "num_detections")}
DEFAULT_OPSET = 17


class RawOutputs(nn.Module):
    """``images (Tensor[B, 3, H, W]) -> (boxes Tensor[B, P, 4] xyxy px, scores Tensor[B, P, C])`` for one input size.

    Args:
        model: a :class:`~detector.models.detector.Detector` (copied, put in eval mode and fused; the original is
            untouched). In eval mode an NMS-free model (``DualHead``) runs its one-to-one head only.
        coder: the run's box coder (``detector.build.build_coder``).
        image_size: ``(H, W)`` of the exported input, multiples of the largest stride.

    The head's per-level outputs are flattened with plain reshapes and a concatenation (the training path's
    custom autograd function has no ONNX form), in the priors' order; the priors are computed once here.
    """

    def __init__(self, model: nn.Module, coder, image_size: tuple[int, int]):
        super().__init__()
        self.model = fuse_conv_bn(copy.deepcopy(model).float().eval())
        self.coder = coder
        self.image_size = (int(image_size[0]), int(image_size[1]))
        device = next(self.model.parameters()).device
        with torch.no_grad():
            self.priors = self.model(torch.zeros(1, 3, *self.image_size, device=device)).priors  # constants

    def head_outputs(self, images: Tensor) -> HeadOutputs:
        """The model's HeadOutputs for ``images``, flattened without the training path's autograd function."""
        layout = self.model.head.layout
        levels = self.model.forward_levels(images)  # per level (B, A, H_l, W_l, K)
        flat = torch.cat([t.reshape(t.shape[0], -1, t.shape[-1]) for t in levels], 1)  # (B, P, K), (A, H, W) order
        quality = flat[..., -1] if layout.quality else None  # (B, P)
        return HeadOutputs(box=flat[..., :layout.box_outputs], cls=flat[..., layout.cls_slice],
                           obj=flat[..., layout.obj_index] if layout.objectness else None,
                           priors=self.priors, quality=quality, background=layout.background)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.head_outputs(images)
        return self.coder.decode(outputs.box, self.priors), detection_scores(outputs)  # (B, P, 4), (B, P, C)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 10) with its PyTorch equivalent for tracing and eager use.

    ``boxes (Tensor[B, P, 4]) xyxy, scores (Tensor[B, C, P]) -> selected (Tensor[K, 3] int64) = (image, class,
    prior)``, ordered by image, class, then decreasing score: per (image, class), the boxes scoring
    ``> conf_thres`` that survive greedy NMS (IoU ``> iou_thres`` suppresses), at most ``max_per_class`` each.
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_thres: float, conf_thres: float):
        num_classes = scores.shape[1]
        b, c, p = (scores > conf_thres).nonzero(as_tuple=True)  # (K0,) each
        score = scores[b, c, p]
        keep = torchvision.ops.batched_nms(boxes[b, p], score, b * num_classes + c, iou_thres)  # by score
        group = (b * num_classes + c)[keep]
        keep = keep[torch.argsort(group, stable=True)]  # image, class, then score
        group = (b * num_classes + c)[keep]
        counts = torch.bincount(group, minlength=scores.shape[0] * num_classes)
        rank = torch.arange(group.numel(), device=group.device) - (counts.cumsum(0) - counts)[group]
        keep = keep[rank < max_per_class]
        return torch.stack((b[keep], c[keep], p[keep]), 1)  # (K, 3)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_thres: float, conf_thres: float):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([iou_thres], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([conf_thres], dtype=torch.float32)),
                    center_point_box_i=0)


def _best_per_image(image: Tensor, rows: Tensor, batch_size: Tensor | int, slots: int) -> tuple[Tensor, Tensor]:
    """The ``slots`` highest-scoring rows of each image, zero-padded.

    Args:
        image (Tensor[K] int64): image of each row; rows (Tensor[K, 6]) ``(x1, y1, x2, y2, score, class)``, scores
        ``>= 0``; batch_size: ``B``; slots: ``D``.

    Returns:
        (Tensor[B, D, 6] by decreasing score, zeros past each image's count; Tensor[B] int64 counts). A dense
        ``(B, K + D)`` score matrix (``-1`` off the image) ranked by ``topk``: no per-image loop, and ``topk``'s
        ``k = D`` is a constant because ``D`` padding columns are appended.
    """
    column = torch.arange(batch_size, device=image.device)[:, None]  # (B, 1)
    off = torch.full_like(column, -1, dtype=rows.dtype)  # (B, 1)
    ranked = torch.where(image[None, :] == column, rows[:, 4][None, :], off)  # (B, K)
    ranked = torch.cat((ranked, off.expand(-1, slots)), 1)  # (B, K + D)
    best, index = ranked.topk(slots, dim=1)  # (B, D)
    padded = torch.cat((rows, rows.new_zeros(slots, 6)))  # (K + D, 6)
    valid = best >= 0  # (B, D)
    return padded[index] * valid[..., None], valid.sum(1)


def nms_detections(boxes: Tensor, scores: Tensor, conf_thres: float, iou_thres: float,
                   max_det: int) -> tuple[Tensor, Tensor]:
    """boxes (Tensor[B, P, 4]), scores (Tensor[B, P, C]) -> detections (Tensor[B, max_det, 6]), counts (Tensor[B]).

    Class-aware, multi-label NMS as :func:`detector.ops.nms.postprocess_scores` with ``method="iou"``; exported as
    ONNX ``NonMaxSuppression`` (keeping ``max_det`` per class, enough for the ``max_det`` best of an image).
    """
    selected = _NonMaxSuppression.apply(boxes, scores.transpose(1, 2), int(max_det), float(iou_thres),
                                        float(conf_thres))  # (K, 3) image, class, prior
    b, c, p = selected[:, 0], selected[:, 1], selected[:, 2]
    rows = torch.cat((boxes[b, p], scores[b, p, c][:, None], c[:, None].to(boxes.dtype)), 1)  # (K, 6)
    return _best_per_image(b, rows, scores.shape[0], int(max_det))


def topk_detections(boxes: Tensor, scores: Tensor, conf_thres: float, max_det: int) -> tuple[Tensor, Tensor]:
    """NMS-free heads: the ``D = min(max_det, P * C)`` best (prior, class) scores of each image; rows scoring
    ``<= conf_thres`` are zeros. boxes (Tensor[B, P, 4]), scores (Tensor[B, P, C]) -> (Tensor[B, D, 6], Tensor[B])."""
    num_priors, num_classes = scores.shape[1], scores.shape[2]
    best, index = scores.flatten(1).topk(min(int(max_det), num_priors * num_classes), dim=1)  # (B, D)
    prior = torch.div(index, num_classes, rounding_mode="floor")  # (B, D)
    cls = index - prior * num_classes
    picked = torch.gather(boxes, 1, prior[..., None].expand(-1, -1, 4))  # (B, D, 4)
    valid = best > conf_thres  # (B, D), sorted so the valid rows come first
    rows = torch.cat((picked, best[..., None], cls[..., None].to(boxes.dtype)), -1) * valid[..., None]
    return rows, valid.sum(1)


class Detections(nn.Module):
    """``images -> (detections Tensor[B, D, 6], num_detections Tensor[B])``: :class:`RawOutputs` + post-processing.

    Args:
        raw: the raw graph; eval_cfg: the run's ``eval`` section (``nms`` ``iou`` or ``none``, ``conf_thres``,
        ``iou_thres``, ``max_det``).
    """

    def __init__(self, raw: RawOutputs, eval_cfg):
        super().__init__()
        if eval_cfg.nms not in ("iou", "none") or eval_cfg.variance_voting:
            what = "variance voting" if eval_cfg.variance_voting else f"eval.nms={eval_cfg.nms!r}"
            raise ValueError(f"export: {what} has no ONNX operator here; export with postprocess='raw' and "
                             "post-process outside the graph, or set eval.nms to iou (NMS) or none (top-k)")
        self.raw, self.eval_cfg = raw, eval_cfg

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = self.raw(images)
        e = self.eval_cfg
        if e.nms == "none":
            return topk_detections(boxes, scores, e.conf_thres, e.max_det)
        return nms_detections(boxes, scores, e.conf_thres, e.iou_thres, e.max_det)


def export_onnx(module: nn.Module, path: str | os.PathLike, image_size: tuple[int, int], postprocess: str,
                batch_size: int = 2, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``module`` (:class:`RawOutputs` or :class:`Detections`) on a random batch and write ONNX to ``path``.

    The input is ``images`` with a dynamic axis 0 (``batch``); the outputs are ``OUTPUTS[postprocess]``, also
    dynamic in axis 0. Uses the TorchScript exporter (``dynamo=False``). Returns ``Path(path)``.
    """
    if postprocess not in OUTPUTS:
        raise ValueError(f"export: postprocess must be one of {sorted(OUTPUTS)}, got {postprocess!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = OUTPUTS[postprocess]
    device = next(module.parameters()).device
    images = torch.rand(batch_size, 3, *image_size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks become constants
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")  # indices are never negative
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")  # torchvision's batched_nms
        torch.onnx.export(module.eval(), (images,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=list(names),
                          dynamic_axes={name: {0: "batch"} for name in ("images", *names)})
    return path


def model_from_checkpoint(path: str | os.PathLike, use_ema: bool = True):
    """``(model in eval mode on the CPU, config)`` of a checkpoint written by ``tools/train.py``.

    The EMA weights unless ``use_ema`` is False or the run kept none. Raises CheckpointError (unreadable file, or
    no ``num_classes``) and ConfigError (a stored config this code no longer accepts), both naming the file.
    """
    from detector import build
    from detector.config import config_from_dict

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("num_classes"), int):
        raise CheckpointError(f"checkpoint file {path} has no integer 'num_classes'; was it written by tools/train.py?")
    cfg = config_from_dict(ckpt["config"], source=str(path))
    model = build.build_model(cfg, num_classes=ckpt["num_classes"])
    model.load_state_dict(ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"])
    return model.eval(), cfg


def export_module(model: nn.Module, cfg, image_size: tuple[int, int], postprocess: str) -> nn.Module:
    """The module to export: :class:`RawOutputs` (``postprocess="raw"``) or :class:`Detections` under ``cfg.eval``."""
    from detector import build

    raw = RawOutputs(model.cpu(), build.build_coder(cfg), image_size)
    return raw if postprocess == "raw" else Detections(raw, cfg.eval)


def onnxruntime_max_error(path: str | os.PathLike, module: nn.Module, images: Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and ``module`` in PyTorch on ``images``: max |difference| per output.

    ``detections`` rows are compared order-free (each row with its nearest row of the other side's image, both
    ways): two detections whose scores differ by float rounding may swap places. Needs ``onnxruntime``
    (``pip install -e ".[export]"``); ImportError otherwise.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.cpu().numpy()})
    with torch.no_grad():
        expected = module.eval()(images.cpu())
    names = [o.name for o in session.get_outputs()]
    return {n: _max_error(torch.as_tensor(g), e, order_free=n == "detections") for n, g, e in zip(names, got, expected)}


def _max_error(got: Tensor, expected: Tensor, order_free: bool) -> float:
    """max |got - expected|; with ``order_free``, rows of Tensor[B, D, 6] matched to their nearest row (L-inf)."""
    if got.numel() == 0:
        return 0.0
    if not order_free:
        return float((got.to(expected.dtype) - expected).abs().max())
    dist = torch.cdist(got.double(), expected.double(), p=float("inf"))  # (B, D, D)
    return float(torch.maximum(dist.min(2).values.max(), dist.min(1).values.max()))
