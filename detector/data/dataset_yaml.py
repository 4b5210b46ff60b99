"""Dataset YAML files: which format, where the files are, the splits and the class names.

Paths resolve relative to the YAML file's folder (``path``), and split paths relative to ``path``::

    format: coco                 # coco | yolo | voc
    path: coco128                # dataset root (alias: root)
    train: {images: images/train2017, annotations: annotations/instances_train2017.json}
    val:   {images: images/train2017, annotations: annotations/instances_train2017.json}
    names: [person, ...]         # optional for coco (read from the JSON), required otherwise

Split spec per format:
    coco: ``{images: <folder>, annotations: <instances json>}``
    yolo: ``<image folder or .txt list>`` or ``{images: ..., labels: <label folder>}``
    voc:  ``<split name>`` (``ImageSets/Main/<name>.txt``) or ``<path of an id list>``

Ultralytics' ``data.yaml`` (and Roboflow's export of it) is read as it is: ``format`` is inferred when absent,
``path`` defaults to the YAML's folder, ``names`` may be ``{0: name, ...}``, ``../train/images`` falls back to
``train/images`` as ultralytics does, and ``download``/``roboflow`` keys are ignored. See docs/data.md.

Every error is a :class:`DatasetError` naming the YAML file and line of the offending key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from detector.data.base import DetectionDataset, check_names, dataset_error
from detector.data.coco import CocoDataset
from detector.data.voc import VocDataset, split_file
from detector.data.yolo import YoloDataset
from detector.errors import DatasetError

FORMATS = ("coco", "yolo", "voc")
KEYS = ("format", "path", "root", "train", "val", "test", "names", "nc")
IGNORED_KEYS = ("download", "roboflow")  # ultralytics / Roboflow metadata, not needed to read the data


@dataclass
class DatasetSpec:
    """A parsed dataset YAML.

    Attributes:
        file (str): the YAML file.
        format (str): one of ``FORMATS``.
        root (str): dataset root, resolved against the YAML's folder.
        splits (dict[str, str | dict]): raw split spec of ``train``, ``val`` (and ``test`` if given).
        names (list[str] | None): class names (None: read them from the COCO JSON).
        lines (dict[str, int]): 1-based line of each top-level key, for messages.
    """

    file: str
    format: str
    root: str
    splits: dict[str, object]
    names: list[str] | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, key: str, message: str) -> DatasetError:
        """A DatasetError at the line of top-level ``key`` of this YAML."""
        return dataset_error(self.file, f"{key}: {message}", self.lines.get(key))


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key of a YAML mapping document (empty if not a mapping)."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def class_names(value, spec: DatasetSpec) -> list[str]:
    """``names`` as a list, or as ultralytics' mapping ``{0: name, 1: name, ...}`` (keys exactly 0..n-1)."""
    if isinstance(value, dict):
        keys = sorted(value, key=str)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in value) or \
                sorted(value) != list(range(len(value))):
            raise spec.error("names", f"a names mapping needs the integer keys 0..{len(value) - 1}, got {keys}")
        value = [value[k] for k in range(len(value))]
    return check_names(value, f"{spec.file}:{spec.lines.get('names')}")


def infer_format(data: dict, root: str) -> str:
    """The format of a YAML without ``format:`` (ultralytics' data.yaml has none).

    coco if a split is ``{images, annotations}``; voc if ``root`` has ``Annotations/`` and every split names a
    list under ``ImageSets/Main``; yolo otherwise.
    """
    splits = [data.get(k) for k in ("train", "val", "test") if data.get(k) is not None]
    if any(isinstance(v, dict) and "annotations" in v for v in splits):
        return "coco"
    if os.path.isdir(os.path.join(root, "Annotations")) and splits and \
            all(isinstance(v, str) and os.path.isfile(split_file(root, v)) for v in splits):
        return "voc"
    return "yolo"


