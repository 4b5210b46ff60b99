"""YOLOv5's ``ComputeLoss`` (ultralytics/yolov5 ``utils/loss.py``, v7.0), re-derived op for op, to time beside this
project's YOLOv5 preset in one process (``bench_assign.py --yolov5``).

It works as YOLOv5 does, on what YOLOv5's ``Detect`` hands it in training (float32 there; here the dtype of ``p``): per level a contiguous
``(B, A, H, W, 5 + C)`` tensor (the convolution output viewed and permuted, then ``.contiguous()``), and targets
``(image, class, cx, cy, w, h)`` normalised to the input size. ``build_targets`` repeats the targets per anchor,
keeps those whose width / height ratio to the anchor is below ``anchor_t``, adds the two nearest neighbour cells
(offset 0.5) and clamps the cell indices; the loss is the CIoU box term (mean over pairs), BCE objectness against the
detached, clamped CIoU on the whole ``(B, A, H, W)`` map weighted per level by ``balance``, and BCE classes on the
pairs, times the gains (``train.py`` scales box / cls / obj by ``3 / nl``, ``nc / 80`` and ``(imgsz / 640) ** 2``),
total times the batch size. ``tests/benchmarks/test_yolov5_loss.py`` checks that it gives the project's YOLOv5
preset's loss and gradient on real coco128 boxes, so the two time the same computation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def ciou_xywh(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU of (cx, cy, w, h) rows, Tensor[n, 4] each -> Tensor[n] (YOLOv5's ``bbox_iou(..., CIoU=True)``)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (b1x2.minimum(b2x2) - b1x1.maximum(b2x1)).clamp(0) * (b1y2.minimum(b2y2) - b1y1.maximum(b2y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw, ch = b1x2.maximum(b2x2) - b1x1.minimum(b2x1), b1y2.maximum(b2y2) - b1y1.minimum(b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return (iou - (rho2 / c2 + v * alpha)).squeeze(-1)


class YOLOv5ComputeLoss:
    """``loss(p, targets) -> (total Tensor[1], (lbox, lobj, lcls) detached)``.

    Args:
        anchors (Tensor[nl, A, 2]): anchor (w, h) in pixels per level.
        strides: stride of each level.
        nc: classes. img_size: input side (for the objectness gain). hyp: box / obj / cls gains before scaling.
        sort_obj_iou: YOLOv5's option (off by default there): a prior in several pairs gets the highest IoU as its
            objectness target, which is what this project's YOLOv5 preset does; off, the last pair written wins.
    """

    def __init__(self, anchors: Tensor, strides, nc: int, img_size: int, hyp=None, anchor_t: float = 4.0,
                 balance=(4.0, 1.0, 0.4), sort_obj_iou: bool = False):
        hyp = dict(hyp or {"box": 0.05, "obj": 1.0, "cls": 0.5})
        nl = len(strides)
        self.box_gain = hyp["box"] * 3 / nl
        self.cls_gain = hyp["cls"] * nc / 80 * 3 / nl
        self.obj_gain = hyp["obj"] * (img_size / 640) ** 2 * 3 / nl
        self.anchors = anchors / torch.as_tensor(strides, dtype=anchors.dtype)[:, None, None]  # grid units
        self.na, self.nl, self.nc, self.anchor_t, self.balance = anchors.shape[1], nl, nc, anchor_t, balance
        self.sort_obj_iou = sort_obj_iou

    def __call__(self, p: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        device, dtype = targets.device, p[0].dtype
        lcls, lbox, lobj = (torch.zeros(1, device=device, dtype=dtype) for _ in range(3))
        tcls, tbox, indices, anch = self.build_targets(p, targets)
        for i, pi in enumerate(p):  # (B, A, H, W, 5 + C)
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anch[i]
                iou = ciou_xywh(torch.cat((pxy, pwh), 1), tbox[i])
                lbox += (1.0 - iou).mean()
                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.sort_obj_iou:  # a cell in several pairs keeps the highest IoU (written last)
                    j = iou.argsort()
                    b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                tobj[b, a, gj, gi] = iou
                if self.nc > 1:
                    t = torch.full_like(pcls, 0.0)
                    t[range(n), tcls[i]] = 1.0
                    lcls += F.binary_cross_entropy_with_logits(pcls, t)
            lobj += F.binary_cross_entropy_with_logits(pi[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        bs = p[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, p: list[Tensor], targets: Tensor):
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=targets.device, dtype=targets.dtype)
        ai = torch.arange(na, device=targets.device).to(targets.dtype).view(na, 1).repeat(1, nt)  # (na, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = 0.5
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=targets.device).to(targets.dtype) * g
        for i in range(self.nl):
            anchors, shape = self.anchors[i], p[i].shape
            gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]  # xyxy gain
            t = targets * gain  # (na, nt, 7) in grid units
            if nt:
                r = t[..., 4:6] / anchors[:, None]  # wh ratio
                t = t[torch.max(r, 1 / r).max(2)[0] < self.anchor_t]  # (k, 7)
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy  # inverse
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                l, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, l, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t, offsets = targets[0], 0
            bc, gxy, gwh, a = t.chunk(4, 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij.T
            indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch


def normalised_xywh(targets: Tensor, img_size: int) -> Tensor:
    """(image, class, x1, y1, x2, y2) in pixels -> YOLOv5's (image, class, cx, cy, w, h) normalised by the input."""
    xyxy = targets[:, 2:6] / img_size
    return torch.cat((targets[:, :2], (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)
