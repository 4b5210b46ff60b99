"""Tests for detector/config/: schema defaults, base inheritance, overrides, errors with file:line, saving.

Line numbers in expected messages are counted by hand in the YAML written by each test (line 1 is the first
line of the dedented text).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from detector.config import (
    CONFIG_DIR, Config, LossSpec, PartSpec, config_error, config_from_dict, config_to_dict, load_config,
    resolve_dataset, save_config, where,
)
from detector.errors import ConfigError


def write(folder: Path, name: str, text: str) -> Path:
    """Write dedented ``text`` to ``folder/name`` and return the resolved path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path.resolve()


def error_of(*args, **kwargs) -> str:
    """The message of the ConfigError raised by ``load_config(*args, **kwargs)``."""
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# presets and defaults
# --------------------------------------------------------------------------------------------------

def test_defaults_are_yolov5_scratch_low():
    """Values copied from YOLOv5's data/hyps/hyp.scratch-low.yaml and models/yolov5n.yaml by hand."""
    cfg = Config()
    assert cfg.model.anchors == [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    assert cfg.model.strides == [8, 16, 32]
    assert (cfg.train.lr0, cfg.train.lrf, cfg.train.momentum, cfg.train.weight_decay) == (0.01, 0.01, 0.937, 0.0005)
    assert (cfg.train.warmup_epochs, cfg.train.warmup_momentum, cfg.train.warmup_bias_lr) == (3.0, 0.8, 0.1)
    assert cfg.loss.weights == {"box": 0.05, "obj": 1.0, "cls": 0.5}
    assert cfg.loss.reduction == PartSpec("yolov5", {"level_balance": [4.0, 1.0, 0.4], "scale_gains": True})
    assert cfg.assigner == PartSpec("yolov5", {"anchor_t": 4.0, "neighbour_offset": 0.5})
    assert (cfg.augment.hsv_h, cfg.augment.hsv_s, cfg.augment.hsv_v) == (0.015, 0.7, 0.4)
    assert (cfg.augment.translate, cfg.augment.scale, cfg.augment.fliplr, cfg.augment.mosaic) == (0.1, 0.5, 0.5, 1.0)
    assert cfg.loss.box == LossSpec("ciou") and cfg.loss.cls == LossSpec("bce") and cfg.loss.obj == LossSpec("bce")
    assert cfg.sampler is None and cfg.model.head == PartSpec("yolo") and cfg.model.coder == PartSpec("yolov5")


def test_yolov5_ciou_preset_equals_schema_defaults():
    """The first preset writes every key out; it must agree with the dataclass defaults."""
    assert load_config("yolov5_ciou") == Config()


def _diff(a: dict, b: dict, prefix: str = "") -> dict[str, tuple]:
    """Leaf keys whose values differ between two nested dicts, as ``{"loss.box": (a, b)}``."""
    out = {}
    for key in a.keys() | b.keys():
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key != "box" and key != "cls":
            out.update(_diff(va, vb, f"{prefix}{key}."))
        elif va != vb:
            out[f"{prefix}{key}"] = (va, vb)
    return out


def test_variant_presets_change_one_thing():
    ciou = config_to_dict(load_config("yolov5_ciou"))
    giou = load_config("yolov5_giou")
    focal = load_config("yolov5_focal")
    assert _diff(ciou, config_to_dict(giou)) == {"loss.box": ("ciou", "giou")}
    assert _diff(ciou, config_to_dict(focal)) == {"loss.cls": ("bce", {"name": "focal", "gamma": 1.5})}
    assert focal.loss.cls == LossSpec("focal", {"gamma": 1.5}) and focal.loss.obj == LossSpec("bce")
    # where each preset's change is written: line 5 of both variant files ("  box: giou" / "  cls: {...}")
    assert where(giou, "loss.box") == (str(CONFIG_DIR / "yolov5_giou.yaml"), 5)
    assert where(focal, "loss.cls.gamma") == (str(CONFIG_DIR / "yolov5_focal.yaml"), 5)
    assert where(giou, "train.epochs")[0] == str(CONFIG_DIR / "yolov5_ciou.yaml")


# --------------------------------------------------------------------------------------------------
# resolution of names
# --------------------------------------------------------------------------------------------------

def test_bare_name_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no yolov5_ciou* here: the repo's configs/ is used
    by_stem, by_file = load_config("yolov5_giou"), load_config("yolov5_giou.yaml")
    by_path = load_config(CONFIG_DIR / "yolov5_giou.yaml")
    assert by_stem == by_file == by_path and by_stem.loss.box.name == "giou"
    assert where(by_stem, "loss.box")[0] == str(CONFIG_DIR / "yolov5_giou.yaml")


def test_current_directory_is_tried_first(tmp_path, monkeypatch):
    local = write(tmp_path, "yolov5_giou.yaml", "train:\n  epochs: 7\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("yolov5_giou.yaml")
    assert cfg.train.epochs == 7 and cfg.loss.box.name == "ciou"
    assert where(cfg, "train.epochs") == (str(local), 2)


def test_config_dir_and_unknown_name(tmp_path):
    write(tmp_path, "mine.yaml", "train: {epochs: 3}\n")
    write(tmp_path, "other.yaml", "")
    assert load_config("mine", config_dir=tmp_path).train.epochs == 3
    msg = error_of("nope", config_dir=tmp_path)
    assert msg.startswith("config 'nope' not found (tried ")
    assert msg.endswith(f"configs in {tmp_path}: mine, other")


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "empty.yaml", "# nothing\n")) == Config()


