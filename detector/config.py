"""Experiment config: a typed dataclass schema, YAML files with ``base:`` inheritance, dotted overrides.

A config file is a YAML mapping of sections (``model``, ``data``, ``augment``, ``assigner``, ``sampler``,
``loss``, ``train``, ``eval``); every key is optional and defaults to YOLOv5's ``hyp.scratch-low`` recipe. A file may
name one or more other files under ``base:`` (a string or a list, resolved relative to the including file,
then against the repository's ``configs/`` folder); bases are merged in order, then the file itself:

* mappings merge key by key (the child wins), lists and scalars replace;
* a part (loss, assigner, sampler, head, coder, reduction) given as a bare name (``box: ciou``) is shorthand
  for ``{name: ciou}``; a child mapping without ``name`` (``box: {eps: 1.0e-9}``) adds parameters to the
  inherited part, a child mapping with ``name`` replaces the inherited part and its parameters.

Command-line overrides (``--set train.epochs=50 loss.box={name: focal_eiou, gamma: 0.5}``) are merged last,
with the same rules; each value is parsed as YAML.

Every error is a :class:`~detector.errors.ConfigError` naming the file and line (or the ``--set`` item),
the dotted key path and what would be valid. The loaded :class:`Config` remembers where each key was set;
:func:`where` and :func:`config_error` let later validators (e.g. the loss tables) point at the same place.

Config objects hold only dataclasses of ``str/int/float/bool/None/list/dict``; :func:`config_to_dict`
turns one into plain containers (YAML- and ``torch.load(weights_only=True)``-safe) and
:func:`config_from_dict` turns such a dict back into a validated config.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import yaml

from detector.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``detector/``, ``configs/`` and ``data/``)."""
CONFIG_DIR = REPO_ROOT / "configs"
"""Where bare config names (``yolov5_ciou``) are looked up."""
DATA_DIR = REPO_ROOT / "data"
"""Where bare dataset names (``coco128``) are looked up as ``<name>.yaml``."""


Source = tuple[Union[str, None], Union[int, None]]
"""Where a key was set: ``(file, line)`` (1-based line), ``("--set key=value", None)`` or ``(None, None)``."""
KeyPath = tuple[Union[str, int], ...]
"""A key path as a tuple: ``("model", "anchors", 1)`` is ``model.anchors[1]``."""


# --------------------------------------------------------------------------------------------------
# field checks: each returns None when the value is fine, else a message (optionally with a sub-path)
# --------------------------------------------------------------------------------------------------

def _num(x: float) -> str:
    """Format a bound for messages: 1.0 -> '1', 0.5 -> '0.5'."""
    return f"{x:g}"


def _in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[Any], str | None]:
    """A check that a number lies in ``[lo, hi]`` (``(`` / ``)`` where open; None = unbounded)."""
    def check(value: float) -> str | None:
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and \
             (hi is None or (value < hi if hi_open else value <= hi))
        if ok:
            return None
        if hi is None:
            return f"{value!r} must be {'>' if lo_open else '>='} {_num(lo)}"
        if lo is None:
            return f"{value!r} must be {'<' if hi_open else '<='} {_num(hi)}"
        return (f"{value!r} is outside {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if hi_open else ']'}")
    return check


def _multiple_of(k: int) -> Callable[[int], str | None]:
    """A check that a positive int is a multiple of ``k``."""
    def check(value: int) -> str | None:
        if value <= 0 or value % k:
            return f"{value} is not a multiple of {k}"
        return None
    return check


