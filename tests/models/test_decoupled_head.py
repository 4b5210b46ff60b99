"""The decoupled head: channel layout, tower widths, bias initialisation, and each tower feeding only its outputs."""
from __future__ import annotations

import math

import pytest
import torch

from detector.models.heads.decoupled import DecoupledHead
from detector.models.priors import PointPriorGenerator


def features(channels=(16, 32), sizes=((4, 4), (2, 2)), batch=2):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


def test_widths_follow_yolov8_rule():
    """yolov8n on COCO: finest input 64 channels, 16 bins x 4 = 64 box outputs -> box tower max(16, 64 // 4, 64) = 64,
    class tower max(64, min(80, 100)) = 80 channels."""
    head = DecoupledHead([64, 128, 256], 80, 1, [8, 16, 32], box_outputs=64)
    assert head.box_towers[0][0].conv.out_channels == 64
    assert head.cls_towers[0][0].conv.out_channels == 80
    assert len(head.box_towers[0]) == 3  # two 3x3 convolutions and the 1x1 prediction


def test_bias_initialisation_by_hand():
    """Stride 8, C = 80: class bias log(5 / 80 / (640 / 8)^2) = log(5 / 512000) = -11.5366; DFL bins 1.0;
    objectness log(8 / 6400) = -6.6846 (YOLOv5's)."""
    head = DecoupledHead([16], 80, 1, [8], objectness=True, box_outputs=64)
    assert torch.allclose(head.cls_towers[0][-1].bias, torch.tensor(math.log(5 / 512000)))
    box_bias = head.box_towers[0][-1].bias
    assert torch.all(box_bias[:64] == 1.0)
    assert box_bias[64].item() == pytest.approx(math.log(8 / 6400))


def test_softmax_head_starts_at_background():
    head = DecoupledHead([16], 3, 2, [8], background=True)
    x = features((16,), ((2, 2),))
    out = head(x)[0]  # (B, A, H, W, K), K = 4 + 3 + 1
    probs = out[..., 4:].softmax(-1)
    # the 1x1 weights add a small random term; without it the background probability is exactly 0.99
    assert out.shape == (2, 2, 2, 2, 8) and probs[..., -1].mean() > 0.9


@pytest.mark.parametrize("kw,k", [({}, 4 + 3), ({"objectness": True}, 5 + 3), ({"quality": True, "box_outputs": 8}, 12),
                                  ({"box_uncertainty": True, "objectness": True}, 12)])
def test_each_output_comes_from_its_tower(kw, k):
    """Box values, objectness, log-variances and quality depend only on the box tower, classes only on the class
    tower: a gradient through one kind of output reaches only its tower's weights."""
    head = DecoupledHead([16, 32], 3, 1, [8, 16], **kw)
    levels = head(features())
    assert [t.shape for t in levels] == [(2, 1, 4, 4, k), (2, 1, 2, 2, k)]
    priors = PointPriorGenerator([8, 16])([(4, 4), (2, 2)], "cpu", torch.float32)
    out = head.flatten(levels, priors)
    def reached(tower):  # every parameter of the tower got a non-zero gradient / none did
        grads = [p.grad for p in tower.parameters()]
        return [g is not None and bool(g.abs().sum() > 0) for g in grads]

    out.cls.sum().backward(retain_graph=True)
    assert not any(reached(head.box_towers)) and all(reached(head.cls_towers))
    head.zero_grad(set_to_none=True)
    box_like = out.box.sum() + sum(getattr(out, n).sum() for n in ("obj", "quality", "box_log_var")
                                   if getattr(out, n) is not None)
    box_like.backward()
    assert not any(reached(head.cls_towers)) and all(reached(head.box_towers))


def test_layout_matches_yolo_head_order():
    """With objectness and centerness the K channels are (box, obj, classes, quality): the classes come from the
    class tower's output, the rest from the box tower's, in that order."""
    head = DecoupledHead([8], 2, 1, [8], objectness=True, quality=True, depth=0)
    x = features((8,), ((1, 1),), batch=1)
    y = head(x)[0][0, 0, 0, 0]  # (K,) = 4 + 1 + 2 + 1
    box = head.box_towers[0](x[0])[0, :, 0, 0]  # (R + obj + quality,)
    cls = head.cls_towers[0](x[0])[0, :, 0, 0]
    torch.testing.assert_close(y, torch.cat([box[:5], cls, box[5:]]))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        DecoupledHead([8], 2, 1, [8], depth=-1)
    with pytest.raises(ValueError, match="levels"):
        DecoupledHead([8, 16], 2, 1, [8])