# --------------------------------------------------------------------------------------------------
# inheritance
# --------------------------------------------------------------------------------------------------

def test_child_overrides_base_and_lists_replace(tmp_path):
    write(tmp_path, "base.yaml", """\
        model:
          anchors: [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
        train:
          epochs: 10
          batch_size: 8
        loss:
          weights: {box: 0.1, obj: 2.0, cls: 0.3}
    """)
    child = write(tmp_path, "child.yaml", """\
        base: base.yaml
        model:
          anchors: [[2, 2], [4, 4], [8, 8]]
        train:
          epochs: 20
        loss:
          weights: {var: 1.5}
    """)
    cfg = load_config(child)
    assert cfg.train.epochs == 20                      # child wins
    assert cfg.train.batch_size == 8                   # kept from base
    assert cfg.model.anchors == [[2, 2], [4, 4], [8, 8]]  # list replaced, not merged item by item
    assert cfg.loss.weights == {"box": 0.1, "obj": 2.0, "cls": 0.3, "var": 1.5}  # mappings merge
    assert where(cfg, "train.batch_size") == (str(tmp_path / "base.yaml"), 5)
    assert where(cfg, "model.anchors[1]") == (str(child), 3)


def test_multiple_bases_merge_in_order_relative_to_including_file(tmp_path):
    write(tmp_path, "sub/a.yaml", "train: {epochs: 1, seed: 11}\n")
    write(tmp_path, "sub/b.yaml", "train: {epochs: 2}\n")
    write(tmp_path, "sub/diamond.yaml", "base: [a.yaml, b.yaml]\n")
    top = write(tmp_path, "top.yaml", "base: [sub/diamond.yaml, sub/a.yaml]\ntrain: {name: run}\n")
    cfg = load_config(top)
    # order: a (1, 11), b (2), then a again (1): last base wins, then the file itself
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.name) == (1, 11, "run")


def test_base_falls_back_to_config_dir(tmp_path):
    child = write(tmp_path, "elsewhere/child.yaml", "base: yolov5_ciou\ntrain: {epochs: 5}\n")
    cfg = load_config(child)
    assert cfg.train.epochs == 5 and cfg.model.anchors == Config().model.anchors