def _non_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _check_device(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return None
    return f"{value!r} is not one of auto, cpu, cuda, cuda:N (N a GPU index)"


def _check_anchors(value: list[list[int]]) -> tuple[KeyPath, str] | str | None:
    """Anchors: one list per level of ``(w, h)`` pixel pairs, the same number of pairs per level."""
    if not value:
        return "needs one list of (w, h) pairs per level"
    for i, level in enumerate(value):
        if not level or len(level) % 2:
            return (i,), f"has {len(level)} values; expected (w, h) pairs, e.g. [10, 13, 16, 30, 33, 23]"
        if len(level) != len(value[0]):
            return (i,), (f"has {len(level) // 2} anchors but level 0 has {len(value[0]) // 2}; "
                          f"every level needs the same number")
        for j, v in enumerate(level):
            if v <= 0:
                return (i, j), f"{v} must be > 0 (anchor sizes are pixels)"
    return None


def _check_strides(value: list[int]) -> tuple[KeyPath, str] | str | None:
    if not value:
        return "needs one stride per level, e.g. [8, 16, 32]"
    for i, s in enumerate(value):
        if s <= 0:
            return (i,), f"{s} must be > 0"
        if i and s <= value[i - 1]:
            return (i,), f"{s} must be larger than the previous stride {value[i - 1]} (levels go fine to coarse)"
    return None


def _check_each(check: Callable[[Any], str | None]) -> Callable[[Any], tuple[KeyPath, str] | None]:
    """Apply ``check`` to every item of a list or every value of a mapping, naming the bad item."""
    def check_all(value: list | dict) -> tuple[KeyPath, str] | None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            msg = check(v)
            if msg:
                return (k,), msg
        return None
    return check_all


def _opt(default: Any = dataclasses.MISSING, *, choices: tuple[str, ...] | None = None,
         check: Callable[[Any], Any] | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with validation metadata (``choices`` for str fields, ``check`` for values)."""
    meta = {"choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """The network: architecture name, size and its anchors per level."""

    name: str = _opt("yolov5", check=_non_empty)
    """Backbone and neck; a name of ``detector.build.MODELS`` (``yolov5``: CSP-Darknet + SPPF + PAN)."""
    size: str = _opt("n", choices=("n", "s", "m", "l", "x"))
    """YOLOv5 size: n, s, m, l or x (sets depth and width multiples unless given below)."""
    depth_multiple: float | None = _opt(None, check=_in_range(0.0, lo_open=True))
    """Gain on the number of blocks per stage; None = the value for ``size`` (n/s 0.33, m 0.67, l 1.0, x 1.33)."""
    width_multiple: float | None = _opt(None, check=_in_range(0.0, lo_open=True))
    """Gain on the channel counts; None = the value for ``size`` (n 0.25, s 0.5, m 0.75, l 1.0, x 1.25)."""
    anchors: list[list[float]] | None = _opt(factory=lambda: [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                                             [116, 90, 156, 198, 373, 326]], check=_check_anchors)
    """Anchor ``(w, h)`` pairs in input pixels, one flat list per level (fine to coarse), same count per level;
    null for a head on point priors (anchor-free)."""
    strides: list[int] = _opt(factory=lambda: [8, 16, 32], check=_check_strides)
    """Stride in pixels of each output level, increasing; one per ``anchors`` entry. A subset of the
    architecture's levels (``[32]`` for YOLOv2's single level) uses only those."""
    box_uncertainty: bool = _opt(False)
    """Also predict a log-variance per box coordinate (``HeadOutputs.box_log_var``), for variance voting."""
    head: PartSpec = field(default_factory=lambda: PartSpec("yolo"))
    """Detection head; a name of ``detector.build.HEADS`` with its parameters (``yolo``: objectness + sigmoid
    classes; ``retina``: sigmoid classes; ``ssd``: softmax with a background class)."""
    coder: PartSpec = field(default_factory=lambda: PartSpec("yolov5"))
    """Box coder; a name of ``detector.build.CODERS`` with its parameters
    (``{name: delta, weights: [10, 10, 5, 5]}``)."""


@dataclass
class DataConfig:
    """The dataset and how images are loaded."""

    dataset: str = _opt("coco128", check=_non_empty)
    """A bare name (``coco128`` = ``data/coco128.yaml`` in the repository) or a path to a dataset YAML."""
    img_size: int = _opt(640, check=_multiple_of(32))
    """Square network input size in pixels (letterbox / mosaic target); a multiple of 32."""
    max_images: int | None = _opt(None, check=_in_range(1))
    """Use only the first n images of each split (quick experiments); None = all."""
    workers: int = _opt(2, check=_in_range(0))
    """DataLoader worker processes; 0 loads in the main process."""


@dataclass
class AugmentConfig:
    """Training augmentation gains and probabilities (YOLOv5 ``hyp.scratch-low``)."""

    hsv_h: float = _opt(0.015, check=_in_range(0.0, 1.0))
    """Hue gain: OpenCV's hue (0..179) is scaled by a factor in ``[1 - hsv_h, 1 + hsv_h]`` (YOLOv5)."""
    hsv_s: float = _opt(0.7, check=_in_range(0.0, 1.0))
    """Saturation gain: saturation is scaled by a factor in ``[1 - hsv_s, 1 + hsv_s]``."""
    hsv_v: float = _opt(0.4, check=_in_range(0.0, 1.0))
    """Value (brightness) gain: value is scaled by a factor in ``[1 - hsv_v, 1 + hsv_v]``."""
    degrees: float = _opt(0.0, check=_in_range(0.0, 180.0))
    """Random rotation of up to +/- this many degrees."""
    translate: float = _opt(0.1, check=_in_range(0.0, 1.0))
    """Random translation of up to +/- this fraction of the image size."""
    scale: float = _opt(0.5, check=_in_range(0.0, 1.0, hi_open=True))
    """Random scale factor in ``[1 - scale, 1 + scale]``."""
    shear: float = _opt(0.0, check=_in_range(0.0, 90.0, hi_open=True))
    """Random shear of up to +/- this many degrees."""
    fliplr: float = _opt(0.5, check=_in_range(0.0, 1.0))
    """Probability of a left-right flip."""
    flipud: float = _opt(0.0, check=_in_range(0.0, 1.0))
    """Probability of an up-down flip."""
    mosaic: float = _opt(1.0, check=_in_range(0.0, 1.0))
    """Probability of building a training image as a 4-image mosaic."""


@dataclass
class PartSpec:
    """One swappable part (loss, assigner, sampler, head, coder, reduction) by name with its keyword parameters.

    Written in YAML either as a bare name (``ciou``) or as a mapping (``{name: focal, gamma: 1.5}``);
    names and parameters are checked against the part's table (``detector.build`` and the loss tables) by
    ``detector.build.check_parts`` before anything trains; its errors name the file and line.
    """

    name: str
    """Name in the part's table (e.g. ``ciou``, ``focal``, ``yolov5``, ``rpn``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the part's function or constructor (e.g. ``{"gamma": 1.5}``)."""


LossSpec = PartSpec
"""The loss entries are part specs too (the name kept for the loss tables' callers)."""


@dataclass
class LossConfig:
    """The loss terms, their weights and YOLOv5's balancing gains."""

    box: LossSpec = field(default_factory=lambda: LossSpec("ciou"))
    """Box regression loss on positive pairs (pred and target xyxy)."""
    cls: LossSpec = field(default_factory=lambda: LossSpec("bce"))
    """Classification loss on positive pairs (logits vs. one-hot targets)."""
    obj: LossSpec | None = field(default_factory=lambda: LossSpec("bce"))
    """Objectness loss over all priors; null for detectors without objectness."""
    quality: LossSpec = field(default_factory=lambda: LossSpec("bce"))
    """Loss of a head's quality branch (FCOS centerness); used when ``weights`` has ``quality``."""
    weights: dict[str, float] = _opt(factory=lambda: {"box": 0.05, "obj": 1.0, "cls": 0.5},
                                     check=_check_each(_in_range(0.0)))
    """Weight of each loss term in the total (``box``, ``obj``, ``cls``, ``quality``; extra terms such as ``var``)."""
    obj_target: str = _opt("ciou", choices=("ciou", "iou", "one"))
    """Objectness target of a positive: detached CIoU with the gt clamped at 0 (``ciou``, YOLOv5), plain IoU (``iou``) or 1 (``one``)."""
    cls_target: str = _opt("assigner", choices=("assigner", "iou"))
    """Class target of a positive: the assigner's soft score when it gives one, else 1 (``assigner``), or the IoU of
    the pair's predicted box with its gt (``iou``: VFL / QFL / GFL targets for any assigner)."""
    box_space: str = _opt("decoded", choices=("decoded", "encoded"))
    """Box loss on decoded boxes in grid units (``decoded``, IoU family) or on the coder's deltas (``encoded``,
    SSD / R-CNN smooth-L1)."""
    reduction: PartSpec = field(default_factory=lambda: PartSpec("yolov5", {"level_balance": [4.0, 1.0, 0.4],
                                                                            "scale_gains": True}))
    """How values become terms and terms the total; a name of ``detector.build.REDUCTIONS``: ``yolov5``
    (per-level means, ``level_balance``, ``scale_gains``, total times the batch) or ``mean`` (sums over the
    batch divided by ``avg_factor``: ``num_pos`` or ``num_sampled``)."""
    label_smoothing: float = _opt(0.0, check=_in_range(0.0, 1.0, hi_open=True))
    """Class label smoothing epsilon: targets become ``1 - eps/2`` and ``eps/2``."""


@dataclass
class TrainConfig:
    """Optimisation, schedule, EMA and run bookkeeping."""

    epochs: int = _opt(100, check=_in_range(1))
    """Number of training epochs."""
    batch_size: int = _opt(16, check=_in_range(1))
    """Images per training batch."""
    optimizer: str = _opt("sgd", choices=("sgd", "adamw", "adam"))
    """Optimizer: sgd (with momentum), adamw or adam (beta1 = momentum)."""
    lr0: float = _opt(0.01, check=_in_range(0.0, lo_open=True))
    """Initial learning rate."""
    lrf: float = _opt(0.01, check=_in_range(0.0, 1.0, lo_open=True))
    """Final learning rate as a fraction of ``lr0``."""
    momentum: float = _opt(0.937, check=_in_range(0.0, 1.0, hi_open=True))
    """SGD momentum / Adam beta1."""
    nesterov: bool = _opt(True)
    """Use Nesterov momentum with SGD."""
    weight_decay: float = _opt(0.0005, check=_in_range(0.0))
    """Weight decay of conv/linear weights (not biases or norm weights), scaled by ``batch_size * accumulate / nbs``."""
    nbs: int = _opt(64, check=_in_range(1))
    """Nominal batch size: gradients are accumulated over ``round(nbs / batch_size)`` batches."""
    warmup_epochs: float = _opt(3.0, check=_in_range(0.0))
    """Length of the linear warmup in epochs (YOLOv5 uses at least 100 iterations)."""
    warmup_momentum: float = _opt(0.8, check=_in_range(0.0, 1.0, hi_open=True))
    """Momentum at the start of warmup, ramping to ``momentum``."""
    warmup_bias_lr: float = _opt(0.1, check=_in_range(0.0))
    """Bias learning rate at the start of warmup, ramping down to the scheduled rate."""
    schedule: str = _opt("linear", choices=("linear", "cosine"))
    """Learning-rate decay from ``lr0`` to ``lr0 * lrf`` over the epochs."""
    ema: bool = _opt(True)
    """Keep an exponential moving average of the weights; evaluate and save the EMA model."""
    ema_decay: float = _opt(0.9999, check=_in_range(0.0, 1.0, lo_open=True, hi_open=True))
    """EMA decay after its ramp-up: ``d = ema_decay * (1 - exp(-updates / ema_tau))``."""
    ema_tau: float = _opt(2000.0, check=_in_range(0.0, lo_open=True))
    """EMA ramp-up time constant in optimizer updates."""
    amp: bool = _opt(True)
    """Mixed-precision training; used only on CUDA."""
    channels_last: bool = _opt(True)
    """Use the channels-last memory format; used only on CUDA."""
    grad_clip: float | None = _opt(10.0, check=_in_range(0.0, lo_open=True))
    """Clip the gradient norm to this value before each optimizer step; null = no clipping."""
    max_bad_steps: int = _opt(0, check=_in_range(0))
    """Consecutive steps with a NaN / inf loss term that are skipped (batch saved to the run folder); the next
    one stops the run. 0 = stop at the first."""
    seed: int = _opt(0, check=_in_range(0))
    """Random seed for Python, NumPy and torch."""
    device: str = _opt("auto", check=_check_device)
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    eval_interval: int = _opt(1, check=_in_range(1))
    """Evaluate every this many epochs (and always after the last)."""
    close_mosaic: int = _opt(0, check=_in_range(0))
    """Turn mosaic off for this many final epochs."""
    out_dir: str = _opt("runs/train", check=_non_empty)
    """Folder under which run directories are created."""
    name: str = _opt("exp", check=_non_empty)
    """Run directory name inside ``out_dir`` (a numeric suffix is added if it exists)."""
    deterministic: bool = _opt(True)
    """Ask torch for deterministic algorithms where available."""


@dataclass
class EvalConfig:
    """Post-processing and evaluation."""

    conf_thres: float = _opt(0.001, check=_in_range(0.0, 1.0))
    """Drop detections scoring below this before NMS."""
    iou_thres: float = _opt(0.6, check=_in_range(0.0, 1.0, lo_open=True))
    """NMS IoU threshold."""
    max_det: int = _opt(300, check=_in_range(1))
    """Keep at most this many detections per image."""
    nms: str = _opt("iou", choices=("iou", "diou", "none", "peaks"))
    """Suppression criterion: plain IoU, DIoU (IoU minus normalised centre distance), none (NMS-free heads: the
    ``max_det`` best-scoring candidates), or peaks (CenterNet: local maxima of each class map, one level)."""
    variance_voting: bool = _opt(False)
    """Refine kept boxes by variance voting over their overlapping neighbours; needs ``model.box_uncertainty``."""
    batch_size: int = _opt(32, check=_in_range(1))
    """Images per evaluation batch."""
    split: str = _opt("val", choices=("train", "val", "test"))
    """Dataset split evaluated during and after training."""
    backend: str = _opt("pycocotools", choices=("pycocotools", "faster_coco_eval"))
    """What computes COCO mAP: pycocotools, or faster-coco-eval (same 12 numbers, several times faster; needs
    ``pip install -e ".[faster-coco-eval]"``). The choices are ``detector.evaluation.coco.EVAL_BACKENDS``."""


@dataclass
class OneToOneConfig:
    """NMS-free training (YOLOv10 / YOLO26): a second head of the same kind learns from a one-to-one assignment."""

    assigner: PartSpec = field(default_factory=lambda: PartSpec("tal", {"topk": 1, "alpha": 0.5, "beta": 6.0}))
    """The one-to-one head's assigner (``detector.build.ASSIGNERS``; YOLOv10: TAL with top-k 1)."""
    many_weight: list[float] = _opt(factory=lambda: [0.8, 0.1], check=lambda v: (
        "must be [start, end], two weights" if len(v) != 2 else _check_each(_in_range(0.0, 1.0))(v)))
    """Weight of the one-to-many loss, ``[first epoch, last epoch]``, linear in between; the one-to-one loss gets
    one minus it (YOLO26: 0.8 -> 0.1)."""
    detach: bool = _opt(True)
    """The one-to-one head sees detached features, so only the one-to-many loss trains backbone and neck
    (YOLOv10)."""


@dataclass
class Config:
    """A whole experiment. Build it with :func:`load_config` or :func:`config_from_dict`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation."""
    assigner: PartSpec = field(default_factory=lambda: PartSpec("yolov5", {"anchor_t": 4.0, "neighbour_offset": 0.5}))
    """Label assignment; a name of ``detector.build.ASSIGNERS`` with its parameters
    (``{name: yolov5, anchor_t: 4.0}``)."""
    sampler: PartSpec | None = None
    """Optional sampler after assignment (``detector.build.SAMPLERS``: ``random`` for RPN, ``hard_negative``
    for SSD)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss terms and weights."""
    one_to_one: OneToOneConfig | None = None
    """NMS-free training: a one-to-one head beside the main head; null = one head. At inference the one-to-one
    head predicts (set ``eval.nms: none``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and run bookkeeping."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Post-processing and evaluation."""


# --------------------------------------------------------------------------------------------------
# key paths and source map
# --------------------------------------------------------------------------------------------------

def _path_str(path: KeyPath) -> str:
    """``("model", "anchors", 1)`` -> ``"model.anchors[1]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse_path(key: str) -> KeyPath:
    """``"model.anchors[1]"`` -> ``("model", "anchors", 1)``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _lookup(sources: dict[KeyPath, Source], path: KeyPath) -> Source:
    """Source of ``path``, else of its longest recorded prefix, else of its first recorded descendant
    (an override ``trian.epochs=5`` records only the leaf), else ``(None, None)`` (a default)."""
    for n in range(len(path), 0, -1):
        if path[:n] in sources:
            return sources[path[:n]]
    for p in _under(sources, path) if path else ():
        return sources[p]
    return (None, None)


def _error(sources: dict[KeyPath, Source], path: KeyPath, message: str) -> ConfigError:
    file, line = _lookup(sources, path)
    return ConfigError(_path_str(path), message, file, line)


def where(cfg: Config, key: str) -> Source:
    """Where ``key`` (dotted, e.g. ``"loss.box"`` or ``"model.anchors[1]"``) of a loaded config was set.

    Returns ``(file, line)`` (absolute file path, 1-based line of the key), ``("--set key=value", None)``
    for a command-line override, or ``(None, None)`` for a default or a config not built by this module.
    A key inside a value (``loss.box.gamma`` of ``box: focal``) reports the enclosing key's place.
    """
    return _lookup(getattr(cfg, "_sources", {}), _parse_path(key))


def config_error(cfg: Config, key: str, message: str) -> ConfigError:
    """A :class:`ConfigError` for ``key`` naming the file and line where ``cfg`` set it (see :func:`where`)."""
    file, line = where(cfg, key)
    return ConfigError(key, message, file, line)


# --------------------------------------------------------------------------------------------------
# YAML reading with line numbers
# --------------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 and Python do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def parse_yaml_with_lines(text: str, file: str, with_lines: bool = True) -> tuple[Any, dict[KeyPath, Source]]:
    """Parse YAML text into plain values and a map ``path -> (file, line)`` of every key and list item.

    ``file`` names the text in errors and sources; ``with_lines=False`` (a ``--set`` value) leaves lines out.
    Raises ConfigError on syntax errors, non-string keys, duplicate keys, merge keys and unsafe tags.
    """
    loader = _Loader(text)
    sources: dict[KeyPath, Source] = {}

    def line_of(node: yaml.Node) -> int | None:
        return node.start_mark.line + 1 if with_lines else None

    def build(node: yaml.Node, path: KeyPath) -> Any:
        if not isinstance(node, yaml.ScalarNode) and node.tag not in (_MAP_TAG, _SEQ_TAG):
            raise ConfigError(_path_str(path), f"unsupported YAML tag {node.tag!r}; write plain mappings, lists "
                              f"and scalars", file, line_of(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(_path_str(path), "YAML merge keys (<<) are not supported; use base: to "
                                      "inherit from another file", file, line_of(key_node))
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(_path_str(path), f"keys must be names, got {_describe(key)}", file,
                                      line_of(key_node))
                if key in first:
                    raise ConfigError(_path_str(path + (key,)), f"duplicate key (first set on line {first[key]})",
                                      file, line_of(key_node))
                first[key] = line_of(key_node)
                sources[path + (key,)] = (file, line_of(key_node))
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                sources[path + (i,)] = (file, line_of(item))
                items.append(build(item, path + (i,)))
            return items
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        value = None if node is None else build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark and with_lines else None
        raise ConfigError("", f"invalid YAML: {exc.problem or exc.context}", file, line) from None
    except yaml.YAMLError as exc:  # errors without a position
        raise ConfigError("", f"invalid YAML: {exc}", file) from None
    finally:
        loader.dispose()
    return value, sources


# --------------------------------------------------------------------------------------------------
# merging layers (base files, the file itself, overrides)
# --------------------------------------------------------------------------------------------------

def _schema_type(path: KeyPath) -> Any:
    """The annotated type of the field at ``path`` in :class:`Config`, or None if there is none."""
    tp: Any = Config
    for part in path:
        tp = _strip_optional(tp)
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or tp is PartSpec:
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _under(paths: Iterable[KeyPath], prefix: KeyPath) -> list[KeyPath]:
    return [p for p in paths if p[:len(prefix)] == prefix]


def _merge_into(dst: dict, child: dict, path: KeyPath, sources: dict[KeyPath, Source],
                child_sources: dict[KeyPath, Source]) -> None:
    """Merge ``child`` into ``dst`` in place (see the module docstring) and update ``sources`` to match."""
    for key, value in child.items():
        p = path + (key,)
        old = dst.get(key)
        is_loss = _strip_optional(_schema_type(p)) is PartSpec
        if is_loss and isinstance(value, dict) and "name" not in value and isinstance(old, str):
            old = dst[key] = {"name": old}  # `box: ciou` inherited, child adds parameters
            sources[p + ("name",)] = sources.get(p, (None, None))
        if isinstance(value, dict) and isinstance(old, dict) and not (is_loss and "name" in value):
            _merge_into(old, value, p, sources, child_sources)
            if p in child_sources:
                sources[p] = child_sources[p]
        else:
            dst[key] = copy.deepcopy(value)
            for q in _under(list(sources), p):
                del sources[q]
            sources.update({q: child_sources[q] for q in _under(child_sources, p)})


def _merge(base: tuple[dict, dict[KeyPath, Source]], child: tuple[dict, dict[KeyPath, Source]]
           ) -> tuple[dict, dict[KeyPath, Source]]:
    """Merge two ``(data, sources)`` layers into a new one; the child wins."""
    data, sources = copy.deepcopy(base[0]), dict(base[1])
    _merge_into(data, child[0], (), sources, child[1])
    return data, sources


def _parse_override(item: str) -> tuple[dict, dict[KeyPath, Source]]:
    """``"loss.box.gamma=0.5"`` -> ``({"loss": {"box": {"gamma": 0.5}}}, sources)`` (value parsed as YAML)."""
    origin = f"--set {item}"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError("", "expected key=value with a dotted key, e.g. train.epochs=50 or loss.box=giou",
                          origin)
    value, _ = parse_yaml_with_lines(text, origin, with_lines=False)
    path = tuple(key.split("."))
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    sources: dict[KeyPath, Source] = {path: (origin, None)}
    sources.update({path + q: (origin, None) for q in _value_paths(value)})
    return nested, sources


def _value_paths(value: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key / index path inside a plain value (not including the empty path)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out: list[KeyPath] = []
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_value_paths(v, prefix + (k,)))
    return out


# --------------------------------------------------------------------------------------------------
# files and names
# --------------------------------------------------------------------------------------------------

def resolve_config_path(name: str, search: list[Path], origin: Source, key: str, config_dir: Path) -> Path:
    """Find config ``name`` (a path, or a bare name with or without ``.yaml``) in ``search`` folders."""
    tried: list[Path] = []
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [folder / given for folder in search]
    for c in list(candidates):
        if c.suffix not in (".yaml", ".yml"):
            candidates.append(c.with_name(c.name + ".yaml"))
    for c in candidates:
        tried.append(c)
        if c.is_file():
            return c.resolve()
    available = sorted(p.stem for p in config_dir.glob("*.yaml")) if config_dir.is_dir() else []
    raise ConfigError(key, f"config {name!r} not found (tried {', '.join(str(t) for t in tried)}); "
                           f"configs in {config_dir}: {', '.join(available) or 'none'}", *origin)


def read_yaml_file(path: Path, what: str = "config") -> tuple[Any, dict[KeyPath, Source]]:
    """Read and parse a YAML file with line numbers; a ConfigError naming the file if it cannot be read."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {what}: {exc.strerror}", file) from None
    return parse_yaml_with_lines(text, file)


def _load_file(path: Path, chain: tuple[Path, ...], config_dir: Path) -> tuple[dict, dict[KeyPath, Source]]:
    """Read one config file and its bases, merged; ``chain`` holds the files including this one (cycles)."""
    file = str(path)
    data, sources = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"a config file must be a mapping of sections (model, data, augment, assigner, sampler, "
                              f"loss, train, eval), got {_describe(data)}", file, 1)
    layers: list[tuple[dict, dict[KeyPath, Source]]] = []
    if "base" in data:
        base = data.pop("base")
        base_source = sources[("base",)]
        names = [base] if isinstance(base, str) else base
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError("base", f"expected a file name or a list of file names, got {_describe(base)}",
                              *base_source)
        for i, name in enumerate(names):
            origin = sources.get(("base", i), base_source) if isinstance(base, list) else base_source
            base_path = resolve_config_path(name, [path.parent, config_dir], origin, "base", config_dir)
            if base_path in chain or base_path == path:
                cycle = " -> ".join(str(p) for p in (*chain, path, base_path))
                raise ConfigError("base", f"inheritance cycle: {cycle}", *origin)
            layers.append(_load_file(base_path, (*chain, path), config_dir))
        for q in _under(list(sources), ("base",)):
            del sources[q]
    merged: tuple[dict, dict[KeyPath, Source]] = ({}, {})
    for layer in (*layers, (data, sources)):
        merged = _merge(merged, layer)
    return merged


def load_config(path_or_name: str | Path, overrides: Iterable[str] = (), *,
                config_dir: str | Path | None = None) -> Config:
    """Load, merge and validate a config.

    Args:
        path_or_name: a path to a YAML file (tried first, relative to the current directory) or a bare
            name looked up in ``config_dir`` (``yolov5_ciou`` or ``yolov5_ciou.yaml``).
        overrides: ``key=value`` items applied last, e.g. ``["train.epochs=50", "loss.box=giou",
            "loss.box.gamma=0.5", "model.anchors=[[10,13],[30,61],[116,90]]"]``;
            values are parsed as YAML.
        config_dir: where bare names and unresolvable ``base:`` names are looked up; default the
            repository's ``configs/``.

    Returns:
        The validated :class:`Config`; :func:`where` tells where each key was set.

    Raises:
        ConfigError: naming the file and line (or ``--set`` item), the key path and what would be valid.
    """
    config_dir = Path(config_dir) if config_dir is not None else CONFIG_DIR
    if isinstance(overrides, str):  # a single "key=value" passed without a list
        overrides = [overrides]
    path = resolve_config_path(str(path_or_name), [Path.cwd(), config_dir], (None, None), "", config_dir)
    layer = _load_file(path, (), config_dir)
    for item in overrides:
        layer = _merge(layer, _parse_override(item))
    return _build_config(*layer)


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. :func:`config_to_dict` output stored in a checkpoint) into a Config.

    Errors name ``source`` in place of a file. ``base:`` is not followed here.
    """
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping of sections, got {_describe(data)}", source)
    return _build_config(copy.deepcopy(data), {p: (source, None) for p in _value_paths(data)})


def resolve_dataset(cfg: Config, data_dir: str | Path | None = None) -> Path:
    """The dataset YAML file named by ``cfg.data.dataset``.

    A bare name (no ``/`` and no ``.yaml``/``.yml`` suffix) is ``<data_dir>/<name>.yaml`` (default the
    repository's ``data/``). A path is tried as given (relative to the current directory), then relative to
    the config file that set it. Raises ConfigError at ``data.dataset`` (file and line) listing the datasets
    available when the file does not exist.
    """
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    name = cfg.data.dataset
    given = Path(name).expanduser()
    if "/" not in name and "\\" not in name and given.suffix not in (".yaml", ".yml"):
        candidates = [data_dir / f"{name}.yaml"]
    else:
        candidates = [given]
        file, _ = where(cfg, "data.dataset")
        if not given.is_absolute() and file and Path(file).is_file():
            candidates.append(Path(file).parent / given)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    available = sorted(p.stem for p in data_dir.glob("*.yaml")) if data_dir.is_dir() else []
    raise config_error(cfg, "data.dataset", f"dataset {name!r} not found (tried "
                       f"{', '.join(str(c) for c in candidates)}); bare names available in {data_dir}: "
                       f"{', '.join(available) or 'none'}")


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

def _describe(value: Any) -> str:
    """``"str 'ten'"``, ``"float 10.5"``, ``"null"``, ``"mapping {...}"`` for error messages."""
    if value is None:
        return "null"
    kind = {dict: "mapping", list: "list"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is PartSpec:
        return "a name or a mapping {name: ..., <param>: value}"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> Any:
    """Check ``value`` against the annotated type ``tp``; returns it converted (int -> float, PartSpec)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = _strip_optional(tp)
        if value is None or not _matches(value, inner):
            raise _error(sources, path, f"expected {_type_name(tp)}, got {_describe(value)}")
        return _coerce(value, inner, path, sources)
    if tp is PartSpec:
        return _part_spec(value, path, sources)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_section(tp, value, path, sources)
    if tp is Any:
        return value
    if not _matches(value, tp):
        raise _error(sources, path, f"expected {_type_name(tp)}, got {_describe(value)}")
    if tp is float:
        if not math.isfinite(value):
            raise _error(sources, path, f"expected a finite number, got {value!r}")
        return float(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, path + (i,), sources) for i, v in enumerate(value)]
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _error(sources, path, f"keys must be names, got {_describe(k)}")
            out[k] = _coerce(v, value_tp, path + (k,), sources)
        return out
    return value


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value``'s outer type fits ``tp`` (int fits float; bool fits neither int nor float)."""
    if tp is PartSpec:
        return isinstance(value, (str, dict))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    kinds = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list),
        dict: lambda v: isinstance(v, dict),
    }
    kind = typing.get_origin(tp) or tp
    if kind not in kinds:
        raise TypeError(f"config schema type {tp!r} is not supported")
    return kinds[kind](value)


def _part_spec(value: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> PartSpec:
    """``"ciou"`` -> ``PartSpec("ciou", {})``; ``{name: focal, gamma: 1.5}`` -> ``PartSpec("focal", {"gamma": 1.5})``.

    Parameter names and values are not checked here (``detector/losses/spec.py`` does that).
    """
    if isinstance(value, str):
        if not value.strip():
            raise _error(sources, path, "the name must not be empty")
        return PartSpec(value, {})
    if isinstance(value, dict):
        if "name" not in value:
            raise _error(sources, path, "a part given as a mapping needs a 'name' key, e.g. "
                                        f"{{name: focal, gamma: 1.5}}; "
                                        f"got {_describe(value)}")
        name = value["name"]
        if not isinstance(name, str) or not name.strip():
            raise _error(sources, path + ("name",), f"expected a name, got {_describe(name)}")
        return PartSpec(name, {k: copy.deepcopy(v) for k, v in value.items() if k != "name"})
    raise _error(sources, path, f"expected {_type_name(PartSpec)}, got {_describe(value)}")


def _unknown_key(key: str, valid: list[str], path: KeyPath, sources: dict[KeyPath, Source]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    what = "section" if not path else "key"
    return _error(sources, path + (key,), f"unknown {what}; {hint}")


def _build_section(cls: type, raw: Any, path: KeyPath, sources: dict[KeyPath, Source]) -> Any:
    """Validate mapping ``raw`` against dataclass ``cls`` (unknown keys, types, choices, ranges)."""
    if not isinstance(raw, dict):
        raise _error(sources, path, f"expected a mapping of {cls.__name__} keys, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _unknown_key(str(key), list(fields), path, sources)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        p = path + (name,)
        value = _coerce(raw[name], hints[name], p, sources)
        if value is not None:
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise _error(sources, p, f"{value!r} is not one of {', '.join(choices)}{hint}")
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                sub, msg = problem if isinstance(problem, tuple) else ((), problem)
                raise _error(sources, p + sub, msg)
        kwargs[name] = value
    return cls(**kwargs)


def _check_consistency(cfg: Config, sources: dict[KeyPath, Source]) -> None:
    """Checks across sections: levels agree, mosaic epochs fit, variance voting has variances."""
    levels = len(cfg.model.strides)
    if cfg.model.anchors is not None and len(cfg.model.anchors) != levels:
        raise _error(sources, ("model", "anchors"), f"has {len(cfg.model.anchors)} levels but model.strides has "
                                                     f"{levels}; give one anchor list per stride")
    balance = cfg.loss.reduction.params.get("level_balance") if cfg.loss.reduction.name == "yolov5" else None
    if isinstance(balance, list) and len(balance) != levels:
        raise _error(sources, ("loss", "reduction", "level_balance"),
                     f"has {len(balance)} weights but model.strides has {levels} levels; give one per level")
    if cfg.data.img_size % max(cfg.model.strides):
        raise _error(sources, ("data", "img_size"), f"{cfg.data.img_size} is not a multiple of the largest "
                                                     f"stride {max(cfg.model.strides)}")
    if cfg.train.close_mosaic > cfg.train.epochs:
        raise _error(sources, ("train", "close_mosaic"), f"{cfg.train.close_mosaic} is more than train.epochs "
                                                          f"({cfg.train.epochs})")
    if cfg.eval.variance_voting and not cfg.model.box_uncertainty:
        raise _error(sources, ("eval", "variance_voting"), "needs model.box_uncertainty: true (variance voting "
                                                            "weights boxes by their predicted variance)")


def _build_config(data: dict, sources: dict[KeyPath, Source]) -> Config:
    cfg = _build_section(Config, data, (), sources)
    _check_consistency(cfg, sources)
    cfg._sources = {p: s for p, s in sources.items()}  # not a dataclass field: excluded from ==, asdict, save
    return cfg


# --------------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------------

def config_to_dict(cfg: Any) -> Any:
    """The config as plain nested dicts/lists/scalars, in schema order (sections, then fields).

    A :class:`PartSpec` without parameters becomes its bare name, otherwise ``{"name": ..., **params}``,
    i.e. the form written in YAML. The result is YAML-safe and loads with ``torch.load(weights_only=True)``.
    """
    if isinstance(cfg, PartSpec):
        return cfg.name if not cfg.params else {"name": cfg.name, **copy.deepcopy(cfg.params)}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the fully resolved config (no ``base:``) as YAML; loading the file gives an equal Config.

    Creates parent folders. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)
    path.write_text("# Fully resolved config (detector.config.save_config)\n" + text, encoding="utf-8")
    return path