def load_dataset_yaml(path: str) -> DatasetSpec:
    """Read and check a dataset YAML -> :class:`DatasetSpec` (paths not yet opened, except the root).

    Ultralytics' form is accepted as it is: no ``format:`` (inferred by :func:`infer_format`), no ``path:``
    (the YAML's folder), ``names`` as ``{0: name}``, a null ``test:``, and ``download``/``roboflow`` keys (ignored).
    """
    if not os.path.isfile(path):
        raise dataset_error(path, "dataset YAML not found")
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise dataset_error(path, f"not valid YAML: {getattr(e, 'problem', e)}",
                            mark.line + 1 if mark is not None else None) from None
    if not isinstance(data, dict):
        raise dataset_error(path, f"expected a mapping with keys {KEYS}, got {type(data).__name__}")
    spec = DatasetSpec(file=path, format="", root="", splits={}, lines=lines)
    unknown = [k for k in data if k not in KEYS + IGNORED_KEYS]
    if unknown:
        raise spec.error(str(unknown[0]), f"unknown key; valid keys are {KEYS}")
    fmt = data.get("format")
    if "format" in data and fmt not in FORMATS:
        raise spec.error("format", f"{fmt!r} is not a dataset format; valid: {FORMATS}")
    if "path" in data and "root" in data:
        raise spec.error("path", "give one of 'path' or 'root' (the dataset folder, relative to the YAML)")
    root_key = "root" if "root" in data else "path"
    root = data.get(root_key, ".")
    if not isinstance(root, str):
        raise spec.error(root_key, f"must be a folder path, got {root!r}")
    spec.root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), root))
    if not os.path.isdir(spec.root):
        raise spec.error(root_key, f"dataset folder {spec.root} not found ({root!r} relative to the YAML's folder)")
    spec.format = fmt if fmt is not None else infer_format(data, spec.root)
    for key in ("train", "val", "test"):
        if data.get(key) is not None:
            _check_split(spec, key, data[key])
            spec.splits[key] = data[key]
    for key in ("train", "val"):
        if key not in spec.splits:
            raise dataset_error(path, f"{key}: missing split (a {spec.format} split spec)")
    if "names" in data:
        spec.names = class_names(data["names"], spec)
    elif spec.format != "coco":
        raise dataset_error(path, f"names: missing; a {spec.format} dataset needs the list of class names")
    if "nc" in data and (spec.names is None or data["nc"] != len(spec.names)):
        raise spec.error("nc", f"nc={data['nc']!r} does not match the {len(spec.names or [])} names")
    return spec


def split_path(root: str, value: str) -> str:
    """A split path relative to ``root``; like ultralytics, ``../x`` that does not exist falls back to ``x``
    (Roboflow's data.yaml sits in the dataset folder and says ``train: ../train/images``)."""
    path = os.path.normpath(os.path.join(root, value))
    if not os.path.exists(path) and value.startswith("../"):
        fallback = os.path.normpath(os.path.join(root, value[3:]))
        if os.path.exists(fallback):
            return fallback
    return path


def _check_split(spec: DatasetSpec, key: str, value) -> None:
    """Check the shape of a split spec for the format (files are checked when the split is built)."""
    if spec.format == "coco":
        ok = isinstance(value, dict) and set(value) == {"images", "annotations"} and \
            all(isinstance(v, str) for v in value.values())
        expected = "{images: <image folder>, annotations: <instances json>}"
    elif spec.format == "yolo":
        ok = isinstance(value, str) or (isinstance(value, dict) and set(value) <= {"images", "labels"}
                                         and isinstance(value.get("images"), str))
        expected = "<image folder or .txt list> or {images: ..., labels: <label folder>}"
    else:
        ok = isinstance(value, str)
        expected = "<split name> (ImageSets/Main/<name>.txt) or <path of an id list>"
    if not ok:
        raise spec.error(key, f"a {spec.format} split is {expected}, got {value!r}")


def build_dataset(spec: DatasetSpec | str, split: str = "train", max_images: int | None = None,
                  strict: bool = True) -> DetectionDataset:
    """The dataset of one split of a dataset YAML (a path or a loaded :class:`DatasetSpec`).

    Errors from the dataset files are re-raised naming the YAML line of the split too. ``strict=False``
    keeps fatal problems of the files in ``dataset.problems`` instead (see ``tools/check_data.py``).
    """
    if isinstance(spec, str):
        spec = load_dataset_yaml(spec)
    if split not in spec.splits:
        raise dataset_error(spec.file, f"no split {split!r}; the YAML defines {sorted(spec.splits)}")
    value = spec.splits[split]

    def under_root(p: str) -> str:
        return split_path(spec.root, p)

    try:
        if spec.format == "coco":
            return CocoDataset(under_root(value["annotations"]), under_root(value["images"]),
                               names=spec.names, max_images=max_images, strict=strict)
        if spec.format == "yolo":
            images, labels = (value, None) if isinstance(value, str) else (value["images"], value.get("labels"))
            return YoloDataset(under_root(images), spec.names, label_dir=under_root(labels) if labels else None,
                               max_images=max_images, strict=strict)
        return VocDataset(spec.root, value, spec.names, max_images=max_images, strict=strict)
    except DatasetError as e:
        raise spec.error(split, str(e)) from e