def test_loss_spec_inheritance(tmp_path):
    """A mapping without name adds parameters to the inherited loss; with name it replaces loss and params."""
    write(tmp_path, "base.yaml", "loss:\n  box: ciou\n  cls: {name: focal, gamma: 2.0, alpha: 0.25}\n")
    child = write(tmp_path, "child.yaml", """\
        base: base.yaml
        loss:
          box: {eps: 1.0e-9}
          cls: {name: varifocal, gamma: 1.0}
          obj: null
    """)
    cfg = load_config(child)
    assert cfg.loss.box == LossSpec("ciou", {"eps": 1e-9})
    assert cfg.loss.cls == LossSpec("varifocal", {"gamma": 1.0})
    assert cfg.loss.obj is None
    assert where(cfg, "loss.box.name") == (str(tmp_path / "base.yaml"), 2)
    assert where(cfg, "loss.box.eps") == (str(child), 3)


def test_cycle_detected(tmp_path):
    a = write(tmp_path, "a.yaml", "base: b.yaml\n")
    b = write(tmp_path, "b.yaml", "train: {epochs: 3}\nbase: [a.yaml]\n")
    assert error_of(a) == f"{b}:2: base: inheritance cycle: {a} -> {b} -> {a}"
    selfref = write(tmp_path, "self.yaml", "\nbase: self.yaml\n")
    assert error_of(selfref) == f"{selfref}:2: base: inheritance cycle: {selfref} -> {selfref}"


def test_missing_or_bad_base(tmp_path):
    child = write(tmp_path, "child.yaml", "train: {epochs: 3}\nbase: nothere.yaml\n")
    msg = error_of(child)
    assert msg.startswith(f"{child}:2: base: config 'nothere.yaml' not found (tried {tmp_path / 'nothere.yaml'}")
    bad = write(tmp_path, "bad.yaml", "base: {x: 1}\n")
    assert error_of(bad) == f"{bad}:1: base: expected a file name or a list of file names, got mapping {{'x': 1}}"


# --------------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------------

def test_overrides_of_each_value_type():
    cfg = load_config("yolov5_ciou", [
        "train.epochs=50",                       # int
        "train.lr0=1e-3",                        # float without a dot (YAML 1.1 would read a string)
        "train.momentum=0.9",                    # float
        "augment.degrees=10",                    # int accepted for a float field
        "train.nesterov=false",                  # bool
        "train.schedule=cosine",                 # str
        "train.grad_clip=null",                  # None
        "data.max_images=",                      # empty value is null too
        "model.anchors=[[1,2],[3,4],[5,6]]",     # list of lists
        "loss.weights={box: 7.5, var: 1}",       # mapping, merged into the inherited weights
        "loss.cls={name: focal_eiou, gamma: 0.5}",  # loss spec mapping
        "loss.box=giou",
        "loss.box.gamma=0.5",                    # parameter on a loss given by name
    ])
    assert cfg.train.epochs == 50 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr0 == 0.001 and cfg.train.momentum == 0.9
    assert cfg.augment.degrees == 10.0 and isinstance(cfg.augment.degrees, float)
    assert cfg.train.nesterov is False and cfg.train.schedule == "cosine"
    assert cfg.train.grad_clip is None and cfg.data.max_images is None
    assert cfg.model.anchors == [[1, 2], [3, 4], [5, 6]]
    assert cfg.loss.weights == {"box": 7.5, "obj": 1.0, "cls": 0.5, "var": 1.0}
    assert cfg.loss.cls == LossSpec("focal_eiou", {"gamma": 0.5})
    assert cfg.loss.box == LossSpec("giou", {"gamma": 0.5})
    assert where(cfg, "loss.box.gamma") == ("--set loss.box.gamma=0.5", None)
    assert where(cfg, "train.epochs") == ("--set train.epochs=50", None)


def test_single_override_string_is_one_item():
    assert load_config("yolov5_ciou", "train.epochs=9").train.epochs == 9


def test_later_override_wins():
    cfg = load_config("yolov5_ciou", ["train.epochs=5", "train.epochs=6"])
    assert cfg.train.epochs == 6 and where(cfg, "train.epochs") == ("--set train.epochs=6", None)


