"""Tests for detector/models/common.py, backbones/csp.py and necks/pan.py."""
import torch
from torch import nn
import torch.nn.functional as F

from detector.models.backbones.csp import CSPDarknet
from detector.models.common import C3, SPPF, Bottleneck, Conv, make_divisible, scale_depth
from detector.models.necks.pan import YOLOv5PAN


def test_make_divisible_rounds_up_to_multiple():
    """ceil(x / 8) * 8: 64 * 0.25 = 16 -> 16; 20.5 -> 24; 1024 * 1.25 = 1280 -> 1280; 1 -> 8; 48 * 0.5 = 24 -> 24."""
    assert make_divisible(64 * 0.25) == 16
    assert make_divisible(20.5) == 24
    assert make_divisible(1024 * 1.25) == 1280
    assert make_divisible(1) == 8
    assert make_divisible(24.0) == 24


def test_scale_depth_matches_yolov5_rounding():
    """max(round(n * d), 1) for n > 1:
    3 * 0.33 = 0.99 -> 1, 6 * 0.33 = 1.98 -> 2, 9 * 0.33 = 2.97 -> 3 (yolov5n/s),
    3 * 0.67 = 2.01 -> 2, 9 * 0.67 = 6.03 -> 6 (yolov5m), 3 * 1.33 = 3.99 -> 4, 9 * 1.33 = 11.97 -> 12 (x),
    3 * 0.1 = 0.3 -> 0 -> clamped to 1; n = 1 stays 1 whatever d."""
    assert [scale_depth(n, 0.33) for n in (3, 6, 9)] == [1, 2, 3]
    assert [scale_depth(n, 0.67) for n in (3, 6, 9)] == [2, 4, 6]
    assert [scale_depth(n, 1.33) for n in (3, 6, 9)] == [4, 8, 12]
    assert scale_depth(3, 0.1) == 1
    assert scale_depth(1, 5.0) == 1


def test_conv_uses_yolov5_batchnorm_and_inplace_silu():
    m = Conv(4, 8, 3, 2)
    assert m.bn.eps == 1e-3 and m.bn.momentum == 0.03
    assert isinstance(m.act, nn.SiLU) and m.act.inplace
    assert m.conv.bias is None and m.conv.padding == (1, 1)
    assert m(torch.rand(1, 4, 10, 10)).shape == (1, 8, 5, 5)


def test_conv_forward_equals_functional_composition():
    """Conv = silu(batch_norm(conv2d(x))), checked against torch.nn.functional in eval mode."""
    torch.manual_seed(0)
    m = Conv(3, 5, 3, 1).eval()
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 7, 7)
    ref = F.silu(F.batch_norm(F.conv2d(x, m.conv.weight, padding=1), m.bn.running_mean, m.bn.running_var,
                              m.bn.weight, m.bn.bias, eps=1e-3))
    torch.testing.assert_close(m(x), ref)


def test_bottleneck_residual_only_when_shapes_match():
    """With cv2's BN weight and bias zeroed, cv2 outputs silu(0) = 0, so the block returns x (residual) or 0."""
    x = torch.randn(1, 8, 4, 4)
    for shortcut, expected in ((True, x), (False, torch.zeros_like(x))):
        b = Bottleneck(8, 8, shortcut=shortcut).eval()
        nn.init.zeros_(b.cv2.bn.weight)
        nn.init.zeros_(b.cv2.bn.bias)
        torch.testing.assert_close(b(x), expected)
    assert not Bottleneck(8, 16).add


def test_c3_parameter_count_by_hand():
    """C3(16, 32, n=1): hidden 16. cv1, cv2: 1x1 16->16: 256 + BN 32 each = 288 * 2 = 576;
    cv3: 1x1 32->32: 1024 + 64 = 1088; bottleneck: 1x1 16->16 (288) + 3x3 16->16 (2304 + 32 = 2336) = 2624.
    Total 576 + 1088 + 2624 = 4288."""
    m = C3(16, 32, n=1)
    assert sum(p.numel() for p in m.parameters()) == 4288
    assert m(torch.rand(2, 16, 6, 6)).shape == (2, 32, 6, 6)


def test_sppf_equals_spp_with_kernels_5_9_13():
    """SPPF's three chained 5x5 stride-1 max-pools equal parallel pools of 5, 9 and 13 (YOLOv5's SPP)."""
    torch.manual_seed(0)
    m = SPPF(8, 8, 5).eval()
    x = torch.randn(1, 8, 9, 11)
    y = m.cv1(x)
    pools = [F.max_pool2d(y, k, 1, k // 2) for k in (5, 9, 13)]
    ref = m.cv2(torch.cat([y, *pools], dim=1))
    torch.testing.assert_close(m(x), ref)


def test_backbone_and_neck_shapes_for_yolov5n_widths():
    """width 0.25: P3/P4/P5 channels 256, 512, 1024 * 0.25 = 64, 128, 256; 64x96 input -> 8x12, 4x6, 2x3."""
    bb = CSPDarknet(3, depth_multiple=0.33, width_multiple=0.25)
    neck = YOLOv5PAN(bb.out_channels, depth_multiple=0.33)
    assert bb.out_channels == (64, 128, 256) and neck.out_channels == (64, 128, 256)
    feats = neck(bb(torch.rand(1, 3, 64, 96)))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)]
