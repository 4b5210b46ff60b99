"""Tests for detector/models/detector.py and heads/yolo.py: YOLOv5 v6+ sizes, shapes, init, gradients."""
import copy
import math

import pytest
import torch
from torch import nn

from detector.models import YOLOV5_ANCHORS, Detector, build_yolov5, count_parameters, fuse_conv_bn
from detector.models.heads.yolo import init_yolov5_detect_bias
from detector.ops.coders import YOLOv5BoxCoder

# Published by YOLOv5 (v6.0 onward, 80 classes). The model summary YOLOv5 prints after fusing BatchNorm
# into the convolutions (README table, val.py, detect.py) gives yolov5n 1,867,405 and yolov5s 7,225,885;
# the unfused summary printed by train.py gives yolov5s 7,235,389.
YOLOV5N_PUBLISHED_FUSED = 1_867_405
YOLOV5S_PUBLISHED = 7_235_389
YOLOV5S_PUBLISHED_FUSED = 7_225_885


@pytest.fixture(scope="module")
def yolov5n():
    torch.manual_seed(0)
    return build_yolov5("n", num_classes=80)


def _bn_channels(model: nn.Module) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(
    "size, published, published_fused",
    [("n", None, YOLOV5N_PUBLISHED_FUSED), ("s", YOLOV5S_PUBLISHED, YOLOV5S_PUBLISHED_FUSED)],
)
def test_parameter_counts_match_published_yolov5(size, published, published_fused):
    """Fusing replaces each BatchNorm's weight and bias (2 per channel) by a conv bias (1 per channel),
    so unfused - fused = number of BatchNorm channels; both forms are checked where published."""
    model = build_yolov5(size, num_classes=80).eval()
    n_unfused = count_parameters(model)
    bn = _bn_channels(model)
    n_fused = count_parameters(fuse_conv_bn(model))
    print(f"yolov5{size}: {n_unfused:,} parameters ({n_fused:,} fused, {bn:,} BatchNorm channels)")
    reference = published if published is not None else published_fused
    assert abs(n_unfused - reference) / reference < 0.01
    assert n_fused == published_fused
    if published is not None:
        assert n_unfused == published
    assert n_unfused - n_fused == bn


@pytest.mark.parametrize("hw, levels", [((64, 64), [(8, 8), (4, 4), (2, 2)]), ((96, 128), [(12, 16), (6, 8), (3, 4)])])
def test_output_shapes(yolov5n, hw, levels):
    """P = 3 * sum(H_l * W_l): 64x64 -> 3 * (64 + 16 + 4) = 252; 96x128 -> 3 * (192 + 48 + 12) = 756."""
    with torch.no_grad():
        out = yolov5n(torch.rand(2, 3, *hw))
    p = 3 * sum(h * w for h, w in levels)
    assert p == {(64, 64): 252, (96, 128): 756}[hw]
    assert out.box.shape == (2, p, 4) and out.obj.shape == (2, p) and out.cls.shape == (2, p, 80)
    assert out.box_log_var is None
    assert out.priors.level_shapes == [(3, h, w) for h, w in levels] and len(out.priors) == p
    assert out.num_classes == 80 and out.batch_size == 2


def test_detector_attributes(yolov5n):
    assert isinstance(yolov5n, Detector)
    assert yolov5n.num_classes == 80 and yolov5n.strides == (8, 16, 32)
    assert [a.tolist() for a in yolov5n.anchors] == [torch.tensor(a).reshape(3, 2).tolist() for a in YOLOV5_ANCHORS]
    assert yolov5n.anchors[0].tolist() == [[10, 13], [16, 30], [33, 23]]


def test_custom_anchors_and_multiples():
    """2 anchors per level and C = 3: head convs output 2 * (5 + 3) = 16 channels; P = 2 * (4 + 1 + 1)."""
    anchors = [[[8, 8], [16, 16]], [[32, 32], [48, 48]], [[96, 96], [200, 200]]]
    m = build_yolov5("s", num_classes=3, anchors=anchors, depth_multiple=0.33, width_multiple=0.125)
    assert [c.out_channels for c in m.head.convs] == [16, 16, 16]
    assert m.backbone.out_channels == (32, 64, 128)  # 256/512/1024 * 0.125
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 32))
    assert out.box.shape == (1, 2 * (8 * 4 + 4 * 2 + 2 * 1), 4)
    assert m.anchors[2].tolist() == [[96, 96], [200, 200]]


@pytest.mark.parametrize("hw", [(65, 64), (64, 48), (32, 100)])
def test_input_not_multiple_of_32_raises(yolov5n, hw):
    with pytest.raises(ValueError, match="not a multiple of the largest stride 32"):
        yolov5n(torch.rand(1, 3, *hw))


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown size 'q'"):
        build_yolov5("q")
    with pytest.raises(ValueError, match="do not match the YOLOv5 architecture"):
        build_yolov5("n", strides=(8, 16, 64))
    with pytest.raises(ValueError, match="one list of anchors per stride"):
        build_yolov5("n", anchors=YOLOV5_ANCHORS[:2])