@pytest.mark.parametrize("item, message", [
    ("train.epochs=ten", "--set train.epochs=ten: train.epochs: expected int, got str 'ten'"),
    ("train.epoch=5", "--set train.epoch=5: train.epoch: unknown key; did you mean 'epochs'?"),
    ("trian.epochs=5", "--set trian.epochs=5: trian: unknown section; did you mean 'train'?"),
    ("train.schedule=cos", "--set train.schedule=cos: train.schedule: 'cos' is not one of linear, cosine; "
                           "did you mean 'cosine'?"),
    ("train.epochs", "--set train.epochs: expected key=value with a dotted key, e.g. train.epochs=50 or "
                     "loss.box=giou"),
    ("train..epochs=1", "--set train..epochs=1: expected key=value with a dotted key, e.g. train.epochs=50 or "
                        "loss.box=giou"),
    ("model.anchors=[[1,2]", "--set model.anchors=[[1,2]: invalid YAML: expected ',' or ']', but got "
                             "'<stream end>'"),
])
def test_override_errors_name_the_set_item(item, message):
    assert error_of("yolov5_ciou", [item]) == message


# --------------------------------------------------------------------------------------------------
# validation errors in files: exact file and line
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # unknown key with a close match
    ("train:\n  epochs: 3\n  epoch: 5\n", "3: train.epoch: unknown key; did you mean 'epochs'?"),
    # unknown key without a close match lists the section's keys
    ("eval:\n  zzz: 1\n", "2: eval.zzz: unknown key; valid keys: conf_thres, iou_thres, max_det, nms, "
                          "nwd_constant, variance_voting, batch_size, split, backend"),
    ("\nmodle:\n  size: s\n", "2: modle: unknown section; did you mean 'model'?"),
    # wrong types
    ("train:\n  seed: 1\n  epochs: ten\n", "3: train.epochs: expected int, got str 'ten'"),
    ("train:\n  epochs: true\n", "2: train.epochs: expected int, got bool True"),
    ("train:\n  lr0: 1.5.2\n", "2: train.lr0: expected float, got str '1.5.2'"),
    ("train:\n  amp: 1\n", "2: train.amp: expected bool, got int 1"),
    ("train:\n  lr0: .nan\n", "2: train.lr0: expected a finite number, got nan"),
    ("data:\n  max_images: many\n", "2: data.max_images: expected int or null, got str 'many'"),
    ("train: 5\n", "1: train: expected a mapping of TrainConfig keys, got int 5"),
    ("model:\n  anchors:\n    - [1, 2]\n    - [3, x]\n    - [5, 6]\n",
     "4: model.anchors[1][1]: expected float, got str 'x'"),
    ("loss:\n  weights:\n    box: 0.1\n    obj: high\n", "4: loss.weights.obj: expected float, got str 'high'"),
    ("loss:\n  box: [ciou]\n", "2: loss.box: expected a name or a mapping {name: ..., <param>: value}, "
                              "got list ['ciou']"),
    ("loss:\n  cls: {gamma: 1.5}\n", "2: loss.cls: a part given as a mapping needs a 'name' key, e.g. {name: focal, "
                                     "gamma: 1.5}; got mapping {'gamma': 1.5}"),
    ("assigner: [rpn]\n", "1: assigner: expected a name or a mapping {name: ..., <param>: value}, got list ['rpn']"),
    # out of range
    ("data:\n  img_size: 500\n", "2: data.img_size: 500 is not a multiple of 32"),
    ("augment:\n  fliplr: 1.5\n", "2: augment.fliplr: 1.5 is outside [0, 1]"),
    ("augment:\n  scale: 1.0\n", "2: augment.scale: 1.0 is outside [0, 1)"),
    ("data:\n  workers: -1\n", "2: data.workers: -1 must be >= 0"),
    ("loss:\n  weights:\n    box: 0.1\n    cls: -0.5\n", "4: loss.weights.cls: -0.5 must be >= 0"),
    ("model:\n  strides: [8, 32, 16]\n", "2: model.strides[2]: 16 must be larger than the previous stride 32 "
                                         "(levels go fine to coarse)"),
    ("model:\n  anchors:\n    - [1, 2]\n    - [3, 4, 5, 6]\n    - [7, 8]\n",
     "4: model.anchors[1]: has 2 anchors but level 0 has 1; every level needs the same number"),
    ("train:\n  device: gpu\n", "2: train.device: 'gpu' is not one of auto, cpu, cuda, cuda:N (N a GPU index)"),
    # invalid choices
    ("train:\n  schedule: cos\n", "2: train.schedule: 'cos' is not one of linear, cosine; did you mean 'cosine'?"),
    ("eval:\n  nms: soft\n", "2: eval.nms: 'soft' is not one of iou, diou, nwd, none, peaks"),
    # consistency across sections
    ("model:\n  strides: [8, 16]\n", "1: model.anchors: has 3 levels but model.strides has 2; "
                                     "give one anchor list per stride"),
    ("train:\n  epochs: 5\n  close_mosaic: 10\n", "3: train.close_mosaic: 10 is more than train.epochs (5)"),
    ("loss:\n  reduction:\n    name: yolov5\n    level_balance: [1.0]\n",
     "4: loss.reduction.level_balance: has 1 weights but model.strides has 3 levels; give one per level"),
    ("eval:\n  variance_voting: true\n", "2: eval.variance_voting: needs model.box_uncertainty: true "
                                         "(variance voting weights boxes by their predicted variance)"),
    # YAML problems
    ("train:\n  epochs: 10\n  lr0: 0.01\n bad: 1\n",
     "4: invalid YAML: expected <block end>, but found '<block mapping start>'"),
    ("train:\n  epochs: [1, 2\n  lr0: 3\n", "3: invalid YAML: expected ',' or ']', but got ':'"),
    ("train:\n  epochs: 1\n  seed: 2\n  epochs: 3\n", "4: train.epochs: duplicate key (first set on line 2)"),
    ("- 1\n- 2\n", "1: a config file must be a mapping of sections (model, data, augment, assigner, sampler, "
                   "loss, train, eval), got list [1, 2]"),
    ("train:\n  epochs: !!python/name:os.system ''\n", "2: invalid YAML: could not determine a constructor for "
                                                      "the tag 'tag:yaml.org,2002:python/name:os.system'"),
    ("train: !!python/object:os.system {}\n", "1: train: unsupported YAML tag "
                                              "'tag:yaml.org,2002:python/object:os.system'; write plain mappings, "
                                              "lists and scalars"),
    ("a: &x {b: 1}\nc:\n  <<: *x\n", "3: c: YAML merge keys (<<) are not supported; use base: to inherit from "
                                     "another file"),
])
def test_file_errors_name_file_line_and_key(tmp_path, text, expected):
    path = write(tmp_path, "cfg.yaml", text)
    assert error_of(path) == f"{path}:{expected}"


