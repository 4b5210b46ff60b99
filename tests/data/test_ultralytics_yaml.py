"""Ultralytics / Roboflow data.yaml read as it is, on a tiny copy of coco128 in Roboflow's YOLO layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detector.data import YoloDataset, build_dataset, load_dataset_yaml
from detector.errors import DatasetError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
SPLITS = {"train": ["000000000009", "000000000025"], "valid": ["000000000030"], "test": ["000000000034"]}


@pytest.fixture(scope="module")
def coco_names() -> list[str]:
    with open(COCO128 / "annotations" / "instances_train2017.json") as f:
        return [c["name"] for c in sorted(json.load(f)["categories"], key=lambda c: c["id"])]


@pytest.fixture
def roboflow_dir(tmp_path) -> Path:
    """``<tmp>/{train,valid,test}/{images,labels}`` copied from coco128, the data.yaml written by each test."""
    for split, stems in SPLITS.items():
        for kind, ext in (("images", ".jpg"), ("labels", ".txt")):
            (tmp_path / split / kind).mkdir(parents=True)
            for stem in stems:
                shutil.copy(COCO128 / kind / "train2017" / (stem + ext), tmp_path / split / kind / (stem + ext))
    return tmp_path


def test_roboflow_data_yaml_as_exported(roboflow_dir, coco_names):
    """Roboflow's file: no format, no path, ``../train/images`` relative to a YAML inside the dataset folder
    (ultralytics drops the ``../`` when that path does not exist), nc, a names list and a roboflow block."""
    text = ("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
            f"nc: 80\nnames: {json.dumps(coco_names)}\n\nroboflow:\n  workspace: w\n  project: p\n  version: 1\n"
            "  license: CC BY 4.0\n  url: https://universe.roboflow.com/w/p/dataset/1\n")
    (roboflow_dir / "data.yaml").write_text(text)
    spec = load_dataset_yaml(str(roboflow_dir / "data.yaml"))
    assert spec.format == "yolo" and spec.root == str(roboflow_dir) and spec.names == coco_names
    train, val, test = (build_dataset(spec, s) for s in ("train", "val", "test"))
    assert isinstance(train, YoloDataset) and [len(train), len(val), len(test)] == [2, 1, 1]
    assert train.records[0].path == str(roboflow_dir / "train" / "images" / "000000000009.jpg")
    lines = [ln for stem in SPLITS["train"] for ln in (COCO128 / "labels" / "train2017" / f"{stem}.txt").open()]
    assert train.num_boxes == len(lines) > 0


def test_ultralytics_names_mapping_and_path(roboflow_dir, coco_names):
    """Ultralytics' own form: ``path: .``, ``names: {0: person, ...}``, ``test:`` left empty."""
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(coco_names))
    text = f"path: .\ntrain: train/images\nval: valid/images\ntest:\nnames:\n{names}\n"
    (roboflow_dir / "data.yaml").write_text(text)
    spec = load_dataset_yaml(str(roboflow_dir / "data.yaml"))
    assert spec.format == "yolo" and spec.names == coco_names and set(spec.splits) == {"train", "val"}
    assert len(build_dataset(spec, "val")) == 1


@pytest.mark.parametrize("names, message", [
    ("{1: a, 2: b}", r"names: a names mapping needs the integer keys 0..1, got \[1, 2\]"),
    ("{0: a, x: b}", r"names: a names mapping needs the integer keys 0..1"),
])
def test_a_names_mapping_with_other_keys_names_the_line(roboflow_dir, names, message):
    (roboflow_dir / "data.yaml").write_text(f"train: train/images\nval: valid/images\nnames: {names}\n")
    with pytest.raises(DatasetError, match=rf"data.yaml:3: {message}"):
        load_dataset_yaml(str(roboflow_dir / "data.yaml"))


def test_formats_are_inferred(tmp_path, bccd_root):
    """A split ``{images, annotations}`` is coco; a folder with Annotations/ and ImageSets/Main/<split>.txt is voc."""
    (tmp_path / "c.yaml").write_text("train: {images: i, annotations: a.json}\nval: {images: i, annotations: a.json}\n")
    assert load_dataset_yaml(str(tmp_path / "c.yaml")).format == "coco"
    (tmp_path / "v.yaml").write_text(f"path: {bccd_root}\ntrain: train\nval: val\nnames: [RBC, WBC, Platelets]\n")
    assert load_dataset_yaml(str(tmp_path / "v.yaml")).format == "voc"
