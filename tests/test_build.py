"""Every loss name is reachable from a config: ``--set loss.box=<name>`` (and cls / obj) builds a criterion with
the real YOLOv5 assigner that runs forward and backward on the real model's outputs."""
from __future__ import annotations

import pytest
import torch

from detector import build
from detector.config import load_config
from detector.errors import ConfigError
from detector.losses import BOX, CLS

IMG = 64
NUM_CLASSES = 3


def _targets() -> torch.Tensor:
    # (image_index, class, x1, y1, x2, y2) in input pixels: boxes of several sizes so all levels get pairs.
    return torch.tensor([
        [0, 0, 4.0, 6.0, 20.0, 30.0],
        [0, 2, 10.0, 10.0, 60.0, 50.0],
        [1, 1, 30.0, 20.0, 38.0, 29.0],
    ])


def _loss_on_model_outputs(overrides: list[str]) -> dict[str, torch.Tensor]:
    cfg = load_config("yolov5_ciou", [f"data.img_size={IMG}"] + overrides)
    torch.manual_seed(0)
    model = build.build_model(cfg, NUM_CLASSES)
    criterion = build.build_criterion(cfg, NUM_CLASSES)
    outputs = model(torch.rand(2, 3, IMG, IMG))
    losses = criterion(outputs, _targets())
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    return losses


@pytest.mark.parametrize("name", sorted(BOX))
def test_every_box_loss_from_config(name):
    extra = ["model.box_uncertainty=true"] if name == "kl" else []
    losses = _loss_on_model_outputs([f"loss.box={name}"] + extra)
    assert losses["lbox"] > 0


@pytest.mark.parametrize("name", sorted(CLS))
def test_every_cls_loss_from_config(name):
    losses = _loss_on_model_outputs([f"loss.cls={name}"])
    assert losses["lcls"] > 0


@pytest.mark.parametrize("name", sorted(set(CLS) - {"ce"}))
def test_every_obj_loss_from_config(name):
    losses = _loss_on_model_outputs([f"loss.obj={name}"])
    assert losses["lobj"] > 0


def test_loss_params_from_config_reach_the_function():
    a = _loss_on_model_outputs(["loss.box={name: focal_eiou, gamma: 0.5}"])["lbox"]
    b = _loss_on_model_outputs(["loss.box={name: focal_eiou, gamma: 2.0}"])["lbox"]
    assert not torch.isclose(a, b)


def test_config_augment_schema_matches_the_data_pipeline():
    """config.AugmentConfig (validated schema) and data.AugmentConfig (what the pipeline runs on) must not drift."""
    import dataclasses

    from detector.config import AugmentConfig as Schema
    from detector.data import AugmentConfig as Runtime

    assert dataclasses.asdict(Schema()) == dataclasses.asdict(Runtime())


def test_unknown_loss_name_from_config_names_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"loss\.box.*ciou"):
        _loss_on_model_outputs(["loss.box=cio"])


def test_kl_without_uncertainty_head_says_how_to_fix():
    with pytest.raises(ConfigError, match="box_uncertainty"):
        _loss_on_model_outputs(["loss.box=kl"])