def test_model_anchors_strides_default_level_source(tmp_path):
    """The anchors/strides mismatch names anchors' place; here anchors come from the file on line 3."""
    path = write(tmp_path, "cfg.yaml", "model:\n  strides: [8, 16]\n  anchors: [[1, 2], [3, 4], [5, 6]]\n")
    assert error_of(path) == (f"{path}:3: model.anchors: has 3 levels but model.strides has 2; "
                              f"give one anchor list per stride")


def test_error_in_base_names_the_base_file(tmp_path):
    base = write(tmp_path, "base.yaml", "\n\ntrain:\n  epochs: 3\n  optimizer: lamb\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain: {epochs: 4}\n")
    assert error_of(child) == f"{base}:5: train.optimizer: 'lamb' is not one of sgd, adamw, adam"


def test_error_fixed_by_child_is_not_raised(tmp_path):
    write(tmp_path, "base.yaml", "train:\n  optimizer: lamb\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  optimizer: adamw\n")
    assert load_config(child).train.optimizer == "adamw"


def test_config_error_and_where_for_other_validators(tmp_path):
    """Another module (the loss tables) reports a bad loss parameter at the line the loss was written."""
    path = write(tmp_path, "cfg.yaml", "loss:\n  box: ciou\n  cls:\n    name: focal\n    gamma: -1\n")
    cfg = load_config(path)
    assert where(cfg, "loss.cls.gamma") == (str(path), 5)
    assert where(cfg, "loss.cls") == (str(path), 3)
    assert where(cfg, "loss.box.eps") == (str(path), 2)      # inside a bare name: the name's line
    assert where(cfg, "train.epochs") == (None, None)         # a default
    err = config_error(cfg, "loss.cls.gamma", "must be >= 0")
    assert isinstance(err, ConfigError) and (err.file, err.line, err.key) == (str(path), 5, "loss.cls.gamma")
    assert str(err) == f"{path}:5: loss.cls.gamma: must be >= 0"


