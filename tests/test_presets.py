"""Every preset in ``configs/`` builds, its criterion runs forward and backward on the real model's outputs, and its
predictions score the way its head was trained. (That each one learns is in tests/engine/test_presets_learn.py.)"""
from __future__ import annotations

import pytest
import torch

from detector import build
from detector.config import CONFIG_DIR, load_config
from detector.engine.trainer import predict
from detector.errors import ConfigError

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
IMG, NUM_CLASSES = 64, 3


def _targets() -> torch.Tensor:
    # (image_index, class, x1, y1, x2, y2): boxes of several sizes; image 1 has one box, so both images train.
    return torch.tensor([[0, 0, 4.0, 6.0, 20.0, 30.0], [0, 2, 10.0, 10.0, 60.0, 50.0], [1, 1, 30.0, 20.0, 38.0, 29.0]])


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_one_step_and_predicts(name):
    cfg = load_config(name, [f"data.img_size={IMG}"])
    torch.manual_seed(0)
    model = build.build_model(cfg, NUM_CLASSES)
    criterion = build.build_criterion(cfg, NUM_CLASSES)
    images = torch.rand(2, 3, IMG, IMG)
    losses = criterion(model(images), _targets())
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0, losses
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert criterion.last_assignment.num_pos > 0
    model.eval()
    dets = predict(model, build.build_coder(cfg), images, cfg.eval)
    assert len(dets) == 2 and all(d.shape[1] == 6 for d in dets)
    scores = torch.cat([d[:, 4] for d in dets])
    assert bool(((scores >= 0) & (scores <= 1)).all())


def test_a_head_without_objectness_refuses_an_objectness_loss():
    with pytest.raises(ConfigError, match="loss.obj: head 'retina' has no objectness: set loss.obj: null"):
        build.check_parts(load_config("retinanet_focal", ["loss.obj=bce"]))


def test_an_anchor_assigner_on_point_priors_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="assigner.name: 'rpn' needs anchor priors.*valid with points: .*fcos"):
        build.check_parts(load_config("fcos", ["assigner=rpn"]))


def test_a_softmax_head_needs_cross_entropy():
    with pytest.raises(ConfigError, match="loss.cls: head 'ssd' scores a softmax over a background class"):
        build.check_parts(load_config("ssd", ["loss.cls=bce"]))


def test_part_errors_name_the_file_line_and_the_valid_parameters(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: yolov5_ciou.yaml\nassigner:\n  name: yolov5\n  anchor_tt: 4.0\n")
    with pytest.raises(ConfigError) as err:
        build.check_parts(load_config(path))
    assert f"{path}:4: assigner.anchor_tt" in str(err.value) and "anchor_t" in str(err.value)
    path.write_text("base: yolov5_ciou.yaml\nassigner:\n  name: yolov5\n  anchor_t: 1.0\n")
    with pytest.raises(ConfigError, match="anchor_t must be > 1"):
        build.check_parts(load_config(path))
    with pytest.raises(ConfigError, match="unknown assigner 'atsss'"):
        build.check_parts(load_config("yolov5_ciou", ["assigner=atsss"]))
