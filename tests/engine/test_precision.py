"""Autocast and memory format per device (detector.engine.precision), and half-precision outputs reaching the loss:
every preset trains a step under CPU bfloat16 autocast, with the sparse row gradients of its criterion intact."""
from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest
import torch

from detector import build
from detector.config import CONFIG_DIR, load_config
from detector.engine import precision as precision_module
from detector.engine.evaluate import float32_outputs
from detector.engine.precision import precision
from detector.ops.rows import gather_rows, to_dtype

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
IMG, NUM_CLASSES = 64, 3


def test_docstring_examples():
    assert doctest.testmod(precision_module).failed == 0


@pytest.mark.parametrize("device,amp,cpu_amp,expected", [
    ("cuda", True, False, torch.float16), ("cuda", False, True, None), ("cpu", True, False, None),
    ("cpu", False, True, torch.bfloat16), ("meta", True, True, None)])
def test_autocast_dtype_per_device(device, amp, cpu_amp, expected):
    tc = SimpleNamespace(amp=amp, amp_dtype="float16", cpu_amp=cpu_amp, channels_last=True)
    assert precision(tc, torch.device(device)) == (expected, device in ("cuda", "cpu"))
    tc.amp_dtype = "bfloat16"
    assert precision(tc, torch.device("cuda"))[0] == (torch.bfloat16 if amp else None)


def test_to_dtype_sends_a_sparse_gradient_back_sparse_in_the_input_dtype():
    x = torch.randn(2, 5, 3).to(torch.bfloat16).requires_grad_()
    b, p = torch.tensor([0, 1, 1]), torch.tensor([4, 0, 0])  # a repeated pair adds up
    rows = gather_rows(to_dtype(x, torch.float32), b, p)  # (3, 3) float32, sparse gradient
    assert rows.dtype == torch.float32
    (rows * torch.arange(1.0, 4.0)).sum().backward()
    assert x.grad.layout == torch.sparse_coo and x.grad.dtype == torch.bfloat16
    expected = torch.zeros(2, 5, 3)
    expected[0, 4] = expected[1, 0] = torch.arange(1.0, 4.0)
    expected[1, 0] *= 2
    torch.testing.assert_close(x.grad.to_dense().float(), expected)
    y = torch.randn(3, requires_grad=True)
    assert to_dtype(y, torch.float32) is y


def _targets() -> torch.Tensor:
    return torch.tensor([[0, 0, 4.0, 6.0, 20.0, 30.0], [0, 2, 10.0, 10.0, 60.0, 50.0], [1, 1, 30.0, 20.0, 38.0, 29.0]])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_a_step_under_cpu_bfloat16_autocast(name):
    """Before to_dtype, the YOLO presets' sparse row gradients crashed autograd's cast back to the half-precision
    outputs (on CUDA float16 as well): 'to(options) doesn't support converting to a different layout'."""
    cfg = load_config(name, [f"data.img_size={IMG}"])
    torch.manual_seed(0)
    model, criterion = build.build_model(cfg, NUM_CLASSES), build.build_criterion(cfg, NUM_CLASSES)
    build.link_class_rows(model, criterion)  # as build_all: uncopied class logits where the criterion allows
    images = torch.rand(2, 3, IMG, IMG)
    reference = criterion(float32_outputs(model(images)), _targets())["loss"].detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
    losses = criterion(float32_outputs(outputs), _targets())
    assert losses["loss"].dtype == torch.float32
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(losses["loss"].detach(), reference, rtol=0.1, atol=0.0)  # bfloat16 forward: ~1e-2