# --------------------------------------------------------------------------------------------------
# saving and plain dicts
# --------------------------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    cfg = load_config("yolov5_focal", [
        "train.lr0=1e-5", "train.grad_clip=null", "loss.box={name: ciou, eps: 1.0e-7}", "loss.obj=null",
        "model.depth_multiple=0.33", "loss.weights.var=0.25", "data.dataset=../somewhere/data.yaml",
    ])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    text = path.read_text()
    assert "base" not in text and "lr0: 1.0e-05" in text
    again = load_config(path)
    assert again == cfg
    assert again.loss.box == LossSpec("ciou", {"eps": 1e-7}) and again.loss.obj is None
    assert where(again, "train.lr0")[0] == str(path.resolve())


def test_config_to_dict_is_plain_and_loads_with_weights_only(tmp_path):
    cfg = load_config("yolov5_focal")
    as_dict = config_to_dict(cfg)
    assert as_dict["loss"]["cls"] == {"name": "focal", "gamma": 1.5} and as_dict["loss"]["box"] == "ciou"
    assert list(as_dict) == ["model", "data", "augment", "assigner", "sampler", "loss", "one_to_one", "train", "eval"]
    torch.save({"config": as_dict}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert config_from_dict(loaded["config"]) == cfg


def test_config_from_dict_applies_overrides_last_with_their_source():
    """A checkpoint's config with a tool's options: overrides win, are checked and are located as --set items."""
    stored = config_to_dict(load_config("demo"))
    cfg = config_from_dict(stored, source="ckpt.pt", overrides=["data.img_size=320", "eval.conf_thres=0.25"])
    assert (cfg.data.img_size, cfg.eval.conf_thres, cfg.train.epochs) == (320, 0.25, 150)
    assert where(cfg, "data.img_size")[0] == "--set data.img_size=320" and where(cfg, "train.epochs")[0] == "ckpt.pt"
    with pytest.raises(ConfigError, match="--set data.img_size=300: data.img_size: 300 is not a multiple of 32"):
        config_from_dict(stored, source="ckpt.pt", overrides=["data.img_size=300"])


def test_config_from_dict_errors_name_the_source():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"train": {"epochs": "ten"}}, source="ckpt.pt")
    assert str(info.value) == "ckpt.pt: train.epochs: expected int, got str 'ten'"


# --------------------------------------------------------------------------------------------------
# dataset resolution
# --------------------------------------------------------------------------------------------------

def test_resolve_dataset(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    write(data_dir, "toy.yaml", "names: [a]\n")
    write(data_dir, "other.yaml", "names: [b]\n")
    cfg_dir = tmp_path / "exp"
    write(cfg_dir, "sets/local.yaml", "names: [c]\n")
    by_name = load_config(write(cfg_dir, "a.yaml", "data:\n  dataset: toy\n"))
    assert resolve_dataset(by_name, data_dir) == (data_dir / "toy.yaml").resolve()
    monkeypatch.chdir(tmp_path)  # relative path not found here, found next to the config file
    by_path = load_config(write(cfg_dir, "b.yaml", "data:\n  dataset: sets/local.yaml\n"))
    assert resolve_dataset(by_path, data_dir) == (cfg_dir / "sets/local.yaml").resolve()
    missing = load_config(write(cfg_dir, "c.yaml", "\ndata:\n  dataset: nope\n"))
    with pytest.raises(ConfigError) as info:
        resolve_dataset(missing, data_dir)
    msg = str(info.value)
    assert msg.startswith(f"{cfg_dir / 'c.yaml'}:3: data.dataset: dataset 'nope' not found")
    assert msg.endswith(f"bare names available in {data_dir}: other, toy")