def test_detect_bias_init_exact_values_on_zeroed_conv():
    """YOLOv5's _initialize_biases with C = 80, A = 3, K = 85:
    obj += log(8 / (640 / s)^2): s=8 -> log(8/6400) = -6.684612, s=16 -> log(8/1600) = -5.298317,
    s=32 -> log(8/400) = -3.912023; cls += log(0.6 / (80 - 0.99)) = log(0.6 / 79.01) = -4.880400; box stays 0.
    With box uncertainty (K = 89) the 4 trailing log-variance channels are set to 0."""
    for stride, obj in ((8, -6.684612), (16, -5.298317), (32, -3.912023)):
        for unc, k in ((False, 85), (True, 89)):
            conv = nn.Conv2d(4, 3 * k, 1)
            with torch.no_grad():
                conv.bias.view(3, k)[:, :85] = 0.0
                conv.bias.view(3, k)[:, 85:] = 7.0  # log-variance starts at 7: it must be set to 0, not added to
            init_yolov5_detect_bias(conv, 3, 80, stride, box_uncertainty=unc)
            b = conv.bias.detach().view(3, k)
            assert b[:, :4].abs().max().item() == 0.0
            torch.testing.assert_close(b[:, 4], torch.full((3,), obj), atol=1e-6, rtol=0)
            torch.testing.assert_close(b[:, 5:85], torch.full((3, 80), -4.880400), atol=1e-6, rtol=0)
            if unc:
                assert b[:, 85:].abs().max().item() == 0.0


def test_detect_bias_init_on_built_model(yolov5n):
    """PyTorch draws the default conv bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 64, 128, 256
    for yolov5n's P3/P4/P5 (bounds 0.125, 0.0884, 0.0625); YOLOv5 adds its offsets on top, so
    bias - offset must lie within that bound, channel by channel."""
    for conv, stride, c_in in zip(yolov5n.head.convs, (8, 16, 32), (64, 128, 256)):
        bound = 1 / math.sqrt(c_in)
        b = conv.bias.detach().view(3, 85)
        assert b[:, :4].abs().max() <= bound
        assert (b[:, 4] - math.log(8 / (640 / stride) ** 2)).abs().max() <= bound
        assert (b[:, 5:] - math.log(0.6 / 79.01)).abs().max() <= bound


def test_box_uncertainty_adds_log_variance_channels():
    """Per level the 1x1 conv gains A * 4 = 12 output channels, each with c_in weights and 1 bias:
    yolov5n: 12 * (64 + 1) + 12 * (128 + 1) + 12 * (256 + 1) = 780 + 1548 + 3084 = 5412;
    yolov5s: 12 * (129 + 257 + 513) = 10788."""
    for size, extra in (("n", 5412), ("s", 10788)):
        plain = count_parameters(build_yolov5(size, num_classes=80))
        model = build_yolov5(size, num_classes=80, box_uncertainty=True)
        assert count_parameters(model) - plain == extra
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.box_log_var.shape == (1, 252, 4) and out.cls.shape == (1, 252, 80)
    for conv in model.head.convs:
        assert conv.bias.detach().view(3, 89)[:, 85:].abs().max().item() == 0.0
    # bias 0 and default weights: the initial log-variance is moderate, far from exp overflow/underflow
    assert out.box_log_var.abs().max().item() < 5.0


def test_backward_gives_finite_gradients_everywhere():
    torch.manual_seed(0)
    model = build_yolov5("n", num_classes=4, box_uncertainty=True).train()
    out = model(torch.rand(2, 3, 64, 96))
    loss = out.box.square().mean() + out.obj.sigmoid().mean() + out.cls.mean() + out.box_log_var.exp().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_decode_of_initial_outputs_is_finite_and_near_anchors(yolov5n):
    """At init the raw box logits are near 0, so decoded boxes are near (2 * 0.5)^2 * anchor in size."""
    with torch.no_grad():
        out = yolov5n(torch.rand(1, 3, 64, 64))
    boxes = YOLOv5BoxCoder().decode(out.box.float(), out.priors)
    wh = boxes[..., 2:] - boxes[..., :2]
    assert bool(torch.isfinite(boxes).all())
    ratio = wh[0] / out.priors.anchors
    assert ratio.min() > 0.1 and ratio.max() < 4.0


def test_channels_last_matches_contiguous(yolov5n):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 96)
    model = copy.deepcopy(yolov5n).eval()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.box, ref.box, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.cls, ref.cls, atol=1e-4, rtol=1e-4)


def test_cpu_autocast_bfloat16_outputs_and_float32_priors(yolov5n):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = yolov5n.eval()(torch.rand(1, 3, 64, 64))
    assert out.box.dtype == torch.bfloat16 and out.priors.grid.dtype == torch.float32
    boxes = YOLOv5BoxCoder().decode(out.box, out.priors)
    assert boxes.dtype == torch.float32 and bool(torch.isfinite(boxes).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_channels_last_backward():
    model = build_yolov5("n", num_classes=80).cuda().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 128, 96, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.float16):
        out = model(x)
        loss = out.box.float().square().mean() + out.obj.float().mean() + out.cls.float().mean()
    assert out.box.dtype == torch.float16 and out.priors.grid.device.type == "cuda"
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_fuse_conv_bn_preserves_eval_outputs():
    """Folding BN (with non-trivial running statistics) into the convs keeps eval outputs and removes every BN."""
    torch.manual_seed(0)
    model = build_yolov5("n", num_classes=5).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_conv_bn(copy.deepcopy(model))
        out = fused(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(out.box, ref.box, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.obj, ref.obj, atol=1e-4, rtol=1e-4)


def test_count_parameters_trainable_only():
    """A 1x1 conv 2->3 with bias has 6 + 3 = 9 parameters; freezing the bias leaves 6 trainable."""
    conv = nn.Conv2d(2, 3, 1)
    conv.bias.requires_grad_(False)
    assert count_parameters(conv) == 9 and count_parameters(conv, trainable_only=True) == 6
