"""Tests for detector/losses/spec.py, and every loss name run through the criterion on the real model."""

import pytest
import torch

from detector.errors import ConfigError
from detector.losses.box import BOX
from detector.losses.classification import CLS, focal_loss
from detector.losses.criterion import DetectionCriterion
from detector.losses.spec import (
    LossSpec,
    configurable_params,
    loss_signature,
    make_loss,
    parse_box_loss,
    parse_cls_loss,
    parse_loss_spec,
)
from detector.models import build_yolov5
from detector.ops.coders import YOLOv5BoxCoder
from detector.structures import Assignment


def scaled_l1(pred, target, *, reduction="none", eps=1e-7, scale: float = 1.0, normalise: bool = False):
    return scale * (pred - target).abs().sum(-1)


def plain(pred, target, *, reduction="none"):
    return (pred - target).sum(-1)


def needs_var(pred, target, *, pred_log_var, reduction="none", eps=1e-7):
    return pred_log_var.sum(-1)


FAKE = {"scaled_l1": scaled_l1, "plain": plain, "needs_var": needs_var}


# ------------------------------------------------------------------------------------------ parsing
def test_name_and_mapping_forms():
    spec = parse_loss_spec("scaled_l1", FAKE, "loss.box")
    assert spec == LossSpec("scaled_l1", scaled_l1, {}) and dict(spec.params) == {}
    spec = parse_loss_spec({"name": "scaled_l1", "scale": 2.5}, FAKE, "loss.box")
    assert spec.name == "scaled_l1" and spec.fn is scaled_l1 and dict(spec.params) == {"scale": 2.5}
    pred, target = torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[0.0, 0, 2, 2]])
    torch.testing.assert_close(spec(pred, target), torch.tensor([5.0]))  # 2.5 * (1 + 1)
    assert parse_loss_spec(spec, FAKE) is spec


def test_make_loss_takes_the_table_first():
    assert make_loss(FAKE, {"name": "scaled_l1", "scale": 2.0}, key="loss.box") == parse_loss_spec(
        {"name": "scaled_l1", "scale": 2.0}, FAKE, "loss.box"
    )
    with pytest.raises(ConfigError, match="loss.obj: unknown loss"):
        make_loss(CLS, "bcee", key="loss.obj")


def test_params_are_read_only():
    spec = parse_loss_spec({"name": "scaled_l1", "scale": 2.0}, FAKE)
    with pytest.raises(TypeError):
        spec.params["scale"] = 3.0


def test_config_dataclass_form_is_accepted():
    """Anything with ``name`` and ``params`` attributes (detector.config.LossSpec) parses like a mapping."""
    from detector.config import LossSpec as ConfigLossSpec

    spec = parse_cls_loss(ConfigLossSpec("focal", {"gamma": 1.5}), "loss.cls")
    assert spec.fn is focal_loss and dict(spec.params) == {"gamma": 1.5}


def test_unknown_name_lists_choices_and_suggests():
    with pytest.raises(ConfigError) as err:
        parse_loss_spec("scaled_l2", FAKE, "loss.box")
    msg = str(err.value)
    assert msg.startswith("loss.box: unknown loss 'scaled_l2'")
    assert "did you mean 'scaled_l1'" in msg and "scaled_l1, plain, needs_var" in msg
    with pytest.raises(ConfigError) as err:
        parse_loss_spec({"name": "focla", "gamma": 1.0}, CLS, "loss.cls")
    assert err.value.key == "loss.cls.name" and "did you mean 'focal'" in str(err.value)
    assert all(name in str(err.value) for name in CLS)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        parse_loss_spec({"name": "scaled_l1", "scael": 2.0}, FAKE, "loss.box")
    assert err.value.key == "loss.box.scael"
    assert "did you mean 'scale'" in str(err.value) and "eps, scale, normalise" in str(err.value)
    with pytest.raises(ConfigError, match="takes no parameters"):
        parse_loss_spec({"name": "plain", "beta": 1.0}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.cls.gama"):
        parse_cls_loss({"name": "focal", "gama": 1.0})


def test_caller_supplied_and_missing_name_and_wrong_types():
    with pytest.raises(ConfigError, match="loss.box.reduction: .*supplied by the framework"):
        parse_loss_spec({"name": "scaled_l1", "reduction": "sum"}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box.pred_log_var"):
        parse_loss_spec({"name": "needs_var", "pred_log_var": 1.0}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box: a loss given as a mapping needs a 'name'"):
        parse_loss_spec({"scale": 1.0}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box: expected a loss name"):
        parse_loss_spec(3, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box.scale: expected a number"):
        parse_loss_spec({"name": "scaled_l1", "scale": "big"}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box.scale: expected a number"):
        parse_loss_spec({"name": "scaled_l1", "scale": True}, FAKE, "loss.box")
    with pytest.raises(ConfigError, match="loss.box.normalise: expected true or false"):
        parse_loss_spec({"name": "scaled_l1", "normalise": 1}, FAKE, "loss.box")
    assert dict(parse_loss_spec({"name": "scaled_l1", "scale": 2}, FAKE).params) == {"scale": 2}  # int is a number


def test_accepts_reads_the_signature():
    assert parse_loss_spec("needs_var", FAKE).accepts("pred_log_var")
    assert not parse_loss_spec("plain", FAKE).accepts("pred_log_var")


def test_configurable_params_of_the_real_tables():
    """Every keyword parameter of every loss, except what the criterion supplies, is configurable."""
    for table in (BOX, CLS):
        for name, fn in table.items():
            sig = loss_signature(fn).parameters  # a stateful loss class (wiou, ghm): its __call__ without self
            expected = [p for p in list(sig)[2:] if p not in ("reduction", "pred_log_var", "image_size")]
            assert list(configurable_params(fn)) == expected, name
    assert parse_box_loss({"name": "focal_eiou", "gamma": 0.5}).params["gamma"] == 0.5
    assert parse_cls_loss({"name": "dr", "margin": 0.4}).params["margin"] == 0.4


# --------------------------------------------------------------------- every name on the real model
IMAGE_SIZE, NUM_CLASSES = 64, 80


class CentreCellAssigner:
    """Assign each ground truth to every anchor of the cell holding its centre, on every level
    (deterministic and simple; the real assigners are tested in tests/assigners)."""

    def __call__(self, priors, targets, batch_size, pred_boxes=None):
        centre = (targets[:, 2:4] + targets[:, 4:6]) / 2  # (n, 2)
        batch, prior, gt = [], [], []
        for lvl, (a_n, h, w) in enumerate(priors.level_shapes):
            stride = float(priors.strides[priors.level_offsets[lvl]])
            cell = (centre / stride).long()  # (n, 2)
            for a in range(a_n):
                prior.append(priors.level_offsets[lvl] + (a * h + cell[:, 1]) * w + cell[:, 0])
                gt.append(torch.arange(targets.shape[0]))
                batch.append(targets[:, 0].long())
        return Assignment(torch.cat(batch), torch.cat(prior), torch.cat(gt))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {var: build_yolov5("n", num_classes=NUM_CLASSES, box_uncertainty=var) for var in (False, True)}


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    targets = torch.tensor([[0, 3, 4.0, 6.0, 40.0, 50.0], [0, 17, 30.0, 30.0, 44.0, 40.0],
                            [1, 0, 10.0, 20.0, 60.0, 62.0]])
    return images, targets


def _run(model, images, targets, box="ciou", cls="bce", obj="bce", weights=None):
    model.zero_grad(set_to_none=True)
    crit = DetectionCriterion(CentreCellAssigner(), YOLOv5BoxCoder(), box, cls, obj,
                              weights or {"box": 0.05, "obj": 1.0, "cls": 0.5}, num_classes=NUM_CLASSES,
                              image_size=IMAGE_SIZE)
    out = crit(model(images), targets)
    for name, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), (name, value)
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return out, model


def _head_grad(model):
    return sum(float(p.grad.abs().sum()) for p in model.head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list(BOX))
def test_every_box_loss_on_model_outputs(models, batch, name):
    model = models[name == "kl"]
    out, model = _run(model, *batch, box=name)
    assert float(out["lbox"].detach()) != 0.0
    assert _head_grad(model) > 0


@pytest.mark.parametrize("name", list(CLS))
def test_every_cls_loss_on_model_outputs(models, batch, name):
    out, model = _run(models[False], *batch, cls=name)
    assert float(out["lcls"].detach()) != 0.0
    assert _head_grad(model) > 0


@pytest.mark.parametrize("name", [n for n in CLS if n != "ce"])
def test_every_obj_loss_on_model_outputs(models, batch, name):
    out, model = _run(models[False], *batch, obj=name)
    assert float(out["lobj"].detach()) != 0.0
    assert _head_grad(model) > 0


def test_ce_is_refused_for_objectness():
    with pytest.raises(ConfigError, match="loss.obj"):
        DetectionCriterion(CentreCellAssigner(), YOLOv5BoxCoder(), "ciou", "bce", "ce",
                           {"box": 0.05, "obj": 1.0, "cls": 0.5}, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)


def test_kl_without_uncertainty_head_is_a_config_error(models, batch):
    with pytest.raises(ConfigError, match="model.box_uncertainty"):
        _run(models[False], *batch, box="kl")


def test_empty_targets_on_model_outputs(models, batch):
    images, _ = batch
    out, model = _run(models[False], images, torch.zeros(0, 6))
    assert float(out["lbox"].detach()) == 0.0 and float(out["lcls"].detach()) == 0.0
    assert float(out["lobj"].detach()) > 0 and _head_grad(model) > 0
